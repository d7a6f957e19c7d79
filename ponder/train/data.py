"""Training examples from a mixture of task families and levels.

Every batch is a pure function of (seed, step), so a resumed run sees exactly
the batches the uninterrupted run would have seen. A fixed slice of problem
space (by a stable hash of the question) is held out from training for eval.

A mixture entry may pin an exact input `length` instead of levels (serial
families, `sample_length`) and pass `options` to the family's constructor
(e.g. `{task: isq, length: 16, options: {modulus: 59}}`).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, NamedTuple

import torch

from ponder import PonderError
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem, Task, get_task

HELDOUT_MOD = 16

# A problem's hint targets: (offset in the question of the last character of input item i,
# the text that position and the ones after it must predict). See `SFTData.hint_positions`.
HintFn = Callable[[Problem], list[tuple[int, str]]]


def is_heldout(question: str) -> bool:
    return zlib.crc32(question.encode()) % HELDOUT_MOD == 0


@dataclass
class MixtureItem:
    task: str
    levels: list[int]
    weight: float = 1.0
    length: int | None = None  # draw every problem with exactly this input length (`sample_length`)
    options: dict = field(default_factory=dict)  # keyword arguments of the family, e.g. {"modulus": 59}

    @cached_property
    def family(self) -> Task:
        return make_task(self.task, self.options)


def make_task(name: str, options: dict | None = None) -> Task:
    """The family `name`, built with `options` when there are any."""
    task = get_task(name)
    if not options:
        return task
    if not isinstance(options, dict):
        raise PonderError(f"options of task {name!r} must be a mapping, got {options!r}")
    try:
        return type(task)(**options)
    except TypeError:
        raise PonderError(f"task {name!r} does not take the options {sorted(options)}") from None


def parse_mixture(raw: list[dict]) -> list[MixtureItem]:
    items = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "task" not in entry:
            raise PonderError(f"mixture entry {i} needs a 'task' field, got {entry!r}")
        unknown = set(entry) - {"task", "levels", "weight", "length", "options"}
        if unknown:
            raise PonderError(f"mixture entry {i} has unknown field {sorted(unknown)[0]!r}")
        task = make_task(entry["task"], entry.get("options"))
        length = entry.get("length")
        if length is not None:
            if "levels" in entry:
                raise PonderError(f"mixture entry {i}: give either 'levels' or 'length', not both")
            levels = [_check_fixed_length(task, length, i)]
        else:
            levels = entry.get("levels", list(range(1, task.max_level + 1)))
            levels = [levels] if isinstance(levels, int) else list(levels)
        for lv in levels:
            if not isinstance(lv, int) or not 1 <= lv <= task.max_level:
                raise PonderError(f"mixture entry {i}: task {task.name!r} has levels 1..{task.max_level}, not {lv!r}")
        weight = float(entry.get("weight", 1.0))
        if weight <= 0:
            raise PonderError(f"mixture entry {i}: weight must be > 0, got {weight}")
        items.append(MixtureItem(task.name, levels, weight, length, dict(entry.get("options") or {})))
    if not items:
        raise PonderError("mixture is empty: name at least one task")
    return items


def _check_fixed_length(task: Task, length: object, i: int) -> int:
    """The level a fixed-length entry is filed under; draws one problem so a bad length fails now."""
    if not hasattr(task, "sample_length"):
        raise PonderError(f"mixture entry {i}: task {task.name!r} has no fixed input length; use 'levels'")
    if isinstance(length, bool) or not isinstance(length, int):
        raise PonderError(f"mixture entry {i}: length must be a whole number, not {length!r}")
    task.sample_length(random.Random(0), length)  # raises PonderError for a length the family refuses
    return task.level_of_length(length)


def sample_problem(rng: random.Random, task_name: str, level: int, heldout: bool) -> Problem:
    """A problem from the training side (heldout=False) or the eval side of the split."""
    task = get_task(task_name)
    return _rejection(lambda: task.sample(rng, level), heldout, f"{task_name} level {level}")


def draw_problem(rng: random.Random, item: MixtureItem, heldout: bool) -> Problem:
    """A problem of a mixture entry (its fixed length, or one of its levels) from one side of the split."""
    if item.length is None and not item.options:
        return sample_problem(rng, item.task, rng.choice(item.levels), heldout)
    task = item.family
    if item.length is not None:
        return _rejection(lambda: task.sample_length(rng, item.length), heldout, f"{item.task} length {item.length}")
    level = rng.choice(item.levels)
    return _rejection(lambda: task.sample(rng, level), heldout, f"{item.task} level {level}")


def draw_from_mixture(rng: random.Random, mixture: list[MixtureItem], heldout: bool = False
                      ) -> tuple[MixtureItem, Problem]:
    """An entry picked by its weight, then a problem of it: the draw every trainer's data makes."""
    item = rng.choices(mixture, weights=[m.weight for m in mixture])[0]
    return item, draw_problem(rng, item, heldout)


def _rejection(draw: Callable[[], Problem], heldout: bool, what: str) -> Problem:
    for _ in range(10_000):
        p = draw()
        if is_heldout(p.question) == heldout:
            return p
    raise PonderError(f"could not sample a {'held-out' if heldout else 'training'} problem for {what}")


class Example(NamedTuple):
    ids: list[int]  # prompt + completion
    start: int  # where the completion starts
    hints: tuple[tuple[int, int], ...] = ()  # (position, token id the logits at that position must predict)


class SFTData:
    """Batches of one mixture. `cot` keeps the reference trace; `hints` adds hint targets (see below)."""

    def __init__(self, mixture: list[MixtureItem], tokenizer, chat: ChatFormat, seed: int,
                 cot: bool = True, max_length: int = 1024, hints: HintFn | None = None) -> None:
        if hints is not None and cot:
            raise PonderError("hint targets are for training without the trace (cot: false)")
        self.mixture, self.tok, self.chat = mixture, tokenizer, chat
        self.seed, self.cot, self.max_length, self.hints = seed, cot, max_length, hints
        self.vocab = tokenizer.get_vocab()
        self._hint_ids: dict[str, list[int]] = {}

    def example(self, rng: random.Random) -> Example:
        """Token ids of one prompt+completion, where the completion starts, and its hint targets."""
        return self.encode([self.problem(rng)])[0]

    def problem(self, rng: random.Random) -> Problem:
        return draw_from_mixture(rng, self.mixture)[1]

    def encode(self, problems: list[Problem]) -> list[Example]:
        """Tokenize many problems in one call each for prompts, completions and hint texts."""
        prompts = [self.chat.prompt(p.question) for p in problems]
        completions = [self.chat.completion(p.steps if self.cot else [], p.answer) for p in problems]
        enc = self.tok(prompts, add_special_tokens=False, return_offsets_mapping=self.hints is not None)
        c_ids = self.tok(completions, add_special_tokens=False)["input_ids"]
        hints: list[tuple[tuple[int, int], ...]] = [()] * len(problems)
        if self.hints is not None:
            wanted = [self.hints(p) for p in problems]
            new = list({text for w in wanted for _, text in w if text not in self._hint_ids})
            if new:  # hint texts are few and repeat (states of a small machine): tokenize each once
                self._hint_ids.update(zip(new, self.tok(new, add_special_tokens=False)["input_ids"]))
            hints = [self.hint_positions(p, prompt, offsets, [(end, self._hint_ids[text]) for end, text in w])
                     for p, prompt, offsets, w in zip(problems, prompts, enc["offset_mapping"], wanted)]
        return [Example((list(p_ids) + list(c))[: self.max_length], len(p_ids), h)
                for p_ids, c, h in zip(enc["input_ids"], c_ids, hints)]

    @staticmethod
    def hint_positions(p: Problem, prompt: str, offsets: list[tuple[int, int]],
                       wanted: list[tuple[int, list[int]]]) -> tuple[tuple[int, int], ...]:
        """Hint targets in token positions: the setting where intermediate results are supervised
        at the input but never fed back.

        For input item i, `wanted` holds the offset in the question of the item's last character
        and the i-th intermediate result's token ids. The logits at the token holding that
        character, the first position that has read the whole item, predict the result's first
        token, the next position its second, and so on. The targets are not shifted like `labels`:
        `(t, id)` means the output at position t itself is trained towards `id`. They must end
        before the prompt's last position, which predicts the first completion token.
        """
        start = len(offsets)
        at_char = {c: t for t, (a, b) in enumerate(offsets) for c in range(a, b)}
        base = prompt.find(p.question)
        taken: dict[int, int] = {}
        for end, ids in wanted:
            first = at_char.get(base + end)
            if base < 0 or first is None or not 0 <= end < len(p.question):
                raise PonderError(f"hint offset {end} is outside the question {p.question!r}")
            for t, tid in enumerate(ids, start=first):
                if t >= start - 1 or t in taken:
                    raise PonderError(f"a hint after offset {end} of {p.question!r} runs into "
                                      f"{'the completion' if t >= start - 1 else 'another hint'}")
                taken[t] = tid
        return tuple(sorted(taken.items()))

    def step_batches(self, step: int, batch_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        """The micro-batches of one optimizer step, grouped by length to waste little padding."""
        rng = random.Random(self.seed * 1_000_003 + step)
        return length_batches(self.encode([self.problem(rng) for _ in range(batch_size * accumulation)]), batch_size)


def length_batches(examples: list[Example], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Micro-batches of `batch_size` examples, grouped by length to waste little padding."""
    examples = sorted(examples, key=lambda e: len(e.ids))
    return [collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


def collate(examples: list[Example]) -> dict[str, torch.Tensor]:
    """input_ids and shifted-by-one `labels`; `hint_labels` (unshifted) when any example has hints."""
    # Right padding: a causal model never attends to later pads, so no mask is needed.
    width = max(len(e.ids) for e in examples)
    ids = [e.ids + [0] * (width - len(e.ids)) for e in examples]
    labels = [[-100] * min(e.start, len(e.ids)) + e.ids[e.start :] + [-100] * (width - len(e.ids)) for e in examples]
    batch = {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}
    if any(e.hints for e in examples):
        hint_labels = [[-100] * width for _ in examples]
        for row, e in zip(hint_labels, examples):
            for pos, tid in e.hints:
                if pos < len(e.ids):  # a prompt cut at max_length loses the hints past the cut
                    row[pos] = tid
        batch["hint_labels"] = torch.tensor(hint_labels, dtype=torch.long)
    return batch
