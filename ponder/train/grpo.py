"""GRPO: reinforcement learning on the chain of thought with verifiable rewards.

A step: sample `num_generations` completions for each of a batch of prompts with the
current weights (the local engine re-fuses its decode weights whenever a step changed
them), score each with the task's own check, turn rewards into group-relative
advantages, then take optimizer steps on that batch with the clipped ratio to the sampling
policy: `steps_per_generation / gradient_accumulation_steps` steps, each on its share of the
groups, repeated `num_iterations` times. The objective itself is in `ponder.train.rl_loss`,
the config in `ponder.train.grpo_config`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ponder.engine.base import Completion, Engine, SamplingParams
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model
from ponder.tasks import Problem, get_task
from ponder.train.checkpoint import load_trainer_state, save_checkpoint, save_model_atomic
from ponder.train.curriculum import Curriculum
from ponder.train.data import MixtureItem, parse_mixture, sample_problem
from ponder.train.distributed import main_bar, no_sync, wrap, zero_backward
from ponder.train.grpo_config import GRPOConfig
from ponder.train.metrics import fit_to_time_budget
from ponder.train.rewards import Score, score
from ponder.train.rl_loss import group_advantages, policy_loss
from ponder.train.rollouts import (RankCurriculum, eval_accuracy, loss_metrics, make_engine, open_log, rollout_metrics,
                                  rollout_sums, start_run)
from ponder.train.shared_prompt import (PromptSharingLM, build_batch, completion_logprobs, split_by_padding,
                                        zero_inputs)
from ponder.train.sft import lr_at


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
    P = cfg.prompts_per_step * cfg.steps_per_batch
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


def split_generation(cfg: GRPOConfig, groups: list[Group], step: int) -> list[tuple[list[Group], torch.Tensor]]:
    """The generated batch cut into `steps_per_batch` optimizer steps of whole groups, in an order
    fixed by seed and step, each with its rows' advantages (scaled over the whole batch)."""
    if cfg.steps_per_batch == 1:
        return [(groups, advantages(cfg, groups))]
    groups = groups[:]
    random.Random(f"grpo-split/{cfg.seed}/{step}").shuffle(groups)
    adv, G = advantages(cfg, groups), cfg.num_generations
    cuts = [round(k * len(groups) / cfg.steps_per_batch) for k in range(cfg.steps_per_batch + 1)]
    return [(groups[a:b], adv[a * G : b * G]) for a, b in zip(cuts, cuts[1:])]


def advantages(cfg: GRPOConfig, groups: list[Group]) -> torch.Tensor:
    rewards = torch.tensor([s.reward for g in groups for s in g.scores])
    if not groups:
        return rewards
    adv = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards)[0]
    return torch.where(adv < 0, adv * cfg.negative_advantage_weight, adv)


def micro_batches(cfg: GRPOConfig, groups: list[Group], pad_id: int, device,
                  adv: torch.Tensor | None = None) -> tuple[list[dict], int, int]:
    """The step's completions as pieces to score: (pieces, completion tokens, micro-batches).

    Rows sorted by length are cut into micro-batches of per_device_train_batch_size, the unit
    the loss normalises over (as in TRL). A micro-batch is scored in pieces of similar lengths
    (padding costs more than a second pass over a few prompts), each running its distinct
    prompts once (`shared_prompt`) and carrying its micro-batch's rows and tokens, so the pieces
    add up to the micro-batch's loss. With beta 0, rows whose advantage is 0 (a group of equal
    rewards) have no gradient and are left out; they still count in every normaliser (the logged
    entropy is then over the rows scored, and a step with no row to score takes no optimizer
    step). The token count is the DAPO normaliser (counted before truncated completions are masked).
    `adv`: the rows' advantages, when scaled over more groups than these (`split_generation`)."""
    if not groups:
        return [], 0, 0
    adv = advantages(cfg, groups) if adv is None else adv
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


def optimizer_step(model, opt, batches: list[dict], cfg: GRPOConfig, num_items: float,
                   accumulation: float, passes: int = 0) -> tuple[float, float, Counter]:
    """One optimizer step over the step's pieces (`micro_batches`): (loss, grad norm, sums for logging).
    `accumulation` is the number of micro-batches, which the pieces were cut from. A piece without
    `old` log-probabilities is scored before any step on its batch: these are the sampling policy's.

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
            if "old" not in mb:
                mb["old"] = logp.detach()
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


def prepare_step(cfg: GRPOConfig, groups: list[Group], adv: torch.Tensor, d, pad_id: int, device, ref,
                 policy=None) -> tuple[list[dict], float, float, int]:
    """One optimizer step's pieces and normalisers over all ranks: (pieces, num_items, accumulation,
    passes), the pieces carrying the reference model's log-probabilities and, given `policy`, the
    sampling policy's (a step cut from the batch after the first one, scored before any update)."""
    batches, num_items, micro = micro_batches(cfg, groups, pad_id, device, adv)
    counts = d.gather((len(batches), micro, num_items))  # every rank's share of the step, for the normalisers
    passes, accumulation = max(c[0] for c in counts), sum(c[1] for c in counts) / d.world_size
    with torch.no_grad():
        for mb in batches:
            if ref is not None:
                mb["ref"] = completion_logprobs(ref, mb, cfg.temperature, cfg.bf16, entropy=False)[0]
            if policy is not None:
                mb["old"] = completion_logprobs(policy, mb, cfg.temperature, cfg.bf16, entropy=False)[0]
    return batches, sum(c[2] for c in counts) / d.world_size, accumulation, passes


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
    policy = PromptSharingLM(model)
    trainee = wrap(policy, d)  # DDP over the same parameters; the engine samples from the bare model
    engine = make_engine(cfg.engine, model, tokenizer,
                         max_batch=min(256, cfg.per_device_train_batch_size * cfg.steps_per_generation),
                         gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    pad_id = tokenizer.pad_token_id or 0

    def sample(step: int, round_: int, count: int) -> list[Group]:
        return sample_groups(cfg, mixture, curriculum, engine, chat, tokenizer, step, round_, count, d.rank)

    log = open_log(d, out, config_text, state["step"] if ckpt else None)
    step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
    def evaluate() -> dict[str, float]:
        return eval_accuracy(model, tokenizer, chat, cfg.eval_mixture or cfg.mixture, cfg.eval_samples,
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
        steps = [prepare_step(cfg, part, adv, d, pad_id, device, ref, policy if k else None)
                 for k, (part, adv) in enumerate(split_generation(cfg, groups, step))]
        gen_seconds, start_step = time.perf_counter() - t0, step
        for it, (batches, num_items, accumulation, passes) in enumerate(steps * cfg.num_iterations):
            if step >= cfg.max_steps:
                break
            lr = lr_at(cfg, step, cfg.max_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss_total, grad_norm, sums = optimizer_step(trainee, opt, batches, cfg, num_items,
                                                         accumulation=accumulation, passes=passes)
            step += 1
            bar.update(1)
            parts = d.gather((loss_total, sums, rollout_sums(generated, groups) if it == 0 else None,
                              time.perf_counter() - t0))  # summed over ranks; rank 0's clock for everyone
            loss_total, step_seconds = sum(p[0] for p in parts) / d.world_size, parts[0][3]
            sums = sum((Counter(p[1]) for p in parts), Counter())
            seconds += step_seconds
            t0 = time.perf_counter()
            fit_to_time_budget(bar, step, seconds, cfg.max_time_minutes, cfg.max_steps)
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
