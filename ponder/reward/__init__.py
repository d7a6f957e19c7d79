"""Verifiers: process and outcome reward models that score chains of thought step by step.

`RewardModel` is imported on first use, so strategies can name the `Verifier`
contract without loading torch and transformers.
"""

from ponder.reward.base import AGGREGATIONS, Verifier, VerifierStats, aggregate, check_aggregation, rate

__all__ = ["AGGREGATIONS", "RewardModel", "Verifier", "VerifierStats", "aggregate", "check_aggregation", "rate"]


def __getattr__(name: str):
    if name == "RewardModel":
        from ponder.reward.prm import RewardModel

        return RewardModel
    raise AttributeError(f"module 'ponder.reward' has no attribute {name!r}")
