"""The decode loop: sample, feed one token per live row, repeat, until every row ends.

Each sampled row draws from its own random stream, keyed by `sample_keys` (engine/base.py), so its tokens
do not depend on the rows beside it: not on the other prompts of the call, nor on how rows are chunked.

Rows that end (eos, a stop string, an abort from a streaming listener) are dropped from the batch, cache
and all, every few steps, so compute goes to live rows. Stop strings are checked only for rows whose new
token could complete one (`VocabText.stop_table`), by decoding a short tail of that row's tokens.
"""

from __future__ import annotations

import torch

from ponder.engine.base import Completion, SamplingParams, cut_at_stop
from ponder.engine.vocab_text import VocabText


def decode_loop(cache, logits, rows, step_fn, Lp: int, lengths: list[int], params: SamplingParams,
                stops: tuple[str, ...], row_keys: list[int] | None, vocab: VocabText, eos_list: list[int],
                compact_every: int, emit=None) -> list[Completion]:
    """Sample, feed, repeat. `rows` holds per-row tensors that are compacted with the cache;
    `step_fn(tok, rows, cur)` returns the next logits, `cur` being the cache length before the token.
    `emit(chunk_rows, tokens)` (streaming) returns the chunk rows to end now."""
    dev = logits.device
    B, T = logits.shape[0], params.max_tokens
    tokens = torch.zeros((B, T), dtype=torch.long, device=dev)
    lps = torch.zeros((B, T), dtype=torch.float32, device=dev) if params.logprobs else None
    alive = torch.arange(B, device=dev)  # chunk row of each batch row
    alive_cpu = list(range(B))
    dead = [False] * B  # per batch row: finished, waiting for compaction
    n_dead, since = 0, 0
    end = [T] * B
    reason: list[str] = ["length"] * B
    stop_of: list[str | None] = [None] * B
    eos = torch.tensor(eos_list, dtype=torch.long, device=dev)
    cand_table = vocab.stop_table(stops, logits.shape[-1], dev) if stops else None
    window = max((len(s) for s in stops), default=0) + 4
    noise = RowNoise(row_keys, logits.shape[-1], dev) if row_keys is not None and params.temperature > 0 else None

    for step in range(T):
        u = noise.draw(step) if noise is not None else None
        tok, lp = sample(logits, params.temperature, params.top_p, u, params.logprobs)
        tokens[alive, step] = tok
        if lps is not None:
            lps[alive, step] = lp
        if emit is not None:  # every row that drew a token this step, its last one included
            live = [b for b in range(len(alive_cpu)) if not dead[b]]
            tok_list = tok.tolist()
        flag = None
        if eos_list:
            flag = tok == eos[0] if len(eos_list) == 1 else torch.isin(tok, eos)
        if cand_table is not None:
            c = cand_table[tok]
            flag = c if flag is None else flag | c
        if flag is not None and bool(flag.any()):
            hit = flag.nonzero().flatten().tolist()
            hit_tok = tok[hit].tolist()
            for b, t in zip(hit, hit_tok):
                if dead[b]:
                    continue
                r = alive_cpu[b]
                if t in eos_list:
                    end[r], reason[r] = step + 1, "eos"
                else:
                    tail = tokens[r, max(0, step + 1 - window) : step + 1].tolist()
                    text = vocab.decode(tail)
                    s = next((s for s in stops if s in text), None)
                    if s is None:
                        continue
                    end[r], reason[r], stop_of[r] = step + 1, "stop", s
                dead[b] = True
                n_dead += 1
        if emit is not None:
            ended = emit([alive_cpu[b] for b in live], [tok_list[b] for b in live])
            for b in live:
                if not dead[b] and alive_cpu[b] in ended:
                    end[alive_cpu[b]], reason[alive_cpu[b]] = step + 1, "abort"
                    dead[b] = True
                    n_dead += 1
        if step == T - 1 or n_dead == len(alive_cpu):
            break
        since += 1
        if n_dead and (since >= compact_every or 4 * n_dead >= len(alive_cpu)):
            keep = [b for b in range(len(alive_cpu)) if not dead[b]]
            keep_t = torch.tensor(keep, dtype=torch.long, device=dev)
            cache.batch_select_indices(keep_t)
            alive, tok = alive[keep_t], tok[keep_t]
            if noise is not None:
                noise.keep(keep, keep_t)
            rows = {k: v[keep_t] for k, v in rows.items()}
            alive_cpu = [alive_cpu[b] for b in keep]
            dead = [False] * len(keep)
            n_dead, since = 0, 0
        logits = step_fn(tok, rows, Lp + step)
        rows["pos"] = rows["pos"] + 1

    tok_cpu = tokens.cpu()
    lp_cpu = lps.cpu() if lps is not None else None
    out = []
    for r in range(B):
        ids = tok_cpu[r, : end[r]].tolist()
        text = vocab.decode(ids)
        if reason[r] == "stop":
            text, found = cut_at_stop(text, stops)
            stop_of[r] = found or stop_of[r]
        out.append(Completion(
            text=text, token_ids=ids, finish_reason=reason[r], prompt_tokens=lengths[r],
            stop_reason=stop_of[r],
            logprobs=lp_cpu[r, : end[r]].tolist() if lp_cpu is not None else None,
        ))
    return out


class RowNoise:
    """Uniform draws for sampling, one seeded generator per row. A generator fills `block` steps of its row
    at a time (one call per row every `block` steps, not every step); the block depends on the vocabulary
    size alone, so a row draws the same numbers in any batch."""

    def __init__(self, keys: list[int], vocab_size: int, device: torch.device) -> None:
        self.gens = [torch.Generator(device=device).manual_seed(k) for k in keys]
        self.block = max(1, min(64, 2**16 // vocab_size))
        self.buf = torch.empty((len(keys), self.block, vocab_size), device=device)

    def draw(self, step: int) -> torch.Tensor:
        if step % self.block == 0:
            for row, g in zip(self.buf, self.gens):
                row.uniform_(generator=g)
        return self.buf[:, step % self.block]

    def keep(self, rows: list[int], rows_t: torch.Tensor) -> None:
        self.gens = [self.gens[b] for b in rows]
        self.buf = self.buf[rows_t]


def sample(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor | None, want_logprobs: bool):
    """Next tokens [B] and, if asked, their log-probabilities under the temperature-scaled distribution.
    `u`: a uniform draw per row and token (sampling only).

    Greedy (temperature 0) reports log-probabilities under the unscaled distribution.
    """
    if temperature == 0:
        tok = logits.argmax(-1)
        lp = None
        if want_logprobs:
            lp = torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
        return tok, lp
    logp = torch.log_softmax(logits / temperature, -1)
    # Gumbel-max: argmax(logp - log E), E = -log U ~ Exp(1), is a draw from softmax(logp)
    noise = u.log().neg_().log_()
    if top_p < 1.0:
        sorted_lp, order = logp.sort(-1, descending=True)
        probs = sorted_lp.exp()
        before = probs.cumsum(-1) - probs  # mass of strictly better tokens
        noise = noise.gather(-1, order)
        pick = (sorted_lp.masked_fill(before >= top_p, float("-inf")) - noise).argmax(-1, keepdim=True)
        tok = order.gather(-1, pick).squeeze(-1)
    else:
        tok = (logp - noise).argmax(-1)
    lp = logp.gather(-1, tok[:, None]).squeeze(-1) if want_logprobs else None
    return tok, lp

