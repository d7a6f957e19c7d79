"""`reasoning_effort` presets: how much thinking low, medium and high buy."""

from __future__ import annotations

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.think.base import AnswerKey, Strategy, default_key
from ponder.think.sampling import ChainOfThought, MajorityVote

EFFORTS = ("low", "medium", "high")


def strategy_for_effort(effort: str, engine: Engine, chat: ChatFormat, max_tokens: int = 768,
                        seed: int | None = 0, answer_key: AnswerKey = default_key,
                        temperature: float | None = None, top_p: float = 1.0) -> Strategy:
    """low: one greedy chain; medium: majority of 5 samples; high: majority of 16.

    `temperature` replaces the preset's own (0 for low, 0.8 for the votes) when given.
    """
    kw = dict(max_tokens=max_tokens, answer_key=answer_key, seed=seed, top_p=top_p)
    if temperature is not None:
        kw["temperature"] = temperature
    if effort == "low":
        return ChainOfThought(engine, chat, **kw)
    if effort == "medium":
        return MajorityVote(engine, chat, n=5, **kw)
    if effort == "high":
        return MajorityVote(engine, chat, n=16, **kw)
    raise PonderError(f"unknown reasoning effort {effort!r}; choose low, medium or high")
