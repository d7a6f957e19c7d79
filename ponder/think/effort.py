"""`reasoning_effort` presets: how much thinking low, medium and high buy.

Two families of presets, measured side by side by `bench/effort.py` (BENCHMARKS.md, "Effort presets"):

- `vote`: low is one greedy chain, medium a majority of 5 sampled chains, high a majority of 16.
- `adaptive`: low is the same greedy chain; medium and high first probe with 4 chains (one greedy).
  medium stops there when 3 of the 4 agree, and otherwise samples more in waves of 4, up to 8 chains,
  stopping as soon as 3 in 4 agree. high stops only when all 4 agree, and otherwise samples up to 16
  (`ponder/think/adaptive.py`). So a question whose answers agree costs 4 chains, not 5 or 16.

What `ponder ask`, `ponder serve` and the demo use (`DEFAULT_PRESET`; `--effort-preset` picks one family for
medium and high instead): medium is adaptive, which over 2,000 questions of five families (400 each) was
+1.2 points (SE 0.8) against the 5-vote for about the same tokens. high stays the 16-vote: the adaptive high
was 1.4 points (SE 0.7) behind it with 53% of its tokens, and three other high tables (a pool of 20, a probe
of 8, a fresh 16-vote after a disputed probe) were 0.9-1.2 points behind (BENCHMARKS.md, "Effort presets").
A table fitted offline (`bench/effort_fit.py`) is level with it (-0.3, SE 0.7) with a third of its tokens, but
spends less than medium on three of the five families: a second medium, not a high.

A request's token budget (`max_completion_tokens`) caps every preset on top of its chain count.
"""

from __future__ import annotations

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.think.adaptive import Adaptive
from ponder.think.base import AnswerKey, Strategy, default_key
from ponder.think.policy import AdaptivePolicy, Tier
from ponder.think.sampling import ChainOfThought, MajorityVote

EFFORTS = ("low", "medium", "high")
PRESETS = ("vote", "adaptive")
DEFAULT_PRESET = {"low": "vote", "medium": "adaptive", "high": "vote"}  # low: one greedy chain either way
VOTES = {"medium": 5, "high": 16}
ADAPTIVE_POLICIES = {
    "medium": AdaptivePolicy(probe=4, wave=4, tiers=(Tier("easy", 0.25, "stop"), Tier("disputed", 1.0, "sample", chains=8))),
    "high": AdaptivePolicy(probe=4, wave=4, tiers=(Tier("unanimous", 0.0, "stop"), Tier("disputed", 1.0, "sample", chains=16))),
}


def check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        raise PonderError(f"unknown effort preset {preset!r}; choose {' or '.join(PRESETS)}")


def preset_of(effort: str, preset: str | None) -> str:
    """The preset an effort runs: `preset` where given, else the effort's default."""
    if effort not in EFFORTS:
        raise PonderError(f"unknown reasoning effort {effort!r}; choose low, medium or high")
    check_preset(preset)
    return DEFAULT_PRESET[effort] if preset is None else preset


def strategy_for_effort(effort: str, engine: Engine, chat: ChatFormat, max_tokens: int = 768,
                        seed: int | None = 0, answer_key: AnswerKey = default_key,
                        temperature: float | None = None, top_p: float = 1.0, preset: str | None = None) -> Strategy:
    """The strategy an effort level stands for (see the module docstring).

    `temperature` replaces the preset's own (0 for low, 0.8 for the samples) when given.
    """
    preset = preset_of(effort, preset)
    kw = dict(max_tokens=max_tokens, answer_key=answer_key, seed=seed, top_p=top_p)
    if temperature is not None:
        kw["temperature"] = temperature
    if effort == "low":
        return ChainOfThought(engine, chat, **kw)
    if preset == "adaptive":
        return Adaptive(engine, chat, policy=ADAPTIVE_POLICIES[effort], **kw)
    return MajorityVote(engine, chat, n=VOTES[effort], **kw)
