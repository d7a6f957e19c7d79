"""The sampler's KV storage: contiguous slabs written in place, from a pool kept across calls.

Fresh memory costs a page fault per page on CPU, and copying the whole cache on
every step (as a growing `DynamicCache` does) is what makes naive decoding slow;
a slab grows with slack and is repacked into a second pooled buffer only when
it runs out or rows are dropped.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@lru_cache(maxsize=None)
def _cache_kwarg(forward_owner: type) -> str:
    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


def cache_kwarg(model) -> str:
    """The name a model's forward takes its key/value cache by: `cache` from transformers 5.24, where
    `past_key_values` is deprecated (to go in 5.40), and `past_key_values` before."""
    return _cache_kwarg(type(model))


def returned_cache(out: Any):
    """The key/value cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class Pool:
    """Flat buffers kept between calls and reused.

    On CPU, touching fresh memory costs a page fault per page (very slow on some
    VMs), which is what makes a cache that reallocates every step so slow. The
    slab buffers are taken from here, so a warm engine decodes without page faults.
    """

    def __init__(self) -> None:
        self.bufs: dict[tuple, torch.Tensor] = {}

    def get(self, key: tuple, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        t = self.bufs.get(key)
        if t is None or t.numel() < numel or t.dtype != dtype or t.device != device:
            self.bufs.pop(key, None)
            grow = numel if t is None else max(numel, t.numel() * 3 // 2)
            t = torch.empty(grow, dtype=dtype, device=device)
            self.bufs[key] = t
        return t

    def clear(self) -> None:
        self.bufs.clear()


def left_padded(token_lists: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) of sequences left-padded to the longest, so every one ends at the
    last column: the layout a batched prefill reads its next-token logits from."""
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for r, t in enumerate(token_lists):
        ids[r, width - len(t):] = torch.tensor(t, dtype=torch.long)
        mask[r, width - len(t):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def left_padded_cache(config, rows: Sequence[Sequence[tuple[list[torch.Tensor], list[torch.Tensor]]]]
                      ) -> tuple[DynamicCache, int]:
    """A cache of kept keys and values, each row left-padded to the longest (its width, returned), so that
    new tokens run after all of them. A row is its pieces in order, each (keys, values) per layer as
    [heads, tokens, head dim]; a row without pieces is all padding."""
    lengths = [sum(keys[0].shape[1] for keys, _ in pieces) for pieces in rows]
    width = max(lengths, default=0)
    cache = DynamicCache(config=config)
    if not width:
        return cache, 0
    first = next(keys for pieces in rows for keys, _ in pieces)
    for li, template in enumerate(first):
        k = template.new_zeros((len(rows), template.shape[0], width, template.shape[2]))
        v = torch.zeros_like(k)
        for r, pieces in enumerate(rows):
            at = width - lengths[r]
            for keys, values in pieces:
                n = keys[li].shape[1]
                k[r, :, at : at + n], v[r, :, at : at + n] = keys[li], values[li]
                at += n
        cache.update(k, v, li)
    return cache, width


def grow(capacity: int, needed: int, limit: int) -> int:
    """Grow by a sixth (at least 16 slots): repacks stay rare, slack stays small."""
    return min(max(needed, capacity + max(16, capacity // 6)), max(limit, needed))


class SlabLayer(DynamicLayer):
    """A full-attention cache layer in a contiguous `[rows, heads, capacity, head_dim]` buffer.

    New positions are written in place. When the capacity is reached, or rows are
    dropped, the filled part is repacked into a second buffer (the two alternate,
    both from the pool). Slots past `length` are always zero, so a reader may
    attend over the whole buffer with those slots masked.
    """

    def __init__(self, pool: Pool, key: tuple, rows: int, heads: int, capacity: int, head_dim: int,
                 length: int, limit: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.pool, self.key = pool, key
        self.rows, self.heads, self.cap, self.head_dim = rows, heads, capacity, head_dim
        self.length, self.limit = length, limit
        self.dtype, self.device = dtype, device
        self.side = 0
        self.is_initialized = True
        self.kbuf, self.vbuf = self._buf("k", 0, rows, capacity), self._buf("v", 0, rows, capacity)
        self.kbuf[:, :, length:].zero_()  # unused slots are masked, but must be finite
        self.vbuf[:, :, length:].zero_()
        self._views()

    def _buf(self, which: str, side: int, rows: int, capacity: int) -> torch.Tensor:
        """A physical buffer from the pool."""
        numel = rows * self.heads * capacity * self.head_dim
        flat = self.pool.get((*self.key, which, side), numel, self.dtype, self.device)
        return flat[:numel].view(rows, self.heads, capacity, self.head_dim)

    def _views(self) -> None:
        self.keys = self.kbuf[:, :, : self.length]
        self.values = self.vbuf[:, :, : self.length]

    def _repack(self, rows: torch.Tensor | None, capacity: int) -> None:
        n = self.rows if rows is None else len(rows)
        other = 1 - self.side
        out = []
        for which, src in (("k", self.kbuf), ("v", self.vbuf)):
            dst = self._buf(which, other, n, capacity)
            if rows is not None and capacity == self.cap:
                torch.index_select(src, 0, rows, out=dst)  # the zero slack comes along
            else:
                part = src[:, :, : self.length]
                dst[:, :, : self.length] = part if rows is None else part.index_select(0, rows)
                dst[:, :, self.length :].zero_()
            out.append(dst)
        self.kbuf, self.vbuf = out
        self.side, self.rows, self.cap = other, n, capacity
        self._views()

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self.cap:
            self._repack(None, grow(self.cap, end, self.limit))
        self.kbuf[:, :, self.length : end] = key_states
        self.vbuf[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one position ([rows, heads, head_dim]); the fast path reads the whole buffer."""
        if self.length == self.cap:
            self._repack(None, grow(self.cap, self.length + 1, self.limit))
        self.kbuf[:, :, self.length] = k
        self.vbuf[:, :, self.length] = v
        self.length += 1

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._repack(indices.to(self.device), self.cap)

    def batch_repeat_interleave(self, repeats: int) -> None:
        rows = torch.arange(self.rows, device=self.device).repeat_interleave(repeats)
        self._repack(rows, self.cap)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of tokens to remove")
        new = max(0, self.length + tokens_to_remove)
        self.kbuf[:, :, new : self.length].zero_()
        self.vbuf[:, :, new : self.length].zero_()
        self.length = new
        self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def get_max_length(self) -> int:
        return -1
