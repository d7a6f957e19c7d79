"""STaR: the model teaches itself to reason from its own correct chains (Zelikman et al. 2022).

A round: sample `num_generations` chains for each of `questions_per_round` fresh training
questions with the current weights; keep a chain only when its think block closed and the
answer after it passes the task's own check. A question with no kept chain is asked again
with its answer as a hint (rationalization, `hinted`); a hinted chain that reaches the answer
is kept too, stored with the plain question, so the model learns to produce it unhinted.
`require_correct_steps` also asks the task to check the chain's own steps (`Task.step_errors`)
and drops a right answer reached through a false one. Then fine-tune on the kept chains with
the SFT step, and start the next round.

`restart_from_base: true` is the paper's schedule: every round fine-tunes the starting model
afresh, here on all chains kept so far (rounds draw fresh questions). The default continues
from the last round's weights on the new chains only: fewer steps for a wall-clock budget.

Resumable at two grains: a round's kept chains are saved (atomically) as soon as they are
sampled, and checkpoints hold the weights and where training stood (round, step in round).
Under torchrun each rank samples its share of the questions; the kept chains are gathered so
every rank trains on the same set, and DDP all-reduces the gradients.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from ponder import PonderError
from ponder.engine.base import Completion, Engine, SamplingParams
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model
from ponder.model.tokenizer import text_checker
from ponder.tasks import Problem, Task
from ponder.train.checkpoint import load_trainer_state, save_checkpoint, save_model_atomic, write_text_atomic
from ponder.train.data import Example, MixtureItem, collate, draw_from_mixture, parse_mixture
from ponder.train.distributed import Dist, main_bar, wrap
from ponder.train.metrics import fit_to_time_budget, read_metrics
from ponder.train.rewards import visible_answer, well_formed
from ponder.train.rollouts import check_engine, eval_accuracy, make_engine, open_log, start_run
from ponder.train.sft import lr_at, step_loss

HINT = " (answer: {answer})"  # plain ASCII: the built-in character tokenizer spells it


def hinted(question: str, answer: str) -> str:
    """The rationalization question: the plain question with its answer given as a hint."""
    return question + HINT.format(answer=answer)


@dataclass
class STaRConfig:
    """TRL/SFT-style names where the concept is the same. A round samples questions_per_round
    questions x num_generations chains, then trains num_train_epochs over the kept chains (at
    most max_steps_per_round steps of per_device_train_batch_size * gradient_accumulation_steps)."""

    output_dir: str = "runs/star"
    model: str = "built-in"  # `built-in` or a model directory (e.g. an SFT run's model/)
    mixture: list[dict] = field(default_factory=lambda: [{"task": "countdown", "levels": [1, 2]}])
    engine: Literal["local", "vllm"] = "local"  # what samples the rounds (vllm: an optional extra)
    vllm_gpu_memory_utilization: float = 0.3  # engine vllm: its share of the GPU, beside the trainer
    rounds: int = 10
    questions_per_round: int = 128
    num_generations: int = 4  # chains sampled per question (and per hinted question)
    keep_per_question: int = 1  # distinct correct chains kept per question
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 256
    rationalize: bool = True
    require_correct_steps: bool = False  # keep only chains whose steps pass the task's own step check
    restart_from_base: bool = False
    num_train_epochs: float = 1.0
    max_steps_per_round: int | None = None
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "constant"
    warmup_steps: int = 0  # per round: every round starts a fresh optimizer
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: bool = True  # bf16 autocast where the device computes bf16 natively; float32 elsewhere
    max_length: int = 1024
    max_time_minutes: float | None = None
    logging_steps: int = 10
    save_steps: int = 0  # checkpoint every this many steps inside a round too; 0: at round ends only
    save_total_limit: int = 2
    eval_rounds: int = 0  # greedy eval every this many rounds (and before the first); 0: never
    eval_samples: int = 32
    eval_mixture: list[dict] | None = None  # default: the training mixture
    eval_max_tokens: int = 768
    seed: int = 0
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("rounds", "questions_per_round", "num_generations", "keep_per_question",
                     "max_completion_length", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps", "save_total_limit", "eval_samples", "eval_max_tokens"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        checks = [("temperature", self.temperature >= 0), ("top_p", 0 < self.top_p <= 1),
                  ("learning_rate", self.learning_rate > 0), ("num_train_epochs", self.num_train_epochs > 0),
                  ("max_steps_per_round", self.max_steps_per_round is None or self.max_steps_per_round >= 1),
                  ("warmup_steps", self.warmup_steps >= 0), ("save_steps", self.save_steps >= 0),
                  ("eval_rounds", self.eval_rounds >= 0), ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1),
                  ("max_time_minutes", self.max_time_minutes is None or self.max_time_minutes > 0),
                  ("lr_scheduler_type", self.lr_scheduler_type in ("cosine", "linear", "constant")),
                  ("vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1)]
        for name, ok in checks:
            if not ok:
                raise PonderError(f"config field {name!r} has a bad value: {getattr(self, name)!r}")
        parse_mixture(self.mixture)
        if self.eval_mixture is not None:
            parse_mixture(self.eval_mixture)
        check_engine(self.engine)


@dataclass(frozen=True)
class Kept:
    """A chain to train on: the plain question, and the completion after its prompt."""
    question: str
    completion: str
    rationalized: bool
    task: str
    level: int


def is_correct(task: Task, problem: Problem, chat: ChatFormat, c: Completion) -> bool:
    """The think block closed, an answer follows it, and it passes the task's check on `problem`
    (always the plain problem, never the hinted one)."""
    parsed = chat.parse(c.text)
    if not well_formed(chat, c.text, c.finish_reason, parsed):
        return False
    answer = visible_answer(chat, c.text, parsed)
    return answer is not None and task.check(problem, answer)


def correct_chains(task: Task, problem: Problem, chat: ChatFormat, completions: list[Completion],
                   limit: int, require_correct_steps: bool = False) -> list[str]:
    """Up to `limit` distinct training targets (`reasoning</think>answer<end>`) from correct completions.
    With `require_correct_steps`, a right answer reached through a step the task finds false (a
    miscomputed countdown move) is not kept: training on it would teach the false step."""
    out: list[str] = []
    for c in completions:
        if len(out) < limit and is_correct(task, problem, chat, c):
            parsed = chat.parse(c.text)
            if require_correct_steps and task.step_errors(parsed.reasoning)[1]:
                continue
            target = chat.completion([parsed.reasoning], parsed.answer)
            out += [target] if target not in out else []
    return out


def round_problems(cfg: STaRConfig, mixture: list[MixtureItem], round_: int) -> list[tuple[MixtureItem, Problem]]:
    """The round's training questions: a pure function of seed and round, the same on every rank."""
    rng = random.Random(f"star/{cfg.seed}/{round_}")
    return [draw_from_mixture(rng, mixture) for _ in range(cfg.questions_per_round)]


def sample_round(cfg: STaRConfig, picks: list[tuple[MixtureItem, Problem]], engine: Engine, chat: ChatFormat,
                 tokenizer, round_: int, rank: int = 0) -> tuple[list[Kept], Counter]:
    """Sample, keep correct chains, rationalize the failures: (kept chains, counts for the round's log)."""
    params = SamplingParams(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_completion_length,
                            seed=cfg.seed * 1_000_003 + round_ * 1009 + rank * 1_000_000_007)
    t0 = time.perf_counter()
    groups = engine.generate([chat.prompt(p.question) for _, p in picks], params)
    s: Counter = Counter(questions=len(picks))
    kept: list[Kept] = []
    failed = []
    for (item, p), comps in zip(picks, groups):
        chains = correct_chains(item.family, p, chat, comps, cfg.keep_per_question, cfg.require_correct_steps)
        s["samples"] += len(comps)
        s["correct_samples"] += sum(is_correct(item.family, p, chat, c) for c in comps)
        s["completion_tokens"] += sum(c.num_tokens for c in comps)
        s["solved_directly"] += bool(chains)
        kept += [Kept(p.question, t, False, item.task, p.level) for t in chains]
        if not chains:
            failed.append((item, p))
    check = text_checker(tokenizer)
    if cfg.rationalize and failed:
        hintable = [(item, p) for item, p in failed if _spellable(check, hinted(p.question, p.answer))]
        s["unhintable"] += len(failed) - len(hintable)  # answers the tokenizer cannot spell: not rationalized
        prompts = [chat.prompt(hinted(p.question, p.answer)) for _, p in hintable]
        hint_params = replace(params, seed=params.seed + 7)
        for (item, p), comps in zip(hintable, engine.generate(prompts, hint_params) if prompts else []):
            chains = correct_chains(item.family, p, chat, comps, cfg.keep_per_question, cfg.require_correct_steps)
            s["completion_tokens"] += sum(c.num_tokens for c in comps)
            s["solved_by_rationalization"] += bool(chains)
            kept += [Kept(p.question, t, True, item.task, p.level) for t in chains]
        s["rationalized_questions"] += len(hintable)
    s["kept"] = len(kept)
    s["gen_seconds"] = time.perf_counter() - t0
    return kept, s


def _spellable(check, text: str) -> bool:
    """Whether the tokenizer can spell `text` (`check` is the character tokenizer's, or None)."""
    try:
        check and check(text)
    except PonderError:
        return False
    return True


def round_stats(s: Counter) -> dict[str, float]:
    """The sampling half of a round's log line, from counts summed over ranks."""
    q = max(1, s["questions"])
    rec = {"questions": s["questions"], "solved_directly": s["solved_directly"],
           "solved_by_rationalization": s["solved_by_rationalization"], "kept": s["kept"],
           "kept_frac": s["kept"] / q, "solved_frac": (s["solved_directly"] + s["solved_by_rationalization"]) / q,
           "accuracy": s["correct_samples"] / max(1, s["samples"]),
           "gen_tokens_per_s": s["completion_tokens"] / max(1e-9, s["gen_seconds"]),
           "gen_seconds": s["gen_seconds"]}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}


def save_round(path: Path, kept: list[Kept], stats: Counter) -> None:
    """One JSONL file per round: its counts, then its kept chains; written in one rename."""
    write_text_atomic(path, "".join(json.dumps(x) + "\n" for x in [{"stats": dict(stats)}, *map(asdict, kept)]))


def load_round(path: Path) -> tuple[list[Kept], Counter]:
    lines = path.read_text().splitlines()
    return [Kept(**json.loads(line)) for line in lines[1:]], Counter(json.loads(lines[0])["stats"])


def encode(kept: list[Kept], tokenizer, chat: ChatFormat, max_length: int) -> list[Example]:
    """Prompt (the plain question) + chain token ids, with the loss on the chain only."""
    if not kept:  # a tokenizer call on no texts fails
        return []
    p_ids = tokenizer([chat.prompt(k.question) for k in kept], add_special_tokens=False)["input_ids"]
    c_ids = tokenizer([k.completion for k in kept], add_special_tokens=False)["input_ids"]
    return [Example((list(p) + list(c))[:max_length], len(p)) for p, c in zip(p_ids, c_ids)]


def planned_steps(cfg: STaRConfig, n_examples: int, world_size: int) -> int:
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world_size
    steps = math.ceil(cfg.num_train_epochs * n_examples / per_step)
    return min(steps, cfg.max_steps_per_round or steps)


def step_examples(cfg: STaRConfig, examples: list[Example], round_: int, k: int, d: Dist) -> list[Example]:
    """This rank's examples of step k: the next slice of an endless stream of seeded epoch shuffles
    (a round with fewer kept chains than a batch repeats them), so every rank gets a full share."""
    per_rank = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    n, start = len(examples), (k * d.world_size + d.rank) * per_rank
    perms: dict[int, list[int]] = {}
    out = []
    for pos in range(start, start + per_rank):
        e = pos // n
        if e not in perms:
            perms[e] = random.Random(f"star/{cfg.seed}/{round_}/epoch{e}").sample(range(n), n)
        out.append(examples[perms[e][pos % n]])
    return sorted(out, key=lambda x: len(x.ids))


def new_optimizer(cfg: STaRConfig, model) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), fused=False)


def train_star(cfg: STaRConfig, resume: bool = False, config_text: str | None = None, *,
               engine_factory=None) -> Path:
    """Run the rounds, checkpointing as configured; return the final model directory.
    `engine_factory(model, tokenizer)` replaces the rollout engine (tests script one)."""
    d, out, ckpt, model, tokenizer, chat = start_run(cfg, resume)
    device = next(model.parameters()).device
    trainee = wrap(model, d)  # DDP over the same parameters; the engine samples from the bare model
    opt = new_optimizer(cfg, model)
    state = {"step": 0, "round": 0, "round_step": 0, "round_done": True, "tokens": 0, "seconds": 0.0}
    if ckpt is not None:
        state = load_trainer_state(ckpt, opt)
    engine = (engine_factory(model, tokenizer) if engine_factory is not None
              else make_engine(cfg.engine, model, tokenizer, max_batch=256,
                               gpu_memory_utilization=cfg.vllm_gpu_memory_utilization))
    mixture = parse_mixture(cfg.mixture)
    log = open_log(d, out, config_text, state["step"] if ckpt else None)
    last = state.get("record")  # a finished round's line, saved before it was logged: log it if a kill lost it
    if d.is_main and last and not any(r.get("round") == last["round"] and "kept" in r
                                      for r in read_metrics(out / "metrics.jsonl")):
        log.log(last)
    step, tokens, seconds = state["step"], state["tokens"], state["seconds"]
    r, k, done = state["round"], state["round_step"], state["round_done"]

    def evaluate() -> dict[str, float]:
        return eval_accuracy(model, tokenizer, chat, cfg.eval_mixture or cfg.mixture, cfg.eval_samples,
                             cfg.eval_max_tokens) if d.is_main else {}

    def save(record: dict | None = None) -> None:
        if d.is_main:
            save_checkpoint(out, step, model, tokenizer, opt,
                            {"round": r, "round_step": k, "round_done": done, "tokens": tokens, "seconds": seconds,
                             "record": record}, keep=cfg.save_total_limit)

    def budget_left() -> bool:
        return not (cfg.max_time_minutes and seconds >= cfg.max_time_minutes * 60)

    if cfg.eval_rounds and ckpt is None and d.is_main:
        log.log({"step": 0, "round": 0, **evaluate()})
    bar = main_bar(d, cfg.rounds, r if done else r - 1, f"star {out.name}", unit="round")
    saved = ckpt is not None
    while (not done or r < cfg.rounds) and budget_left():
        if done:
            r, k, done = r + 1, 0, False
        kept, counts = _round_data(cfg, out, mixture, engine, chat, tokenizer, r, d)
        if "seconds_added" in counts:  # sampled now, not loaded: its wall time counts
            seconds += counts.pop("seconds_added")
        data = kept if not cfg.restart_from_base else [x for j in range(1, r) for x in
                                                       load_round(_round_path(out, j))[0]] + kept
        examples = encode(data, tokenizer, chat, cfg.max_length)
        steps = planned_steps(cfg, len(examples), d.world_size)
        if k == 0:  # a round's training starts with a fresh optimizer (and, if so configured, the base weights)
            if cfg.restart_from_base:
                model.load_state_dict(load_model(cfg.model)[0].state_dict())
            opt = new_optimizer(cfg, model)
        losses, train_tokens, train_seconds = [], 0, 0.0
        while k < steps and budget_left():
            t0 = time.perf_counter()
            exs = step_examples(cfg, examples, r, k, d)
            bs = cfg.per_device_train_batch_size
            batches = [{n: v.to(device) for n, v in collate(exs[i : i + bs]).items()} for i in range(0, len(exs), bs)]
            lr = lr_at(cfg, k, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, _ = step_loss(trainee, batches, cfg.bf16)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            opt.step()
            opt.zero_grad(set_to_none=True)
            n_tok = sum(int((b["input_ids"] != 0).sum()) for b in batches)
            parts = d.gather((loss, n_tok, time.perf_counter() - t0))  # rank 0's clock for everyone
            loss, n_tok, dt = sum(p[0] for p in parts) / d.world_size, sum(p[1] for p in parts), parts[0][2]
            k, step, seconds, tokens = k + 1, step + 1, seconds + dt, tokens + n_tok
            losses.append(loss)
            train_tokens, train_seconds = train_tokens + n_tok, train_seconds + dt
            bar.set_postfix(round=r, step=f"{k}/{steps}", loss=f"{loss:.4f}", tok_s=f"{n_tok / dt:.0f}")
            if step % cfg.logging_steps == 0:
                log.log({"step": step, "round": r, "round_step": k, "loss": round(loss, 5), "lr": lr,
                         "grad_norm": round(grad_norm, 4), "tokens_per_s": round(n_tok / dt, 1)})
            if cfg.save_steps and k % cfg.save_steps == 0 and k < steps:
                save()
        if k < steps:
            break  # out of time inside the round: the checkpoint below resumes at step k
        done = True
        record = {"step": step, "round": r, **round_stats(counts), "train_steps": steps,
                  "train_loss": round(sum(losses) / len(losses), 5) if losses else None,
                  "train_tokens_per_s": round(train_tokens / max(1e-9, train_seconds), 1), "tokens": tokens,
                  "seconds": round(seconds, 2)}
        if cfg.eval_rounds and r % cfg.eval_rounds == 0:
            record |= evaluate()
        save(record)  # before the line: a kill in between re-logs it from the checkpoint on resume
        log.log(record)
        saved = True
        bar.update(1)
        fit_to_time_budget(bar, r, seconds, cfg.max_time_minutes, cfg.rounds)
        bar.set_postfix(round=r, kept=record["kept"], acc=f"{record['accuracy']:.2f}",
                        gen_tok_s=f"{record['gen_tokens_per_s']:.0f}")
    bar.close()
    if not done or not saved:
        save()
    if d.is_main:
        save_model_atomic(out / "model", model, tokenizer)
    log.close()
    del trainee  # DDP's reducer holds the process group: free it while every rank is still in the group
    d.barrier()  # no rank leaves (and closes the group) before rank 0 has written the model
    d.close()
    return out / "model"


def _round_path(out: Path, r: int) -> Path:
    return out / "rounds" / f"round-{r:03d}.jsonl"


def _round_data(cfg: STaRConfig, out: Path, mixture: list[MixtureItem], engine: Engine, chat: ChatFormat,
                tokenizer, r: int, d: Dist) -> tuple[list[Kept], Counter]:
    """Round r's kept chains: read back if they were sampled before an interruption, else sampled now
    (each rank its share of the questions, gathered in rank order) and saved by rank 0."""
    path = _round_path(out, r)
    if d.gather(path.exists())[0]:  # rank 0 decides, so every rank takes the same branch
        return load_round(path)
    t0 = time.perf_counter()
    picks = round_problems(cfg, mixture, r)[d.rank :: d.world_size]
    kept, counts = sample_round(cfg, picks, engine, chat, tokenizer, r, d.rank)
    parts = d.gather((kept, counts, time.perf_counter() - t0))
    kept = [x for p in parts for x in p[0]]
    counts = sum((Counter(p[1]) for p in parts), Counter())
    counts["gen_seconds"] = parts[0][2]
    if d.is_main:
        save_round(path, kept, counts)
    counts["seconds_added"] = parts[0][2]
    return kept, counts
