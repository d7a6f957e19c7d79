"""ponder's GRPO against TRL's GRPOTrainer: same start, task, hyperparameters and wall-clock budget, in one run.

    pip install -e ".[bench]"    # TRL: a benchmark extra, never a dependency of ponder
    python bench/grpo_vs_trl.py --config configs/grpo-countdown-kl.yaml --minutes 8 --evals 4 \
        --out bench/results/grpo_vs_trl

Both trainers start from the config's model and read the config's GRPO fields (they share
TRL's names; ponder's dynamic sampling is turned off, TRL has none, and neither recomputes
activations: the model is small); both generate with sampling on the CPU (ponder: its KV-cache sampler; TRL:
`model.generate`, its path without vLLM) and score completions with the same reward function.
Each gets `--minutes` of training time (generation included; held-out evaluation and
checkpointing excluded), one after the other on the same threads. Held-out greedy accuracy is
measured with the same evaluator at `--evals` evenly spaced points. Writes `result.json` and
`curves.png` (reward and held-out accuracy against training seconds, both trainers).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from ponder.config import load_config
from ponder.engine.base import Completion
from ponder.model.loading import load_model
from ponder.tasks import get_task
from ponder.train.data import draw_from_mixture, parse_mixture
from ponder.train.grpo import GRPOConfig, train_grpo
from ponder.train.metrics import read_metrics
from ponder.train.rewards import score
from ponder.train.rollouts import eval_accuracy


def held_out(cfg: GRPOConfig, model, tokenizer, chat) -> float:
    """Mean greedy accuracy over the eval mixture's task/levels, the number both trainers are judged by."""
    acc = eval_accuracy(model, tokenizer, chat, cfg.eval_mixture or cfg.mixture, cfg.eval_samples,
                        cfg.eval_max_tokens)
    return sum(acc.values()) / len(acc)


def run_ponder(cfg: GRPOConfig, out: Path, minutes: float, evals: int) -> dict:
    """ponder's trainer in `evals` chunks of training time, resuming from its own checkpoint between them."""
    shutil.rmtree(out, ignore_errors=True)
    points = []
    for k in range(1, evals + 1):
        chunk = replace(cfg, output_dir=str(out), max_time_minutes=minutes * k / evals, eval_steps=0)
        model_dir = train_grpo(chunk, resume=k > 1)
        model, tokenizer, chat = load_model(str(model_dir))
        last = read_metrics(out / "metrics.jsonl")[-1]
        points.append({"step": last["step"], "seconds": last["seconds"], "accuracy": held_out(cfg, model, tokenizer, chat)})
        print(f"ponder: step {last['step']}, {last['seconds']:.0f} s, held-out {points[-1]['accuracy']:.3f}")
    curve = [{"step": r["step"], "seconds": r["seconds"], "reward": r["reward"]}
             for r in read_metrics(out / "metrics.jsonl") if "reward" in r]
    return {"steps": points[-1]["step"], "seconds": points[-1]["seconds"], "accuracy": points[-1]["accuracy"],
            "evals": points, "curve": curve}


def trl_dataset(cfg: GRPOConfig, chat, size: int):
    """Training prompts drawn the way ponder draws them (training split, the mixture's weights and levels)."""
    from datasets import Dataset

    rng = random.Random(f"trl/{cfg.seed}")
    mixture = parse_mixture(cfg.mixture)
    problems = [(item.task, p) for item, p in (draw_from_mixture(rng, mixture) for _ in range(size))]
    data = Dataset.from_dict({"prompt": [chat.prompt(p.question) for _, p in problems], "idx": list(range(size))})
    return data, problems


def trl_reward(cfg: GRPOConfig, problems, tokenizer, chat):
    """ponder's reward (`ponder.train.rewards.score`) on TRL's completion ids: decoded with the think
    markers kept, truncated when the end token is missing."""
    tasks = {name: get_task(name) for name, _ in problems}

    def reward(prompts, completions, completion_ids, idx, **_) -> list[float]:
        out = []
        for ids, i in zip(completion_ids, idx):
            name, problem = problems[i]
            ended = bool(ids) and ids[-1] == tokenizer.eos_token_id
            text = tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=False)
            done = Completion(text, list(ids), "eos" if ended else "length", 0)
            out.append(score(tasks[name], problem, chat, done, correct_weight=cfg.correct_reward,
                             format_weight=cfg.format_reward, length_penalty=cfg.length_penalty,
                             max_completion_length=cfg.max_completion_length).reward)
        return out

    reward.__name__ = "ponder_reward"
    return reward


def run_trl(cfg: GRPOConfig, out: Path, minutes: float, evals: int) -> dict:
    """TRL's GRPOTrainer with the same fields, stopped by a callback after `minutes` of training time."""
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    model, tokenizer, chat = load_model(cfg.model)
    budget = minutes * 60

    class Budget(TrainerCallback):
        """Training clock with evaluation time taken out; evaluates at evenly spaced marks, stops at the budget."""

        def __init__(self) -> None:
            self.start, self.excluded, self.marks = 0.0, 0.0, [budget * k / evals for k in range(1, evals + 1)]
            self.points: list[dict] = []
            self.curve: list[dict] = []

        def clock(self) -> float:
            return time.perf_counter() - self.start - self.excluded

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                self.curve.append({"step": state.global_step, "seconds": round(self.clock(), 2), "reward": logs["reward"]})

        def on_step_end(self, args, state, control, model=None, **kw):
            t = self.clock()
            if self.marks and t >= self.marks[0]:
                self.marks.pop(0)
                t0 = time.perf_counter()
                acc = held_out(cfg, model, tokenizer, chat)
                self.excluded += time.perf_counter() - t0
                self.points.append({"step": state.global_step, "seconds": round(t, 2), "accuracy": acc})
                print(f"trl: step {state.global_step}, {t:.0f} s, held-out {acc:.3f}")
            if t >= budget:
                control.should_training_stop = True

    data, problems = trl_dataset(cfg, chat, size=50_000)
    args = TRLConfig(
        output_dir=str(out), num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, steps_per_generation=cfg.steps_per_generation,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, num_iterations=cfg.num_iterations, beta=cfg.beta,
        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, scale_rewards=cfg.scale_rewards, loss_type=cfg.loss_type,
        mask_truncated_completions=cfg.mask_truncated_completions, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16,
        use_cpu=True, seed=cfg.seed, max_steps=1_000_000, logging_steps=1, save_strategy="no", report_to="none",
        gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=False)
    clock = Budget()
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward(cfg, problems, tokenizer, chat), args=args,
                          train_dataset=data, processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    last = clock.points[-1]
    return {"steps": last["step"], "seconds": last["seconds"], "accuracy": last["accuracy"], "evals": clock.points,
            "curve": clock.curve}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for name, color in (("ponder", "tab:blue"), ("trl", "tab:orange")):
        r = result[name]
        xs, ys = [c["seconds"] for c in r["curve"]], [c["reward"] for c in r["curve"]]
        w = 10
        smooth = [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1]) for i in range(len(ys))]
        ax_r.plot(xs, smooth, color=color, label=f"{name} ({r['steps_per_second']:.3f} steps/s)")
        ax_a.plot([0] + [p["seconds"] for p in r["evals"]], [result["start_accuracy"]] + [p["accuracy"] for p in r["evals"]],
                  "o-", color=color, label=name)
    ax_r.set(xlabel="training seconds (generation included)", ylabel="reward (mean of 10 steps)", title="training reward")
    ax_a.set(xlabel="training seconds", ylabel="held-out greedy accuracy", title=result["eval"])
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a ponder GRPO config (YAML)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time per trainer")
    ap.add_argument("--evals", type=int, default=4, help="held-out evaluations per trainer, evenly spaced")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast in both (float32 otherwise)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/grpo_vs_trl"))
    ap.add_argument("--runs", type=Path, default=Path("runs/grpo_vs_trl"), help="both trainers' run folders")
    args = ap.parse_args()
    # dynamic sampling is ponder's own (TRL has none): off, so both train on the same kind of batch
    cfg = load_config(GRPOConfig, args.config, {"bf16": args.bf16, "torch_threads": args.threads,
                                                "dynamic_sampling": "off"})
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, chat = load_model(cfg.model)
    start = held_out(cfg, model, tokenizer, chat)
    print(f"start: held-out {start:.3f}")
    result = {"date": str(date.today()), "machine": f"{platform.machine()}, {args.threads} threads",
              "config": args.config, "minutes": args.minutes, "bf16": args.bf16, "start_accuracy": start,
              "eval": ", ".join(f"{m['task']} level {'/'.join(map(str, m['levels']))}"
                                for m in (cfg.eval_mixture or cfg.mixture))}
    result["ponder"] = run_ponder(cfg, args.runs / "ponder", args.minutes, args.evals)
    result["trl"] = run_trl(cfg, args.runs / "trl", args.minutes, args.evals)
    for name in ("ponder", "trl"):
        r = result[name]
        r["steps_per_second"] = r["steps"] / r["seconds"]
    result["steps_per_second_ratio"] = result["ponder"]["steps_per_second"] / result["trl"]["steps_per_second"]
    (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "curves.png")
    print("| trainer | optimizer steps | training s | steps/s | held-out greedy accuracy |\n|---|---:|---:|---:|---:|")
    print(f"| start | | | | {start:.3f} |")
    for name in ("ponder", "trl"):
        r = result[name]
        print(f"| {name} | {r['steps']} | {r['seconds']:.0f} | {r['steps_per_second']:.3f} | {r['accuracy']:.3f} |")
    print(f"steps/s ratio ponder/trl: {result['steps_per_second_ratio']:.2f}")


if __name__ == "__main__":
    main()
