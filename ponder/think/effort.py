"""`reasoning_effort` presets: how much thinking low, medium and high buy."""

from __future__ import annotations

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.think.base import AnswerKey, Strategy, default_key
from ponder.think.sampling import ChainOfThought, MajorityVote

EFFORTS = ("low", "medium", "high")


def strategy_for_effort(effort: str, engine: Engine, chat: ChatFormat, max_tokens: int = 768,
                        seed: int | None = 0, answer_key: AnswerKey = default_key) -> Strategy:
    """low: one greedy chain; medium: majority of 5 samples; high: majority of 16."""
    if effort == "low":
        return ChainOfThought(engine, chat, max_tokens=max_tokens, answer_key=answer_key, seed=seed)
    if effort == "medium":
        return MajorityVote(engine, chat, max_tokens=max_tokens, answer_key=answer_key, n=5, seed=seed)
    if effort == "high":
        return MajorityVote(engine, chat, max_tokens=max_tokens, answer_key=answer_key, n=16, seed=seed)
    raise PonderError(f"unknown reasoning effort {effort!r}; choose low, medium or high")
