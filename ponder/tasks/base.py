"""The contract every verifiable task family fulfils.

A family samples seeded problems at a difficulty level, writes a reference
chain of thought as short `\\n`-separated steps, pulls the answer out of model
text and checks it. Trainers and strategies see only this interface.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ponder import PonderError


@dataclass(frozen=True)
class Problem:
    family: str
    level: int
    question: str
    answer: str
    steps: tuple[str, ...] = field(default=())

    @property
    def reasoning(self) -> str:
        return "\n".join(self.steps)


class Task(ABC):
    """A family of problems with levels 1..max_level (harder as the level grows)."""

    name: str = ""
    max_level: int = 1

    def sample(self, rng: random.Random, level: int) -> Problem:
        if not 1 <= level <= self.max_level:
            raise PonderError(f"task {self.name!r} has levels 1..{self.max_level}, not {level}")
        return self._sample(rng, level)

    @abstractmethod
    def _sample(self, rng: random.Random, level: int) -> Problem: ...

    def extract(self, text: str) -> str | None:
        """The answer in `text` (the visible answer part of a completion), or None."""
        text = text.strip()
        return text or None

    def normalize(self, answer: str) -> str:
        return answer.strip()

    def check(self, problem: Problem, text: str) -> bool:
        """True when `text` (a visible answer, or a whole completion) holds the right answer."""
        got = self.extract(answer_part(text))
        return got is not None and self.normalize(got) == self.normalize(problem.answer)

    def step_errors(self, reasoning: str) -> tuple[int, int]:
        """(steps the family can check on their own, how many of them are wrong) in a chain of thought.

        A step reward needs no model: a family whose steps are calculations says which ones
        are false. The default checks nothing: (0, 0)."""
        return 0, 0

    @property
    def can_check_steps(self) -> bool:
        return type(self).check_steps is not Task.check_steps

    def check_steps(self, question: str, steps: list[str]) -> list[bool] | None:
        """Whether each step of a chain is right, judged against the question itself, or None when the family
        cannot tell. Exact step labels for a reward model (`label: checked`), where rollouts only estimate."""
        return None

    def describe_level(self, level: int) -> str:
        """A short human description of what a level means, for tables."""
        return f"level {level}"


def answer_part(text: str) -> str:
    """The visible answer of a completion: after the think block, before the end marker."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.split("<|end|>", 1)[0]


_INT = re.compile(r"-?\d+")


def last_int(text: str) -> str | None:
    """The last integer in text, the usual way to read a numeric answer."""
    found = _INT.findall(text)
    return found[-1].lstrip("+") if found else None


class IntegerAnswer:
    """Mixin for families whose answer is a whole number: the last integer in the text, compared by value."""

    def extract(self, text: str) -> str | None:
        return last_int(text)

    def normalize(self, answer: str) -> str:
        try:
            return str(int(answer.strip()))
        except ValueError:
            return answer.strip()
