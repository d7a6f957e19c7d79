"""The add, mul and compare families: right answers, consistent traces, strict checking.

The trace checkers below are written independently of the generators: they
read the question, then check that every line is exactly the line the state
machine writes after the previous one, and that the last line is the answer
that ordinary arithmetic gives.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.tasks import _REGISTRY
from ponder.tasks.arithmetic import AddTask, MulTask
from ponder.tasks.base import Problem
from ponder.tasks.compare import CompareTask

ADD, MUL, CMP = AddTask(), MulTask(), CompareTask()
MUL_SHAPES = {1: (2, 1), 2: (3, 1), 3: (3, 2), 4: (4, 2), 5: (4, 3), 6: (5, 3), 7: (5, 4)}

seeds = st.integers(min_value=0, max_value=2**63)
FAST = settings(max_examples=120, deadline=None)


ADD_LEVELS, MUL_LEVELS, CMP_LEVELS = st.integers(1, 10), st.integers(1, 7), st.integers(1, 3)


def operands(question: str, op: str) -> tuple[str, str]:
    m = re.fullmatch(r"What is (\d+) " + re.escape(op) + r" (\d+)\?", question)
    assert m, question
    return m.group(1), m.group(2)


def pair(question: str) -> tuple[str, str]:
    m = re.fullmatch(r"Which is larger: (\d+(?:\.\d+)?) or (\d+(?:\.\d+)?)\?", question)
    assert m, question
    return m.group(1), m.group(2)


def completion(problem) -> str:
    return "\n".join(problem.steps) + "</think>" + problem.answer + "<|end|>"


# --- independent trace checkers -------------------------------------------------

_ADD_LINE = re.compile(r"(\d*)\+(\d*)\+(\d)=(\d*)")
_MUL_LINE = re.compile(r"(\d*)\*(\d)\+(\d)=(\d*)")


def check_add_block(lines: list[str], i: int, x: str, y: str) -> tuple[int, str]:
    """Replays `x + y` from lines[i]; returns the index after the block and the sum it states."""
    assert lines[i] == f"{x}+{y}+0=", (i, lines[i], x, y)
    while True:
        m = _ADD_LINE.fullmatch(lines[i])
        assert m, lines[i]
        a, b, c, r = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        i += 1
        if not a and not b:
            assert lines[i] == "=" + ("1" if c else "") + r, (lines[i], lines[i - 1])
            return i + 1, lines[i][1:]
        s = (int(a[-1]) if a else 0) + (int(b[-1]) if b else 0) + c
        assert lines[i] == f"{a[:-1]}+{b[:-1]}+{s // 10}={s % 10}{r}", (lines[i - 1], lines[i])


def check_times_digit_block(lines: list[str], i: int, a: str, m: int) -> tuple[int, str]:
    assert lines[i] == f"{a}*{m}+0=", (lines[i], a, m)
    while True:
        g = _MUL_LINE.fullmatch(lines[i])
        assert g and int(g.group(2)) == m, lines[i]
        rest, c, r = g.group(1), int(g.group(3)), g.group(4)
        i += 1
        if not rest:
            value = int(f"{c}{r}")
            assert lines[i] == f"={value}", (lines[i - 1], lines[i])
            return i + 1, lines[i][1:]
        s = int(rest[-1]) * m + c
        assert lines[i] == f"{rest[:-1]}*{m}+{s // 10}={s % 10}{r}", (lines[i - 1], lines[i])


def check_add_trace(problem) -> None:
    a, b = operands(problem.question, "+")
    steps = list(problem.steps)
    end, total = check_add_block(steps, 0, a, b)
    assert end == len(steps)
    assert int(total) == int(a) + int(b)
    assert total == problem.answer


def check_mul_trace(problem) -> None:
    a, b = operands(problem.question, "*")
    steps = list(problem.steps)
    i, total = 0, None
    for k, digit in enumerate(reversed(b)):
        i, partial = check_times_digit_block(steps, i, a, int(digit))
        assert int(partial) == int(a) * int(digit)
        if total is None:
            total = partial
        else:
            shifted = partial + "0" * k if partial != "0" else "0"
            i, new_total = check_add_block(steps, i, shifted, total)
            assert int(new_total) == int(shifted) + int(total)
            total = new_total
    assert i == len(steps)
    assert int(total) == int(a) * int(b)
    assert total == problem.answer


def check_compare_trace(problem) -> None:
    x, y = pair(problem.question)
    steps = list(problem.steps)
    ax, sep, ay = steps[0].partition("|")
    assert sep
    (xi, _, xd), (yi, _, yd) = x.partition("."), y.partition(".")
    width, places = max(len(xi), len(yi)), max(len(xd), len(yd))
    for padded, (oi, od) in ((ax, (xi, xd)), (ay, (yi, yd))):
        pi, point, pd = padded.partition(".")
        assert Decimal(padded) == Decimal(f"{oi}.{od or 0}")
        assert pi == "0" * (width - len(oi)) + oi, (padded, oi)
        assert pd == od + "0" * (places - len(od)), (padded, od)
        assert bool(point) == (places > 0)
    digits = [(dx, dy) for dx, dy in zip(ax, ay) if dx != "."]
    j = 1
    for dx, dy in digits:
        expected = f"{dx}{'=' if dx == dy else '<' if dx < dy else '>'}{dy}"
        assert steps[j] == expected, (steps[j], expected)
        j += 1
        if dx != dy:
            break
    else:
        raise AssertionError("no differing digit")
    winner = x if steps[j - 1][1] == ">" else y
    assert steps[j:] == [winner]
    assert Decimal(winner) == max(Decimal(x), Decimal(y))
    assert problem.answer == winner


def mutate_line(steps: tuple[str, ...], rng: random.Random) -> list[str]:
    """The trace with one digit of one line changed."""
    lines = list(steps)
    candidates = [(i, j) for i, line in enumerate(lines) for j, ch in enumerate(line) if ch.isdigit()]
    i, j = rng.choice(candidates)
    old = lines[i][j]
    new = rng.choice([d for d in "0123456789" if d != old])
    lines[i] = lines[i][:j] + new + lines[i][j + 1:]
    return lines


# --- answers are right by ordinary arithmetic ------------------------------------

@FAST
@given(seeds, ADD_LEVELS)
def test_add_answer_and_trace(seed, level):
    p = ADD.sample(random.Random(seed), level)
    a, b = operands(p.question, "+")
    assert p.answer == str(int(a) + int(b))
    assert p.family == "add" and p.level == level
    check_add_trace(p)


@FAST
@given(seeds, MUL_LEVELS)
def test_mul_answer_and_trace(seed, level):
    p = MUL.sample(random.Random(seed), level)
    a, b = operands(p.question, "*")
    assert p.answer == str(int(a) * int(b))
    assert p.family == "mul" and p.level == level
    check_mul_trace(p)


@FAST
@given(seeds, CMP_LEVELS)
def test_compare_answer_and_trace(seed, level):
    p = CMP.sample(random.Random(seed), level)
    x, y = pair(p.question)
    assert Decimal(x) != Decimal(y)
    assert p.answer == (x if Decimal(x) > Decimal(y) else y)
    assert p.family == "compare" and p.level == level
    check_compare_trace(p)


def test_documented_examples_exactly():
    from ponder.tasks.arithmetic import add_trace, mul_trace
    from ponder.tasks.compare import compare_trace

    assert add_trace("48213", "7395") == ([
        "48213+7395+0=", "4821+739+0=8", "482+73+1=08", "48+7+0=608",
        "4++1=5608", "++0=55608", "=55608"], "55608")
    assert mul_trace("482", "37") == ([
        "482*7+0=", "48*7+1=4", "4*7+5=74", "*7+3=374", "=3374",
        "482*3+0=", "48*3+0=6", "4*3+2=46", "*3+1=446", "=1446",
        "14460+3374+0=", "1446+337+0=4", "144+33+1=34", "14+3+0=834",
        "1++0=7834", "++0=17834", "=17834"], "17834")
    assert compare_trace("9.11", "9.8") == (["9.11|9.80", "9=9", "1<8", "9.8"], "9.8")
    assert compare_trace("9.9", "10.1") == (["09.9|10.1", "0<1", "10.1"], "10.1")
    assert compare_trace("7", "6.95") == (["7.00|6.95", "7>6", "7"], "7")
    assert compare_trace("3.405", "3.45") == (["3.405|3.450", "3=3", "4=4", "0<5", "3.45"], "3.45")


def test_mul_edge_cases_zero_digits_and_zero_partials():
    from ponder.tasks.arithmetic import mul_trace

    for a, b in [("10", "100"), ("90", "5"), ("105", "1003"), ("99999", "9999"), ("10000", "1000")]:
        steps, product = mul_trace(a, b)
        assert product == str(int(a) * int(b))
        check_mul_trace(Problem("mul", 1, f"What is {a} * {b}?", product, tuple(steps)))


def test_add_edge_cases_carries_and_zero():
    from ponder.tasks.arithmetic import add_trace

    for a, b in [("0", "0"), ("9", "1"), ("99999", "1"), ("1", "9999999999"), ("5", "5")]:
        steps, total = add_trace(a, b)
        assert total == str(int(a) + int(b))
        check_add_trace(Problem("add", 1, f"What is {a} + {b}?", total, tuple(steps)))


# --- the checkers themselves catch broken traces --------------------------------

@settings(max_examples=60, deadline=None)
@given(seeds, st.sampled_from(["add", "mul", "compare"]))
def test_trace_checkers_reject_any_changed_digit(seed, family):
    task, checker, levels = {
        "add": (ADD, check_add_trace, 10), "mul": (MUL, check_mul_trace, 7), "compare": (CMP, check_compare_trace, 3),
    }[family]
    rng = random.Random(seed)
    p = task.sample(rng, rng.randint(1, levels))
    broken = Problem(p.family, p.level, p.question, p.answer, tuple(mutate_line(p.steps, rng)))
    with pytest.raises(AssertionError):
        checker(broken)
    dropped = Problem(p.family, p.level, p.question, p.answer, p.steps[:-1])
    with pytest.raises((AssertionError, IndexError)):
        checker(dropped)


# --- steps are short printable lines --------------------------------------------

@settings(max_examples=80, deadline=None)
@given(seeds, st.sampled_from([(ADD, 10), (MUL, 7), (CMP, 3)]))
def test_steps_are_printable_single_lines(seed, task_and_levels):
    task, levels = task_and_levels
    rng = random.Random(seed)
    p = task.sample(rng, rng.randint(1, levels))
    assert p.steps
    for text in (*p.steps, p.question, p.answer):
        assert text and all(32 <= ord(ch) < 127 for ch in text), text
    assert all(len(s) <= 40 for s in p.steps)


# --- check accepts the answer and rejects near misses ---------------------------

@FAST
@given(seeds, st.sampled_from([(ADD, 10), (MUL, 7)]))
def test_int_check_accepts_and_rejects(seed, task_and_levels):
    task, levels = task_and_levels
    rng = random.Random(seed)
    p = task.sample(rng, rng.randint(1, levels))
    assert task.check(p, p.answer)
    assert task.check(p, completion(p))
    assert task.check(p, f"The answer is {p.answer}.")
    assert task.check(p, "0" + p.answer)
    assert not task.check(p, str(int(p.answer) + 1))
    assert not task.check(p, str(int(p.answer) - 1))
    j = rng.randrange(len(p.answer))
    changed = p.answer[:j] + rng.choice([d for d in "0123456789" if d != p.answer[j]]) + p.answer[j + 1:]
    assert not task.check(p, changed)
    assert not task.check(p, "\n".join(p.steps) + "</think>" + changed + "<|end|>")
    # the reasoning holds the right number, but the visible answer is wrong
    assert not task.check(p, "\n".join(p.steps) + "</think>" + str(int(p.answer) + 1) + "<|end|>")
    assert not task.check(p, "")
    assert not task.check(p, "no idea</think>banana<|end|>")
    assert task.extract("garbage") is None


@FAST
@given(seeds, CMP_LEVELS)
def test_compare_check_accepts_and_rejects(seed, level):
    rng = random.Random(seed)
    p = CMP.sample(rng, level)
    x, y = pair(p.question)
    smaller = y if p.answer == x else x
    assert CMP.check(p, p.answer)
    assert CMP.check(p, completion(p))
    assert CMP.check(p, f"{p.answer}.")
    assert CMP.check(p, f"{smaller} is less than {p.answer}")
    padded = p.answer + ("0" if "." in p.answer else ".00")
    assert CMP.check(p, padded)
    assert not CMP.check(p, smaller)
    assert not CMP.check(p, "\n".join(p.steps) + "</think>" + smaller + "<|end|>")
    assert not CMP.check(p, f"{p.answer} is more than {smaller}")  # the last number counts
    digits = [j for j, ch in enumerate(p.answer) if ch.isdigit()]
    j = rng.choice(digits)
    changed = p.answer[:j] + rng.choice([d for d in "0123456789" if d != p.answer[j]]) + p.answer[j + 1:]
    assert not CMP.check(p, changed)
    assert not CMP.check(p, "")
    assert not CMP.check(p, "the first one")
    assert CMP.extract("garbage") is None


def test_compare_check_by_value_not_string():
    p = Problem("compare", 3, "Which is larger: 9.11 or 9.8?", "9.8", ("9.11|9.80", "9=9", "1<8", "9.8"))
    assert CMP.check(p, "9.80") and CMP.check(p, "9.800") and CMP.check(p, "09.8")
    assert not CMP.check(p, "9.11") and not CMP.check(p, "98") and not CMP.check(p, "9.08")
    q = Problem("compare", 3, "Which is larger: 7 or 6.95?", "7", ())
    assert CMP.check(q, "7.0") and CMP.check(q, "7") and not CMP.check(q, "6.95") and not CMP.check(q, "70")


# --- determinism and levels -------------------------------------------------------

@pytest.mark.parametrize("task", [ADD, MUL, CMP], ids=lambda t: t.name)
def test_deterministic_and_varied(task):
    for level in range(1, task.max_level + 1):
        first = [task.sample(random.Random(seed), level) for seed in range(30)]
        again = [task.sample(random.Random(seed), level) for seed in range(30)]
        assert first == again
        assert len({p.question for p in first}) >= 5
        rng1, rng2 = random.Random(7), random.Random(7)
        assert [task.sample(rng1, level) for _ in range(5)] == [task.sample(rng2, level) for _ in range(5)]


@pytest.mark.parametrize("task,top", [(ADD, 10), (MUL, 7), (CMP, 3)], ids=["add", "mul", "compare"])
def test_levels_out_of_range_raise(task, top):
    assert task.max_level == top
    for bad in (0, -1, top + 1, 100):
        with pytest.raises(PonderError):
            task.sample(random.Random(0), bad)
        with pytest.raises(PonderError):
            task.describe_level(bad)
    descriptions = [task.describe_level(level) for level in range(1, top + 1)]
    assert len(set(descriptions)) == top


def test_registered_by_name():
    assert _REGISTRY["add"] is AddTask
    assert _REGISTRY["mul"] is MulTask
    assert _REGISTRY["compare"] is CompareTask


# --- difficulty grows as specified -----------------------------------------------

def test_add_digit_counts_per_level():
    for level in range(1, 11):
        shorter, first_longer = set(), set()
        for seed in range(200):
            a, b = operands(ADD.sample(random.Random(seed), level).question, "+")
            assert max(len(a), len(b)) == level
            assert 1 <= min(len(a), len(b)) <= level
            assert all(len(n) == 1 or n[0] != "0" for n in (a, b))
            shorter.add(min(len(a), len(b)))
            first_longer.add(len(a) >= len(b))
        assert shorter == set(range(1, level + 1))  # every shorter length shows up
        assert first_longer == {True, False} or level == 1  # either order


def test_mul_digit_counts_per_level():
    for level, (da, db) in MUL_SHAPES.items():
        bs = set()
        for seed in range(200):
            p = MUL.sample(random.Random(seed), level)
            a, b = operands(p.question, "*")
            assert (len(a), len(b)) == (da, db)
            assert a[0] != "0" and b[0] != "0"
            if db == 1:
                assert 2 <= int(b) <= 9
            bs.add(b)
        if db == 1:
            assert bs == {str(d) for d in range(2, 10)}


def test_trace_length_grows_with_level():
    for task in (ADD, MUL):
        means = []
        for level in range(1, task.max_level + 1):
            lengths = [len(task.sample(random.Random(s), level).reasoning) for s in range(50)]
            means.append(sum(lengths) / len(lengths))
        assert means == sorted(means) and means[-1] > 3 * means[0], (task.name, means)


def _shape(number: str) -> tuple[int, int]:
    whole, _, frac = number.partition(".")
    return len(whole), len(frac)


def test_compare_digit_counts_per_level():
    limits = {1: (1, 1), 2: (2, 2), 3: (2, 3)}
    for level, (max_int, max_dec) in limits.items():
        seen_int, seen_dec = set(), set()
        for seed in range(300):
            x, y = pair(CMP.sample(random.Random(seed), level).question)
            assert Decimal(x) != Decimal(y)
            for n in (x, y):
                whole, _, frac = n.partition(".")
                assert 1 <= len(whole) <= max_int and len(frac) <= max_dec
                assert len(whole) == 1 or whole[0] != "0"  # no leading zeros
                assert not frac.endswith("0")  # no trailing zeros; no bare point
                assert not n.endswith(".")
                seen_int.add(len(whole))
                seen_dec.add(len(frac))
        assert seen_int == set(range(1, max_int + 1))
        assert seen_dec == set(range(0, max_dec + 1))


# --- compare traps ------------------------------------------------------------------

def naive_wrong(x: str, y: str) -> bool:
    """The string order, or "more digits is larger", picks the smaller number."""
    bigger = x if Decimal(x) > Decimal(y) else y
    by_string = max(x, y)
    digits = lambda n: sum(ch.isdigit() for ch in n)  # noqa: E731
    by_length = None if digits(x) == digits(y) else (x if digits(x) > digits(y) else y)
    return by_string != bigger or (by_length is not None and by_length != bigger)


def test_trap_predicate():
    assert naive_wrong("9.11", "9.8") and naive_wrong("3.405", "3.45")
    assert naive_wrong("9.9", "10.1") and naive_wrong("7", "6.95")
    assert not naive_wrong("3.2", "4.7") and not naive_wrong("42.5", "3")
    assert naive_wrong("12.5", "3")  # "3" sorts after "12.5"


def test_compare_traps_by_level():
    rates, kinds = {}, set()
    for level in (1, 2, 3):
        traps = 0
        for seed in range(500):
            x, y = pair(CMP.sample(random.Random(seed), level).question)
            if naive_wrong(x, y):
                traps += 1
                small, big = sorted((x, y), key=Decimal)
                (si, sd), (bi, bd) = _shape(small), _shape(big)
                if si == bi and small.split(".")[0] == big.split(".")[0] and sd > bd:
                    kinds.add(("longer decimals but smaller", level))
                if si < bi:
                    kinds.add(("fewer integer digits", level))
                if bd == 0 and sd > 0:
                    kinds.add(("integer vs decimal", level))
        rates[level] = traps / 500
    assert rates[3] >= 0.4, rates
    assert rates[2] >= 0.15, rates
    assert rates[3] > rates[1], rates
    for kind in ("longer decimals but smaller", "fewer integer digits", "integer vs decimal"):
        assert (kind, 3) in kinds, (kind, kinds)
    assert ("longer decimals but smaller", 2) in kinds
