"""The engine contract: batched sampling, whoever runs the model.

Strategies call `generate(prompts, params)` and never learn which engine
answered. An engine states what it can do in `capabilities`; strategies
degrade where something is missing.
"""

from __future__ import annotations

import hashlib
import secrets
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Protocol, Sequence

from ponder import PonderError

FinishReason = Literal["stop", "length", "eos", "abort"]

# Called once per decode step with the (prompt index, sample index) of every live
# sequence and the text its new token added; returns the prompt indices whose
# sequences should end now (finish_reason "abort"), e.g. because a client left.
StepListener = Callable[[list[tuple[int, int]], list[str]], "Iterable[int] | None"]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    first_sample: int = 0  # a prompt's rows are its samples first..first+n-1: a later call goes on where one stopped

    def __post_init__(self) -> None:
        if self.n < 1:
            raise PonderError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise PonderError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PonderError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 0:
            raise PonderError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.first_sample < 0:
            raise PonderError(f"first_sample must be >= 0, got {self.first_sample}")


@dataclass
class Completion:
    text: str  # generated text; a matched stop string is included at its end
    token_ids: list[int]
    finish_reason: FinishReason  # stop: a stop string; eos: end token; length: max_tokens; abort: a listener ended it
    prompt_tokens: int
    stop_reason: str | None = None  # the stop string that ended it
    logprobs: list[float] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Capabilities:
    n: bool = True
    stop_strings: bool = True
    logprobs: bool = True
    prefix_continuation: bool = True  # a prompt may end inside the assistant's turn
    streaming: bool = False  # generate() takes an `on_step` listener


class Engine(Protocol):
    capabilities: Capabilities

    def generate(self, prompts: list[str], params: SamplingParams,
                 on_step: StepListener | None = None) -> list[list[Completion]]:
        """`n` completions for each prompt, in prompt order; `on_step` only where capabilities.streaming."""
        ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class EngineStats:
    """Token counts over an engine's life. `prompt_tokens` counts every prompt token sent (a prompt sent
    twice counts twice); `prefilled_tokens` counts those the model actually ran: the local engine runs a
    prompt repeated within a call once and, with its prefix cache, only a kept prompt's new tokens.
    Engines that cannot tell (remote, vLLM) count every token sent."""

    calls: int = 0
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    per_call: list[int] = field(default_factory=list)


def sample_keys(seed: int | None, prompts: Sequence[Sequence[int]], n: int, first: int = 0) -> list[list[int]]:
    """A 64-bit key per sample row (prompt, then sample), from the seed, the prompt's tokens, how many times
    the same prompt came earlier in the call, and the sample's index (`first` to `first + n - 1`). What a row
    draws then depends on nothing else in the batch, a prompt's first k of n samples are its samples at n = k,
    and a call from `first` = k goes on with the samples after those."""
    base = secrets.randbits(64) if seed is None else int(seed) % 2**64
    seen: dict[tuple[int, ...], int] = {}
    keys = []
    for ids in prompts:
        earlier = seen.get(tuple(ids), 0)
        seen[tuple(ids)] = earlier + 1
        h = hashlib.blake2b(array("q", ids).tobytes(), digest_size=8,
                            key=base.to_bytes(8, "little") + earlier.to_bytes(8, "little"))
        root = int.from_bytes(h.digest(), "little")
        keys.append([_mix64(root + (j + 1) * 0x9E3779B97F4A7C15) for j in range(first, first + n)])
    return keys


def _mix64(z: int) -> int:
    """A 64-bit finalizer: nearby inputs give unrelated outputs."""
    z &= 2**64 - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    """Cut after the stop string that ends first (the first listed on a tie): (text, that stop or None)."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best[0]):
            best = (i + len(s), s)
    return (text, None) if best is None else (text[: best[0]], best[1])


def check_prompt_length(n_prompt: int, max_tokens: int, limit: int | None, limit_text: str) -> None:
    """Refuse an empty prompt, or one that leaves no room for `max_tokens` within `limit` positions
    (`limit_text` names that limit in the message; None: no limit known)."""
    if n_prompt == 0:
        raise PonderError("prompt is empty after tokenization; the model needs at least one token")
    if limit is not None and n_prompt + max_tokens > limit:
        raise PonderError(f"prompt of {n_prompt} tokens plus max_tokens={max_tokens} exceeds {limit_text}; "
                          f"shorten the prompt or lower max_tokens (at most {max(0, limit - max_tokens)} prompt tokens)")


def empty_completions(prompt_tokens: list[int], params: SamplingParams) -> list[list[Completion]]:
    """What `max_tokens=0` asks for: `n` empty completions per prompt, ended by length."""
    return [[Completion("", [], "length", n, logprobs=[] if params.logprobs else None) for _ in range(params.n)]
            for n in prompt_tokens]


def weights_version(params) -> tuple:
    """Changes whenever an optimizer step (or any in-place write) changed one of `params`."""
    return tuple((p.data_ptr(), p._version) for p in params)
