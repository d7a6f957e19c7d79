"""`POST /v1/completions`: raw text completion straight from the engine, no strategy.

This is what lets one ponder be the upstream of another (`RemoteEngine` speaks
this endpoint), and what search strategies need from a remote model: a prompt
that may end anywhere, `n` samples, stop strings, logprobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.engine.base import Completion, SamplingParams


class CompletionRequest(BaseModel):
    model: str
    prompt: str | list[str]
    max_tokens: int = Field(default=16, ge=1)
    n: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=1)
    echo: bool = False
    stream: bool = False
    model_config = ConfigDict(extra="allow")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        prompts = [v] if isinstance(v, str) else list(v)
        if len(prompts) != 1 or not prompts[0]:
            raise ValueError("exactly one non-empty prompt per request")
        return prompts[0]

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop sequences")
        return stops


@dataclass(frozen=True)
class RawKey:
    """Requests with equal sampling settings share one engine call."""

    params: SamplingParams


class RawCompletion:
    """Stands where a strategy would in the batcher: each 'question' is a raw prompt."""

    def __init__(self, engine, key: RawKey) -> None:
        self.engine, self.params = engine, key.params

    def solve_batch(self, prompts: list[str], budget: int | None = None, listener=None) -> list[Completion]:
        def on_step(rows, deltas):
            return [i for i in {i for i, _ in rows} if listener.cancelled(i)]

        streaming = listener is not None and getattr(self.engine.capabilities, "streaming", False)
        groups = self.engine.generate(prompts, self.params, on_step=on_step) if streaming \
            else self.engine.generate(prompts, self.params)
        return [g[0] for g in groups]


def response(rid: str, model: str, completions: list[Completion], stops: list[str]) -> dict[str, Any]:
    """OpenAI's text_completion object; a matched stop string is cut from the text and named in
    `stop_reason` (as vLLM does), and each choice says how many tokens it took (`num_tokens`)."""
    choices = []
    for i, c in enumerate(completions):
        text = c.text
        if c.finish_reason == "stop" and c.stop_reason and text.endswith(c.stop_reason):
            text = text[: len(text) - len(c.stop_reason)]
        lp = None
        if c.logprobs is not None:
            lp = {"token_logprobs": c.logprobs, "tokens": None, "top_logprobs": None, "text_offset": None}
        choices.append({"index": i, "text": text, "logprobs": lp, "num_tokens": c.num_tokens,
                        "finish_reason": "length" if c.finish_reason in ("length", "abort") else "stop",
                        "stop_reason": c.stop_reason})
    prompt = completions[0].prompt_tokens if completions else 0
    generated = sum(c.num_tokens for c in completions)
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": generated,
                                          "total_tokens": prompt + generated}}
