"""What RL trainers share about rollouts: which engine samples them, and their metrics over ranks.

The trainers only see the `Engine` interface. `engine: local` samples with the local
KV-cache sampler on the trainer's own weights (it re-fuses its decode weights whenever
a step changed them); `engine: vllm` samples with vLLM on a GPU (an optional extra), which
is handed the trainer's weights whenever a step changed them.
Metrics are kept as sums so that, under torchrun, summing them over ranks and then
dividing gives exactly the metrics of all ranks' rollouts together.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model, load_tokenizer
from ponder.train.checkpoint import latest_checkpoint
from ponder.train.cpu import setup_cpu
from ponder.train.distributed import Dist, NullLog, init
from ponder.train.metrics import MetricsLog

if TYPE_CHECKING:
    from ponder.train.curriculum import Curriculum

ENGINES = ("local", "vllm")


def check_engine(name: str) -> None:
    """Refuse an engine that cannot run here, before training starts; imports vLLM only when chosen."""
    if name not in ENGINES:
        raise PonderError(f"config field 'engine' must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "vllm":
        from ponder.engine.vllm import import_vllm

        try:
            import_vllm()
        except PonderError as e:
            raise PonderError(f"config field 'engine': {e}") from None


def load_policy(model: str, ckpt: Path | None):
    """(model, tokenizer, chat format): the starting model, or a checkpoint's weights when resuming."""
    if ckpt is None:
        return load_model(model)
    policy = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    tokenizer = load_tokenizer(ckpt)
    return policy, tokenizer, ChatFormat.for_tokenizer(tokenizer)


def start_run(cfg, resume: bool):
    """What every RL run does first: threads, the process group, the checkpoint to resume
    (refusing to overwrite one without --resume) and the policy on its device, in train mode.
    Returns (dist, output dir, checkpoint or None, model, tokenizer, chat format)."""
    setup_cpu(cfg.torch_threads)
    d = init()
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if ckpt is not None and not resume:
        raise PonderError(f"{out} already has checkpoints; pass --resume to continue or pick a new output_dir")
    model, tokenizer, chat = load_policy(cfg.model, ckpt)
    model.to(d.device or next(model.parameters()).device).train()
    return d, out, ckpt, model, tokenizer, chat


def open_log(d: Dist, out: Path, config_text: str | None, resume_step: int | None):
    """The run folder with its config, and the metrics log (rank 0 writes; other ranks log nothing)."""
    if not d.is_main:
        return NullLog()
    out.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (out / "config.yaml").write_text(config_text)
    return MetricsLog(out / "metrics.jsonl", resume_step=resume_step)


def make_engine(name: str, model, tokenizer, max_batch: int, gpu_memory_utilization: float = 0.3) -> Engine:
    """The rollout engine over `model` (the unwrapped module, not its DDP wrapper).

    vllm loads models from directories, so its engine starts from a copy of `model` in a
    temporary one (each rank its own), then follows `model`'s weights."""
    check_engine(name)
    if name == "vllm":
        import tempfile

        from ponder.engine.vllm import VLLMEngine

        start = tempfile.TemporaryDirectory(prefix="ponder-vllm-")
        model.save_pretrained(start.name)
        tokenizer.save_pretrained(start.name)
        engine = VLLMEngine(start.name, tokenizer, gpu_memory_utilization=gpu_memory_utilization,
                            max_num_seqs=max_batch)
        engine.start_dir = start  # removed with the engine
        return engine.follow(model)
    from ponder.engine.local import LocalEngine

    return LocalEngine(model, tokenizer, max_batch=max_batch)


class RankCurriculum:
    """A curriculum whose `record` calls wait for `sync()`, where every rank applies every rank's
    records in rank order: the ranks' curricula (and the one checkpointed) stay identical."""

    def __init__(self, inner: "Curriculum", d: Dist) -> None:
        self.inner, self.d, self.pending = inner, d, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def record(self, *args) -> None:
        self.pending.append(args)

    def sync(self) -> None:
        for part in self.d.gather(self.pending):
            for args in part:
                self.inner.record(*args)
        self.pending = []


def rollout_sums(generated: list, trained: list) -> Counter:
    """This rank's rollout counts (groups as in `ponder.train.grpo.Group`), to be summed over ranks."""
    s: Counter = Counter()
    for g in generated:
        for c, sc in zip(g.completions, g.scores):
            s["n"] += 1
            s["reward"] += sc.reward
            s["reward_sq"] += sc.reward * sc.reward
            s["correct"] += sc.correct
            s["formatted"] += sc.formatted
            s["truncated"] += sc.truncated
            s["length"] += c.num_tokens
            if sc.step_error_rate is not None:
                s["step_checked"] += 1
                s["step_error_rate"] += sc.step_error_rate
            s[f"n/{g.task}-{g.level}"] += 1
            s[f"k/{g.task}-{g.level}"] += sc.correct
        s["zero_signal"] += not g.has_signal
    s["groups_generated"], s["groups_trained"] = len(generated), len(trained)
    return s


def rollout_metrics(s: Counter, seconds: float) -> dict[str, float]:
    """What the policy did on a step's batch; tokens_per_s is generated tokens over the step's wall time."""
    n = max(1, s["n"])
    mean = s["reward"] / n
    var = (s["reward_sq"] - n * mean * mean) / (n - 1) if n > 1 else 0.0
    rec = {"reward": mean, "reward_std": math.sqrt(max(0.0, var)), "accuracy": s["correct"] / n,
           "format_rate": s["formatted"] / n, "truncated_frac": s["truncated"] / n,
           "completion_length": s["length"] / n,
           "zero_signal_frac": s["zero_signal"] / max(1, s["groups_generated"]),
           "groups_generated": s["groups_generated"], "groups_trained": s["groups_trained"],
           "tokens_per_s": s["length"] / max(seconds, 1e-9)}
    if s["step_checked"]:  # only for families whose steps can be checked
        rec["step_error_rate"] = s["step_error_rate"] / s["step_checked"]
    for key in sorted(k for k in s if k.startswith("n/")):
        rec[f"train_accuracy/{key[2:]}"] = s["k/" + key[2:]] / s[key]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}


def loss_metrics(sums: Counter, beta: float) -> dict[str, float]:
    n = max(1.0, sums["tokens"])
    rec = {"clip_ratio": (sums["clip_low_sum"] + sums["clip_high_sum"]) / n, "clip_low": sums["clip_low_sum"] / n,
           "clip_high": sums["clip_high_sum"] / n, "entropy": sums["entropy_sum"] / n}
    if beta != 0.0:
        rec["kl"] = sums["kl_sum"] / n
    return {k: round(v, 6) for k, v in rec.items()}


def eval_accuracy(model, tokenizer, chat, mixture: list[dict], samples: int, max_tokens: int) -> dict[str, float]:
    """Greedy accuracy per task/level on held-out problems, logged as `eval/TASK/LEVEL`.

    The problems are `heldout_problems`' seed-0 set whatever the run's seed, as in `ponder eval`: runs that
    differ only in their seed are measured on the same questions."""
    from ponder.evaluate import accuracy_by_level

    was_training = model.training
    model.eval()
    try:
        acc = accuracy_by_level(model, tokenizer, chat, mixture, samples, max_tokens=max_tokens)
        return {f"eval/{k}": v for k, v in acc.items()}
    finally:
        model.train(was_training)
