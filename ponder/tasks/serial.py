"""Inherently serial problems: the answer needs one step per input item.

Four families that a constant-depth transformer cannot solve in one forward
pass once the input grows, but can solve with a chain of thought that carries
the running state one line at a time (the expressivity result for chain of
thought on serial problems). `experiments/serial.py` trains small models on
them with and without the trace.

- `s5`: compose permutations of 12345, left to right (a word problem in S5).
- `modadd`: a running sum of small numbers modulo 7.
- `isq`: iterated squaring, x^(2^n) mod 59 (see `ISq` for why not 97).
- `cvp`: the circuit value problem, a chain of and/or/xor/not gates (in `cvp.py`, on the same plumbing).

Every family has `sample_length(rng, length)`, which draws a problem with an
exact input length (permutations, terms, squarings, gates), and `lengths`,
the longest input of each level (a level covers every length above the level
below it, so no length is left out of training). The reference trace always
has exactly `length` lines, one per input item, and each line follows from the line before it
plus one lookup in the question. `make(...)` builds the problem for given
inputs, which is how tests pin worked examples down.
"""

from __future__ import annotations

import random
import re

from ponder import PonderError
from ponder.tasks import register
from ponder.tasks.base import IntegerAnswer, Problem, Task


def _check_length(task: str, length: int, limit: int | None = None) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise PonderError(f"task {task!r} needs a length that is a whole number >= 1, not {length!r}")
    if limit is not None and length > limit:
        raise PonderError(f"task {task!r} supports lengths up to {limit}, not {length}")
    return length


TRACES = ("full", "short")


def _check_trace(task: str, trace: str) -> str:
    if trace not in TRACES:
        raise PonderError(f"task {task!r} has traces {', '.join(TRACES)}, not {trace!r}")
    return trace


class _SerialTask(Task):
    """Shared plumbing: levels map to lengths through `lengths`.

    `trace="short"` writes each step as a line that reads its operands at a fixed distance:
    the previous line's state, and, where the question has one input per step (s5, modadd),
    an input item exactly as many tokens away as every other step's, because a short line
    is as long as a question item (with one token per permutation or number, see
    `experiments/serial.py`). That is the setting of the expressivity experiments, where one
    layer can fetch both operands by position. `full` is the readable default.
    """

    lengths: tuple[int, ...] = ()
    unit: str = "items"
    trace: str = "full"

    def length_of_level(self, level: int) -> int:
        if not 1 <= level <= self.max_level:
            raise PonderError(f"task {self.name!r} has levels 1..{self.max_level}, not {level}")
        return self.lengths[level - 1]

    def level_of_length(self, length: int) -> int:
        """The level recorded on a problem of this length: the first level at least as long."""
        for level, n in enumerate(self.lengths, start=1):
            if length <= n:
                return level
        return self.max_level

    def length_range(self, level: int) -> tuple[int, int]:
        """The lengths a level covers: every length above the level below it, up to its own bound.

        Level 1 starts at two items: a single item has nothing to combine.
        """
        high = self.length_of_level(level)
        low = self.lengths[level - 2] + 1 if level > 1 else min(2, high)
        return low, high

    def _sample(self, rng: random.Random, level: int) -> Problem:
        return self.sample_length(rng, rng.randint(*self.length_range(level)))

    def sample_length(self, rng: random.Random, length: int) -> Problem:  # pragma: no cover
        raise NotImplementedError

    def describe_level(self, level: int) -> str:
        low, high = self.length_range(level)
        return f"{low}-{high} {self.unit}"


# --------------------------------------------------------------------------- s5

_PERM_RUN = re.compile(r"(?<!\d)[1-5]{5}(?!\d)")
_IDENTITY = "12345"


def _is_perm(s: str) -> bool:
    return len(s) == 5 and sorted(s) == list(_IDENTITY)


@register
class S5(_SerialTask):
    """Compose permutations of 12345 given in one-line notation, left to right.

    `Compose: p1 p2 ... pK` asks for r_K where r_1 = p1 and
    r_k[i] = p_k[r_{k-1}[i]] (1-based one-line arrays): apply p1 first, then p2.
    Trace: one line per permutation, `{p_k} {r_k}`; the short trace is `{r_k}` alone.
    """

    name = "s5"
    lengths = (2, 4, 8, 16, 32)
    max_level = 5
    unit = "permutations of 5"

    def __init__(self, trace: str = "full") -> None:
        self.trace = _check_trace(self.name, trace)

    def make(self, perms: list[str], level: int | None = None) -> Problem:
        perms = [str(p) for p in perms]
        if not perms or not all(_is_perm(p) for p in perms):
            raise PonderError("s5 needs one or more permutations of 12345 written like 21345")
        short = self.trace == "short"
        r = perms[0]
        steps = [r if short else f"{r} {r}"]
        for p in perms[1:]:
            r = "".join(p[int(c) - 1] for c in r)
            steps.append(r if short else f"{p} {r}")
        return Problem(
            family=self.name,
            level=level if level is not None else self.level_of_length(len(perms)),
            question="Compose: " + " ".join(perms),
            answer=r,
            steps=tuple(steps),
        )

    def sample_length(self, rng: random.Random, length: int) -> Problem:
        _check_length(self.name, length)
        perms = []
        for _ in range(length):
            digits = list(_IDENTITY)
            rng.shuffle(digits)
            perms.append("".join(digits))
        return self.make(perms)

    def extract(self, text: str) -> str | None:
        runs = [m.group(0) for m in _PERM_RUN.finditer(text) if _is_perm(m.group(0))]
        return runs[-1] if runs else None


# ----------------------------------------------------------------------- modadd


@register
class ModAdd(IntegerAnswer, _SerialTask):
    """`What is 3 + 5 + 6 + 1 mod 7?` with a running-sum trace.

    Trace: the first term alone, then `{prev}+{x}={new}` for every later term. The short
    trace is `{x}={new}` for every term, first included: four characters per line, as many
    as a term of the question (`3 + `).
    """

    name = "modadd"
    lengths = (2, 4, 8, 16, 32)
    max_level = 5
    unit = "terms"

    def __init__(self, modulus: int = 7, trace: str = "full") -> None:
        if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 2:
            raise PonderError(f"modadd needs a whole-number modulus >= 2, not {modulus!r}")
        self.modulus = modulus
        self.trace = _check_trace(self.name, trace)
        self.unit = f"terms mod {modulus}"

    def make(self, terms: list[int], level: int | None = None) -> Problem:
        m = self.modulus
        if not terms or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < m for t in terms):
            raise PonderError(f"modadd needs one or more terms in 0..{m - 1}")
        acc = terms[0]
        steps = [f"{acc}={acc}" if self.trace == "short" else str(acc)]
        for x in terms[1:]:
            new = (acc + x) % m
            steps.append(f"{x}={new}" if self.trace == "short" else f"{acc}+{x}={new}")
            acc = new
        return Problem(
            family=self.name,
            level=level if level is not None else self.level_of_length(len(terms)),
            question=f"What is {' + '.join(map(str, terms))} mod {m}?",
            answer=str(acc),
            steps=tuple(steps),
        )

    def sample_length(self, rng: random.Random, length: int) -> Problem:
        _check_length(self.name, length)
        return self.make([rng.randrange(self.modulus) for _ in range(length)])


# -------------------------------------------------------------------------- isq


@register
class ISq(IntegerAnswer, _SerialTask):
    """`What is 3^(2^5) mod 97?`: square n times, reducing mod m each time.

    Trace: `{x}^2={y}` with y = x*x mod m, one line per squaring, from the base. The short
    trace repeats the modulus on every line, `{x}^2 mod {m}={y}`, so each step finds it in
    the line before instead of ever further back in the question.

    Why 59 and not 97: squaring mod p walks into a cycle whose length is the
    order of 2 modulo the odd part of p-1. For 97 (96 = 32*3) every base lands
    on 1, 35 or 61 within five squarings and then repeats with period <= 2,
    so the answer for n >= 5 is a table lookup on the base plus the parity of
    n: no serial work at all. 59 = 2*29+1 with 2 of order 28 mod 29, so every
    base in 2..57 runs through a cycle of 28 distinct values after its first
    squaring, and numbers stay two digits. (107 would give 52 with three
    digits.) Bases are drawn from 2..m-2: m-1 squares to 1 and stays there.
    """

    name = "isq"
    lengths = (2, 4, 8, 16, 32)
    max_level = 5
    unit = "squarings mod 59"

    def __init__(self, modulus: int | tuple[int, ...] = (59, 97), trace: str = "full") -> None:
        self.trace = _check_trace(self.name, trace)
        moduli = (modulus,) if isinstance(modulus, int) and not isinstance(modulus, bool) else tuple(modulus)
        for m in moduli:
            if isinstance(m, bool) or not isinstance(m, int) or m < 4:
                raise PonderError(f"isq needs a whole-number modulus >= 4, not {m!r}")
        # The question names its modulus; the default family mixes 59 (truly serial) and 97 (the
        # canonical question form). The serial experiment draws from nine primes.
        self.moduli = moduli
        self.modulus = moduli[0]
        self.unit = f"squarings mod {'/'.join(map(str, moduli))}"

    def make(self, base: int, n: int, level: int | None = None, modulus: int | None = None) -> Problem:
        m = self.modulus if modulus is None else modulus
        if isinstance(base, bool) or not isinstance(base, int) or not 2 <= base < m:
            raise PonderError(f"isq needs a base in 2..{m - 1}, not {base!r}")
        _check_length(self.name, n)
        x = base
        steps = []
        for _ in range(n):
            y = x * x % m
            steps.append(f"{x}^2 mod {m}={y}" if self.trace == "short" else f"{x}^2={y}")
            x = y
        return Problem(
            family=self.name,
            level=level if level is not None else self.level_of_length(n),
            question=f"What is {base}^(2^{n}) mod {m}?",
            answer=str(x),
            steps=tuple(steps),
        )

    def sample_length(self, rng: random.Random, length: int) -> Problem:
        _check_length(self.name, length)
        m = self.moduli[0] if len(self.moduli) == 1 else rng.choice(self.moduli)
        return self.make(rng.randrange(2, m - 1), length, modulus=m)
