"""Strategies that turn a question into a Thought."""

from ponder.think.base import Node, Strategy, Thought, Usage
from ponder.think.effort import EFFORTS, strategy_for_effort
from ponder.think.sampling import ChainOfThought, MajorityVote

__all__ = ["EFFORTS", "ChainOfThought", "MajorityVote", "Node", "Strategy", "Thought", "Usage", "strategy_for_effort"]
