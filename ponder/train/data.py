"""Training examples from a mixture of task families and levels.

Every batch is a pure function of (seed, step), so a resumed run sees exactly
the batches the uninterrupted run would have seen. A fixed slice of problem
space (by a stable hash of the question) is held out from training for eval.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import torch

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem, get_task

HELDOUT_MOD = 16


def is_heldout(question: str) -> bool:
    return zlib.crc32(question.encode()) % HELDOUT_MOD == 0


@dataclass
class MixtureItem:
    task: str
    levels: list[int]
    weight: float = 1.0


def parse_mixture(raw: list[dict]) -> list[MixtureItem]:
    items = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "task" not in entry:
            raise PonderError(f"mixture entry {i} needs a 'task' field, got {entry!r}")
        unknown = set(entry) - {"task", "levels", "weight"}
        if unknown:
            raise PonderError(f"mixture entry {i} has unknown field {sorted(unknown)[0]!r}")
        task = get_task(entry["task"])
        levels = entry.get("levels", list(range(1, task.max_level + 1)))
        levels = [levels] if isinstance(levels, int) else list(levels)
        for lv in levels:
            if not isinstance(lv, int) or not 1 <= lv <= task.max_level:
                raise PonderError(f"mixture entry {i}: task {task.name!r} has levels 1..{task.max_level}, not {lv!r}")
        weight = float(entry.get("weight", 1.0))
        if weight <= 0:
            raise PonderError(f"mixture entry {i}: weight must be > 0, got {weight}")
        items.append(MixtureItem(task.name, levels, weight))
    if not items:
        raise PonderError("mixture is empty: name at least one task")
    return items


def sample_problem(rng: random.Random, task_name: str, level: int, heldout: bool) -> Problem:
    """A problem from the training side (heldout=False) or the eval side of the split."""
    task = get_task(task_name)
    for _ in range(10_000):
        p = task.sample(rng, level)
        if is_heldout(p.question) == heldout:
            return p
    raise PonderError(f"could not sample a {'held-out' if heldout else 'training'} problem for {task_name} level {level}")


class SFTData:
    def __init__(self, mixture: list[MixtureItem], tokenizer, chat: ChatFormat, seed: int,
                 cot: bool = True, max_length: int = 1024) -> None:
        self.mixture, self.tok, self.chat = mixture, tokenizer, chat
        self.seed, self.cot, self.max_length = seed, cot, max_length
        self.weights = [m.weight for m in mixture]
        self.vocab = tokenizer.get_vocab()

    def example(self, rng: random.Random) -> tuple[list[int], int]:
        """Token ids of one prompt+completion and where the completion starts."""
        item = rng.choices(self.mixture, weights=self.weights)[0]
        p = sample_problem(rng, item.task, rng.choice(item.levels), heldout=False)
        prompt = self.chat.prompt(p.question)
        completion = self.chat.completion(p.steps if self.cot else [], p.answer)
        p_ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = self.tok(completion, add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[: self.max_length]
        return ids, len(p_ids)

    def step_batches(self, step: int, batch_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        """The micro-batches of one optimizer step, grouped by length to waste little padding."""
        rng = random.Random(self.seed * 1_000_003 + step)
        examples = [self.example(rng) for _ in range(batch_size * accumulation)]
        examples.sort(key=lambda e: len(e[0]))
        return [_collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def _collate(examples: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
    # Right padding: a causal model never attends to later pads, so no mask is needed.
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(examples):
        t = torch.tensor(ids)
        input_ids[row, : len(ids)] = t
        labels[row, start : len(ids)] = t[start:]
    return {"input_ids": input_ids, "labels": labels}
