"""The countdown family: solvable targets, honest search traces, a strict and safe checker."""

from __future__ import annotations

import ast
import random
import re
import statistics
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.tasks import get_task, task_names
from ponder.tasks.base import Problem
from ponder.tasks.countdown import Countdown

TASK = get_task("countdown")
POOL = Counter(list(range(1, 11)) * 2 + [25, 50, 75, 100])

QUESTION = re.compile(r"Using the numbers (\d+(?:, \d+)*), make (\d+)\.")
MOVE = re.compile(r"(\d+)([-+*/])(\d+)=(\d+) \[(\d+(?: \d+)*)\]((?: \d+)*)( no)?")
BACK = re.compile(r"back \[(\d+(?: \d+)*)\]")
FINAL = re.compile(r"([-+*/()\d]+)=(\d+)")

seeds = st.integers(min_value=0, max_value=2**32 - 1)
levels = st.integers(min_value=1, max_value=TASK.max_level)


# ----------------------------------------------------------------- an independent replayer


def exact(expr: str) -> tuple[Fraction, list[int]]:
    """Value and leaves of an expression made of ints and binary + - * / (test's own evaluator)."""
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
    leaves: list[int] = []

    def go(n):
        if isinstance(n, ast.BinOp):
            return ops[type(n.op)](go(n.left), go(n.right))
        assert isinstance(n, ast.Constant) and type(n.value) is int, ast.dump(n)
        leaves.append(n.value)
        return Fraction(n.value)

    return go(ast.parse(expr, mode="eval").body), leaves


def one_op_values(a: int, b: int) -> set[Fraction]:
    x, y = Fraction(a), Fraction(b)
    out = {x + y, x - y, y - x, x * y}
    if y:
        out.add(x / y)
    if x:
        out.add(y / x)
    return out


def moves(state: list[int]) -> set[tuple[int, str, int, int]]:
    """Every move the search may make from a state: a >= b, a positive integer result
    that is at most 5000, and no x*1 or x/1 (the test's own reading of the rules)."""
    out = set()
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            a, b = max(state[i], state[j]), min(state[i], state[j])
            out.add((a, "+", b, a + b))
            if a > b:
                out.add((a, "-", b, a - b))
            if b != 1:
                out.add((a, "*", b, a * b))
                if a % b == 0:
                    out.add((a, "/", b, a // b))
    return {m for m in out if m[3] <= 5000}


def replay(problem: Problem) -> int:
    """Check every line of the trace against the question; return the number of dead ends.

    Besides the arithmetic, this checks that the search is honest: a move that
    makes the target comes first, ``no`` marks only true dead ends, and
    ``back`` comes only after every move from the state was tried, and returns
    to the state's parent.
    """
    m = QUESTION.fullmatch(problem.question)
    assert m, problem.question
    root = sorted(int(x) for x in m.group(1).split(", "))
    target = int(m.group(2))
    steps = list(problem.steps)
    assert steps and all(s and "\n" not in s for s in steps)
    path: list[tuple[list[int], set]] = [(root, set())]  # states from the root, with the moves tried
    dead = 0
    for line in steps[:-1]:
        state, tried = path[-1]
        assert target not in state, f"trace goes on after reaching the target: {line}"
        hits = {mv for mv in moves(state) if mv[3] == target}
        if (c := MOVE.fullmatch(line)):
            a, op, b, r = int(c[1]), c[2], int(c[3]), int(c[4])
            assert (a, op, b, r) in moves(state), f"{line}: not a move from {state}"
            assert (a, op, b, r) not in tried, f"{line}: tried twice from {state}"
            assert not hits or r == target, f"{line}: a move from {state} makes {target} and comes first"
            tried.add((a, op, b, r))
            rest = Counter(state) - Counter([a, b])
            child = sorted(list(rest.elements()) + [r])
            assert [int(x) for x in c[5].split()] == child, f"{line}: state should be {child}"
            listed = [int(x) for x in c[6].split()]
            if len(child) == 2 and target not in child:
                # A two-number state is checked in writing: its results in the order + - * /
                # up to the target, then "no" if none of them is the target.
                made = [mv[3] for op_ in "+-*/" for mv in moves(child) if mv[1] == op_]
                if target in made:
                    made = made[: made.index(target) + 1]
                assert listed == made, f"{line}: the results of {child} are {made}"
            else:
                assert not listed, f"{line}: results listed for {child}"
            no_hit = len(child) == 2 and target not in child and target not in listed
            assert bool(c[7]) == no_hit, f"{line}: 'no' must mark exactly the dead ends"
            if c[7]:
                dead += 1
            else:
                path.append((child, set()))
        elif (b_ := BACK.fullmatch(line)):
            assert tried == moves(state), f"back from {state} before trying {moves(state) - tried}"
            path.pop()
            assert path and [int(x) for x in b_[1].split()] == path[-1][0], f"{line}: not the parent of {state}"
        else:
            raise AssertionError(f"unparseable line {line!r}")
    state = path[-1][0]
    assert target in state, "the last line must come when the state holds the target"
    f = FINAL.fullmatch(steps[-1])
    assert f, steps[-1]
    assert int(f[2]) == target
    value, leaves = exact(f[1])
    assert value == target
    assert not Counter(leaves) - Counter(root), f"{f[1]} uses numbers not given"
    assert len(leaves) <= len(root) - len(state) + 1
    assert problem.answer == f[1]
    return dead


# ----------------------------------------------------------------- properties of samples


@settings(max_examples=150, deadline=None)
@given(seed=seeds, level=levels)
def test_sample_is_solvable_honest_and_checked(seed, level):
    p = TASK.sample(random.Random(seed), level)
    assert p.family == "countdown" and p.level == level
    m = QUESTION.fullmatch(p.question)
    assert m
    nums = [int(x) for x in m[1].split(", ")]
    target = int(m[2])
    assert len(nums) == level + 1 and nums == sorted(nums)
    assert not Counter(nums) - POOL, f"not a deal from the cards: {nums}"
    assert 1 <= target <= 999 and target not in nums
    value, leaves = exact(p.answer)
    assert value == target and len(leaves) >= 2
    assert TASK.check(p, p.answer)
    assert TASK.check(p, f"{p.answer}={target}")
    assert TASK.extract(p.answer) == p.answer
    assert TASK.check(p, "\n".join(p.steps) + "</think>" + p.answer + "<|end|>")
    replay(p)
    if level <= 2:
        assert len(p.reasoning) <= 600
    checked, wrong = TASK.step_errors(p.reasoning)
    assert checked >= 1 and wrong == 0, "a reference trace has a false step"


@settings(max_examples=60, deadline=None)
@given(seed=seeds, level=levels, trace=st.sampled_from(["honest", "guided"]), delta=st.integers(1, 50))
def test_step_errors_find_exactly_the_miscomputed_moves(seed, level, trace, delta):
    """Both traces check clean; a move whose result is changed is the one wrong step."""
    task = Countdown(trace=trace)
    p = task.sample(random.Random(seed), level)
    steps = list(p.steps)
    assert task.step_errors("\n".join(steps)) == (sum(bool(re.match(r"[\d(]", s)) for s in steps), 0)
    m = re.match(r"(\d+[-+*/]\d+)=(\d+)", steps[0])
    steps[0] = f"{m[1]}={int(m[2]) + delta}" + steps[0][m.end():]
    checked, wrong = task.step_errors("\n".join(steps))
    assert wrong == 1 and checked >= 1


@settings(max_examples=40, deadline=None)
@given(seed=seeds, level=levels)
def test_same_seed_same_problem(seed, level):
    assert TASK.sample(random.Random(seed), level) == TASK.sample(random.Random(seed), level)


def test_samples_vary():
    rng = random.Random(1)
    ps = [TASK.sample(rng, 3) for _ in range(60)]
    assert len({p.question for p in ps}) >= 55
    assert len({p.answer for p in ps}) >= 50
    assert len({p.steps[0] for p in ps}) >= 30


@pytest.mark.parametrize("level", [0, -1, 5, 99])
def test_level_out_of_range(level):
    with pytest.raises(PonderError):
        TASK.sample(random.Random(0), level)


def test_registered_and_levels_described():
    assert "countdown" in task_names()
    assert TASK.max_level == 4
    assert [TASK.describe_level(k) for k in (1, 4)] == ["2 numbers", "5 numbers"]


def test_level3_traces_search_and_backtrack_with_varied_targets():
    rng = random.Random(2024)
    ps = [TASK.sample(rng, 3) for _ in range(300)]
    lengths = sorted(len(p.reasoning) for p in ps)
    dead = [replay(p) for p in ps]
    assert 0.5 <= sum(d > 0 for d in dead) / len(ps) <= 0.8
    assert 0.4 <= sum(any(s.startswith("back") for s in p.steps) for p in ps) / len(ps) <= 0.75
    assert 300 <= statistics.median(lengths) <= 500  # as the module docstring says
    used = Counter(len(exact(p.answer)[1]) for p in ps)
    assert set(used) == {2, 3, 4}  # not always all numbers
    assert used[4] > used[2]  # but solutions with several numbers are preferred


def test_trace_example_from_the_docstring():
    import ponder.tasks.countdown as module

    doc = module.__doc__
    block = doc[doc.index("    6*2=12"):doc.index("Moves are tried")]
    lines = [line.strip() for line in block.strip().splitlines()]
    p = Problem("countdown", 3, "Using the numbers 1, 1, 2, 6, make 16.", "(6+2)*(1+1)", tuple(lines))
    assert replay(p) == 3
    # The replayer is what makes "honest" mean something: it refuses a trace that
    # backs out of a state before trying all its moves, or jumps past the parent.
    skipped = lines[:3] + lines[4:]
    with pytest.raises(AssertionError, match="before trying"):
        replay(Problem("countdown", 3, p.question, p.answer, tuple(skipped)))
    jumped = [line.replace(" no", "") if line.startswith("12+1") else line for line in lines]
    with pytest.raises(AssertionError, match="dead ends"):
        replay(Problem("countdown", 3, p.question, p.answer, tuple(jumped)))
    miscounted = [line.replace("14 12 no", "14 11 no") for line in lines]
    with pytest.raises(AssertionError, match="results of"):
        replay(Problem("countdown", 3, p.question, p.answer, tuple(miscounted)))


def test_levels_grow():
    means = []
    for level in range(1, TASK.max_level + 1):
        rng = random.Random(level)
        ps = [TASK.sample(rng, level) for _ in range(60)]
        means.append(statistics.mean(len(p.reasoning) for p in ps))
    assert means == sorted(means) and means[0] < means[-1] / 3


# ----------------------------------------------------------------- the checker


def problem(numbers: str, target: int, answer: str) -> Problem:
    return Problem("countdown", 3, f"Using the numbers {numbers}, make {target}.", answer, ())


P225 = problem("3, 7, 25, 50", 225, "25*7+50")


@pytest.mark.parametrize("text", [
    "25*7+50", "7*25+50", "(50+25)*3", "3*(25+50)", "50+7*25", " ( 50 + 25 ) * 3 = 225 ",
    "(50+25)*3=225", "(7-3)*50+25", "25+50*(7-3)",
])
def test_check_accepts_any_valid_expression(text):
    assert TASK.check(P225, text)


@pytest.mark.parametrize("text", [
    "50+25",                    # wrong value
    "(50+25)*3=224",           # claims a different value
    "25*7+25+25",              # 25 used three times, given once
    "9*25",                    # 9 is not given
    "225",                     # the target itself is not given
    "-(3-7)*50+25",            # unary minus
    "+7*25+50",                # unary plus
    "__import__('os')",
    "x*25+50", "abs(225)", "25*7+50 and 1", "7*25+50.0", "7*25+5e1",
    "", "   ", "no idea", "=225",
    "(50+25)*3)", "((50+25)*3",  # unbalanced
])
def test_check_rejects(text):
    assert not TASK.check(P225, text)


def test_check_rejects_power_floor_division_and_division_by_zero():
    assert TASK.check(problem("2, 3, 8", 9, "8+3-2"), "8+3-2")
    assert not TASK.check(problem("2, 3, 8", 9, "8+3-2"), "3**2")
    p30 = problem("2, 7, 10", 30, "")
    assert not TASK.check(p30, "7//2*10")  # 30 with floor division, 35 exactly
    p125 = problem("2, 2, 5, 25", 125, "25*5")
    assert TASK.check(p125, "25*5+2-2")
    assert not TASK.check(p125, "25*5+2/(2-2)")
    assert not TASK.check(p125, "25*5+(2-2)/(2-2)")


def test_check_allows_fraction_intermediates():
    p = problem("1, 5, 5, 5", 24, "")
    assert TASK.check(p, "5*(5-1/5)")
    assert not TASK.check(p, "5*(5-1/5)+1")


def test_check_reads_only_the_answer_of_a_completion():
    p = TASK.sample(random.Random(5), 3)
    target = int(QUESTION.fullmatch(p.question)[2])
    full = "\n".join(p.steps) + "</think>" + p.answer + "<|end|>"
    assert TASK.check(p, full)
    wrong = "\n".join(p.steps) + "</think>" + f"{target}+1" + "<|end|>"
    assert not TASK.check(p, wrong)


def test_extract():
    assert TASK.extract(" 7 * 25 + 50 = 225 ") == "7*25+50"
    assert TASK.extract("(100-25)*3") == "(100-25)*3"
    assert TASK.extract("3**2") == "3**2"  # expression-like; check refuses it
    for text in ["", "  ", "no", "__import__('os')", "=75", "x=3"]:
        assert TASK.extract(text) is None, text


def test_answers_that_make_the_same_number_vote_together():
    keys = {TASK.normalize(a) for a in ["25*7+50", "(50+25)*3", " 3*(25+50)=225 "]}
    assert keys == {"225"}
    assert TASK.normalize("7/2") == "7/2" and TASK.normalize("50+25") == "75"
    assert TASK.normalize("no idea") == "no idea"


# ----------------------------------------------------------------- the built-in model's trace

GUIDED = get_task("countdown").__class__(trace="guided")


@settings(max_examples=60, deadline=None)
@given(seed=seeds, level=st.integers(min_value=1, max_value=3))
def test_guided_trace_makes_legal_moves_shows_at_most_three_dead_ends_and_solves(seed, level):
    """The trace the built-in model was trained on: moves are legal from the current state, a
    dead end (`no`) comes only at a two-number state that cannot make the target, `back` returns
    to a state on the path, and the last line's expression makes the target from the numbers."""
    p = GUIDED.sample(random.Random(seed), level)
    m = QUESTION.fullmatch(p.question)
    root, target = sorted(int(x) for x in m[1].split(", ")), int(m[2])
    path, dead = [root], 0
    for line in p.steps[:-1]:
        state = path[-1]
        if (c := MOVE.fullmatch(line)) and not c[6] and not c[7]:
            a, op, b, r = int(c[1]), c[2], int(c[3]), int(c[4])
            assert (a, op, b, r) in moves(state), f"{line}: not a move from {state}"
            child = sorted(list((Counter(state) - Counter([a, b])).elements()) + [r])
            assert [int(x) for x in c[5].split()] == child
            path.append(child)
        elif line == "no":
            assert len(state) == 2 and target not in {mv[3] for mv in moves(state)}, f"no at {state}"
            dead += 1
        elif (b_ := BACK.fullmatch(line)):
            back_to = [int(x) for x in b_[1].split()]
            assert back_to in path[:-1], f"{line}: not a state on the path {path}"
            del path[path.index(back_to) + 1:]
        else:
            raise AssertionError(f"unparseable line {line!r}")
    assert dead <= 3 and target in path[-1]
    assert TASK.check(p, p.answer) and p.steps[-1] == f"{p.answer}={target}"


def test_trace_option_is_checked():
    with pytest.raises(PonderError, match="honest or guided"):
        get_task("countdown").__class__(trace="oracle")
