"""Which of two decimal numbers is larger, with the traps that fool string comparison.

`9.11` has more digits than `9.8` and is smaller; `9.9` sorts after `10.1` as a
string and is smaller; `7` has fewer digits than `6.95` and is larger. The
reference trace first aligns both numbers (leading zeros to the same integer
length, trailing zeros to the same decimal length), then compares digit by
digit from the left until the first difference, then names the larger number
as written::

    9.11|9.80
    9=9
    1<8
    9.8
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation

from ponder import PonderError
from ponder.tasks import register
from ponder.tasks.base import Problem, Task

# level -> (most integer digits, most decimals, share of problems built as traps)
LEVELS: dict[int, tuple[int, int, float]] = {1: (1, 1, 0.0), 2: (2, 2, 0.3), 3: (2, 3, 0.6)}

_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _split(number: str) -> tuple[str, str]:
    whole, _, frac = number.partition(".")
    return whole, frac


def align(x: str, y: str) -> tuple[str, str]:
    """Both numbers padded to the same integer length and the same decimal length."""
    (xi, xd), (yi, yd) = _split(x), _split(y)
    width, places = max(len(xi), len(yi)), max(len(xd), len(yd))

    def pad(whole: str, frac: str) -> str:
        return whole.zfill(width) + ("." + frac.ljust(places, "0") if places else "")

    return pad(xi, xd), pad(yi, yd)


def compare_trace(x: str, y: str) -> tuple[list[str], str]:
    """The reference lines for `x` vs `y` (different values), and the larger as written."""
    ax, ay = align(x, y)
    lines = [f"{ax}|{ay}"]
    for dx, dy in zip(ax, ay):
        if dx == ".":
            continue
        op = "=" if dx == dy else ("<" if dx < dy else ">")
        lines.append(f"{dx}{op}{dy}")
        if op != "=":
            larger = x if op == ">" else y
            lines.append(larger)
            return lines, larger
    raise ValueError(f"{x} and {y} are equal")


def _whole(rng: random.Random, digits: int, least: int = 0) -> int:
    return rng.randint(max(least, 0), 9) if digits == 1 else rng.randint(10, 99)


def _decimals(rng: random.Random, places: int) -> str:
    """`places` random decimal digits, the last one nonzero (no trailing zeros)."""
    if places == 0:
        return ""
    return "".join(str(rng.randint(0, 9)) for _ in range(places - 1)) + str(rng.randint(1, 9))


def _fmt(whole: int, frac: str) -> str:
    return f"{whole}.{frac}" if frac else str(whole)


def _plain(rng: random.Random, max_int: int, max_dec: int) -> tuple[str, str]:
    while True:
        xw = _whole(rng, rng.randint(1, max_int))
        yw = xw if rng.random() < 0.5 else _whole(rng, rng.randint(1, max_int))
        x = _fmt(xw, _decimals(rng, rng.randint(0, max_dec)))
        y = _fmt(yw, _decimals(rng, rng.randint(0, max_dec)))
        if Decimal(x) != Decimal(y):
            return x, y


def _longer_but_smaller(rng: random.Random, max_int: int, max_dec: int) -> tuple[str, str]:
    """Same integer part; the number with more decimals is the smaller (9.11 vs 9.8, 3.405 vs 3.45)."""
    whole = _whole(rng, rng.randint(1, max_int))
    short_places = rng.randint(1, max_dec - 1)
    long_places = rng.randint(short_places + 1, max_dec)
    big = _decimals(rng, short_places)
    at = rng.choice([i for i, d in enumerate(big) if d != "0"])
    small = big[:at] + str(rng.randint(0, int(big[at]) - 1)) + _decimals(rng, long_places - at - 1)
    return _fmt(whole, small), _fmt(whole, big)


def _integer_digits(rng: random.Random, max_int: int, max_dec: int) -> tuple[str, str]:
    """A one-digit integer part against a larger two-digit one that sorts first as a string (9.9 vs 10.1)."""
    lead = rng.randint(2, 9)
    small = _fmt(lead, _decimals(rng, rng.randint(0, max_dec)))
    big = _fmt(10 * rng.randint(1, lead - 1) + rng.randint(0, 9), _decimals(rng, rng.randint(0, max_dec)))
    return small, big


def _integer_vs_decimal(rng: random.Random, max_int: int, max_dec: int) -> tuple[str, str]:
    """An integer against a smaller number with decimals and more digits (7 vs 6.95)."""
    whole = _whole(rng, rng.randint(1, max_int), least=1)
    return _fmt(whole - 1, _decimals(rng, rng.randint(1, max_dec))), str(whole)


def _trap(rng: random.Random, max_int: int, max_dec: int) -> tuple[str, str]:
    kinds = [_integer_vs_decimal]
    if max_dec >= 2:
        kinds.append(_longer_but_smaller)
    if max_int >= 2:
        kinds.append(_integer_digits)
    return rng.choice(kinds)(rng, max_int, max_dec)


@register
class CompareTask(Task):
    """`Which is larger: x or y?` for decimals; higher levels have more digits and more traps."""

    name = "compare"
    max_level = len(LEVELS)

    def _sample(self, rng: random.Random, level: int) -> Problem:
        max_int, max_dec, trap_rate = LEVELS[level]
        make = _trap if rng.random() < trap_rate else _plain
        x, y = make(rng, max_int, max_dec)
        if rng.random() < 0.5:
            x, y = y, x
        steps, larger = compare_trace(x, y)
        return Problem(self.name, level, f"Which is larger: {x} or {y}?", larger, tuple(steps))

    def extract(self, text: str) -> str | None:
        found = None
        for found in _NUMBER.finditer(text):
            pass
        return found.group(0) if found else None

    def normalize(self, answer: str) -> str:
        """The value as a canonical string, so `9.80`, `09.8` and `9.8` agree."""
        answer = answer.strip()
        try:
            value = Decimal(answer)
        except InvalidOperation:
            return answer
        if not value.is_finite():
            return answer
        if value == 0:
            return "0"
        return format(value.normalize(), "f")

    def describe_level(self, level: int) -> str:
        if level not in LEVELS:
            raise PonderError(f"task {self.name!r} has levels 1..{self.max_level}, not {level}")
        max_int, max_dec, trap_rate = LEVELS[level]
        return f"up to {max_int}-digit integer part, {max_dec} decimals, {trap_rate:.0%} built as traps"
