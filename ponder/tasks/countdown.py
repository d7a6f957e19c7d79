"""Countdown: reach a target from a few numbers with + - * /, searching with trial and error.

Question: ``Using the numbers 3, 7, 25, 50, make 225.`` Answer: any expression
that uses each given number at most once and equals the target exactly, e.g.
``7*25+50``.

The numbers are dealt like the TV game's cards (two each of 1..10, one each of
25, 50, 75, 100); level L deals L+1 of them. The target lies in 1..999, is not
one of the numbers, and is reachable; targets whose shortest solution needs
several numbers are preferred.

The reference chain of thought is an honest depth-first search: the steps a
player would write who tries the most promising move first and, at a dead
end, goes back to the state the move came from and tries the next one. Each
step combines two numbers of the current state (larger number first, only
positive integer results) and writes the new state, sorted. For
``Using the numbers 1, 1, 2, 6, make 16.``::

    6*2=12 [1 1 12]
    12+1=13 [1 13] 14 12 no
    12-1=11 [1 11] 12 10 no
    1+1=2 [2 12] 14 10 24 6 no
    back [1 1 2 6]
    6+2=8 [1 1 8]
    1+1=2 [2 8] 10 6 16
    8*2=16 [16]
    (6+2)*(1+1)=16

Moves are tried closest to the target first (with a little random
tie-breaking), and a move that makes the target always first. A move that
leaves two numbers writes out what one operation on them makes (in the order
+ - * /, up to the target): ending in ``no`` when none is the target, a dead
end, after which the next move is another one from the same state. Writing the
results out, rather than only the verdict, makes each check a step the model
computes instead of a lookahead it must do silently. When a state has no
untried move left, ``back [...]`` returns to its parent. Nothing in the trace
uses knowledge the player would not have: no move is skipped because a solver
knows it fails. That makes traces long when the search is unlucky: with 4
numbers the median trace is about 400 characters and about one in three is
longer than 900; with 5 numbers the median is several thousand.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections import Counter
from fractions import Fraction
from functools import lru_cache
from itertools import combinations

from ponder import PonderError
from ponder.tasks import register
from ponder.tasks.base import Problem, Task, answer_part

DECK = tuple(list(range(1, 11)) * 2 + [25, 50, 75, 100])
TARGET_MAX = 999
CAP = 5000  # intermediate results above this are never used (keeps lines short)
NOISE = 0.5  # spread of the search's random tie-breaking around "closest to the target first"
MAX_EXPR_CHARS = 200

# Weights of the minimal number of numbers a solution needs, for each count of numbers dealt.
_NEED_WEIGHTS = {
    2: {2: 1.0},
    3: {2: 0.35, 3: 0.65},
    4: {2: 0.15, 3: 0.40, 4: 0.45},
    5: {2: 0.10, 3: 0.25, 4: 0.35, 5: 0.30},
}

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


# ---------------------------------------------------------------------------- arithmetic


def _combine(a: int, b: int) -> list[tuple[str, int]]:
    """The useful integer results of `a op b` (a >= b), in the order + - * /.

    Results that are 0, above CAP, or identities (x*1, x/1) are left out: they
    never help to reach a positive target.
    """
    out = []
    if a + b <= CAP:
        out.append(("+", a + b))
    if a > b:
        out.append(("-", a - b))
    if b != 1:
        if a * b <= CAP:
            out.append(("*", a * b))
        if a % b == 0:
            out.append(("/", a // b))
    return out


@lru_cache(maxsize=4096)
def _reach(ms: tuple[int, ...]) -> frozenset[int]:
    """Values made by using every number of the sorted multiset `ms` exactly once."""
    if len(ms) == 1:
        return frozenset(ms)
    out: set[int] = set()
    n = len(ms)
    seen = set()
    # Splits into two non-empty parts; the first part always holds ms[0].
    for k in range(0, n - 1):
        for rest in combinations(range(1, n), k):
            left = (ms[0],) + tuple(ms[i] for i in rest)
            if left in seen:
                continue
            seen.add(left)
            right = list(ms[1:])
            for i in rest:
                right.remove(ms[i])
            ra, rb = _reach(left), _reach(tuple(right))
            for x in ra:
                for y in rb:
                    a, b = (x, y) if x >= y else (y, x)
                    for _, r in _combine(a, b):
                        out.add(r)
    return frozenset(out)


def _sub_multisets(nums: tuple[int, ...], size: int) -> set[tuple[int, ...]]:
    return {tuple(sorted(c)) for c in combinations(nums, size)}


def _targets_by_need(nums: tuple[int, ...]) -> dict[int, list[int]]:
    """Targets in 1..TARGET_MAX (not one of nums) keyed by how many numbers their shortest solution needs."""
    found: dict[int, int] = {}
    for size in range(2, len(nums) + 1):
        for sub in sorted(_sub_multisets(nums, size)):
            for v in _reach(sub):
                if 1 <= v <= TARGET_MAX and v not in found:
                    found[v] = size
    for v in nums:
        found.pop(v, None)
    by_need: dict[int, list[int]] = {}
    for v, size in found.items():
        by_need.setdefault(size, []).append(v)
    return {k: sorted(v) for k, v in by_need.items()}


# ---------------------------------------------------------------------------- expressions


def _show(node) -> str:
    """An expression tree (int leaf or (op, left, right)) with minimal parentheses."""
    if isinstance(node, int):
        return str(node)
    op, left, right = node
    ls, rs = _show(left), _show(right)
    if not isinstance(left, int) and _PREC[left[0]] < _PREC[op]:
        ls = f"({ls})"
    if not isinstance(right, int):
        rp = _PREC[right[0]]
        if rp < _PREC[op] or (rp == _PREC[op] and op in "-/"):
            rs = f"({rs})"
    return f"{ls}{op}{rs}"


def _fmt(values) -> str:
    return "[" + " ".join(str(v) for v in values) + "]"


# ---------------------------------------------------------------------------- search trace


class _Search:
    """Heuristic depth-first search over states (sorted tuples of (value, tree))."""

    noise = NOISE

    def __init__(self, target: int, rng: random.Random):
        self.target = target
        self.rng = rng

    def children(self, state):
        """(line, child state) for each distinct child, in the order the search tries them."""
        kids = []
        seen = set()
        for i, j in combinations(range(len(state)), 2):
            (x, tx), (y, ty) = state[i], state[j]
            (a, ta), (b, tb) = ((x, tx), (y, ty)) if x >= y else ((y, ty), (x, tx))
            rest = [state[k] for k in range(len(state)) if k not in (i, j)]
            for op, r in _combine(a, b):
                child = tuple(sorted(rest + [(r, (op, ta, tb))], key=lambda n: n[0]))
                key = tuple(v for v, _ in child)
                line = f"{a}{op}{b}={r} {_fmt(key)}"
                if (line, key) in seen:
                    continue
                seen.add((line, key))
                if r == self.target:
                    score = -math.inf
                else:
                    score = math.log1p(abs(r - self.target)) + self.rng.gauss(0.0, self.noise)
                kids.append((score, len(kids), line, child))
        kids.sort(key=lambda k: (k[0], k[1]))
        return [(line, child) for _, _, line, child in kids]

    def solved(self, state, lines: list[str]) -> str | None:
        """The expression that made the target when `state` holds it (its line appended), else None."""
        hit = next((t for v, t in state if v == self.target), None)
        if hit is None:
            return None
        expr = _show(hit)
        lines.append(f"{expr}={self.target}")
        return expr

    def _leaf_check(self, state) -> tuple[str, bool] | None:
        """For two numbers left (neither the target): what their one operation makes, written out
        in the order + - * / up to the target, and whether that is a dead end. None otherwise."""
        if len(state) != 2 or any(v == self.target for v, _ in state):
            return None
        results = []
        for _, r in _combine(state[1][0], state[0][0]):
            results.append(str(r))
            if r == self.target:
                return " ".join(results), False
        return " ".join(results + ["no"]), True

    def trace(self, nums: tuple[int, ...]) -> tuple[list[str], str]:
        root = tuple((v, v) for v in sorted(nums))
        # The path from the root to the current state; each entry holds the state
        # and its untried children in search order.
        path = [(root, self.children(root))]
        lines: list[str] = []
        while True:
            state, todo = path[-1]
            if (expr := self.solved(state, lines)) is not None:
                return lines, expr
            if not todo:
                path.pop()
                if not path:
                    raise PonderError(f"countdown: {self.target} cannot be made from {list(nums)}")
                lines.append(f"back {_fmt(v for v, _ in path[-1][0])}")
                continue
            line, child = todo.pop(0)
            check = self._leaf_check(child)
            if check is not None:
                line = f"{line} {check[0]}"
                if check[1]:
                    lines.append(line)
                    continue
            lines.append(line)
            path.append((child, self.children(child)))


# ---------------------------------------------------------------------------- checking

_EXPR_CHARS = re.compile(r"[0-9+\-*/()]+")
_TRAILING_EQ = re.compile(r"=(-?\d+)$")
_QUESTION = re.compile(r"Using the numbers ([\d, ]+), make (\d+)\.")
_EQUATION = re.compile(r"^([0-9+\-*/() ]*[0-9)])=(-?\d+)")  # a step's leading `expression=value`


def _split_answer(text: str) -> tuple[str, int | None] | None:
    """(expression, claimed value or None) from answer text, or None if it holds no expression."""
    s = re.sub(r"\s+", "", text)
    claimed = None
    m = _TRAILING_EQ.search(s)
    if m:
        claimed = int(m.group(1))
        s = s[: m.start()]
    if not s or len(s) > MAX_EXPR_CHARS or not _EXPR_CHARS.fullmatch(s) or not any(c.isdigit() for c in s):
        return None
    return s, claimed


def evaluate(expr: str) -> tuple[Fraction, list[int]] | None:
    """The exact value of an arithmetic expression and the numbers it uses, or None if it is not one.

    Only non-negative integer literals, parentheses and binary + - * / are
    accepted (no unary minus, no ** or //); division by zero gives None.
    """
    if len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    used: list[int] = []

    def ev(node) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b == 0:
                raise ZeroDivisionError
            return a / b
        raise ValueError("not arithmetic")

    try:
        value = ev(tree.body)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    return value, used


def parse_question(question: str) -> tuple[list[int], int]:
    """The numbers and the target of a countdown question."""
    m = _QUESTION.fullmatch(question.strip())
    if not m:
        raise PonderError(f"not a countdown question: {question!r}")
    return [int(x) for x in m.group(1).split(",")], int(m.group(2))


# ---------------------------------------------------------------------------- the family


@register
class Countdown(Task):
    """`trace`: "honest" (the search above), or "guided", the trace the built-in model was trained
    on, which after at most three dead ends follows a branch a solver knows reaches the target
    (`ponder.tasks.countdown_guided`; kept so that the model's recipe reproduces it)."""

    name = "countdown"
    max_level = 4

    def __init__(self, trace: str = "honest") -> None:
        if trace not in ("honest", "guided"):
            raise PonderError(f"countdown trace must be honest or guided, not {trace!r}")
        self.trace = trace

    def _sample(self, rng: random.Random, level: int) -> Problem:
        n = level + 1
        nums = tuple(sorted(rng.sample(DECK, n)))
        by_need = _targets_by_need(nums)
        weights = _NEED_WEIGHTS[n]
        needs = [k for k in sorted(weights) if k in by_need]
        need = rng.choices(needs, weights=[weights[k] for k in needs])[0]
        target = rng.choice(by_need[need])
        if self.trace == "guided":
            from ponder.tasks.countdown_guided import GuidedSearch

            steps, expr = GuidedSearch(target, rng).trace(nums)
        else:
            steps, expr = _Search(target, rng).trace(nums)
        question = f"Using the numbers {', '.join(map(str, nums))}, make {target}."
        return Problem(self.name, level, question, expr, tuple(steps))

    def extract(self, text: str) -> str | None:
        got = _split_answer(text)
        return got[0] if got else None

    def normalize(self, answer: str) -> str:
        """The expression's value: different expressions that make the same number vote together."""
        got = _split_answer(answer)
        res = evaluate(got[0]) if got else None
        return str(res[0]) if res else answer.strip()

    def check(self, problem: Problem, text: str) -> bool:
        got = _split_answer(answer_part(text))
        if got is None:
            return False
        expr, claimed = got
        nums, target = parse_question(problem.question)
        if claimed is not None and claimed != target:
            return False
        res = evaluate(expr)
        if res is None:
            return False
        value, used = res
        if Counter(used) - Counter(nums):
            return False
        return value == target

    def step_errors(self, reasoning: str) -> tuple[int, int]:
        """Each line that starts with `expression=value` (a move, or the final expression) is a
        calculation: wrong when the expression does not make the value."""
        checked = wrong = 0
        for line in reasoning.split("\n"):
            m = _EQUATION.match(line.strip())
            if not m:
                continue
            res = evaluate(m.group(1).replace(" ", ""))
            checked += 1
            wrong += res is None or res[0] != int(m.group(2))
        return checked, wrong

    def describe_level(self, level: int) -> str:
        return f"{level + 1} numbers"
