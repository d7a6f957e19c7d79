"""The countdown trace the built-in model was trained on (`Countdown(trace="guided")`).

Like the honest search it tries moves closest to the target first and shows its dead
ends (a two-number state with no operation that makes the target writes ``no``), but
it shows at most one to three of them, drawn per trace. After that, and after every
``back``, it takes a branch that a solver knows still reaches the target, and ``back``
returns to the nearest state from which the target is reachable. A model cannot know
which branch that is without searching, which is why the honest search replaced this
trace as the default; it is kept so that `configs/ponder-tiny*.yaml` reproduce the
built-in model exactly (same traces, same random draws).
"""

from __future__ import annotations

import random
from itertools import combinations

from ponder import PonderError
from ponder.tasks.countdown import _combine, _fmt, _Search

# How many dead ends a trace may show at most (drawn per trace), so that traces
# with failures show one, two or three of them rather than always the most.
_DEAD_END_CAPS = {1: 0.40, 2: 0.35, 3: 0.25}


class GuidedSearch(_Search):
    noise = 1.0

    def __init__(self, target: int, rng: random.Random):
        super().__init__(target, rng)
        self.max_dead = rng.choices(list(_DEAD_END_CAPS), weights=list(_DEAD_END_CAPS.values()))[0]
        self._solvable: dict[tuple[int, ...], bool] = {}

    def solvable(self, state) -> bool:
        """Whether the target can still be made from `state` (with the moves the trace may show)."""
        return self._solvable_values(tuple(v for v, _ in state))

    def _solvable_values(self, vals: tuple[int, ...]) -> bool:
        known = self._solvable.get(vals)
        if known is not None:
            return known
        t = self.target
        if t in vals:
            ok = True
        elif len(vals) == 2:
            b, a = vals
            ok = t in (a + b, a - b, a * b) or (a % b == 0 and a // b == t)
        else:
            ok = any(self._solvable_values(tuple(sorted(vals[:i] + vals[i + 1:j] + vals[j + 1:] + (r,))))
                     for i, j in combinations(range(len(vals)), 2) for _, r in _combine(vals[j], vals[i]))
        self._solvable[vals] = ok
        return ok

    def trace(self, nums: tuple[int, ...]) -> tuple[list[str], str]:
        root = tuple((v, v) for v in sorted(nums))
        if not self.solvable(root):
            raise PonderError(f"countdown: {self.target} cannot be made from {list(nums)}")
        path = [(root, self.children(root))]  # states from the root, each with its untried children
        lines: list[str] = []
        dead = 0
        while True:
            state, todo = path[-1]
            if (expr := self.solved(state, lines)) is not None:
                return lines, expr
            direct = any(v == self.target for _, child in todo for v, _ in child)
            if len(state) <= 2 and not direct:
                lines.append("no")
                dead += 1
                path.pop()
                while not self.solvable(path[-1][0]):
                    path.pop()
                lines.append(f"back {_fmt(v for v, _ in path[-1][0])}")
                continue
            k = next(i for i, (_, c) in enumerate(todo) if self.solvable(c)) if dead >= self.max_dead else 0
            line, child = todo.pop(k)
            lines.append(line)
            path.append((child, self.children(child)))
