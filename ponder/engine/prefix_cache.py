"""Prompts prefilled in earlier calls, kept so that a prompt extending one prefills only its new tokens.

Step search sends, at every step, each beam's question and steps so far; the call before sent the same
text less the newest step. Revision prompts start with the question, continued chains with their prompt.
So the engine keeps each prefilled prompt's keys and values (by token ids, least recently used first out,
up to a byte budget) and, for a new prompt, looks for the longest kept one that its ids start with:

- the whole prompt kept: nothing to run;
- a shorter one kept: only the rest runs, on the kept keys and values (`extend`);
- none: the prompt is prefilled whole, as before.

A causal model gives every position the same keys, values and logits either way, up to float rounding.
Kept states belong to the weights that made them: any change to the weights (a training step) empties the
cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import torch
from transformers import DynamicCache

from ponder.engine.base import weights_version
from ponder.engine.fused import Prefix
from ponder.engine.kvcache import left_padded, left_padded_cache


class PrefixLRU:
    """Entries keyed by token ids, found by the longest kept prefix of a sequence, least recently used
    evicted past `max_bytes`, all dropped when the model's weights change (kept states are theirs)."""

    def __init__(self, model, max_bytes: float) -> None:
        self.model, self.max_bytes = model, max_bytes
        self._entries: OrderedDict[tuple[int, ...], tuple[object, int]] = OrderedDict()
        self._lengths: dict[int, int] = {}  # length -> entries of that length
        self._bytes = 0
        self._version: tuple | None = None

    def check_weights(self) -> None:
        version = weights_version(self.model.parameters())
        if version != self._version:
            self.clear()
            self._version = version

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
        self._bytes = 0

    def longest(self, ids: Sequence[int], lengths: Iterable[int] | None = None):
        """The entry of the longest kept prefix of `ids` (all of `ids` included), or None. `lengths`: the
        only prefix lengths worth trying (default: every length kept)."""
        tried = self._lengths if lengths is None else {n for n in lengths if n in self._lengths}
        for n in sorted((n for n in tried if n <= len(ids)), reverse=True):
            key = tuple(ids[:n])
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit[0]
        return None

    def put(self, ids: Sequence[int], entry, nbytes: int) -> None:
        key = tuple(ids)
        if self.max_bytes <= 0 or nbytes > self.max_bytes:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = (entry, nbytes)
        self._lengths[len(key)] = self._lengths.get(len(key), 0) + 1
        self._bytes += nbytes
        while self._bytes > self.max_bytes:
            old_key, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size
            self._lengths[len(old_key)] -= 1
            if not self._lengths[len(old_key)]:
                del self._lengths[len(old_key)]


class PrefixCache(PrefixLRU):
    """The engine's prefilled prompts: keys, values and last logits (`Prefix`)."""

    def __init__(self, model, max_bytes: int) -> None:
        super().__init__(model, max_bytes)
        self.hits = self.extended = self.tokens_saved = 0

    def reuse(self, prompts: list[str], ids: dict[str, list[int]], store: dict[str, Prefix], forward: Forward,
              pad: int, device: torch.device) -> list[str]:
        """Prompts kept whole go to `store` as they are, those that extend a kept one after one `extend`
        call; the rest, returned, are for the caller to prefill whole (and `put` here). Once per engine call:
        kept states made by other weights are dropped first."""
        self.check_weights()
        whole, partial = [], []
        for k in prompts:
            hit = self.longest(ids[k])
            if hit is None:
                whole.append(k)
            elif hit.length == len(ids[k]):
                store[k] = hit
                self.hits += 1
                self.tokens_saved += hit.length
            else:
                partial.append((k, hit))
        if partial:
            grown = extend(forward, self.model.config, [h for _, h in partial],
                           [ids[k][h.length:] for k, h in partial], pad, device)
            for (k, hit), prefix in zip(partial, grown):
                store[k] = prefix
                self.put(ids[k], prefix)
                self.extended += 1
                self.tokens_saved += hit.length
        return whole

    def put(self, ids: list[int], prefix: Prefix) -> None:  # type: ignore[override]
        if self.max_bytes <= 0 or tuple(ids) in self._entries:
            super().put(ids, prefix, 0)  # refreshes recency only
            return
        kept = Prefix([k.clone() for k in prefix.keys], [v.clone() for v in prefix.values], prefix.logits.clone(),
                      prefix.length)
        super().put(ids, kept, _nbytes(kept))


def _left_mask(lengths: list[int], width: int) -> torch.Tensor:
    """1 over the last `length` of `width` columns, per row."""
    return (torch.arange(width)[None] >= width - torch.tensor(lengths)[:, None]).long()


def _nbytes(p: Prefix) -> int:
    return sum(t.numel() * t.element_size() for t in (*p.keys, *p.values))


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]


def extend(forward: Forward, config, kept: list[Prefix], rests: list[list[int]], pad: int,
           device: torch.device) -> list[Prefix]:
    """Each kept prompt continued by its rest of tokens, in one forward: the prefixes' keys and values
    left-padded to a common length, the rests left-padded after them, so every row ends at the last column."""
    cache, width = left_padded_cache(config, [[(p.keys, p.values)] for p in kept])
    ids, rest_mask, rest_positions = left_padded(rests, pad)
    span = ids.shape[1]
    mask = torch.cat([_left_mask([p.length for p in kept], width), rest_mask], 1)
    positions = torch.tensor([p.length for p in kept])[:, None] + rest_positions
    logits = forward(ids.to(device), mask.to(device), positions.to(device), cache)
    out = []
    for r, (p, rest) in enumerate(zip(kept, rests)):
        new = slice(width + span - len(rest), width + span)
        out.append(Prefix([torch.cat([p.keys[li], layer.keys[r, :, new]], 1) for li, layer in enumerate(cache.layers)],
                          [torch.cat([p.values[li], layer.values[r, :, new]], 1)
                           for li, layer in enumerate(cache.layers)],
                          logits[r], p.length + len(rest)))
    return out
