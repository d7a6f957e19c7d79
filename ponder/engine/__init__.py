from ponder.engine.base import Capabilities, Completion, Engine, SamplingParams
