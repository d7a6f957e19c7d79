"""The adaptive strategy's policy: how the probe is read into a difficulty, and the table of what to do
about it (`ponder/think/adaptive.py` runs it).

Difficulty, in [0, 1], from the probe's chains:

- without a verifier, 1 - agreement, the share of probe chains that gave the most common answer (a chain
  without an answer agrees with nothing);
- with one, 1 - ((1 - w) * agreement + w * mean verifier score of the probe chains (0 where no answer)),
  `w` = `score_weight`.

The first row of the table whose `upto` is at least the difficulty says what follows (the defaults):

| tier     | difficulty <= | with a verifier                            | without a verifier            |
| -------- | ------------- | ------------------------------------------ | ----------------------------- |
| easy     | 0.25          | stop: the probe's answer                   | stop                          |
| medium   | 0.55          | sample up to 8 chains, weighted best-of-N  | sample up to 8, majority vote |
| hard     | 0.85          | step-level beam search with what is left   | sample up to 16, majority     |
| hopeless | 1.0           | stop: more compute rarely helps here       | stop                          |

The table is data: `AdaptivePolicy.from_dict` and `load_policy` read one from a config, e.g. one fitted to
the accuracy per difficulty bin that `ponder eval scaling` measures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ponder import PonderError


@dataclass(frozen=True)
class Tier:
    """One row of the policy: what to do with a question whose estimated difficulty is at most `upto`."""

    name: str
    upto: float
    action: str = "stop"  # stop, sample, or a strategy name (beam, mcts, dvts, revise, best_of_n, ...)
    chains: int = 0  # sample: the most chains in all, the probe's included
    share: float = 1.0  # the fraction of the budget left (after the probe) this tier may spend
    params: dict[str, Any] = field(default_factory=dict)  # for a strategy; unset sizes scale with the budget
    unverified: str = "sample"  # the action instead, when `action` needs a verifier and none is given
    unverified_chains: int = 0  # `chains` for that action (0: the same as `chains`)


DEFAULT_TIERS = (
    Tier("easy", 0.25, "stop"),
    Tier("medium", 0.55, "sample", chains=8),
    Tier("hard", 0.85, "beam", chains=16, unverified="sample"),
    Tier("hopeless", 1.0, "stop"),
)


@dataclass(frozen=True)
class AdaptivePolicy:
    """How the probe is drawn and read, and the table of tiers (first matching row wins)."""

    probe: int = 4  # chains in the probe: one greedy, the rest sampled
    wave: int = 4  # chains drawn at a time when a tier samples more
    score_weight: float = 0.5  # with a verifier: the verifier's weight in the difficulty estimate
    slack: float = 1.25  # a sampled chain is budgeted at slack x the greedy chain's length
    tiers: tuple[Tier, ...] = DEFAULT_TIERS

    def __post_init__(self) -> None:
        for what, v, least in (("probe", self.probe, 1), ("wave", self.wave, 1)):
            if v < least:
                raise PonderError(f"adaptive policy: {what} must be >= {least}, got {v}")
        if not 0 <= self.score_weight <= 1:
            raise PonderError(f"adaptive policy: score_weight must be in [0, 1], got {self.score_weight}")
        if self.slack < 1:
            raise PonderError(f"adaptive policy: slack must be >= 1, got {self.slack}")
        if not self.tiers or self.tiers[-1].upto < 1:
            raise PonderError("adaptive policy: the last tier must cover difficulty 1.0 (upto: 1.0)")
        for a, b in zip(self.tiers, self.tiers[1:]):
            if b.upto <= a.upto:
                raise PonderError(f"adaptive policy: tier {b.name!r} must have a larger upto than {a.name!r}")
        for t in self.tiers:
            if not 0 <= t.share <= 1 or t.chains < 0 or t.unverified_chains < 0:
                raise PonderError(f"adaptive policy: tier {t.name!r} needs share in [0, 1] and chains >= 0")
            if "adaptive" in (t.action, t.unverified):
                raise PonderError(f"adaptive policy: tier {t.name!r} cannot delegate to adaptive itself")

    def tier(self, difficulty: float) -> Tier:
        return next(t for t in self.tiers if difficulty <= t.upto)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptivePolicy":
        """A policy from a config mapping: the fields above, `tiers` a list of mappings of Tier's fields."""
        if not isinstance(d, dict):
            raise PonderError(f"an adaptive policy must be a mapping, got {type(d).__name__}")
        known = {"probe", "wave", "score_weight", "slack", "tiers"}
        if set(d) - known:
            raise PonderError(f"adaptive policy: unknown field {sorted(set(d) - known)[0]!r}")
        kw = {k: v for k, v in d.items() if k != "tiers"}
        if "tiers" in d:
            try:
                kw["tiers"] = tuple(Tier(**t) for t in d["tiers"])
            except TypeError as e:
                raise PonderError(f"adaptive policy: bad tier ({str(e).split(') ', 1)[-1]})") from None
        return cls(**kw)


def estimate(keys: Sequence[str | None], scores: Sequence[float | None] | None, score_weight: float
             ) -> tuple[float, float, float | None]:
    """(difficulty, agreement, mean score) of chains by their answer keys (None: no answer) and, with a
    verifier, their scores."""
    if not keys:
        return 1.0, 0.0, None
    votes = Counter(k for k in keys if k is not None)
    agreement = votes.most_common(1)[0][1] / len(keys) if votes else 0.0
    if scores is None:
        return 1.0 - agreement, agreement, None
    mean = sum(s if (s is not None and k is not None) else 0.0 for k, s in zip(keys, scores)) / len(keys)
    return 1.0 - ((1 - score_weight) * agreement + score_weight * mean), agreement, mean


def load_policy(path: str) -> AdaptivePolicy:
    """An `AdaptivePolicy` from a YAML (or JSON) file of its fields."""
    from ponder.config import read_mapping

    return AdaptivePolicy.from_dict(read_mapping(path, "policy file"))
