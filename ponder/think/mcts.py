"""Monte-Carlo tree search over reasoning steps (PUCT), valued by the verifier.

Each simulation walks from the root to a leaf by PUCT (a child's mean value
plus an exploration bonus that shrinks as it is visited), samples
`expansions` next steps there, scores each new step with the verifier, and
adds those values to every node on the way down. A chain that answered is a
terminal node: reaching it again counts its value once more and costs no
tokens. The answer is picked among finished chains as in beam search, and the
budget is held the same way (`StepSearch` does both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ponder import PonderError
from ponder.reward.base import Verifier
from ponder.think.base import Node, Question, Thought
from ponder.think.search import Chain, StepSearch, _State
from ponder.think.stream import Listener


@dataclass
class _Tree:
    """Search statistics of one question, keyed by the id of a tree node."""

    chains: dict[int, Chain] = field(default_factory=dict)  # the chain that ends at each live node
    visits: dict[int, int] = field(default_factory=dict)
    value: dict[int, float] = field(default_factory=dict)  # summed values of the evaluations below
    expanded: set[int] = field(default_factory=set)
    dead: set[int] = field(default_factory=set)  # nothing left to search below
    done: bool = False

    def mean(self, node: Node) -> float:
        return self.value[id(node)] / max(1, self.visits[id(node)])

    def back_up(self, path: list[Node], visits: int, value: float) -> None:
        for node in path:
            self.visits[id(node)] = self.visits.get(id(node), 0) + visits
            self.value[id(node)] = self.value.get(id(node), 0.0) + value


class MCTS(StepSearch):
    """PUCT over reasoning steps: `simulations` walks, each expanding one leaf `expansions` ways."""

    name = "mcts"

    def __init__(self, engine, chat, verifier: Verifier, *, simulations: int = 16, expansions: int = 3,
                 c_puct: float = 1.0, **kw) -> None:
        if simulations < 1:
            raise PonderError(f"mcts: simulations must be >= 1, got {simulations}")
        if c_puct < 0:
            raise PonderError(f"mcts: c_puct must be >= 0, got {c_puct}")
        super().__init__(engine, chat, verifier, groups=1, width=1, expansions=expansions, **kw)
        self.simulations, self.c_puct = simulations, c_puct

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        states = self._start(questions, budget)
        trees = [_Tree() for _ in states]
        for s, t in zip(states, trees):
            t.chains[id(s.root)], t.visits[id(s.root)], t.value[id(s.root)] = Chain([], [], 0, 0), 0, 0.0
        for sim in range(self.simulations):
            paths: list[list[Node] | None] = []
            for i, (s, t) in enumerate(zip(states, trees)):
                if listener is not None and listener.cancelled(i):
                    s.cancelled = t.done = True
                path = None if t.done else self._descend(s, t)
                leaf = t.chains[id(path[-1])] if path else None
                if leaf is not None and leaf.answer is not None:  # a terminal: its value counts again
                    t.back_up(path, 1, leaf.score)
                    path = None
                s.beams = [(leaf, self.expansions)] if path else []
                paths.append(path)
            if not any(s.beams for s in states):
                if all(t.done for t in trees):
                    break
                continue
            fresh = self._expand(states, sim)
            self._finish_answers(states, fresh)
            self._score(states, fresh, open_too=not self.lookahead)
            if self.lookahead:
                self._look_ahead(states, fresh, sim)
            for s, t, path, cands in zip(states, trees, paths, fresh):
                if path is not None:
                    self._record(s, t, path, cands)
        for s, t in zip(states, trees):
            for node in s.root.walk():
                node.visits = t.visits.get(id(node), 0)
        return [self._answer(s) for s in states]

    def _descend(self, s: _State, t: _Tree) -> list[Node] | None:
        """The path from the root to the node to expand (or to a terminal), by PUCT; None if a dead
        end was found on the way (it is marked, so the next simulation goes elsewhere)."""
        node, path = s.root, [s.root]
        while id(node) in t.expanded:
            kids = [k for k in node.children if id(k) in t.chains and id(k) not in t.dead]
            if not kids:
                t.dead.add(id(node))
                t.done = node is s.root
                return None
            total, prior = t.visits[id(node)], 1.0 / len(kids)
            node = max(kids, key=lambda k: t.mean(k) + self.c_puct * prior * math.sqrt(total) / (1 + t.visits[id(k)]))
            path.append(node)
            if t.chains[id(node)].answer is not None:
                break
        return path

    def _record(self, s: _State, t: _Tree, path: list[Node], cands: list[Chain]) -> None:
        """Enter the new steps into the statistics and add their values up the path.

        A step sampled twice is one node: the twin's value counts as another visit of the first.
        """
        leaf = path[-1]
        t.expanded.add(id(leaf))
        live = {(tuple(t.chains[id(k)].steps), t.chains[id(k)].answer): k for k in leaf.children if id(k) in t.chains}
        for ch in cands:
            twin = live.get((tuple(ch.steps), ch.answer))
            if twin is not None:
                leaf.children = [k for k in leaf.children if k is not ch.node]  # by identity: twins are equal
                t.back_up([twin], 1, ch.score)
                continue
            live[(tuple(ch.steps), ch.answer)] = ch.node
            t.chains[id(ch.node)], t.visits[id(ch.node)], t.value[id(ch.node)] = ch, 1, ch.score
            if ch.answer is not None:
                s.finals.append(ch)
            else:
                self._remember_open(s, ch)
        if cands:
            t.back_up(path, len(cands), sum(ch.score for ch in cands))
        elif s.exhausted:
            t.done = True  # the budget could not pay for another step
        else:
            t.dead.add(id(path[-1]))  # every sample died, or the chain is at its length cap
