"""Scoring chains that share prefixes, within a call and across calls: each prefix goes through the body once.

Step search asks the verifier about every candidate step. The candidates of one parent are the same
question and steps with one new step each, and the parent itself was a candidate one call before. Run
whole, each candidate pays for all of that again: with 4 expansions of a 70-token prefix and 8-token
steps, 312 tokens where 32 would do once the parent's 70 are kept.

So the body's keys, values and last hidden states are kept per scored sequence, as `Segment`s: a
parent's segment plus the tokens it adds, so a candidate stores only its own step. A call first runs the
prefixes its chains share (cut at a step boundary), then every chain's rest, each on the longest kept
sequence that it extends (`KeptPrefixes`, least recently used out past a byte budget, emptied when the
weights change). A causal body gives every position the same hidden state either way, up to float
rounding, because no position sees what comes after it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from ponder.engine.kvcache import cache_kwarg, left_padded_cache, returned_cache
from ponder.engine.prefix_cache import PrefixLRU

if TYPE_CHECKING:
    from ponder.reward.prm import Encoded


@dataclass(eq=False)
class Segment:
    """The body's state over a token sequence: its parent's, then this segment's own tokens."""

    parent: Segment | None
    keys: list[torch.Tensor]  # per layer [heads, own tokens, head dim]
    values: list[torch.Tensor]
    hidden: torch.Tensor  # [own tokens, hidden size]
    length: int  # tokens from the start through this segment

    def lineage(self) -> list[Segment]:
        out, s = [], self
        while s is not None:
            out.append(s)
            s = s.parent
        return out[::-1]

    def all_hidden(self) -> torch.Tensor:
        return torch.cat([s.hidden for s in self.lineage()])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values, self.hidden))


class KeptPrefixes(PrefixLRU):
    """Segments by token ids. Bytes count each segment's own tokens; an evicted segment stays in memory
    while a kept one extends it."""

    def put_segment(self, ids: Sequence[int], seg: Segment) -> None:
        self.put(ids, seg, seg.nbytes())


def prefix_cuts(encoded: Sequence[Encoded], prompt_lens: Sequence[int]) -> list[int]:
    """Where each chain's shared part ends: after the last scored piece (or the prompt) whose prefix another
    chain in the batch has too, short of its last piece; after the prompt where none is shared."""
    seen = Counter(tuple(e.ids[:c]) for e, n in zip(encoded, prompt_lens) for c in set(cut_points(e, n)[:-1]))
    return [max((c for c in cut_points(e, n)[:-1] if seen[tuple(e.ids[:c])] > 1), default=n)
            for e, n in zip(encoded, prompt_lens)]


def cut_points(e: Encoded, prompt_len: int) -> list[int]:
    """Prefix lengths at which a chain may meet another or a kept sequence: the prompt, after each scored
    piece, and the whole chain last."""
    return sorted({prompt_len, len(e.ids), *(p + 1 for p in e.positions[:-1] if p + 1 > prompt_len)})


@torch.inference_mode()
def run_rests(body, bases: Sequence[Segment | None], rests: Sequence[list[int]], pad: int) -> list[Segment]:
    """Each base (None: nothing) extended by its rest of tokens, in one forward: the bases' keys and values
    left-padded to a common width, the rests right-padded after them."""
    dev = next(body.parameters()).device
    cache, width = left_padded_cache(body.config, [[(s.keys, s.values) for s in b.lineage()] if b is not None else []
                                                   for b in bases])
    lengths = [b.length if b is not None else 0 for b in bases]
    span = max(len(r) for r in rests)
    ids = torch.full((len(rests), span), pad, dtype=torch.long)
    mask = torch.zeros((len(rests), width + span), dtype=torch.long)
    for r, (n, rest) in enumerate(zip(lengths, rests)):
        ids[r, : len(rest)] = torch.tensor(rest, dtype=torch.long)
        mask[r, width - n : width + len(rest)] = 1
    positions = torch.tensor(lengths)[:, None] + torch.arange(span)[None]
    out = body(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
               use_cache=True, **{cache_kwarg(body): cache})
    new, layers = slice(width, None), returned_cache(out).layers
    return [Segment(b, [layer.keys[r, :, new][:, : len(rest)].clone() for layer in layers],
                    [layer.values[r, :, new][:, : len(rest)].clone() for layer in layers],
                    out.last_hidden_state[r, : len(rest)].clone(), n + len(rest))
            for r, (b, n, rest) in enumerate(zip(bases, lengths, rests))]
