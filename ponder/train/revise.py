"""Train self-revision (`ponder train revise`): the model's own wrong answers, paired with correct chains.

Two phases, both resumable:

1. **Data.** Training problems from the mixture, in rounds of `batch_problems`: the model
   attempts each one `attempts` times, and its distinct wrong answers become revision
   examples (`revise_data`: prompted exactly as the `revise` strategy prompts a revision,
   targeting a correct chain). Each round is appended to `revision_data.jsonl` in one
   write; a resumed run keeps the finished rounds and goes on from the next.
2. **Fine-tuning.** The SFT step (`train_sft`) on those examples, with a `replay`
   fraction of every batch drawn from the mixture's ordinary first-attempt examples, so
   the first attempt, which a revision starts from, does not get worse.

Why the model's own attempts: a revision is prompted with an answer the model itself
gave; the reference chain's mistakes would be mistakes it does not make.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model, load_tokenizer, resolve
from ponder.train.checkpoint import latest_checkpoint
from ponder.train.data import Example, SFTData, draw_from_mixture, length_batches, parse_mixture
from ponder.train.revise_data import RevisionExample, build_revision_data, encode
from ponder.train.rollouts import make_engine
from ponder.train.sft import SFTConfig, train_sft


@dataclass
class ReviseConfig(SFTConfig):
    """SFTConfig's fields for the fine-tuning (`model` is the model to improve, not trained from
    scratch), and how the revision examples are made."""

    output_dir: str = "runs/revise"
    model: str = "built-in"
    num_problems: int = 1024  # training problems attempted
    batch_problems: int = 64  # problems per data round (one engine call, one append)
    attempts: int = 8  # the model's attempts per problem
    sample_temperature: float = 0.8
    max_new_tokens: int = 768
    per_problem: int = 2  # revision examples per problem at most (one per distinct wrong answer)
    context: int = 1  # earlier wrong answers shown in a revision prompt
    target: str = "own"  # "own": one of the model's correct chains for the question (else the reference)
    replay: float = 0.5  # fraction of each batch that is ordinary first-attempt examples
    learning_rate: float = 1e-4
    warmup_steps: int = 10
    lr_scheduler_type: str = "constant"
    max_steps: int = 300
    bf16: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_problems", "batch_problems", "attempts", "per_problem", "context", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise PonderError(f"config field {name!r} must be >= 1, got {getattr(self, name)}")
        if self.target not in ("own", "reference"):
            raise PonderError(f"config field 'target' must be 'own' or 'reference', got {self.target!r}")
        if not 0 <= self.replay < 1:
            raise PonderError(f"config field 'replay' must be in [0, 1), got {self.replay}")
        if self.sample_temperature <= 0:
            raise PonderError(f"config field 'sample_temperature' must be > 0, got {self.sample_temperature}")
        resolve(self.model)  # a missing model fails now, not after the data phase


class RevisionData:
    """Batches for `train_sft`: revision examples drawn with replacement (seeded by step) and,
    for a `replay` fraction of each batch, the mixture's first-attempt examples."""

    def __init__(self, examples: list[Example], replay_data: SFTData, replay: float, seed: int) -> None:
        if not examples:
            raise PonderError("no revision examples: the model made no wrong answers on these problems "
                              "(more problems, more attempts, or a harder mixture)")
        self.examples, self.replay_data, self.replay, self.seed = examples, replay_data, replay, seed

    def step_batches(self, step: int, batch_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        rng = random.Random(f"revise/{self.seed}/{step}")
        n = batch_size * accumulation
        k = round(n * self.replay)
        picked = [self.examples[rng.randrange(len(self.examples))] for _ in range(n - k)]
        picked += self.replay_data.encode([self.replay_data.problem(rng) for _ in range(k)])
        return length_batches(picked, batch_size)


def round_problems(cfg: ReviseConfig, round_: int) -> list:
    """The training-side problems of one data round: a pure function of (seed, round)."""
    rng = random.Random(f"revise-data/{cfg.seed}/{round_}")
    mixture = parse_mixture(cfg.mixture)
    count = min(cfg.batch_problems, cfg.num_problems - round_ * cfg.batch_problems)
    return [draw_from_mixture(rng, mixture)[1] for _ in range(count)]


def build_data(cfg: ReviseConfig, path: Path) -> list[RevisionExample]:
    """Phase 1: every round's examples, the finished ones read back from `path`."""
    done: dict[int, list[dict]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            done[record["round"]] = record["examples"]
    rounds = -(-cfg.num_problems // cfg.batch_problems)
    todo = [r for r in range(rounds) if r not in done]
    if todo:
        model, tokenizer, chat = load_model(cfg.model)
        engine = make_engine("local", model, tokenizer, max_batch=256)
        bar = tqdm(total=rounds, initial=rounds - len(todo), desc="revise data", unit="round")
        for r in todo:
            examples = build_revision_data(engine, chat, round_problems(cfg, r), n=cfg.attempts,
                                           temperature=cfg.sample_temperature, max_tokens=cfg.max_new_tokens,
                                           seed=cfg.seed * 1_000_003 + r, per_problem=cfg.per_problem,
                                           context=cfg.context, target=cfg.target)
            done[r] = [e.to_dict() for e in examples]
            with open(path, "a") as f:  # one write per round: a killed run loses at most the round it was in
                f.write(json.dumps({"round": r, "examples": done[r]}) + "\n")
            bar.update(1)
            bar.set_postfix(examples=sum(map(len, done.values())))
        bar.close()
    return [RevisionExample(**d) for r in sorted(done) for d in done[r]]


def train_revise(cfg: ReviseConfig, resume: bool = False, config_text: str | None = None) -> Path:
    """Build (or read back) the revision examples, then fine-tune on them; return the model directory."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "revision_data.jsonl"
    if not resume and (data_path.exists() or latest_checkpoint(out) is not None):
        raise PonderError(f"{out} already has revision data or checkpoints; pass --resume to continue "
                          f"or pick a new output_dir")
    examples = build_data(cfg, data_path)
    tokenizer = load_tokenizer(cfg.model)
    chat = ChatFormat.for_tokenizer(tokenizer)
    encoded = [Example(ids, start) for ids, start in encode(examples, tokenizer, cfg.max_length)]
    replay = SFTData(parse_mixture(cfg.mixture), tokenizer, chat, cfg.seed, True, cfg.max_length)
    own = sum(e.own for e in examples)
    print(f"{len(examples)} revision examples ({own} target the model's own chains), replay {cfg.replay:.0%}")
    sft = SFTConfig(**{f.name: getattr(cfg, f.name) for f in fields(SFTConfig)})
    sft.model = str(resolve(cfg.model))
    return train_sft(sft, resume=resume, config_text=config_text,
                     data=RevisionData(encoded, replay, cfg.replay, cfg.seed))
