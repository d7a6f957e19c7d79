"""Which problems RL trains on next: a level per family that rises with the pass rate, and a
memory of questions that teach nothing.

A group whose completions are all right or all wrong has zero advantage everywhere,
so its compute is wasted. The curriculum keeps each family at the lowest level of
its mixture entry that the policy has not mastered yet (rolling pass rate over the
last `window` completions at that level below `threshold`), and skips a question
once `drop_after` samples of it were all right or all wrong. Its state is plain
JSON, saved in every checkpoint, so a resumed run samples what the first would have.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from ponder.train.data import MixtureItem

MEMORY_LIMIT = 20_000  # questions remembered; the oldest are forgotten first


class Curriculum:
    def __init__(self, mixture: list[MixtureItem], *, enabled: bool, threshold: float = 0.8, window: int = 64,
                 drop_after: int = 0) -> None:
        self.mixture, self.enabled = mixture, enabled
        self.threshold, self.window, self.drop_after = threshold, window, drop_after
        self.index = {m.task: 0 for m in mixture}
        self.recent: dict[str, deque[bool]] = {m.task: deque(maxlen=window) for m in mixture}
        self.seen: dict[str, list[int]] = {}  # question -> [samples, correct]

    def level(self, rng: random.Random, item: MixtureItem) -> int:
        if not self.enabled:
            return rng.choice(item.levels)
        return sorted(item.levels)[self.index[item.task]]

    def skip(self, question: str) -> bool:
        """True for a question already sampled drop_after times with no mixed result."""
        if self.drop_after <= 0 or question not in self.seen:
            return False
        n, k = self.seen[question]
        return n >= self.drop_after and k in (0, n)

    def record(self, task: str, level: int, question: str, correct: list[bool]) -> None:
        if self.drop_after > 0:
            n, k = self.seen.pop(question, (0, 0))
            self.seen[question] = [n + len(correct), k + sum(correct)]  # re-inserted: now the newest
            while len(self.seen) > MEMORY_LIMIT:
                del self.seen[next(iter(self.seen))]
        if not self.enabled or task not in self.index:
            return
        levels = sorted(next(m.levels for m in self.mixture if m.task == task))
        if level != levels[self.index[task]]:
            return
        window = self.recent[task]
        window.extend(correct)
        if len(window) == self.window and sum(window) / self.window >= self.threshold \
                and self.index[task] + 1 < len(levels):
            self.index[task] += 1
            window.clear()

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.mixture if self.enabled else []:
            out[f"curriculum_level/{m.task}"] = sorted(m.levels)[self.index[m.task]]
            w = self.recent[m.task]
            if w:
                out[f"curriculum_pass_rate/{m.task}"] = round(sum(w) / len(w), 4)
        if self.drop_after > 0:
            out["dropped_questions"] = sum(self.skip(q) for q in self.seen)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"index": dict(self.index), "recent": {t: list(w) for t, w in self.recent.items()},
                "seen": [[q, n, k] for q, (n, k) in self.seen.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t, i in state.get("index", {}).items():
            if t in self.index:
                self.index[t] = i
        for t, w in state.get("recent", {}).items():
            if t in self.recent:
                self.recent[t].extend(w)
        self.seen = {q: [n, k] for q, n, k in state.get("seen", [])}
