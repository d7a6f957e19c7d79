"""Best-of-N: sample whole chains, let a verifier pick.

Naive best-of-N answers with the single highest-scored chain; weighted
best-of-N adds up the scores of every chain per distinct answer and answers
with the heaviest, so agreement and confidence both count.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ponder import PonderError
from ponder.reward.base import Verifier, check_aggregation, rate
from ponder.engine.base import Completion
from ponder.think.anytime import ChainStrategy, Closed
from ponder.think.base import Node, Question, Thought, Usage
from ponder.think.stream import Listener


def pick(keys: Sequence[str], scores: Sequence[float], weighted: bool) -> int:
    """Index of the chosen candidate: the best-scored one, or the best of the answer with the largest score sum.

    Ties go to the earlier candidate (or answer first seen).
    """
    if not keys:
        raise PonderError("nothing to pick from")
    if not weighted:
        return max(range(len(keys)), key=lambda i: (scores[i], -i))
    totals: dict[str, float] = {}
    for k, s in zip(keys, scores):
        totals[k] = totals.get(k, 0.0) + s
    best = max(totals, key=lambda k: totals[k])  # dicts keep insertion order: ties go to the first seen
    return max((i for i, k in enumerate(keys) if k == best), key=lambda i: (scores[i], -i))


def verifier_setup(verifier: Verifier | None, aggregation: str | None, who: str) -> tuple[Verifier, str]:
    if verifier is None or not callable(getattr(verifier, "score_batch", None)):
        raise PonderError(f"{who} needs a verifier (a reward model directory: --verifier PATH)")
    return verifier, check_aggregation(aggregation or getattr(verifier, "aggregation", "last"))


class BestOfN(ChainStrategy):
    """Sample n chains, score each with the verifier, answer by the best chain or best answer (weighted)."""

    def __init__(self, engine, chat, verifier: Verifier, *, n: int = 8, weighted: bool = True,
                 aggregation: str | None = None, temperature: float = 0.8, top_p: float = 1.0,
                 seed: int | None = 0, **kw) -> None:
        super().__init__(engine, chat, **kw)
        if n < 1:
            raise PonderError(f"best_of_n needs n >= 1, got {n}")
        self.verifier, self.aggregation = verifier_setup(verifier, aggregation, "best_of_n")
        self.n, self.weighted, self.temperature, self.top_p, self.seed = n, weighted, temperature, top_p, seed

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        groups, parts, closed, calls = self.sample_answers(questions, budget, listener, n=self.n,
                                                           temperature=self.temperature, top_p=self.top_p,
                                                           seed=self.seed)
        # one verifier call scores every answered chain
        flat = [(qi, ci) for qi, ps in enumerate(parts) for ci, p in enumerate(ps) if p[1]]
        scores = rate(self.verifier, [questions[qi] for qi, _ in flat],
                      [self.chat.steps(parts[qi][ci][0]) for qi, ci in flat],
                      [parts[qi][ci][1] for qi, ci in flat], self.aggregation)
        by_chain = dict(zip(flat, scores))
        return [self._choose(groups[qi], parts[qi], lambda ci, qi=qi: by_chain.get((qi, ci)), closed[qi], calls[qi],
                             budget) for qi in range(len(questions))]

    def chain_to_close(self, questions: list[Question], cut: list[list[int]],
                       groups: list[list[Completion]]) -> list[int]:
        """The cut chain whose whole steps the verifier likes best (by its last step, as step search reads them)."""
        flat = [(qi, ci) for qi, ids in enumerate(cut) for ci in ids]
        scores = rate(self.verifier, [questions[qi] for qi, _ in flat],
                      [self.chat.steps(self.whole_steps(groups[qi][ci])) for qi, ci in flat], [None] * len(flat),
                      "last")
        best: dict[int, tuple[float, int]] = {}
        for (qi, ci), score in zip(flat, scores):
            if qi not in best or score > best[qi][0]:
                best[qi] = (score, ci)
        return [best[qi][1] for qi in range(len(cut))]

    def _choose(self, group, parts, score_of: Callable[[int], float | None], shut: Closed | None, called: int,
                budget: int | None) -> Thought:
        completion_tokens = sum(c.num_tokens for c in group) + (shut.tokens if shut else 0)
        calls = called + (shut is not None)
        root = Node(text="", visits=len(group))
        for ci, p in enumerate(parts):
            root.children.append(Node(text=p[0], score=score_of(ci), visits=1, answer=p[1] or None))
        answered = [ci for ci, p in enumerate(parts) if p[1]]
        if not answered:
            usage = Usage(group[0].prompt_tokens, completion_tokens, completion_tokens, calls)
            return Thought("", parts[0][0], usage, "length", root, self.budget_decided(budget, group, "", shut))
        i = pick([self.answer_key(parts[ci][1]) for ci in answered], [score_of(ci) for ci in answered],
                 self.weighted)
        chosen = answered[i]
        root.children[chosen].chosen = True
        reasoning, answer, answer_tokens, _ = parts[chosen]
        usage = Usage(group[0].prompt_tokens, completion_tokens, completion_tokens - answer_tokens, calls)
        return Thought(answer, reasoning, usage, "stop", root, self.budget_decided(budget, group, answer, shut))
