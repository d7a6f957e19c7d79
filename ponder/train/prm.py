"""Train a process (or outcome) reward model on Monte-Carlo step labels.

Two phases, both resumable: label chains the policy samples (`prm_data`,
written round by round to `labels.jsonl`), then fit the scalar head (and,
optionally, the body) with binary cross-entropy on the soft or hard labels.
An ORM trains on the same labels but only at the final position, on the
chain's final correctness.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ponder import PonderError
from ponder.reward.base import aggregate
from ponder.reward.prm import RewardModel
from ponder.tasks import get_task
from ponder.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, write_text_atomic
from ponder.train.cpu import setup_cpu
from ponder.train.metrics import MetricsLog, progress
from ponder.train.prm_data import (
    LabelledChain,
    check_labels,
    is_eval_chain,
    label_problems,
    label_summary,
    problems_for_round,
)
from ponder.train.sft import lr_at


@dataclass
class PRMConfig:
    output_dir: str = "runs/prm"
    policy: str = "built-in"  # the model whose chains are sampled and rolled out
    init: str | None = None  # the reward model's body; default: the policy's
    kind: Literal["prm", "orm"] = "prm"
    # checked: exact step labels from the task's own check, 1 up to the first wrong step; checked_each: each
    # step by its own check
    label: Literal["soft", "hard", "checked", "checked_each"] = "soft"
    aggregation: Literal["last", "min", "prod"] | None = None  # saved as the model's default; None: last
    # labelling
    task: str = "cvp"
    levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    labels_path: str | None = None  # reuse labels written by another run (e.g. the PRM's, for an ORM)
    num_problems: int = 256
    chains_per_problem: int = 4
    rollouts: int = 8  # k rollouts from every step
    sample_temperature: float = 0.8
    max_new_tokens: int = 384
    label_batch_problems: int = 16  # problems per labelling round (one engine call each for chains and rollouts)
    # training
    train_body: bool = False
    max_steps: int = 400
    per_device_train_batch_size: int = 16
    learning_rate: float = 1e-3  # the head's
    body_learning_rate: float = 1e-4
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_fraction: float = 0.1
    eval_steps: int = 100
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 2
    # the held-out evaluation's best model: kept in output_dir/best, the final model with this on
    load_best_model_at_end: bool = False
    metric_for_best_model: Literal["loss", "final_acc", "step_acc", "select_acc"] = "loss"
    greater_is_better: bool | None = None  # default: False for loss, True for the accuracies
    early_stopping_patience: int | None = None  # evaluations without a new best before training stops
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_problems", "chains_per_problem", "rollouts", "max_new_tokens", "label_batch_problems",
                     "max_steps", "per_device_train_batch_size", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "body_learning_rate"):
            if getattr(self, name) <= 0:
                raise PonderError(f"config field {name!r} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.eval_fraction < 1:
            raise PonderError(f"config field 'eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        if self.metric_for_best_model not in BEST_METRICS:
            raise PonderError(f"config field 'metric_for_best_model' must be one of {', '.join(BEST_METRICS)}, "
                              f"got {self.metric_for_best_model!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise PonderError(f"config field 'early_stopping_patience' must be >= 1, got {self.early_stopping_patience}")
        if (self.load_best_model_at_end or self.early_stopping_patience) and not (self.eval_fraction and self.eval_steps):
            raise PonderError("load_best_model_at_end and early_stopping_patience need held-out evaluations: "
                              "set eval_fraction and eval_steps above 0")
        if self.sample_temperature <= 0:
            raise PonderError("config field 'sample_temperature' must be > 0: Monte-Carlo labels need sampling")
        if self.label.startswith("checked") and not get_task(self.task).can_check_steps:
            raise PonderError(f"config field 'label': {self.label!r} needs a task that checks its own steps; "
                              f"{self.task!r} does not (use soft or hard)")
        if self.labels_path is None:
            task = get_task(self.task)
            bad = [lv for lv in self.levels if not 1 <= lv <= task.max_level]
            if bad or not self.levels:
                raise PonderError(f"config field 'levels': task {task.name!r} has levels 1..{task.max_level}, "
                                  f"got {self.levels}")


BEST_METRICS = ("loss", "final_acc", "step_acc", "select_acc")


# -- phase 1: labels ----------------------------------------------------------

def ensure_labels(cfg: PRMConfig, out: Path) -> Path:
    """The labels file, labelling whatever rounds are still missing (a killed run continues where it was)."""
    if cfg.labels_path is not None:
        path = Path(cfg.labels_path)
        if not path.exists():
            raise PonderError(f"labels_path does not exist: {path}")
        return path
    path, progress_path = out / "labels.jsonl", out / "labels.progress.json"
    rounds = math.ceil(cfg.num_problems / cfg.label_batch_problems)
    done = json.loads(progress_path.read_text())["rounds"] if progress_path.exists() else 0
    if done >= rounds:
        return path
    _truncate_to_rounds(path, done)  # lines of a round cut by a kill are dropped
    from ponder.engine.local import LocalEngine
    from ponder.model.loading import load_model

    model, tok, chat = load_model(cfg.policy)
    engine = LocalEngine(model, tok)
    bar = progress(rounds, done, f"label {out.name}")
    for r in range(done, rounds):
        count = min(cfg.label_batch_problems, cfg.num_problems - r * cfg.label_batch_problems)
        problems = problems_for_round(cfg.task, cfg.levels, count, cfg.seed, r)
        chains = label_problems(engine, chat, problems, cfg.chains_per_problem, cfg.rollouts,
                                cfg.sample_temperature, cfg.max_new_tokens, seed=cfg.seed * 100_003 + r)
        with open(path, "a") as fh:
            fh.write("".join(json.dumps({**c.to_dict(), "round": r}) + "\n" for c in chains))
            fh.flush()
            os.fsync(fh.fileno())
        write_text_atomic(progress_path, json.dumps({"rounds": r + 1}))
        bar.update(1)
        bar.set_postfix(chains=len(chains), correct=f"{sum(c.correct for c in chains) / max(1, len(chains)):.2f}")
    bar.close()
    return path


def _truncate_to_rounds(path: Path, rounds: int) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["round"] < rounds:
                kept.append(line + "\n")
        except (ValueError, KeyError):
            continue
    path.write_text("".join(kept))


def _warn_if_little_to_choose(summary: dict[str, int]) -> None:
    """Say early when the labels cannot teach a verifier much (bench/label_stats.py has the numbers)."""
    n, mixed = summary["problems"], summary["problems_disagreeing"]
    if n >= 20 and mixed < 0.1 * n:
        print(f"note: only {mixed} of {n} labelled problems have chains that disagree on correctness; a verifier "
              "can choose only there (more chains per problem or a hotter sample_temperature give it more)",
              file=sys.stderr)


def read_labels(path: Path) -> list[LabelledChain]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        d.pop("round", None)
        out.append(LabelledChain.from_dict(d))
    if not out:
        raise PonderError(f"no labelled chains in {path}")
    return out


# -- phase 2: fitting ---------------------------------------------------------

def batch_loss(rm: RewardModel, chains: list[LabelledChain], kind: str, label: str,
               features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
    """Mean BCE over the labelled positions of these chains (the last one only for an ORM).

    `features`, the frozen body's hidden states at those positions, skip the body altogether.
    """
    if features is not None:
        logits = list(rm.head(torch.cat(features)).squeeze(-1).float().split([len(f) for f in features]))
    else:
        logits = rm.logits([rm.encode(c.question, c.steps, c.answer) for c in chains])
    if kind == "orm":
        logits = [x[-1:] for x in logits]
    targets = torch.tensor([t for c in chains for t in c.targets(kind, label)], device=logits[0].device)
    flat = torch.cat(logits)
    if flat.numel() != targets.numel():
        raise PonderError("labels and reward-model positions disagree; were the labels written by another format?")
    return F.binary_cross_entropy_with_logits(flat, targets), int(targets.numel())


def body_features(rm: RewardModel, chains: list[LabelledChain], batch: int = 32) -> list[torch.Tensor]:
    """The body's hidden states at each chain's positions, computed once: with the body frozen,
    training the head on them is a logistic regression, hundreds of times cheaper than forwards."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(chains)
    encoded = [rm.encode(c.question, c.steps, c.answer) for c in chains]
    order = sorted(range(len(chains)), key=lambda i: len(encoded[i].ids))  # little padding per batch
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            part = order[start : start + batch]
            flat = rm.hidden_at([encoded[i] for i in part])
            for i, h in zip(part, flat.split([len(encoded[i].positions) for i in part])):
                out[i] = h.clone()
    return out


def evaluate_verifier(rm: RewardModel, chains: list[LabelledChain], kind: str, label: str,
                      batch: int = 32) -> dict[str, float]:
    """Held-out loss and accuracy, and how often the verifier's pick among a problem's chains is right."""
    if not chains:
        return {}
    losses, n_pos, step_hits, step_n, final_hits = 0.0, 0, 0, 0, 0
    scores: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(chains), batch):
            part = chains[i : i + batch]
            loss, n = batch_loss(rm, part, kind, label)
            losses, n_pos = losses + float(loss) * n, n_pos + n
            for c, logit in zip(part, rm.logits([rm.encode(c.question, c.steps, c.answer) for c in part])):
                probs = torch.sigmoid(logit).tolist()
                final_hits += (probs[-1] > 0.5) == c.correct
                steps = c.checked if label.startswith("checked") else c.hard  # what the steps are judged against
                step_hits += sum((p > 0.5) == (h > 0.5) for p, h in zip(probs, steps))
                step_n += len(steps)
                scores.append(aggregate(probs, rm.aggregation))
    by_q: dict[str, list[tuple[float, bool]]] = {}
    for c, s in zip(chains, scores):
        by_q.setdefault(c.question, []).append((s, c.correct))
    picks = [max(v, key=lambda t: t[0])[1] for v in by_q.values()]
    return {"eval/loss": round(losses / max(1, n_pos), 5),
            "eval/final_acc": round(final_hits / len(chains), 4),
            "eval/step_acc": round(step_hits / max(1, step_n), 4),
            "eval/select_acc": round(sum(picks) / len(picks), 4),  # the verifier's pick per problem
            "eval/mean_acc": round(sum(c.correct for c in chains) / len(chains), 4),  # a random pick
            "eval/problems": len(picks)}


@dataclass
class BestModel:
    """The best held-out evaluation so far (and its model in `output_dir/best` when it is to be loaded
    at the end); `best.json` carries it across a resume, so patience and the pick survive a kill."""

    out: Path
    metric: str
    greater: bool
    keep_model: bool
    patience_steps: int | None  # steps without a new best before training stops; None: never
    step: int | None = None
    value: float | None = None

    @classmethod
    def open(cls, out: Path, cfg: PRMConfig) -> BestModel:
        greater = cfg.metric_for_best_model != "loss" if cfg.greater_is_better is None else cfg.greater_is_better
        patience = None if cfg.early_stopping_patience is None else cfg.early_stopping_patience * cfg.eval_steps
        best = cls(out, cfg.metric_for_best_model, greater, cfg.load_best_model_at_end, patience)
        path = out / "best.json"
        if path.exists():
            d = json.loads(path.read_text())
            if d.get("metric") == best.metric:
                best.step, best.value = d["step"], d["value"]
        return best

    def offer(self, step: int, metrics: dict[str, float], rm: RewardModel) -> bool:
        value = metrics[f"eval/{self.metric}"]
        if self.value is not None and not (value > self.value if self.greater else value < self.value):
            return False
        if self.keep_model:
            rm.save(self.out / "best")
        self.step, self.value = step, value
        write_text_atomic(self.out / "best.json", json.dumps({"metric": self.metric, "step": step, "value": value}))
        return True

    def patience_spent(self, step: int) -> bool:
        return self.patience_steps is not None and self.step is not None and step - self.step >= self.patience_steps


def _build(cfg: PRMConfig, ckpt: Path | None) -> RewardModel:
    """A fresh reward model on the policy's body, or the one in a checkpoint being resumed."""
    if ckpt is None:
        return RewardModel.from_policy(cfg.init or cfg.policy, cfg.kind, cfg.aggregation, seed=cfg.seed)
    from transformers import AutoModelForTokenClassification

    from ponder.model.chat import ChatFormat
    from ponder.model.loading import load_tokenizer

    tok = load_tokenizer(ckpt)
    model = AutoModelForTokenClassification.from_pretrained(ckpt, dtype=torch.float32)
    return RewardModel(model, tok, ChatFormat.for_tokenizer(tok), cfg.kind,
                       cfg.aggregation or "last")


def train_prm(cfg: PRMConfig, resume: bool = False, config_text: str | None = None) -> Path:
    """Label (if needed), train, and save the reward model to `output_dir/model`."""
    setup_cpu(cfg.torch_threads)
    out = Path(cfg.output_dir)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if ckpt is not None and not resume:
        raise PonderError(f"{out} already has checkpoints; pass --resume to continue or pick a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    if config_text is not None:
        (out / "config.yaml").write_text(config_text)
    chains = read_labels(ensure_labels(cfg, out))
    if cfg.label.startswith("checked"):
        check_labels(cfg.task, chains, each=cfg.label == "checked_each")
    train = [c for c in chains if not is_eval_chain(c.question, cfg.eval_fraction)]
    held = [c for c in chains if is_eval_chain(c.question, cfg.eval_fraction)]
    if not train:
        raise PonderError("every labelled chain fell in the eval split; lower eval_fraction or label more problems")
    rm = _build(cfg, ckpt)
    for p in rm.model.base_model.parameters():
        p.requires_grad_(cfg.train_body)
    groups = [{"params": list(rm.head.parameters()), "lr": cfg.learning_rate, "scale": 1.0}]
    if cfg.train_body:
        groups.append({"params": list(rm.model.base_model.parameters()), "lr": cfg.body_learning_rate,
                       "scale": cfg.body_learning_rate / cfg.learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    state = {"step": 0, "seconds": 0.0}
    if ckpt is not None:
        state = load_trainer_state(ckpt, opt)
    log = MetricsLog(out / "metrics.jsonl", resume_step=state["step"] if ckpt else None)
    if ckpt is None:
        summary = label_summary(chains)
        log.log({"step": 0, "labelled_chains": len(chains), "train_chains": len(train), "eval_chains": len(held),
                 "correct_fraction": round(sum(c.correct for c in chains) / len(chains), 4),
                 "mean_soft_label": round(_mean([s for c in chains for s in c.soft]), 4), **summary})
        _warn_if_little_to_choose(summary)
    features = None if cfg.train_body else body_features(rm, train)
    rm.model.train()
    step, seconds = state["step"], state["seconds"]
    best = BestModel.open(out, cfg)
    bar = progress(cfg.max_steps, step, f"{cfg.kind} {out.name}")
    while step < cfg.max_steps and not best.patience_spent(step):
        t0 = time.perf_counter()
        rng = random.Random(cfg.seed * 1_000_003 + step)
        picked = [rng.randrange(len(train)) for _ in range(cfg.per_device_train_batch_size)]
        batch = [train[i] for i in picked]
        lr = lr_at(cfg, step, cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        loss, positions = batch_loss(rm, batch, cfg.kind, cfg.label,
                                     None if features is None else [features[i] for i in picked])
        loss.backward()
        loss = float(loss.detach())
        params = [p for g in groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, seconds = step + 1, seconds + time.perf_counter() - t0
        bar.update(1)
        if step % cfg.logging_steps == 0 or step == cfg.max_steps:
            log.log({"step": step, "loss": round(loss, 5), "lr": lr, "grad_norm": round(grad_norm, 4),
                     "positions": positions, "seconds": round(seconds, 1)})
            bar.set_postfix(loss=f"{loss:.4f}")
        if held and cfg.eval_steps and (step % cfg.eval_steps == 0 or step == cfg.max_steps):
            rm.model.eval()
            metrics = evaluate_verifier(rm, held, cfg.kind, cfg.label)
            if best.offer(step, metrics, rm):
                bar.set_postfix(best=f"{best.value:.4f}@{step}")
            log.log({"step": step, **metrics})
            rm.model.train()
        stop = best.patience_spent(step)
        if step % cfg.save_steps == 0 or step == cfg.max_steps or stop:
            save_checkpoint(out, step, rm.model, rm.tokenizer, opt, {"seconds": seconds}, keep=cfg.save_total_limit)
        if stop:
            log.log({"step": step, "early_stop": f"no better {best.metric} in {cfg.early_stopping_patience} "
                                                  f"evaluations since step {best.step}"})
    bar.close()
    rm.model.eval()
    if cfg.load_best_model_at_end and (out / "best").exists():
        rm = RewardModel.load(out / "best")
    final = rm.save(out / "model")
    log.close()
    return final


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
