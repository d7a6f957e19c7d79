"""Log-probabilities of sampled completions, each prompt run through the model once.

GRPO scores `num_generations` completions of every prompt. Running each prompt+completion
row whole computes the prompt `num_generations` times over; here a micro-batch runs its
distinct prompts once, gathers their KV cache per completion row (an index, so every
row's gradient flows back into its prompt's keys and values) and runs the completions
against it. That is the same function of the weights as the whole rows, with the prompt's
share of the FLOPs divided by `num_generations` (about half a countdown step's tokens).

Prompts are right-padded: pad positions come after a prompt's tokens, so they never hold
a fully masked attention row, and the completions' attention mask hides them. Completion
positions start at their prompt's length, so rotary positions match the whole-row layout.
"""

from __future__ import annotations

import torch

from ponder.engine.kvcache import cache_kwarg, returned_cache
from ponder.train.precision import use_bf16


class PromptSharingLM(torch.nn.Module):
    """A causal LM as a function of one micro-batch: the logits that predict each completion token.

    One module (not two model calls in the trainer) so that DistributedDataParallel sees one
    forward per backward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, prompt_ids: torch.Tensor, prompt_len: torch.Tensor, ids: torch.Tensor,
                group: torch.Tensor) -> torch.Tensor:
        """prompt_ids [P, Lp] right-padded, prompt_len [P]; ids [R, Lc] completions, right-padded;
        group [R]: each completion's prompt. Returns logits [R, Lc, V]; position t predicts ids[:, t]."""
        P, Lp = prompt_ids.shape
        R, Lc = ids.shape
        dev = prompt_ids.device
        prompt_mask = (torch.arange(Lp, device=dev)[None] < prompt_len[:, None]).long()
        out = self.model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True)
        first = out.logits[torch.arange(P, device=dev), prompt_len - 1]  # each prompt's next-token logits
        cache = returned_cache(out)
        cache.reorder_cache(group)  # [P, ...] -> [R, ...], differentiable
        mask = torch.cat([prompt_mask[group], torch.ones(R, Lc, dtype=torch.long, device=dev)], 1)
        positions = prompt_len[group, None] + torch.arange(Lc, device=dev)[None]
        rest = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                          **{cache_kwarg(self.model): cache}).logits
        return torch.cat([first[group, None], rest[:, :-1]], 1)


def completion_logprobs(lm: torch.nn.Module, mb: dict, temperature: float, bf16: bool,
                        entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probability [R, Lc] of each completion token under the temperature-scaled logits (the
    distribution the engine sampled from), and that distribution's entropy (no grad; None when
    not asked for). `lm` is a `PromptSharingLM`, or DDP around one."""
    ids = mb["ids"]
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=use_bf16(bf16, ids.device.type)):
        logits = lm(mb["prompt_ids"], mb["prompt_len"], ids, mb["group"])
    logp_all = torch.log_softmax(logits.float() / temperature, -1)
    logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    if not entropy:
        return logp, None
    with torch.no_grad():
        ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


def zero_inputs(device) -> dict:
    """The smallest micro-batch, for a backward pass that adds nothing (see `distributed.zero_backward`)."""
    one = torch.ones(1, dtype=torch.long, device=device)
    return {"prompt_ids": torch.zeros((1, 1), dtype=torch.long, device=device), "prompt_len": one,
            "ids": torch.zeros((1, 1), dtype=torch.long, device=device), "group": one - 1}


def split_by_padding(lengths: list[int], piece_cost: int = 96) -> list[list[int]]:
    """Cut rows sorted by length into pieces scored in separate passes: a new piece starts when
    padding the current one up to the next row would cost more tokens than `piece_cost` (about
    a pass's overhead plus its prompts). Returns lists of positions into `lengths`."""
    pieces: list[list[int]] = []
    for i, n in enumerate(lengths):
        if pieces and len(pieces[-1]) * (n - lengths[pieces[-1][-1]]) <= piece_cost:
            pieces[-1].append(i)
        else:
            pieces.append([i])
    return pieces


def build_batch(prompts: list[list[int]], completions: list[list[int]], prompt_of: list[int],
                loss_mask: list[bool], pad_id: int, device) -> dict:
    """The tensors `PromptSharingLM` and the loss read: right-padded prompts (each once) and
    completions, each completion's prompt index, and which completion tokens the loss counts."""
    used = sorted(set(prompt_of))
    prompt_ids = torch.full((len(used), max(len(prompts[p]) for p in used)), pad_id, dtype=torch.long)
    for r, p in enumerate(used):
        prompt_ids[r, : len(prompts[p])] = torch.tensor(prompts[p], dtype=torch.long)
    width = max(1, max(map(len, completions)))
    ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(completions), width))
    for r, (seq, keep) in enumerate(zip(completions, loss_mask)):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = float(keep)
    return {"prompt_ids": prompt_ids.to(device), "prompt_len": torch.tensor([len(prompts[p]) for p in used]).to(device),
            "ids": ids.to(device), "group": torch.tensor([used.index(p) for p in prompt_of]).to(device),
            "mask": mask.to(device)}
