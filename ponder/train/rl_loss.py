"""The GRPO objective as pure functions on small tensors, so each option can be checked by hand.

Semantics follow TRL's `GRPOTrainer` option for option:

* advantages: reward minus its group's mean; `scale_rewards="group"` divides by the
  group's std, `"batch"` by the std of the whole batch (the mean stays per group),
  `"none"` leaves it unscaled. Std is Bessel-corrected and `1e-4` is added before dividing.
* per token: `-min(r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A)` with `r` the
  ratio to the sampling policy, plus `beta` times the k3 estimate of KL to the reference.
* aggregation (`loss_type`), for one micro-batch of a step with `accumulation` of them
  (a micro-batch may be scored in several pieces: `batch_rows` and `batch_tokens` are then
  the whole micro-batch's rows and loss tokens, so the pieces add up to its loss):
  `grpo` mean over each sequence's tokens, then over sequences, / accumulation;
  `bnpo` mean over the micro-batch's tokens, / accumulation;
  `dr_grpo` sum / (rows * max_completion_length), / accumulation;
  `dapo` sum / `num_items`, the completion tokens of the whole step (counted before
  truncated completions are masked), so the step's gradient is a token mean over the step.
"""

from __future__ import annotations

from typing import Literal

import torch

from ponder import PonderError

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
STD_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, num_generations: int,
                     scale_rewards: ScaleRewards = "group") -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages [N] of rewards [N] laid out group after group, and which groups had zero std [N]."""
    if rewards.numel() % num_generations:
        raise PonderError(f"{rewards.numel()} rewards do not split into groups of {num_generations}")
    grouped = rewards.view(-1, num_generations)
    adv = rewards - grouped.mean(1).repeat_interleave(num_generations)
    group_std = grouped.std(1).repeat_interleave(num_generations)
    # All rewards equal means no signal, exactly: the float error of the mean divided by a
    # near-zero std would otherwise turn into a spurious advantage.
    zero = (grouped.amax(1) == grouped.amin(1)).repeat_interleave(num_generations)
    adv = torch.where(zero, torch.zeros_like(adv), adv)
    if scale_rewards == "group":
        adv = adv / (group_std + STD_EPS)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + STD_EPS)
    elif scale_rewards != "none":
        raise PonderError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    return adv, zero


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1 with d = ref - logp; never negative."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      epsilon: float, epsilon_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped policy-gradient loss [B, T] and the ratio [B, T]; advantages are per row [B]."""
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    a = advantages.unsqueeze(1)
    return -torch.min(ratio * a, clipped * a), ratio


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: LossType, *, max_completion_length: int,
              num_items: float, accumulation: float, batch_rows: int | None = None,
              batch_tokens: float | None = None) -> torch.Tensor:
    """One micro-batch's share of the step loss (see the module docstring for each loss_type)."""
    mask = mask.to(per_token.dtype)
    total = (per_token * mask).sum()
    rows = per_token.size(0) if batch_rows is None else batch_rows
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / rows / accumulation
    if loss_type == "bnpo":
        tokens = float(mask.sum()) if batch_tokens is None else batch_tokens
        return total / max(1.0, tokens) / accumulation
    if loss_type == "dr_grpo":
        return total / (rows * max_completion_length) / accumulation
    if loss_type == "dapo":
        return total / max(1.0, float(num_items))
    raise PonderError(f"loss_type must be one of grpo, bnpo, dr_grpo, dapo; got {loss_type!r}")


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                advantages: torch.Tensor, mask: torch.Tensor, *, beta: float, epsilon: float, epsilon_high: float,
                loss_type: LossType, max_completion_length: int, num_items: float, accumulation: float,
                batch_rows: int | None = None, batch_tokens: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss to backpropagate for one micro-batch, and its token counts and sums for logging."""
    per_token, ratio = clipped_surrogate(logp, old_logp, advantages, epsilon, epsilon_high)
    m = mask.to(per_token.dtype)
    stats: dict[str, float] = {"tokens": float(m.sum())}
    if beta != 0.0:
        if ref_logp is None:
            raise PonderError("beta != 0 needs reference log-probabilities")
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
        stats["kl_sum"] = float((kl.detach() * m).sum())
    a = advantages.unsqueeze(1)
    with torch.no_grad():
        low = (ratio < 1 - epsilon) & (a < 0)
        high = (ratio > 1 + epsilon_high) & (a > 0)
        stats["clip_low_sum"] = float((low * m).sum())
        stats["clip_high_sum"] = float((high * m).sum())
    loss = aggregate(per_token, mask, loss_type, max_completion_length=max_completion_length,
                     num_items=num_items, accumulation=accumulation, batch_rows=batch_rows, batch_tokens=batch_tokens)
    return loss, stats
