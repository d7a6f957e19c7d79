"""Supervised fine-tuning on reference chains of thought (or on bare answers).

The training step fits on one screen: sample the step's examples, forward in
bf16 autocast, token-summed cross entropy over the completion, clip, step.
Optional hint targets (`train_sft(..., hints=...)`) add a loss at the input
positions of the prompt; see `step_loss`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.model.configs import is_config_name, model_config
from ponder.model.loading import load_tokenizer
from ponder.model.tokenizer import build_char_tokenizer, check_words
from ponder.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, save_model_atomic
from ponder.train.cpu import setup_cpu
from ponder.train.data import HintFn, SFTData, parse_mixture
from ponder.train.metrics import MetricsLog, fit_to_time_budget, progress
from ponder.train.precision import use_bf16


@dataclass
class SFTConfig:
    output_dir: str = "runs/sft"
    model: str = "ponder-tiny"  # a config name trains from scratch; a path fine-tunes that model
    word_tokens: list[str] = field(default_factory=list)  # whole words that are one token each (from scratch only)
    mixture: list[dict] = field(default_factory=lambda: [{"task": "add", "levels": [1, 2, 3]}])
    cot: bool = True  # False: train to answer directly, with an empty think block
    max_steps: int = 1000
    max_train_tokens: int | None = None  # stop after this many tokens (prompt + completion)
    max_time_minutes: float | None = None
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 4
    learning_rate: float = 1e-3
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    bf16: bool = True  # bf16 autocast where the device computes bf16 natively; float32 elsewhere
    max_length: int = 1024
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    eval_steps: int = 0
    eval_samples: int = 32  # held-out problems per task and level at each eval
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "save_steps", "max_length"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise PonderError(f"config field 'learning_rate' must be > 0, got {self.learning_rate}")
        if self.max_train_tokens is not None and self.max_train_tokens < 1:
            raise PonderError(f"config field 'max_train_tokens' must be >= 1, got {self.max_train_tokens}")
        parse_mixture(self.mixture)
        if self.word_tokens and not is_config_name(self.model):
            raise PonderError("word_tokens are for a model trained from scratch; a trained model keeps its tokenizer")
        check_words(self.word_tokens)  # a bad word fails now, not after loading data


def lr_at(cfg: SFTConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if cfg.lr_scheduler_type == "constant":
        return cfg.learning_rate
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.lr_scheduler_type == "cosine" else 1 - frac
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def build_model(cfg: SFTConfig, tokenizer):
    torch.manual_seed(cfg.seed)
    if is_config_name(cfg.model):
        return LlamaForCausalLM(model_config(cfg.model, len(tokenizer), cfg.max_length))
    return AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)


def step_loss(model, batches: list[dict[str, torch.Tensor]], bf16: bool) -> tuple[float, int]:
    """Backpropagate the token-averaged loss of one optimizer step; return it and its token count.

    Batches with `hint_labels` add an auxiliary loss of weight 1, averaged over the hint targets
    alone: the logits at position t (unshifted) against `hint_labels[:, t]`, from the same LM
    head. The completion's loss is then exactly what it is without hints; the count returned
    is the completion's.
    """
    n_targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    n_hints = sum(int((b["hint_labels"] != -100).sum()) for b in batches if "hint_labels" in b)
    total = 0.0
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(bf16)):
            logits = model(input_ids=b["input_ids"]).logits
        loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                               b["labels"][:, 1:].reshape(-1), ignore_index=-100, reduction="sum") / n_targets
        if n_hints and "hint_labels" in b:
            loss = loss + F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b["hint_labels"].reshape(-1),
                                          ignore_index=-100, reduction="sum") / n_hints
        loss.backward()
        total += loss.item()
    return total, n_targets


def train_sft(cfg: SFTConfig, resume: bool = False, config_text: str | None = None, *,
              hints: HintFn | None = None, quiet: bool = False, data=None) -> Path:
    """Train, checkpointing as configured; return the final model directory.

    `hints` turns on hint targets (only with `cot: false`; see `SFTData.hint_positions`);
    `quiet` drops the progress bar, for callers that run many short trainings under their own;
    `data` replaces the mixture's examples with another source of `step_batches` (`train.revise`).
    """
    setup_cpu(cfg.torch_threads)
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if ckpt is not None and not resume:
        raise PonderError(f"{out} already has checkpoints; pass --resume to continue or pick a new output_dir")
    tokenizer = build_char_tokenizer(cfg.word_tokens) if is_config_name(cfg.model) else load_tokenizer(cfg.model)
    chat = ChatFormat.for_tokenizer(tokenizer)
    if data is None:
        data = SFTData(parse_mixture(cfg.mixture), tokenizer, chat, cfg.seed, cfg.cot, cfg.max_length, hints=hints)
    model = build_model(cfg, tokenizer) if ckpt is None else AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), fused=False)
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    if ckpt is not None:
        state = load_trainer_state(ckpt, opt)
    total_steps = planned_steps(cfg, data)
    out.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (out / "config.yaml").write_text(config_text)
    log = MetricsLog(out / "metrics.jsonl", resume_step=state["step"] if ckpt else None)
    bar = tqdm(disable=True) if quiet else progress(total_steps, state["step"], f"sft {out.name}")
    step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
    window_tokens, window_start = 0, time.perf_counter()
    while step < total_steps and not _budget_spent(cfg, tokens, seconds):
        t0 = time.perf_counter()
        batches = data.step_batches(step, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)
        lr = lr_at(cfg, step, total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, n_targets = step_loss(model, batches, cfg.bf16)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_tokens = sum(int((b["input_ids"] != 0).sum()) for b in batches)
        step, tokens, seconds = step + 1, tokens + step_tokens, seconds + time.perf_counter() - t0
        window_tokens += step_tokens
        bar.update(1)
        fit_to_time_budget(bar, step, seconds, cfg.max_time_minutes, total_steps)
        if step % cfg.logging_steps == 0 or step == total_steps:
            tps = window_tokens / max(1e-9, time.perf_counter() - window_start)
            window_tokens, window_start = 0, time.perf_counter()
            log.log({"step": step, "loss": round(loss, 5), "lr": lr, "grad_norm": round(grad_norm, 4),
                     "tokens": tokens, "tokens_per_s": round(tps, 1), "seconds": round(seconds, 1),
                     "target_tokens": n_targets})
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:.0f}")
        if cfg.eval_steps and step % cfg.eval_steps == 0:
            log.log({"step": step, **_evaluate(model, tokenizer, chat, cfg)})
        if step % cfg.save_steps == 0:
            save_checkpoint(out, step, model, tokenizer, opt, {"tokens": tokens, "seconds": seconds},
                            keep=cfg.save_total_limit)
    bar.close()
    save_checkpoint(out, step, model, tokenizer, opt, {"tokens": tokens, "seconds": seconds}, keep=cfg.save_total_limit)
    save_model_atomic(out / "model", model, tokenizer)
    log.close()
    return out / "model"


def planned_steps(cfg: SFTConfig, data: SFTData) -> int:
    """max_steps, or fewer when a token budget is set (estimated from sample batches)."""
    if cfg.max_train_tokens is None:
        return cfg.max_steps
    probe = [data.step_batches(10**9 + i, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)
             for i in range(5)]
    per_step = sum(int((b["input_ids"] != 0).sum()) for batches in probe for b in batches) / len(probe)
    return max(1, min(cfg.max_steps, math.ceil(cfg.max_train_tokens / per_step)))


def _budget_spent(cfg: SFTConfig, tokens: int, seconds: float) -> bool:
    if cfg.max_train_tokens is not None and tokens >= cfg.max_train_tokens:
        return True
    return cfg.max_time_minutes is not None and seconds >= cfg.max_time_minutes * 60


def _evaluate(model, tokenizer, chat, cfg: SFTConfig) -> dict[str, float]:
    from ponder.evaluate import accuracy_by_level  # the engine is only needed when evaluating

    model.eval()
    try:
        # the held-out set is seed 0's whatever the training seed, so runs with different seeds compare
        return {f"eval/{k}": v for k, v in accuracy_by_level(model, tokenizer, chat, cfg.mixture,
                                                              cfg.eval_samples).items()}
    finally:
        model.train()


def config_dict(cfg: SFTConfig) -> dict:
    return asdict(cfg)
