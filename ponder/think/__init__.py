"""Strategies that turn a question into a Thought."""

from ponder.think.adaptive import Adaptive
from ponder.think.base import Node, Strategy, Thought, Usage
from ponder.think.effort import EFFORTS, strategy_for_effort
from ponder.think.mcts import MCTS
from ponder.think.policy import AdaptivePolicy, Tier
from ponder.think.registry import STRATEGIES, build_strategy
from ponder.think.revise import Revise
from ponder.think.sampling import ChainOfThought, MajorityVote
from ponder.think.search import DVTS, BeamSearch
from ponder.think.verified import BestOfN

__all__ = ["DVTS", "EFFORTS", "MCTS", "STRATEGIES", "Adaptive", "AdaptivePolicy", "BeamSearch", "BestOfN",
           "ChainOfThought", "MajorityVote", "Node", "Revise", "Strategy", "Thought", "Tier", "Usage", "build_strategy",
           "strategy_for_effort"]
