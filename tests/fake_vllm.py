"""A stand-in for the `vllm` package, for machines without a GPU: the parts of its API that
`ponder.engine.vllm` uses, with vLLM's semantics where they differ from ponder's contract.

- `LLM.generate` takes `{"prompt_token_ids": [...]}` prompts and returns RequestOutputs whose
  CompletionOutputs carry `text`, `token_ids` (an end token included), `finish_reason` "stop"
  for both a stop string and an end token (`stop_reason` the string, or None), "length";
- the text of an end token is left out, a stop string is kept only with
  `include_stop_str_in_output`;
- `logprobs=0` gives, per position, a dict token id -> Logprob with the sampled token and
  (as vLLM may) another one;
- greedy with `n > 1` is refused, as some vLLM versions do;
- the model lives at `llm_engine.model_executor.driver_worker.model_runner.model`, whose
  `load_weights` copies named tensors in.

Underneath it samples with ponder's local engine on its own copy of the model.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

from ponder.engine.base import SamplingParams as PonderParams
from ponder.engine.local import LocalEngine
from ponder.model.loading import load_tokenizer


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.temperature == 0 and self.n > 1:
            raise ValueError("n must be 1 when using greedy sampling")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class _Runner:
    def __init__(self, model) -> None:
        self.model = model
        self.loads = 0
        model.load_weights = self.load_weights  # vLLM's model classes have this method

    def load_weights(self, weights) -> None:
        self.loads += 1
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                if name in params:
                    params[name].copy_(tensor)


class LLM:
    built: list["LLM"] = []

    def __init__(self, model: str, tokenizer: str | None = None, seed: int = 0, **kwargs) -> None:
        self.kwargs = {"model": model, "tokenizer": tokenizer, "seed": seed, **kwargs}
        self.tokenizer = load_tokenizer(tokenizer or model)
        net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.runner = _Runner(net)
        worker = types.SimpleNamespace(model_runner=self.runner)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker),
                                                model_config=types.SimpleNamespace(
                                                    max_model_len=kwargs.get("max_model_len", 1024)))
        self.local = LocalEngine(net, self.tokenizer)
        self.prefix_resets = 0
        self.calls: list[tuple[list, SamplingParams]] = []
        LLM.built.append(self)

    def reset_prefix_cache(self) -> None:
        self.prefix_resets += 1

    def generate(self, prompts, sampling_params, use_tqdm: bool = True) -> list[RequestOutput]:
        """One SamplingParams for all prompts, or a list of one per prompt (each its own request)."""
        self.calls.append((prompts, sampling_params))
        per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(per_prompt) == len(prompts)
        return [self._request(p, sp) for p, sp in zip(prompts, per_prompt)]

    def _request(self, p, sp: SamplingParams) -> RequestOutput:
        assert isinstance(p, dict) and set(p) == {"prompt_token_ids"}, p
        text = self.tokenizer.decode(p["prompt_token_ids"], skip_special_tokens=False)
        params = PonderParams(n=sp.n, temperature=sp.temperature, top_p=sp.top_p, max_tokens=sp.max_tokens,
                              stop=tuple(sp.stop or ()), seed=sp.seed, logprobs=sp.logprobs is not None)
        comps = self.local.generate([text], params)[0]
        outputs = []
        for i, c in enumerate(comps):
            ids = list(c.token_ids)
            shown = ids[:-1] if c.finish_reason == "eos" else ids
            text = self.tokenizer.decode(shown, skip_special_tokens=sp.skip_special_tokens)
            if c.finish_reason == "stop" and not sp.include_stop_str_in_output:
                text = text[: len(text) - len(c.stop_reason)]
            lps = None
            if c.logprobs is not None:  # the sampled token, and a decoy beside it
                lps = [{t: Logprob(lp, 1), (t + 1) % len(self.tokenizer): Logprob(-99.0, 2)}
                       for t, lp in zip(ids, c.logprobs)]
            reason = {"eos": "stop", "stop": "stop", "length": "length", "abort": "abort"}[c.finish_reason]
            outputs.append(CompletionOutput(i, text, ids, lps, reason,
                                            c.stop_reason if c.finish_reason == "stop" else None))
        return RequestOutput(list(p["prompt_token_ids"]), outputs)


def module() -> types.ModuleType:
    m = types.ModuleType("vllm")
    m.LLM, m.SamplingParams = LLM, SamplingParams
    return m
