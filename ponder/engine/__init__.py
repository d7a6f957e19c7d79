from ponder.engine.base import Capabilities, Completion, Engine, EngineStats, SamplingParams

__all__ = ["Capabilities", "Completion", "Engine", "EngineStats", "LocalEngine", "SamplingParams"]


def __getattr__(name: str):
    if name == "LocalEngine":  # imported lazily: it pulls in torch and transformers
        from ponder.engine.local import LocalEngine

        return LocalEngine
    raise AttributeError(f"module 'ponder.engine' has no attribute {name!r}")
