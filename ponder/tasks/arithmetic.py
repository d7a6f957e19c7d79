"""Long addition and long multiplication, with state-machine reference traces.

Each step of a trace is one short line that follows from the line before it
plus a one-digit lookup, so a tiny transformer can learn to write it.

Addition, for `48213 + 7395`: each line `A+B+c=R` holds the digits of each
operand not yet consumed, the carry and the result digits so far; a step
consumes the last digit of both operands (an empty operand counts as 0). The
last line `=S` is the sum::

    48213+7395+0=
    4821+739+0=8
    482+73+1=08
    48+7+0=608
    4++1=5608
    ++0=55608
    =55608

Multiplication, for `482 * 37`: for each digit `m` of the multiplier from the
right, a partial product with lines `A*m+c=R` and a closing `=P`; then every
later partial product, shifted left by its position, is added to the running
total with the addition lines above (shifted partial first, total second).
"""

from __future__ import annotations

import random

from ponder import PonderError
from ponder.tasks import register
from ponder.tasks.base import Problem, Task, last_int


def add_trace(a: str, b: str) -> tuple[list[str], str]:
    """The addition state-machine lines for digit strings `a + b`, and the sum."""
    lines = [f"{a}+{b}+0="]
    carry, result = 0, ""
    while a or b:
        da = int(a[-1]) if a else 0
        db = int(b[-1]) if b else 0
        a, b = a[:-1], b[:-1]
        s = da + db + carry
        carry, result = s // 10, str(s % 10) + result
        lines.append(f"{a}+{b}+{carry}={result}")
    total = ("1" if carry else "") + result
    lines.append(f"={total}")
    return lines, total


def times_digit_trace(a: str, m: int) -> tuple[list[str], str]:
    """The lines for the partial product `a * m` (m one digit), and the product without leading zeros."""
    lines = [f"{a}*{m}+0="]
    carry, result = 0, ""
    while a:
        s = int(a[-1]) * m + carry
        a = a[:-1]
        carry, result = s // 10, str(s % 10) + result
        lines.append(f"{a}*{m}+{carry}={result}")
    product = ((str(carry) if carry else "") + result).lstrip("0") or "0"
    lines.append(f"={product}")
    return lines, product


def mul_trace(a: str, b: str) -> tuple[list[str], str]:
    """The long-multiplication lines for digit strings `a * b`, and the product."""
    lines: list[str] = []
    total = ""
    for k, digit in enumerate(reversed(b)):
        partial_lines, partial = times_digit_trace(a, int(digit))
        lines.extend(partial_lines)
        if k == 0:
            total = partial
            continue
        shifted = partial + "0" * k if partial != "0" else "0"
        add_lines, total = add_trace(shifted, total)
        lines.extend(add_lines)
    return lines, total


def _number(rng: random.Random, digits: int) -> int:
    """A uniform number with exactly `digits` digits (0..9 for one digit)."""
    if digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _check_level(task: Task, level: int) -> None:
    if not 1 <= level <= task.max_level:
        raise PonderError(f"task {task.name!r} has levels 1..{task.max_level}, not {level}")


class _IntTask(Task):
    """Shared answer reading for tasks whose answer is one integer."""

    def extract(self, text: str) -> str | None:
        return last_int(text)

    def normalize(self, answer: str) -> str:
        answer = answer.strip()
        try:
            return str(int(answer))
        except ValueError:
            return answer


@register
class AddTask(_IntTask):
    """`What is a + b?`; level L: the longer operand has L digits, the other 1..L."""

    name = "add"
    max_level = 10

    def _sample(self, rng: random.Random, level: int) -> Problem:
        long = _number(rng, level)
        short = _number(rng, rng.randint(1, level))
        a, b = (long, short) if rng.random() < 0.5 else (short, long)
        steps, total = add_trace(str(a), str(b))
        return Problem(self.name, level, f"What is {a} + {b}?", total, tuple(steps))

    def describe_level(self, level: int) -> str:
        _check_level(self, level)
        return f"{level}-digit + 1..{level}-digit addition"


MUL_DIGITS: dict[int, tuple[int, int]] = {
    1: (2, 1), 2: (3, 1), 3: (3, 2), 4: (4, 2), 5: (4, 3), 6: (5, 3), 7: (5, 4),
}


@register
class MulTask(_IntTask):
    """`What is a * b?`; the level fixes the digit counts of a and b (see MUL_DIGITS)."""

    name = "mul"
    max_level = len(MUL_DIGITS)

    def _sample(self, rng: random.Random, level: int) -> Problem:
        da, db = MUL_DIGITS[level]
        a = rng.randint(10 ** (da - 1), 10**da - 1)
        b = rng.randint(2, 9) if db == 1 else rng.randint(10 ** (db - 1), 10**db - 1)
        steps, product = mul_trace(str(a), str(b))
        return Problem(self.name, level, f"What is {a} * {b}?", product, tuple(steps))

    def describe_level(self, level: int) -> str:
        _check_level(self, level)
        da, db = MUL_DIGITS[level]
        return f"{da}-digit x {db}-digit multiplication"
