"""Wires a model (local, or an OpenAI-compatible upstream) and the effort presets into a server."""

from __future__ import annotations

import copy

from fastapi import FastAPI

from ponder.model.chat import ChatFormat
from ponder.model.tokenizer import text_checker
from ponder.serve.app import ServeConfig, StrategyKey, create_app
from ponder.serve.completions import RawCompletion, RawKey
from ponder.think.effort import check_preset, strategy_for_effort


def build_app(engine, chat: ChatFormat, cfg: ServeConfig, tokenizer=None, max_tokens: int = 768,
              preset: str | None = None) -> FastAPI:
    """A server whose requests run the effort presets on `engine`.

    `max_tokens` caps one chain of thought; a request's `max_completion_tokens`
    caps all of its chains together. `preset` (vote or adaptive) is what medium and high run;
    None: each effort's default (`ponder/think/effort.py`).
    """
    check_preset(preset)

    def strategy_for(key: StrategyKey | RawKey):
        if isinstance(key, RawKey):
            return RawCompletion(engine, key)
        return strategy_for_effort(key.effort, engine, chat, max_tokens=max_tokens, seed=key.seed,
                                   temperature=key.temperature, top_p=key.top_p, preset=preset)

    check_text = text_checker(tokenizer) if tokenizer is not None else None
    if tokenizer is not None:
        # the engine thread uses its own tokenizer; a fast tokenizer must not be shared across threads
        counter = copy.deepcopy(tokenizer)

        def count_tokens(text: str) -> int:
            return len(counter(text, add_special_tokens=False)["input_ids"])
    else:
        count_tokens = engine.count_tokens
    return create_app(strategy_for, chat, count_tokens, cfg, max_positions=getattr(engine, "max_positions", None),
                      check_text=check_text, count_in_thread=tokenizer is None)
