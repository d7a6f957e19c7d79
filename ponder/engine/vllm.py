"""Sampling with vLLM: the engine for real models on GPUs (an optional extra, imported only here).

Strategies, the server and the RL trainers use it through the same `Engine` contract as the
local sampler, so nothing above this module knows which one ran. The contract is kept
exactly, not approximately:

- prompts go in as token ids, encoded like the local engine's (no special tokens added: a
  rendered chat prompt already carries its markers), so prompt counts agree;
- the text is decoded here from vLLM's token ids, special tokens kept and cut after the
  first stop string, as the local engine does, so a stop string ends the text and an end
  token's text is kept; `finish_reason` is "stop" for a stop string, "eos" for an end token;
- greedy `n > 1` asks vLLM for one sample and copies it (vLLM may refuse greedy `n > 1`);
- a seed makes a call reproducible, not equal to the local engine's draws: vLLM seeds each
  request, so prompt i is seeded `seed + i * n`;
- `logprobs` are those of the sampled tokens under the temperature-scaled distribution,
  which is what GRPO's importance ratio needs (vLLM's `processed_logprobs` mode).

For RL, `follow(model)` ties the engine to a trained `torch.nn.Module`: before each
`generate` it pushes the module's weights into vLLM when any changed since the last push
(vLLM's in-process model `load_weights`), so rollouts always come from the current policy.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ponder import PonderError
from ponder.engine.base import (Capabilities, Completion, EngineStats, SamplingParams, StepListener, sample_keys,
                                check_prompt_length, cut_at_stop, empty_completions, weights_version)

__all__ = ["VLLMEngine", "import_vllm"]


def import_vllm():
    """The vllm module, or a one-line error saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise PonderError("engine vllm is an optional extra that is not installed here: pip install 'ponder[vllm]' "
                          "on a machine with a GPU, or use the local engine") from None
    return vllm


class VLLMEngine:
    """Batched sampling with a `vllm.LLM` over a Hugging Face model directory.

    `llm_kwargs` go to `vllm.LLM` (e.g. `gpu_memory_utilization`, `max_model_len`, `dtype`,
    `tensor_parallel_size`); `llm` passes an already built one. Under `torchrun` each rank
    builds its own in-process engine (vLLM's `external_launcher`), seeded by its rank.
    """

    capabilities = Capabilities(n=True, stop_strings=True, logprobs=True, prefix_continuation=True, streaming=False)

    def __init__(self, model_dir: str | Path, tokenizer, *, llm=None, seed: int = 0, **llm_kwargs: Any) -> None:
        vllm = import_vllm()
        self._sampling_params = vllm.SamplingParams
        self.tokenizer = tokenizer
        self.stats = EngineStats()
        self._policy = None
        self._pushed: tuple | None = None
        if llm is None:
            llm = vllm.LLM(**self._llm_args(str(model_dir), seed, llm_kwargs))
        self.llm = llm
        self.max_positions = _max_model_len(llm)

    @staticmethod
    def _llm_args(model_dir: str, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
        import torch.distributed as dist

        args: dict[str, Any] = {"model": model_dir, "tokenizer": model_dir, "seed": seed,
                                "enable_prefix_caching": True, "logprobs_mode": "processed_logprobs"}
        if dist.is_available() and dist.is_initialized():  # one engine per rank, in the rank's own process
            args.update(distributed_executor_backend="external_launcher", seed=seed + dist.get_rank())
        else:  # keep the model in this process, where `load_weights` can reach it
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        args.update(extra)
        return args

    # -- the Engine protocol -------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def generate(self, prompts: list[str], params: SamplingParams,
                 on_step: StepListener | None = None) -> list[list[Completion]]:
        if on_step is not None:
            raise PonderError("the vllm engine does not stream token by token; use the local engine for that")
        if isinstance(prompts, str):
            raise PonderError("generate takes a list of prompts, not a single string")
        prompts = list(prompts)
        if not prompts:
            return []
        ids = [self._encode(p) for p in prompts]
        for p in ids:
            self._check_length(len(p), params.max_tokens)
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(len(p) for p in ids)
        self.stats.prefilled_tokens += sum(len(p) for p in ids)
        if params.max_tokens == 0:  # vLLM wants at least one token
            self.stats.per_call.append(0)
            return empty_completions([len(p) for p in ids], params)
        self._sync()
        greedy = params.temperature == 0
        stops = tuple(s for s in params.stop if s)
        n = 1 if greedy else params.n

        def sampling(seed: int | None):
            return self._sampling_params(
                n=n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                stop=list(stops) or None, seed=seed, logprobs=0 if params.logprobs else None,
                include_stop_str_in_output=True, skip_special_tokens=False, spaces_between_special_tokens=False)

        # A seed is per request in vLLM: each prompt gets the key of its first sample row (`sample_keys`),
        # from the seed and the prompt itself, so that its samples do not depend on its batch-mates.
        sps = sampling(None) if params.seed is None or greedy else [
            sampling(k[0] & (2**63 - 1)) for k in sample_keys(params.seed, ids, 1, params.first_sample)]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids], sampling_params=sps, use_tqdm=False)
        results, generated = [], 0
        for p, out in zip(ids, outputs):
            comps = [self._completion(o, len(p), stops) for o in out.outputs]
            if greedy:
                comps = [dataclasses.replace(comps[0], token_ids=list(comps[0].token_ids)) for _ in range(params.n)]
            if len(comps) != params.n:
                raise PonderError(f"vllm returned {len(comps)} samples for a prompt, not the {params.n} asked")
            generated += sum(c.num_tokens for c in comps)
            results.append(comps)
        self.stats.generated_tokens += generated
        self.stats.per_call.append(generated)
        return results

    # -- following a trained policy -------------------------------------------

    def follow(self, model) -> "VLLMEngine":
        """Sample from `model`'s current weights from now on (pushed into vLLM when they change)."""
        self._policy, self._pushed = model, None
        return self

    def push_weights(self, model) -> None:
        """Load `model`'s weights into vLLM's copy and drop cached prefixes computed with the old ones."""
        runner = _runner_model(self.llm)
        runner.load_weights((name, p.detach()) for name, p in model.state_dict().items())
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def _sync(self) -> None:
        if self._policy is None:
            return
        key = weights_version(self._policy.parameters())
        if key != self._pushed:
            self.push_weights(self._policy)
            self._pushed = key

    # -- pieces ----------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_length(self, n_prompt: int, max_tokens: int) -> None:
        check_prompt_length(n_prompt, max_tokens, self.max_positions, f"vllm's max_model_len of {self.max_positions}")

    def _completion(self, out, n_prompt: int, stops: tuple[str, ...]) -> Completion:
        ids = list(out.token_ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        text, stop = cut_at_stop(text, stops)
        if out.finish_reason == "length":
            reason = "length"
        elif out.finish_reason == "abort":
            reason = "abort"
        else:  # "stop": a stop string (stop_reason is that string) or an end token (None or its id)
            reason = "stop" if isinstance(out.stop_reason, str) or stop is not None else "eos"
        logprobs = None
        if out.logprobs is not None:
            logprobs = [float(step[t].logprob) for t, step in zip(ids, out.logprobs)]
        return Completion(text=text, token_ids=ids, finish_reason=reason, prompt_tokens=n_prompt,
                          stop_reason=(stop or out.stop_reason) if reason == "stop" else None, logprobs=logprobs)


def _runner_model(llm):
    """vLLM's model module, where it runs in this process (`load_weights` lives there)."""
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        pass
    try:
        return llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
    except AttributeError:
        raise PonderError("this vLLM runs its model in another process, so weights cannot be pushed into it; "
                          "set VLLM_ENABLE_V1_MULTIPROCESSING=0 before starting") from None


def _max_model_len(llm) -> int | None:
    for path in (("llm_engine", "model_config", "max_model_len"),
                 ("llm_engine", "vllm_config", "model_config", "max_model_len")):
        obj = llm
        for name in path:
            obj = getattr(obj, name, None)
        if isinstance(obj, int):
            return obj
    return None
