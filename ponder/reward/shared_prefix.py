"""Scoring many chains that share prefixes: each shared prefix goes through the body once.

Step search asks the verifier about every candidate step, and the candidates of one parent are the
same question and steps with one new step each. Run whole, each candidate pays for the shared part
again: with 4 expansions of a 70-token prefix and 8-token steps, 312 tokens where 102 would do.

So chains are grouped by the longest prefix they share with another chain in the batch, cut at a step
boundary. The prefixes go
through the body once, left-padded, keeping their keys and values; each chain's suffix then runs on
its group's cache, right-padded, with position ids that carry on where its prefix ended. A causal
body gives every position the same hidden state either way (up to float rounding), because no
position sees what comes after it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Sequence

import torch

from ponder.engine.kvcache import left_padded

if TYPE_CHECKING:
    from ponder.reward.prm import Encoded


def prefix_cuts(encoded: Sequence[Encoded], prompt_lens: Sequence[int]) -> list[int]:
    """Where each chain's shared part ends: after the last scored piece (or the prompt) whose prefix another
    chain in the batch has too, short of its last piece; after the prompt where none is shared."""
    def cut_points(e: Encoded, prompt_len: int) -> list[int]:
        return [prompt_len] + [p + 1 for p in e.positions[:-1] if p + 1 > prompt_len]

    seen = Counter(tuple(e.ids[:c]) for e, n in zip(encoded, prompt_lens) for c in set(cut_points(e, n)))
    return [max((c for c in cut_points(e, n) if seen[tuple(e.ids[:c])] > 1), default=n)
            for e, n in zip(encoded, prompt_lens)]


def tokens_run(encoded: Sequence[Encoded], cuts: Sequence[int]) -> int:
    """Tokens that go through the body when each distinct prefix runs once: what scoring them costs."""
    prefixes = {tuple(e.ids[:cut]) for e, cut in zip(encoded, cuts)}
    return sum(len(p) for p in prefixes) + sum(len(e.ids) - cut for e, cut in zip(encoded, cuts))


def worth_sharing(encoded: Sequence[Encoded], cuts: Sequence[int]) -> bool:
    """Two passes cost an extra call; they pay where the chains share enough tokens between them."""
    return tokens_run(encoded, cuts) <= 0.6 * sum(len(e.ids) for e in encoded)


@torch.inference_mode()
def hidden_shared(body, encoded: Sequence[Encoded], cuts: Sequence[int], pad: int) -> torch.Tensor:
    """The body's last hidden states at every encoding's positions, in order (as `RewardModel.hidden_at`)."""
    dev = next(body.parameters()).device
    keys: dict[tuple[int, ...], int] = {}
    parent = [keys.setdefault(tuple(e.ids[:cut]), len(keys)) for e, cut in zip(encoded, cuts)]
    prefixes = [list(p) for p in keys]
    plen = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
    ids, mask, positions = left_padded(prefixes, pad)  # every prefix ends at the last column
    width = ids.shape[1]
    out = body(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev), use_cache=True)
    before = out.last_hidden_state
    cache = out.past_key_values
    rows = torch.tensor(parent, dtype=torch.long)
    cache.batch_select_indices(rows.to(dev))
    tails = [e.ids[cut:] for e, cut in zip(encoded, cuts)]
    span = max(1, max(len(t) for t in tails))
    tail_ids = torch.full((len(encoded), span), pad, dtype=torch.long)
    tail_mask = torch.zeros((len(encoded), span), dtype=torch.long)
    for r, t in enumerate(tails):
        tail_ids[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        tail_mask[r, : len(t)] = 1
    tail_pos = plen[rows][:, None] + torch.arange(span)[None]
    after = body(input_ids=tail_ids.to(dev), attention_mask=torch.cat([mask[rows], tail_mask], 1).to(dev),
                 position_ids=tail_pos.to(dev), past_key_values=cache, use_cache=True).last_hidden_state
    picked = []
    for r, (e, cut) in enumerate(zip(encoded, cuts)):
        for p in e.positions:
            picked.append(before[parent[r], width - cut + p] if p < cut else after[r, p - cut])
    return torch.stack(picked)
