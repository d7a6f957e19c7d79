"""A question's thought does not depend on the questions batched with it, however long their prompts.

In the server a batch holds other users' requests; their prompt lengths (which decide how much of the
context is left) must change neither what a question's chains may generate nor its answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.think.registry import STRATEGIES, WHOLE_CHAINS, build_strategy, scaled_params
from scripted import TableVerifier, WorldEngine

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
WORLD = ["\n".join(f"{p}{i}=step{i}" for i in range(n)) + f"</think>{k}<|end|>"
         for k, (p, n) in enumerate(zip("abcdef", (2, 5, 3, 6, 4, 2)))]


class ContextEngine(WorldEngine):
    """A scripted model with a context of `max_positions` tokens that refuses any call reaching past it."""

    def __init__(self, max_positions: int) -> None:
        super().__init__(WORLD, fallback="1<|end|>")
        self.max_positions = max_positions

    def generate(self, prompts, params, on_step=None):
        for p in prompts:
            if self.count_tokens(p) + params.max_tokens > self.max_positions:
                raise PonderError(f"asked for {params.max_tokens} tokens past a prompt of {self.count_tokens(p)}")
        return super().generate(prompts, params, on_step)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(STRATEGIES)), budget=st.one_of(st.none(), st.integers(20, 300)),
       lengths=st.lists(st.integers(0, 12), min_size=2, max_size=4), room=st.integers(1, 60),
       scores=st.lists(st.floats(0, 1), min_size=30, max_size=30), reserve=st.sampled_from([0, 8]))
def test_a_question_thinks_the_same_alone_and_beside_longer_questions(name, budget, lengths, room, scores, reserve):
    questions = [f"Question {i}:" + " why" * k for i, k in enumerate(lengths)]
    limit = max(ContextEngine(0).count_tokens(CHAT.prompt(q)) for q in questions) + room  # the longest's room
    steps = sorted({s for c in WORLD for s in c.split("</think>")[0].split("\n")})
    verifier = TableVerifier(dict(zip(steps, scores)))

    def solve(batch):
        extra = {"answer_reserve": reserve} if name in (*WHOLE_CHAINS, "adaptive") else {}
        strategy = build_strategy(name, ContextEngine(limit), CHAT, verifier, max_tokens=40, **scaled_params(name, 3),
                                  **extra)
        return strategy.solve_batch(batch, budget)

    together = solve(questions)
    alone = [solve([q])[0] for q in questions]
    for q, a, t in zip(questions, alone, together):
        assert t == a, q
