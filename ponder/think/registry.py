"""Strategies by name, for the command line and configs; bad names and parameters fail in one line."""

from __future__ import annotations

from typing import Any

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.reward.base import Verifier
from ponder.think.base import Strategy
from ponder.think.mcts import MCTS
from ponder.think.sampling import ChainOfThought, MajorityVote
from ponder.think.search import DVTS, BeamSearch
from ponder.think.verified import BestOfN

STRATEGIES: dict[str, type[Strategy]] = {
    "cot": ChainOfThought, "majority": MajorityVote, "best_of_n": BestOfN, "beam": BeamSearch, "dvts": DVTS,
    "mcts": MCTS,
}
NEEDS_VERIFIER = ("best_of_n", "beam", "dvts", "mcts")


def build_strategy(name: str, engine: Engine, chat: ChatFormat, verifier: Verifier | None = None,
                   **params: Any) -> Strategy:
    """`name` built with `params` (None values are left to the strategy's defaults)."""
    if name not in STRATEGIES:
        raise PonderError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    params = {k: v for k, v in params.items() if v is not None}
    if name in NEEDS_VERIFIER:
        if verifier is None:
            raise PonderError(f"strategy {name!r} needs a verifier: pass --verifier PATH (a reward model)")
        params["verifier"] = verifier
    try:
        return STRATEGIES[name](engine, chat, **params)
    except TypeError as e:  # a parameter this strategy does not take
        raise PonderError(f"strategy {name!r}: {str(e).split(') ', 1)[-1] if ') ' in str(e) else e}") from e
