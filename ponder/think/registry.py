"""Strategies by name, for the command line and configs; bad names and parameters fail in one line."""

from __future__ import annotations

from typing import Any

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.reward.base import Verifier
from ponder.think.adaptive import Adaptive
from ponder.think.base import Strategy
from ponder.think.mcts import MCTS
from ponder.think.revise import Revise
from ponder.think.sampling import ChainOfThought, MajorityVote
from ponder.think.search import DVTS, BeamSearch
from ponder.think.verified import BestOfN

STRATEGIES: dict[str, type[Strategy]] = {
    "cot": ChainOfThought, "majority": MajorityVote, "best_of_n": BestOfN, "beam": BeamSearch, "dvts": DVTS,
    "mcts": MCTS, "revise": Revise, "adaptive": Adaptive,
}
NEEDS_VERIFIER = ("best_of_n", "beam", "dvts", "mcts")
TAKES_VERIFIER = ("revise", "adaptive")  # use one when given, work without
WHOLE_CHAINS = ("cot", "majority", "best_of_n")  # sample whole chains; answer_reserve makes them answer anytime


def scaled_params(name: str, chains: int) -> dict[str, Any]:
    """Sizes that make strategy `name` spend about `chains` whole chains' worth of tokens.

    majority, best_of_n and dvts sample `chains` chains (dvts in subtrees of 4); beam keeps chains/4 beams
    of 4 expansions (Snell et al.'s N/M with M = 4); revise makes `chains` attempts; mcts runs 4 simulations
    per chain (3 expansions of one step each), which a budget cuts where chains are short. cot and adaptive
    take no sizes: a budget is all they need.
    """
    if chains < 1:
        raise PonderError(f"chains must be >= 1, got {chains}")
    if name in ("majority", "best_of_n", "revise"):
        return {"n": chains}
    if name == "beam":
        return {"beam_width": max(1, chains // 4), "expansions": min(4, chains)}
    if name == "dvts":
        return {"n": chains, "expansions": min(4, chains)}
    if name == "mcts":
        return {"simulations": 4 * chains, "expansions": min(3, chains)}
    return {}


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
    elif name in TAKES_VERIFIER and verifier is not None:
        params["verifier"] = verifier
    try:
        return STRATEGIES[name](engine, chat, **params)
    except TypeError as e:  # a parameter this strategy does not take
        raise PonderError(f"strategy {name!r}: {str(e).split(') ', 1)[-1] if ') ' in str(e) else e}") from e
