"""The OpenAI-compatible server: `ponder serve`."""

from ponder.serve.app import ServeConfig, StrategyKey, create_app
from ponder.serve.build import build_app

__all__ = ["ServeConfig", "StrategyKey", "build_app", "create_app"]
