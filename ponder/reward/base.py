"""What a strategy may ask of a verifier, and how per-step scores become one number.

A strategy holds a `Verifier` and never learns whether it is a process reward
model (trained on every step) or an outcome reward model (trained on the final
position only): both return one score per step boundary, plus one for the
answer when the chain has one, and the strategy aggregates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence, runtime_checkable

from ponder import PonderError
from ponder.model.chat import Message

Aggregation = Literal["last", "min", "prod"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod")

# A question is its text, or a conversation whose last message is the user's (as in think.base).
QuestionLike = str | Sequence[Message]


@runtime_checkable
class Verifier(Protocol):
    """Scores reasoning chains in [0, 1]; higher means more likely to reach a correct answer."""

    aggregation: str  # how this verifier's scores are best combined (a strategy may override)

    def score_batch(self, questions: Sequence[QuestionLike], chains: Sequence[Sequence[str]],
                    answers: Sequence[str | None]) -> list[list[float]]:
        """Per chain: one score per step, then one for the answer where it is not None."""
        ...


def check_aggregation(how: str) -> str:
    if how not in AGGREGATIONS:
        raise PonderError(f"unknown score aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    return how


def aggregate(scores: Sequence[float], how: str) -> float:
    """One number for a chain: its last score, its weakest step, or the product of all.

    An empty chain (nothing scored yet) is neutral: 1.0 for min and prod, 0.5 for last.
    """
    check_aggregation(how)
    if not scores:
        return 0.5 if how == "last" else 1.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    return float(math.prod(scores))


def rate(verifier: Verifier, questions: Sequence[QuestionLike], chains: Sequence[Sequence[str]],
         answers: Sequence[str | None], how: str | None = None) -> list[float]:
    """Aggregated scores of many chains in one verifier call (`how` defaults to the verifier's own)."""
    if not chains:
        return []
    how = check_aggregation(how or verifier.aggregation)
    return [aggregate(s, how) for s in verifier.score_batch(questions, chains, answers)]


@dataclass
class VerifierStats:
    """What scoring cost: calls, sequences and tokens read (for compute-matched comparisons)."""

    calls: int = 0
    sequences: int = 0
    tokens: int = 0
