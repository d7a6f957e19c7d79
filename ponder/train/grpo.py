"""GRPO: reinforcement learning on the chain of thought with verifiable rewards.

A step: sample `num_generations` completions for each of a batch of prompts with the
current weights (the local engine re-fuses its decode weights whenever a step changed
them), score each with the task's own check, turn rewards into group-relative
advantages, then take `num_iterations` optimizer steps on that batch with the clipped
ratio to the sampling policy. The objective itself is in `ponder.train.rl_loss`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ponder import PonderError
from ponder.engine.base import Completion, Engine, SamplingParams
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model
from ponder.tasks import Problem, get_task
from ponder.train.checkpoint import load_trainer_state, save_checkpoint, save_model_atomic
from ponder.train.curriculum import Curriculum
from ponder.train.data import MixtureItem, parse_mixture, sample_problem
from ponder.train.distributed import main_bar, no_sync, wrap, zero_backward
from ponder.train.rewards import Score, score
from ponder.train.rl_loss import group_advantages, policy_loss
from ponder.train.rollouts import (RankCurriculum, check_engine, eval_accuracy, loss_metrics, make_engine, open_log,
                                  rollout_metrics, rollout_sums, start_run)
from ponder.train.shared_prompt import (PromptSharingLM, build_batch, completion_logprobs, split_by_padding,
                                        zero_inputs)
from ponder.train.sft import lr_at


@dataclass
class GRPOConfig:
    """TRL-compatible names and semantics where the concept is the same. A step is one optimizer
    step over per_device_train_batch_size * gradient_accumulation_steps completions, i.e. that
    number / num_generations prompts; a batch is generated once and used for num_iterations steps.
    Under torchrun every rank generates that many prompts: the global batch is world_size times it."""

    output_dir: str = "runs/grpo"
    model: str = "built-in"  # `built-in` or a model directory (e.g. an SFT run's model/)
    mixture: list[dict] = field(default_factory=lambda: [{"task": "countdown", "levels": [1, 2]}])
    engine: Literal["local", "vllm"] = "local"  # what samples the rollouts (vllm: an optional extra)
    vllm_gpu_memory_utilization: float = 0.3  # engine vllm: its share of the GPU, beside the trainer
    num_generations: int = 8
    per_device_train_batch_size: int = 16  # completions per micro-batch
    gradient_accumulation_steps: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    num_iterations: int = 1
    beta: float = 0.0  # KL to the starting model; 0 loads no reference model
    epsilon: float = 0.2
    epsilon_high: float | None = None  # defaults to epsilon
    scale_rewards: Literal["group", "batch", "none"] = "group"
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    mask_truncated_completions: bool = False  # truncated completions score 0 either way
    learning_rate: float = 5e-5
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: bool = True
    correct_reward: float = 1.0
    format_reward: float = 0.0
    length_penalty: float = 0.0  # reward -= length_penalty * completion tokens / max_completion_length
    step_error_penalty: float = 0.0  # reward -= this * share of the chain's checkable steps that are wrong
    dynamic_sampling: Literal["off", "skip", "resample"] = "off"  # what to do with zero-signal groups
    max_resample_rounds: int = 2
    curriculum: bool = False
    curriculum_threshold: float = 0.8
    curriculum_window: int = 64
    drop_solved_after: int = 0  # skip a question after this many samples all right or all wrong; 0: never
    max_steps: int = 200
    max_time_minutes: float | None = None
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    eval_steps: int = 0
    eval_samples: int = 32
    eval_mixture: list[dict] | None = None  # default: the training mixture
    eval_max_tokens: int = 768
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_completion_length", "num_iterations", "max_steps", "logging_steps", "save_steps",
                     "curriculum_window", "eval_samples", "eval_max_tokens"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise PonderError(f"config field 'num_generations' must be >= 2 (GRPO compares completions "
                              f"of a prompt), got {self.num_generations}")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise PonderError(f"config field 'num_generations' ({self.num_generations}) must divide the step's "
                              f"completions, per_device_train_batch_size * gradient_accumulation_steps = {batch}")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        checks = [("temperature", self.temperature > 0), ("top_p", 0 < self.top_p <= 1),
                  ("learning_rate", self.learning_rate > 0), ("beta", self.beta >= 0),
                  ("epsilon", self.epsilon > 0), ("epsilon_high", self.epsilon_high > 0),
                  ("max_resample_rounds", self.max_resample_rounds >= 0), ("warmup_steps", self.warmup_steps >= 0),
                  ("curriculum_threshold", 0 < self.curriculum_threshold <= 1),
                  ("drop_solved_after", self.drop_solved_after >= 0), ("length_penalty", self.length_penalty >= 0),
                  ("step_error_penalty", self.step_error_penalty >= 0),
                  ("max_time_minutes", self.max_time_minutes is None or self.max_time_minutes > 0),
                  ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1)]
        for name, ok in checks:
            if not ok:
                raise PonderError(f"config field {name!r} has a bad value: {getattr(self, name)!r}")
        for name, choices in (("scale_rewards", ("group", "batch", "none")),
                              ("loss_type", ("grpo", "bnpo", "dr_grpo", "dapo")),
                              ("dynamic_sampling", ("off", "skip", "resample")),
                              ("lr_scheduler_type", ("cosine", "linear", "constant"))):
            if getattr(self, name) not in choices:
                raise PonderError(f"config field {name!r} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        for i, item in enumerate(parse_mixture(self.mixture)):
            if getattr(item, "length", None) is not None or getattr(item, "options", None):
                raise PonderError(f"mixture entry {i}: GRPO samples by level and the default family; "
                                  f"'length' and 'options' are not supported here yet")
        if self.eval_mixture is not None:
            parse_mixture(self.eval_mixture)
        check_engine(self.engine)

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations


@dataclass
class Group:
    """One prompt's completions and their scores."""
    task: str
    level: int
    problem: Problem
    prompt_ids: list[int]
    completions: list[Completion]
    scores: list[Score]

    @property
    def has_signal(self) -> bool:
        rewards = [s.reward for s in self.scores]
        return max(rewards) - min(rewards) > 1e-9


def sample_groups(cfg: GRPOConfig, mixture: list[MixtureItem], curriculum: Curriculum, engine: Engine,
                  chat: ChatFormat, tokenizer, step: int, round_: int, count: int, rank: int = 0) -> list[Group]:
    """`count` prompts (a pure function of seed, step, round, rank and the curriculum), sampled and scored."""
    rng = random.Random(f"grpo/{cfg.seed}/{step}/{round_}" + (f"/rank{rank}" if rank else ""))
    picks = []
    for _ in range(count):
        for _attempt in range(20):
            item = rng.choices(mixture, weights=[m.weight for m in mixture])[0]
            level = curriculum.level(rng, item)
            problem = sample_problem(rng, item.task, level, heldout=False)
            if not curriculum.skip(problem.question):
                break
        picks.append((item.task, level, problem))
    prompts = [chat.prompt(p.question) for _, _, p in picks]
    params = SamplingParams(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_completion_length,
                            seed=cfg.seed * 1_000_003 + step * 1009 + round_ + rank * 1_000_000_007)
    tasks = {m.task: get_task(m.task) for m in mixture}
    groups = []
    for (task, level, problem), prompt, comps in zip(picks, prompts, engine.generate(prompts, params)):
        scores = [score(tasks[task], problem, chat, c, correct_weight=cfg.correct_reward,
                        format_weight=cfg.format_reward, length_penalty=cfg.length_penalty,
                        step_error_penalty=cfg.step_error_penalty,
                        max_completion_length=cfg.max_completion_length) for c in comps]
        curriculum.record(task, level, problem.question, [s.correct for s in scores])
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        groups.append(Group(task, level, problem, ids, comps, scores))
    return groups


def rollout(cfg: GRPOConfig, sample, step: int) -> tuple[list[Group], list[Group]]:
    """(groups to train on, every group generated). Dynamic sampling drops zero-signal groups
    ("skip") or replaces them with fresh prompts for up to max_resample_rounds rounds ("resample")."""
    P = cfg.prompts_per_step
    generated = sample(step, 0, P)
    if cfg.dynamic_sampling == "off":
        return generated, generated
    keep = [g for g in generated if g.has_signal]
    rounds = cfg.max_resample_rounds if cfg.dynamic_sampling == "resample" else 0
    for r in range(1, rounds + 1):
        if len(keep) >= P:
            break
        fresh = sample(step, r, P - len(keep))
        generated += fresh
        keep += [g for g in fresh if g.has_signal]
    if cfg.dynamic_sampling == "resample":  # still short: fill up with zero-signal groups
        keep = keep[:P] + [g for g in generated if not g.has_signal][: max(0, P - len(keep))]
    return keep, generated


def micro_batches(cfg: GRPOConfig, groups: list[Group], pad_id: int, device) -> tuple[list[dict], int, int]:
    """The step's completions as pieces to score: (pieces, completion tokens, micro-batches).

    Rows sorted by length are cut into micro-batches of per_device_train_batch_size, the unit
    the loss normalises over (as in TRL). A micro-batch is scored in pieces of similar lengths
    (padding costs more than a second pass over a few prompts), each running its distinct
    prompts once (`shared_prompt`) and carrying its micro-batch's rows and tokens, so the pieces
    add up to the micro-batch's loss. With beta 0, rows whose advantage is 0 (a group of equal
    rewards) have no gradient and are left out; they still count in every normaliser (the logged
    entropy is then over the rows scored, and a step with no row to score takes no optimizer
    step). The token count is the DAPO normaliser (counted before truncated completions are masked)."""
    if not groups:
        return [], 0, 0
    rewards = torch.tensor([s.reward for g in groups for s in g.scores])
    adv, _ = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)
    rows = [(gi, c.token_ids, not (cfg.mask_truncated_completions and s.truncated))
            for gi, g in enumerate(groups) for c, s in zip(g.completions, g.scores)]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][1]))
    micro = [order[k : k + cfg.per_device_train_batch_size] for k in range(0, len(order), cfg.per_device_train_batch_size)]
    prompts = [g.prompt_ids for g in groups]
    pieces = []
    for idx in micro:
        totals = {"batch_rows": len(idx), "batch_tokens": float(sum(len(rows[i][1]) for i in idx if rows[i][2]))}
        if cfg.beta == 0.0:
            idx = [i for i in idx if adv[i] != 0]
        for part in split_by_padding([len(rows[i][1]) for i in idx]):
            sel = [idx[j] for j in part]
            piece = build_batch(prompts, [rows[i][1] for i in sel], [rows[i][0] for i in sel],
                                [rows[i][2] for i in sel], pad_id, device)
            pieces.append({**piece, **totals, "adv": adv[sel].to(device)})
    num_items = sum(len(c.token_ids) for g in groups for c in g.completions)
    return pieces, num_items, len(micro)


def optimizer_step(model, opt, batches: list[dict], cfg: GRPOConfig, num_items: float, first: bool,
                   accumulation: float, passes: int = 0) -> tuple[float, float, Counter]:
    """One optimizer step over the step's pieces (`micro_batches`): (loss, grad norm, sums for logging).
    `accumulation` is the number of micro-batches, which the pieces were cut from.

    Under DDP every rank runs `passes` backward passes (the most pieces any rank has; a rank
    with fewer adds zero-loss ones) and gradients are all-reduced on the last; `num_items`
    and `accumulation` are then the totals over ranks / world_size, so DDP's mean over ranks is
    the loss of all ranks' batches together."""
    sums, loss_total, grad_norm = Counter(), 0.0, 0.0
    n = max(passes, len(batches))
    for i in range(n):
        with no_sync(model, sync=i == n - 1):
            if i >= len(batches):
                zero_backward(model, zero_inputs(next(model.parameters()).device))
                continue
            mb = batches[i]
            logp, entropy = completion_logprobs(model, mb, cfg.temperature, cfg.bf16)
            if first:
                mb["old"] = logp.detach()  # no step yet on this batch: these are the sampling policy's
            loss, s = policy_loss(logp, mb["old"], mb.get("ref"), mb["adv"], mb["mask"], beta=cfg.beta,
                                  epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                                  max_completion_length=cfg.max_completion_length, num_items=num_items,
                                  accumulation=accumulation, batch_rows=mb["batch_rows"],
                                  batch_tokens=mb["batch_tokens"])
            loss.backward()
        sums.update(s)
        sums["entropy_sum"] += float((entropy * mb["mask"]).sum())
        loss_total += loss.item()
    if n:  # dynamic sampling "skip" may leave nothing to learn from
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss_total, grad_norm, sums


def load_reference(path: str, device):
    """The frozen model the KL term pulls towards: the run's starting weights."""
    ref, _, _ = load_model(path)
    ref.to(device).eval().requires_grad_(False)
    return PromptSharingLM(ref)


def train_grpo(cfg: GRPOConfig, resume: bool = False, config_text: str | None = None) -> Path:
    """Train, checkpointing as configured; return the final model directory. Under torchrun every
    rank runs this same function: it joins the process group, and only rank 0 writes."""
    d, out, ckpt, model, tokenizer, chat = start_run(cfg, resume)
    device = next(model.parameters()).device
    ref = load_reference(cfg.model, device) if cfg.beta != 0.0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            weight_decay=cfg.weight_decay, fused=False)
    mixture = parse_mixture(cfg.mixture)
    curriculum = Curriculum(mixture, enabled=cfg.curriculum, threshold=cfg.curriculum_threshold,
                            window=cfg.curriculum_window, drop_after=cfg.drop_solved_after)
    state = {"step": 0, "tokens": 0, "seconds": 0.0}
    if ckpt is not None:
        state = load_trainer_state(ckpt, opt)
        curriculum.load_state_dict(state.get("curriculum", {}))
    if d.enabled:
        curriculum = RankCurriculum(curriculum, d)
    trainee = wrap(PromptSharingLM(model), d)  # DDP over the same parameters; the engine samples from the bare model
    engine = make_engine(cfg.engine, model, tokenizer,
                         max_batch=min(256, cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps),
                         gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    pad_id = tokenizer.pad_token_id or 0

    def sample(step: int, round_: int, count: int) -> list[Group]:
        return sample_groups(cfg, mixture, curriculum, engine, chat, tokenizer, step, round_, count, d.rank)

    log = open_log(d, out, config_text, state["step"] if ckpt else None)
    step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
    def evaluate() -> dict[str, float]:
        return eval_accuracy(model, tokenizer, chat, cfg.eval_mixture or cfg.mixture, cfg.eval_samples, cfg.seed,
                             cfg.eval_max_tokens)

    if cfg.eval_steps and step == 0 and d.is_main:
        log.log({"step": 0, **evaluate()})
    bar = main_bar(d, cfg.max_steps, step, f"grpo {out.name}")

    def save() -> None:
        if d.is_main:
            save_checkpoint(out, step, model, tokenizer, opt, {"tokens": tokens, "seconds": seconds,
                                                               "curriculum": curriculum.state_dict()},
                            keep=cfg.save_total_limit)

    while step < cfg.max_steps and not (cfg.max_time_minutes and seconds >= cfg.max_time_minutes * 60):
        t0 = time.perf_counter()
        groups, generated = rollout(cfg, sample, step)  # generate with the current weights, score
        if d.enabled:
            curriculum.sync()
        batches, num_items, micro = micro_batches(cfg, groups, pad_id, device)
        counts = d.gather((len(batches), micro, num_items))  # every rank's share of the step, for the normalisers
        passes, accumulation = max(c[0] for c in counts), sum(c[1] for c in counts) / d.world_size
        num_items = sum(c[2] for c in counts) / d.world_size
        if ref is not None:
            with torch.no_grad():
                for mb in batches:
                    mb["ref"] = completion_logprobs(ref, mb, cfg.temperature, cfg.bf16, entropy=False)[0]
        gen_seconds, start_step = time.perf_counter() - t0, step
        for it in range(cfg.num_iterations):
            if step >= cfg.max_steps:
                break
            lr = lr_at(cfg, step, cfg.max_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_total, grad_norm, sums = optimizer_step(trainee, opt, batches, cfg, num_items, first=it == 0,
                                                         accumulation=accumulation, passes=passes)
            step += 1
            bar.update(1)
            parts = d.gather((loss_total, sums, rollout_sums(generated, groups) if it == 0 else None,
                              time.perf_counter() - t0))  # summed over ranks; rank 0's clock for everyone
            loss_total, step_seconds = sum(p[0] for p in parts) / d.world_size, parts[0][3]
            sums = sum((Counter(p[1]) for p in parts), Counter())
            seconds += step_seconds
            t0 = time.perf_counter()
            if it == 0:  # this step's wall time includes generating the batch
                rollout_counts = sum((Counter(p[2]) for p in parts), Counter())
                stats = rollout_metrics(rollout_counts, step_seconds)
                tokens += rollout_counts["length"]
            if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                rec = {"step": step, **stats, "loss": round(loss_total, 6), "lr": lr,
                       "grad_norm": round(grad_norm, 4), **loss_metrics(sums, cfg.beta), "tokens": tokens,
                       "step_seconds": round(step_seconds, 3), "gen_seconds": round(gen_seconds, 3),
                       "seconds": round(seconds, 2), **curriculum.metrics()}
                log.log(rec)
                bar.set_postfix(reward=f"{rec['reward']:.3f}", acc=f"{rec['accuracy']:.2f}",
                                len=f"{rec['completion_length']:.0f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            if cfg.eval_steps and step % cfg.eval_steps == 0 and d.is_main:
                log.log({"step": step, **evaluate()})
        if step // cfg.save_steps > start_step // cfg.save_steps and step < cfg.max_steps:
            save()  # only between batches: a resumed run regenerates from a step boundary
    bar.close()
    save()
    if d.is_main:
        save_model_atomic(out / "model", model, tokenizer)
    log.close()
    del trainee  # DDP's reducer holds the process group: free it while every rank is still in the group
    d.barrier()  # no rank leaves (and closes the group) before rank 0 has written the model
    d.close()
    return out / "model"
