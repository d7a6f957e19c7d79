"""The fast local sampler: batched KV-cache sampling on any Hugging Face causal LM.

How a `generate(prompts, params)` call runs:

1. Every distinct prompt is tokenized once and checked against the context length.
2. The `len(prompts) * n` sequences are cut, in prompt order, into chunks of at
   most `max_batch` rows (a prompt's samples are adjacent rows). A chunk's
   prompts that were not prefilled yet go through the model's own forward
   together, once: left padding, attention mask, per-row position ids, logits
   of the last position only. A prompt whose samples span several chunks keeps
   its prefill until the last of them.
3. Decoding is a hand-written loop (`decode.py`): sample (temperature, nucleus, Gumbel-max
   draws from a seeded generator per row, so a row's tokens do not depend on its batch-mates),
   feed one token per live row, repeat.
   Rows that end (eos, a stop string) are dropped from the batch, cache and
   all, every few steps, so compute goes to live rows; max_tokens ends the rest.
4. The KV cache never reallocates per step. Keys/values live in contiguous
   `[rows, heads, capacity, head_dim]` slabs written in place, with a little
   slack; when it runs out, or rows are dropped, the filled part is repacked
   into a second buffer. Both buffers come from a pool kept across calls:
   fresh memory costs a page fault per page on CPU, and that, plus copying
   the whole cache on every step, is what makes `DynamicCache` slow.

   * Llama-family models (Llama, Mistral, Qwen2) decode through `LlamaDecoder`,
     a fused step over the model's own weights (q/k/v and gate/up fused; on
     CPU in fp32 the matmuls run through oneDNN with prepacked weights, about
     twice as fast as MKL at these shapes; re-fused whenever a training step
     changed the weights), and `PrefixState`: each
     distinct prompt's KV is stored ONCE and its `n` samples attend to it
     together (one matmul per prompt and head), while each row's generated
     KV sits in a slab that attention reads whole, slack masked.
   * Every other model decodes through its own forward with a slab cache
     (`SlabLayer`, a `DynamicLayer` that HF attention reads as usual), each
     prompt's KV broadcast to its rows. Models whose cache is not plain full
     attention (sliding windows, linear attention) use their own
     `DynamicCache`, expanded per row.

Stop strings are checked only for rows whose new token could complete one (a
per-vocabulary table of the tokens holding a stop string's last character), by
decoding a short tail of that row's tokens: no per-token detokenization
(`vocab_text.py`, which also turns streamed tokens into text deltas).

An engine is not thread-safe (it reuses its buffers); use one per thread.
"""

from __future__ import annotations

import inspect
from typing import Iterable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from ponder import PonderError
from ponder.engine.base import (Capabilities, Completion, EngineStats, SamplingParams, StepListener,
                                check_prompt_length, empty_completions, sample_keys)
from ponder.engine.decode import decode_loop
from ponder.engine.fused import LlamaDecoder, Prefix, PrefixState
from ponder.engine.kvcache import Pool, SlabLayer, cache_kwarg, grow, left_padded
from ponder.engine.prefix_cache import PrefixCache
from ponder.engine.vocab_text import VocabText

__all__ = ["LocalEngine"]


class LocalEngine:
    """Batched sampling with a KV cache on a local Hugging Face causal LM (CPU or GPU).

    `max_batch` caps the sequences decoded together; `compact_every` is how many
    steps finished rows may linger before the batch is compacted (it is
    compacted at once when a quarter of it is finished). `eos_token_ids`
    overrides the end tokens (default: the tokenizer's eos token and the
    model's generation-config eos ids); `add_special_tokens` is passed to the
    tokenizer (off: rendered chat prompts already carry their markers).
    `fast_path` uses a hand-fused decode step for Llama-family models (the
    prefill and every other model go through the model's own forward).
    `prefix_cache_mb` keeps prefilled prompts across calls, so a prompt that
    extends one prefills only its new tokens (`prefix_cache.py`; 0: off).
    """

    capabilities = Capabilities(n=True, stop_strings=True, logprobs=True, prefix_continuation=True, streaming=True)

    def __init__(
        self,
        model,
        tokenizer,
        max_batch: int = 64,
        *,
        compact_every: int = 4,
        eos_token_ids: Iterable[int] | None = None,
        add_special_tokens: bool = False,
        fast_path: bool = True,
        prefix_cache_mb: float = 256,
    ):
        if max_batch < 1:
            raise PonderError(f"max_batch must be >= 1, got {max_batch}")
        if compact_every < 1:
            raise PonderError(f"compact_every must be >= 1, got {compact_every}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.compact_every = compact_every
        self.add_special_tokens = add_special_tokens
        self.stats = EngineStats()
        if eos_token_ids is None:
            ids: set[int] = set()
            if getattr(tokenizer, "eos_token_id", None) is not None:
                ids.add(int(tokenizer.eos_token_id))
            gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            if gen_eos is not None:
                ids.update(int(i) for i in ([gen_eos] if isinstance(gen_eos, int) else gen_eos))
            eos_token_ids = ids
        self.eos_token_ids = sorted(set(int(i) for i in eos_token_ids))
        config = model.config
        self.max_positions = next(
            (getattr(config, k) for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
             if isinstance(getattr(config, k, None), int)),
            None,
        )
        params = inspect.signature(model.forward).parameters
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        self._cache_kw = cache_kwarg(model)
        self._fast = LlamaDecoder(model) if fast_path and LlamaDecoder.supports(model) else None
        self._pool = Pool()
        self._text = VocabText(tokenizer)
        self._pad = 0 if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        plain = all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)
        self.prefixes = PrefixCache(model, int(prefix_cache_mb * 2**20)) if plain and prefix_cache_mb > 0 else None

    # -- the Engine protocol -------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def free_buffers(self) -> None:
        """Drop the cache buffers kept for reuse between calls."""
        self._pool.clear()

    def count_tokens(self, text: str) -> int:
        return len(self._encode([text])[0])

    def generate(self, prompts: list[str], params: SamplingParams,
                 on_step: StepListener | None = None) -> list[list[Completion]]:
        """`n` completions per prompt. `on_step` sees each step's new tokens and may abort prompts."""
        if isinstance(prompts, str):
            raise PonderError("generate takes a list of prompts, not a single string")
        prompts = list(prompts)
        if not prompts:
            return []
        for p in prompts:
            if not isinstance(p, str):
                raise PonderError(f"prompts must be strings, got {type(p).__name__}")
        stops = tuple(s for s in params.stop if s)
        distinct = list(dict.fromkeys(prompts))
        ids = dict(zip(distinct, self._encode(distinct)))
        for p in distinct:
            self._check_length(len(ids[p]), params.max_tokens)
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(len(ids[p]) for p in prompts)
        if params.max_tokens == 0:
            self.stats.per_call.append(0)
            return empty_completions([len(ids[p]) for p in prompts], params)

        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        chunks = [rows[k : k + self.max_batch] for k in range(0, len(rows), self.max_batch)]
        keys = sample_keys(params.seed, [ids[p] for p in prompts], params.n, params.first_sample) \
            if params.temperature > 0 else None
        model = self.model
        was_training = model.training
        model.eval()
        generated = 0
        try:
            with torch.inference_mode():
                store: dict[str, Prefix] = {}
                last_use = {prompts[i]: c for c, chunk in enumerate(chunks) for i, _ in chunk}
                for c, chunk in enumerate(chunks):
                    distinct = list(dict.fromkeys(prompts[i] for i, _ in chunk))
                    emit = self._text.listener(chunk, on_step) if on_step is not None else None
                    row_keys = [keys[i][j] for i, j in chunk] if keys is not None else None
                    out = self._run_chunk(chunk, prompts, ids, distinct, store, params, stops, row_keys, emit)
                    for (i, j), comp in zip(chunk, out):
                        results[i][j] = comp
                        generated += comp.num_tokens
                    for k in [k for k in store if last_use[k] == c]:
                        del store[k]  # no later chunk needs this prompt's prefill
        finally:
            model.train(was_training)
        self.stats.generated_tokens += generated
        self.stats.per_call.append(generated)
        return results  # type: ignore[return-value]

    # -- pieces ----------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), add_special_tokens=self.add_special_tokens)
        return [list(x) for x in enc["input_ids"]]

    def _check_length(self, n_prompt: int, max_tokens: int) -> None:
        check_prompt_length(n_prompt, max_tokens, self.max_positions,
                            f"the model's context of {self.max_positions} positions")

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        kw = {self._keep_kw: 1} if self._keep_kw else {}
        kw[self._cache_kw] = cache
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **kw)
        return out.logits[:, -1].float()

    def _prefill(self, token_lists: list[list[int]]):
        """One batched forward over left-padded prompts: (cache, last logits [P, V], padded length)."""
        dev = self.device
        input_ids, mask, position_ids = left_padded(token_lists, self._pad)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids.to(dev), mask.to(dev), position_ids.to(dev), cache)
        return cache, logits, input_ids.shape[1]

    def _run_chunk(self, chunk, prompts, ids, distinct, store, params, stops, row_keys, emit) -> list[Completion]:
        dev = self.device
        rows_prompt = [prompts[i] for i, _ in chunk]
        lengths = [len(ids[p]) for p in rows_prompt]
        B, Lp = len(chunk), max(lengths)
        limit = Lp + params.max_tokens

        missing = [k for k in distinct if k not in store]
        self.stats.prefilled_tokens += sum(len(ids[k]) for k in missing)
        if missing and self.prefixes is not None:
            saved = self.prefixes.tokens_saved
            missing = self.prefixes.reuse(missing, ids, store, self._forward, self._pad, dev)
            self.stats.prefilled_tokens -= self.prefixes.tokens_saved - saved
        cache = None
        if missing:
            pcache, plogits, width = self._prefill([ids[k] for k in missing])
            if all(type(layer) is DynamicLayer for layer in pcache.layers):
                for r, k in enumerate(missing):
                    n = len(ids[k])
                    store[k] = Prefix(
                        keys=[layer.keys[r, :, width - n :] for layer in pcache.layers],
                        values=[layer.values[r, :, width - n :] for layer in pcache.layers],
                        logits=plogits[r], length=n)
                    if self.prefixes is not None:
                        self.prefixes.put(ids[k], store[k])
            else:
                # Not plain full attention (sliding windows, linear attention): decode with the
                # model's own cache, expanded per row. Nothing is stored, so missing == distinct.
                pos_of = {k: r for r, k in enumerate(distinct)}
                sel = torch.tensor([pos_of[p] for p in rows_prompt], device=dev)
                pcache.batch_select_indices(sel)
                cache, logits, Lp = pcache, plogits.index_select(0, sel), width
        T = params.max_tokens
        # attention mask over the whole future: pads 0, every generated position 1
        mask = torch.ones((B, Lp + T), dtype=torch.long, device=dev)
        for r, n in enumerate(lengths):
            if n < Lp:
                mask[r, : Lp - n] = 0
        rows = {"mask": mask, "pos": torch.tensor(lengths, dtype=torch.long, device=dev)}
        if cache is None and self._fast is not None:
            spans = _spans(rows_prompt)
            first = store[rows_prompt[0]]
            dtype = first.keys[0].dtype
            state = PrefixState(self._pool, [store[p] for p, _, _ in spans], [r1 - r0 for _, r0, r1 in spans],
                                 Lp, T, dtype, dev)
            self._fast.prepare(limit, dev, dtype, B)
            logits = torch.stack([store[p].logits for p in rows_prompt])
            fast = self._fast

            def step(tok, rows, cur):
                return fast.step(tok, rows["pos"], state)

            return decode_loop(state, logits, rows, step, Lp, lengths, params, stops, row_keys, self._text,
                               self.eos_token_ids, self.compact_every, emit)
        if cache is None:
            cache, logits = self._assemble(rows_prompt, lengths, store, Lp, limit, T)

        def step(tok, rows, cur):
            return self._forward(tok[:, None], rows["mask"][:, : cur + 1], rows["pos"][:, None], cache)

        return decode_loop(cache, logits, rows, step, Lp, lengths, params, stops, row_keys, self._text,
                           self.eos_token_ids, self.compact_every, emit)

    def _assemble(self, rows_prompt, lengths, store, Lp, limit, max_tokens):
        """A slab cache for the chunk: each prompt's prefill copied (broadcast) to its rows."""
        B = len(rows_prompt)
        first = store[rows_prompt[0]]
        capacity = grow(Lp, Lp + 1, limit)
        spans = _spans(rows_prompt)
        pad = Lp - min(lengths)
        layers = []
        for li in range(len(first.keys)):
            h, _, d = first.keys[li].shape
            layer = SlabLayer(self._pool, (li,), B, h, capacity, d, Lp, limit,
                               first.keys[li].dtype, first.keys[li].device)
            for buf, which in ((layer.kbuf, "keys"), (layer.vbuf, "values")):
                if pad:
                    buf[:, :, :pad].zero_()  # pad slots: masked, but must be finite
                for p, r0, r1 in spans:
                    pre = store[p]
                    buf[r0:r1, :, Lp - pre.length : Lp] = getattr(pre, which)[li].unsqueeze(0)
            layers.append(layer)
        logits = torch.stack([store[p].logits for p in rows_prompt])
        return Cache(layers=layers), logits


def _spans(rows_prompt: list[str]) -> list[tuple[str, int, int]]:
    """(prompt, first row, end row) for each run of rows with the same prompt."""
    spans: list[tuple[str, int, int]] = []
    for r, p in enumerate(rows_prompt):
        if spans and spans[-1][0] == p:
            spans[-1] = (p, spans[-1][1], r + 1)
        else:
            spans.append((p, r, r + 1))
    return spans
