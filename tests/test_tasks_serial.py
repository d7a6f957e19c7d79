"""The serial families: answers, traces and checks, verified by independent code.

Every trace is replayed line by line with parsers written here, not the
generator's, so a wrong step, a skipped step or a wrong final line fails.
"""

from __future__ import annotations

import operator
import random
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.tasks import _REGISTRY
from ponder.tasks.base import Task
from ponder.tasks.cvp import CVP, Gate
from ponder.tasks.serial import S5, ISq, ModAdd

SETTINGS = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)
PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")
TASKS = {"s5": S5(), "modadd": ModAdd(), "isq": ISq(), "cvp": CVP()}
LENGTHS = {"s5": (2, 4, 8, 16, 32), "modadd": (2, 4, 8, 16, 32), "isq": (2, 4, 8, 16, 32),
           "cvp": (4, 8, 16, 32)}


def completion(problem) -> str:
    return "\n".join(problem.steps) + "</think>" + problem.answer + "<|end|>"


# ------------------------------------------------------------- independent solvers


def s5_solve(perms: list[str]) -> str:
    """Push each point through the permutations one after another (left to right)."""
    maps = [{i + 1: int(c) for i, c in enumerate(p)} for p in perms]
    out = []
    for point in range(1, 6):
        for f in maps:
            point = f[point]
        out.append(str(point))
    return "".join(out)


def s5_parse(question: str) -> list[str]:
    m = re.fullmatch(r"Compose: ([1-5]{5}(?: [1-5]{5})*)", question)
    assert m, question
    perms = m.group(1).split(" ")
    assert all(sorted(p) == list("12345") for p in perms)
    return perms


def s5_replay(question: str, steps) -> str:
    perms = s5_parse(question)
    assert len(steps) == len(perms)
    current = {i: i for i in range(1, 6)}  # the identity, as a function
    for p, line in zip(perms, steps):
        m = re.fullmatch(r"([1-5]{5}) ([1-5]{5})", line)
        assert m, line
        assert m.group(1) == p  # the line copies the next permutation of the question
        f = {i + 1: int(c) for i, c in enumerate(p)}
        current = {i: f[current[i]] for i in range(1, 6)}
        assert m.group(2) == "".join(str(current[i]) for i in range(1, 6)), (p, line)
    return "".join(str(current[i]) for i in range(1, 6))


def modadd_parse(question: str) -> tuple[list[int], int]:
    m = re.fullmatch(r"What is (\d+(?: \+ \d+)*) mod (\d+)\?", question)
    assert m, question
    return [int(t) for t in m.group(1).split(" + ")], int(m.group(2))


def modadd_replay(question: str, steps) -> str:
    terms, mod = modadd_parse(question)
    assert len(steps) == len(terms)
    assert steps[0] == str(terms[0])
    acc = terms[0]
    for x, line in zip(terms[1:], steps[1:]):
        m = re.fullmatch(r"(\d+)\+(\d+)=(\d+)", line)
        assert m, line
        prev, term, new = map(int, m.groups())
        assert prev == acc and term == x and new == (prev + term) % mod, line
        acc = new
    return str(acc)


def isq_parse(question: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"What is (\d+)\^\(2\^(\d+)\) mod (\d+)\?", question)
    assert m, question
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def isq_replay(question: str, steps) -> str:
    base, n, mod = isq_parse(question)
    assert len(steps) == n
    x = base
    for line in steps:
        m = re.fullmatch(r"(\d+)\^2=(\d+)", line)
        assert m, line
        a, b = int(m.group(1)), int(m.group(2))
        assert a == x and b == a * a % mod, line
        x = b
    return str(x)


CVP_OPS = {"&": operator.and_, "|": operator.or_, "^": operator.xor}


def cvp_parse(question: str):
    """[(name, kind, operands)] in order, and the asked wire."""
    m = re.fullmatch(r"Evaluate: (.+) \?([a-z]+)", question)
    assert m, question
    wires = []
    for tok in m.group(1).split(" "):
        t = re.fullmatch(r"([a-z]+)=(?:([01])|!([a-z]+)|([a-z]+)([&|^])([a-z]+))", tok)
        assert t, tok
        name, const, neg, x, op, y = t.groups()
        if const is not None:
            wires.append((name, "const", (int(const),)))
        elif neg is not None:
            wires.append((name, "!", (neg,)))
        else:
            wires.append((name, op, (x, y)))
    return wires, m.group(2)


def cvp_eval(question: str) -> str:
    wires, asked = cvp_parse(question)
    val: dict[str, int] = {}
    for name, kind, args in wires:
        assert name not in val  # each wire is defined once
        if kind == "const":
            val[name] = args[0]
        elif kind == "!":
            val[name] = 1 - val[args[0]]  # KeyError if it reads a later wire
        else:
            val[name] = CVP_OPS[kind](val[args[0]], val[args[1]])
    assert asked == wires[-1][0]
    return str(val[asked])


def cvp_replay(question: str, steps) -> str:
    wires, _ = cvp_parse(question)
    val = {name: args[0] for name, kind, args in wires if kind == "const"}
    gates = [w for w in wires if w[1] != "const"]
    assert len(steps) == len(gates)
    last = None
    for (name, kind, args), line in zip(gates, steps):
        if kind == "!":
            m = re.fullmatch(r"([a-z]+)=!([01])=([01])", line)
            assert m, line
            w, a, v = m.group(1), int(m.group(2)), int(m.group(3))
            assert w == name and a == val[args[0]] and v == 1 - a, line
        else:
            m = re.fullmatch(r"([a-z]+)=([01])([&|^])([01])=([01])", line)
            assert m, line
            w, a, op, b, v = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))
            assert w == name and op == kind, line
            assert a == val[args[0]] and b == val[args[1]] and v == CVP_OPS[op](a, b), line
        val[name] = v
        last = v
    return str(last)


SOLVE = {
    "s5": lambda q: s5_solve(s5_parse(q)),
    "modadd": lambda q: (lambda t, m: str(sum(t) % m))(*modadd_parse(q)),
    "isq": lambda q: (lambda b, n, m: str(pow(b, 2**n, m)))(*isq_parse(q)),
    "cvp": cvp_eval,
}
REPLAY = {"s5": s5_replay, "modadd": modadd_replay, "isq": isq_replay, "cvp": cvp_replay}
LENGTH = {
    "s5": lambda q: len(s5_parse(q)),
    "modadd": lambda q: len(modadd_parse(q)[0]),
    "isq": lambda q: isq_parse(q)[1],
    "cvp": lambda q: sum(kind != "const" for _, kind, _ in cvp_parse(q)[0]),
}


def wrong_answers(name: str, problem, rng: random.Random) -> list[str]:
    a = problem.answer
    bad = ["", "   ", "garbage", "</think><|end|>", "?"]
    if name == "s5":
        other = a
        while other == a:
            digits = list("12345")
            rng.shuffle(digits)
            other = "".join(digits)
        bad += [other, a[::-1] if a[::-1] != a else a[1:] + a[0], a[:4], a + "1", "11111"]
    elif name in ("modadd", "isq"):
        mod = isq_parse(problem.question)[2] if name == "isq" else TASKS[name].modulus
        bad += [str((int(a) + 1) % mod), str(int(a) + mod), "-" + a if a != "0" else "-1"]
    else:
        bad += [str(1 - int(a)), "2", "10" if a == "1" else "01"]
    return bad


# ---------------------------------------------------------------------- the tests


def test_registered_with_levels():
    for name, task in TASKS.items():
        assert _REGISTRY[name] is type(task)
        assert isinstance(task, Task) and task.name == name
        assert task.max_level == len(LENGTHS[name]) == len(task.lengths)
        assert tuple(task.lengths) == LENGTHS[name]
        for level in range(1, task.max_level + 1):
            assert str(LENGTHS[name][level - 1]) in task.describe_level(level)


def test_levels_cover_every_length():
    """Training on the levels must reach every length up to the top bound, e.g. 3 permutations, not only 2 and 4."""
    for name, task in TASKS.items():
        seen: dict[int, set[int]] = {}
        rng = random.Random(0)
        for level in range(1, task.max_level + 1):
            for _ in range(400):
                p = task.sample(rng, level)
                seen.setdefault(level, set()).add(len(p.steps))
                assert p.level == level
        covered = set().union(*seen.values())
        assert covered == set(range(2, task.lengths[-1] + 1)), name
        for level in range(2, task.max_level + 1):
            assert min(seen[level]) == task.lengths[level - 2] + 1


def test_worked_examples():
    p = S5().make(["21345", "13254", "54321"])
    assert p.question == "Compose: 21345 13254 54321"
    assert p.steps == ("21345 21345", "13254 31254", "54321 35412")
    assert p.answer == "35412"

    p = ModAdd().make([3, 5, 6, 1])
    assert p.question == "What is 3 + 5 + 6 + 1 mod 7?"
    assert p.steps == ("3", "3+5=1", "1+6=0", "0+1=1")
    assert p.answer == "1"

    p = ISq().make(3, 2)
    assert p.question == "What is 3^(2^2) mod 59?"
    assert p.steps == ("3^2=9", "9^2=22")  # 81 = 59 + 22
    assert p.answer == "22"
    assert ISq(97).make(3, 5).question == "What is 3^(2^5) mod 97?"
    assert ISq(97).make(3, 5).answer == str(pow(3, 32, 97))

    gates = [Gate("&", (0, 1)), Gate("|", (2, 0)), Gate("!", (3,)), Gate("^", (4, 1))]
    p = CVP().make([1, 0], gates)
    assert p.question == "Evaluate: a=1 b=0 c=a&b d=c|a e=!d f=e^b ?f"
    assert p.steps == ("c=1&0=0", "d=0|1=1", "e=!1=0", "f=0^0=0")
    assert p.answer == "0"


@pytest.mark.parametrize("name", sorted(TASKS))
@SETTINGS
@given(seed=seeds, data=st.data())
def test_levels_answers_and_traces(name, seed, data):
    task = TASKS[name]
    level = data.draw(st.integers(1, task.max_level))
    problem = task.sample(random.Random(seed), level)
    assert problem.family == name and problem.level == level
    low, high = task.length_range(level)
    assert low <= LENGTH[name](problem.question) <= high == LENGTHS[name][level - 1]
    assert len(problem.steps) == LENGTH[name](problem.question)  # one line per input item
    assert problem.answer == SOLVE[name](problem.question)
    assert REPLAY[name](problem.question, problem.steps) == problem.answer
    for text in (problem.question, problem.answer, *problem.steps):
        assert text and set(text) <= PRINTABLE and text == text.strip()


@pytest.mark.parametrize("name", sorted(TASKS))
@SETTINGS
@given(seed=seeds, length=st.integers(1, 40))
def test_sample_length_is_exact(name, seed, length):
    task = TASKS[name]
    problem = task.sample_length(random.Random(seed), length)
    assert LENGTH[name](problem.question) == length
    assert len(problem.steps) == length
    assert problem.answer == SOLVE[name](problem.question)
    assert REPLAY[name](problem.question, problem.steps) == problem.answer
    assert 1 <= problem.level <= task.max_level
    assert length <= task.lengths[problem.level - 1] or problem.level == task.max_level


@pytest.mark.parametrize("name", sorted(TASKS))
@SETTINGS
@given(seed=seeds, data=st.data())
def test_check_accepts_reference_and_rejects_perturbed(name, seed, data):
    task = TASKS[name]
    rng = random.Random(seed)
    problem = task.sample(rng, data.draw(st.integers(1, task.max_level)))
    assert task.check(problem, problem.answer)
    assert task.check(problem, f" {problem.answer} ")
    assert task.check(problem, completion(problem))
    assert task.extract(problem.answer) == problem.answer
    for bad in wrong_answers(name, problem, rng):
        assert not task.check(problem, bad), bad
        full = "\n".join(problem.steps) + "</think>" + bad + "<|end|>"
        assert not task.check(problem, full), bad


@SETTINGS
@given(seed=seeds, data=st.data())
def test_cvp_checks_each_step_by_the_gate_value_it_carries(seed, data):
    task = TASKS["cvp"]
    problem = task.sample(random.Random(seed), data.draw(st.integers(1, task.max_level)))
    steps = list(problem.steps)
    assert task.check_steps(problem.question, steps) == [True] * len(steps)
    k = data.draw(st.integers(0, len(steps) - 1))
    flipped = steps[k][:-1] + str(1 - int(steps[k][-1]))  # the same gate with the other value
    want = [i != k for i in range(len(steps))]  # the steps after it are judged on their own values
    assert task.check_steps(problem.question, steps[:k] + [flipped] + steps[k + 1:]) == want
    swapped = re.sub(r"[&|^]", lambda m: "&" if m.group() != "&" else "|", steps[k])
    assert task.check_steps(problem.question, [swapped])[0] is True  # operands as written are not judged
    first_input = problem.question.split()[1]  # `a=1`: an input, not a gate
    assert task.check_steps(problem.question, [first_input, "zz=1&0=1", "no step"]) == [False] * 3


def test_only_families_that_can_judge_a_step_say_so():
    assert TASKS["cvp"].can_check_steps
    assert not TASKS["isq"].can_check_steps and TASKS["isq"].check_steps("What is 3^(2^5) mod 97?", ["3^2=9"]) is None
    assert TASKS["cvp"].check_steps("What is 3^(2^5) mod 97?", ["3^2=9"]) is None  # not a circuit


def test_extract_reads_the_last_valid_answer():
    s5, cvp, mod = S5(), CVP(), ModAdd()
    assert s5.extract("35412 then 11111") == "35412"
    assert s5.extract("first 12345, finally 54321.") == "54321"
    assert s5.extract("123456") is None and s5.extract("12346") is None
    assert cvp.extract("so it is 1") == "1" and cvp.extract("10") is None
    assert cvp.extract("0 or 1? 0") == "0"
    assert mod.extract("the sum is 4") == "4" and mod.check(mod.make([1, 3]), "04")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_and_varied(name):
    task = TASKS[name]
    for level in range(1, task.max_level + 1):
        a = [task.sample(random.Random(s), level) for s in range(20)]
        b = [task.sample(random.Random(s), level) for s in range(20)]
        assert a == b
        assert len({p.question for p in a}) >= 15
    rng1, rng2 = random.Random(7), random.Random(7)
    assert [task.sample_length(rng1, 5) for _ in range(5)] == [task.sample_length(rng2, 5) for _ in range(5)]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_bad_levels_and_lengths_are_refused(name):
    task = TASKS[name]
    for level in (0, -1, task.max_level + 1):
        with pytest.raises(PonderError):
            task.sample(random.Random(0), level)
    for length in (0, -3, 2.0, True, "4", None):
        with pytest.raises(PonderError):
            task.sample_length(random.Random(0), length)


def test_bad_inputs_to_make_are_refused():
    with pytest.raises(PonderError):
        S5().make(["12344"])
    with pytest.raises(PonderError):
        S5().make([])
    with pytest.raises(PonderError):
        ModAdd().make([3, 7])
    with pytest.raises(PonderError):
        ModAdd(1)
    with pytest.raises(PonderError):
        ISq().make(59, 3)
    with pytest.raises(PonderError):
        ISq().make(1, 3)
    with pytest.raises(PonderError):
        CVP().make([1, 0], [Gate("&", (0, 2))])  # reads itself
    with pytest.raises(PonderError):
        CVP().make([1, 0], [Gate("!", (0, 1))])
    with pytest.raises(PonderError):
        CVP().sample_length(random.Random(0), CVP.max_gates + 1)


def test_modadd_other_modulus():
    task = ModAdd(11)
    for s in range(50):
        p = task.sample(random.Random(s), 3)
        terms, mod = modadd_parse(p.question)
        assert mod == 11 and all(0 <= t < 11 for t in terms)
        assert p.answer == str(sum(terms) % 11) == modadd_replay(p.question, p.steps)
    assert any(t >= 7 for s in range(50) for t in modadd_parse(task.sample(random.Random(s), 3).question)[0])


def test_isq_trace_does_not_collapse_into_a_short_cycle():
    # Under 97 every base reaches a cycle of length <= 2 within 5 squarings; 59 keeps 28 values.
    task = ISq(59)
    for s in range(100):
        p = task.sample_length(random.Random(s), 32)
        values = [int(line.split("=")[1]) for line in p.steps]
        assert len(set(values)) == 28, p.question
        assert 2 <= isq_parse(p.question)[0] <= 57


def _gate_reads(question: str):
    """For each gate, the indices (in wire order) of the wires it reads."""
    wires, _ = cvp_parse(question)
    index = {name: i for i, (name, _, _) in enumerate(wires)}
    return [(i, [index[a] for a in args]) for i, (_, kind, args) in enumerate(wires) if kind != "const"], wires


def test_cvp_balanced_and_serial():
    task = CVP()
    rng = random.Random(1234)
    problems = [task.sample(rng, 1 + i % task.max_level) for i in range(400)]
    ones = sum(p.answer == "1" for p in problems) / len(problems)
    assert 0.35 <= ones <= 0.65
    chained = 0
    depth_ratio = []
    for p in problems:
        gates, wires = _gate_reads(p.question)
        n_inputs = len(wires) - len(gates)
        assert 2 <= n_inputs <= 4
        last_i, last_reads = gates[-1]
        chained += (last_i - 1) in last_reads and last_i - 1 >= n_inputs
        depth = {}
        for i, (_, kind, _) in enumerate(wires):
            if kind == "const":
                depth[i] = 0
        for i, reads in gates:
            assert all(r < i for r in reads)
            depth[i] = 1 + max(depth[r] for r in reads)
        depth_ratio.append(depth[len(wires) - 1] / len(gates))
    assert chained / len(problems) >= 0.75
    # the output sits at the end of a long chain: depth close to the number of gates
    assert sum(depth_ratio) / len(depth_ratio) >= 0.7


def test_cvp_names_are_fixed_width():
    task = CVP()
    for length, width in ((22, 1), (23, 2), (32, 2)):
        for s in range(20):
            p = task.sample_length(random.Random(s), length)
            wires, asked = cvp_parse(p.question)
            names = [w[0] for w in wires]
            assert all(len(n) == width for n in names) and len(set(names)) == len(names)
            assert asked == names[-1]
            assert [line.split("=")[0] for line in p.steps] == names[len(names) - length:]


def test_default_isq_asks_both_moduli_including_the_canonical_97():
    mods = {isq_parse(ISq().sample(random.Random(s), 2).question)[2] for s in range(60)}
    assert mods == {59, 97}


# ------------------------------------------------------------------ short traces

SHORT = {"s5": S5(trace="short"), "modadd": ModAdd(trace="short"), "isq": ISq((59, 89), trace="short")}


def short_replay(name: str, question: str, steps) -> str:
    """Replay a short trace: s5 `{r_k}`, modadd `{x}={new}`, isq `{x}^2 mod {m}={y}`."""
    if name == "s5":
        perms = s5_parse(question)
        assert list(steps) == [s5_solve(perms[: k + 1]) for k in range(len(perms))]
        return steps[-1]
    if name == "modadd":
        terms, mod = modadd_parse(question)
        assert list(steps) == [f"{x}={sum(terms[: k + 1]) % mod}" for k, x in enumerate(terms)]
        return steps[-1].split("=")[1]
    base, n, mod = isq_parse(question)
    x = base
    for line in steps:
        assert line == f"{x}^2 mod {mod}={x * x % mod}"
        x = x * x % mod
    assert len(steps) == n
    return str(x)


@pytest.mark.parametrize("name", sorted(SHORT))
@SETTINGS
@given(seed=seeds, length=st.integers(1, 33))
def test_short_traces_replay_to_the_same_answer_as_the_full_ones(name, seed, length):
    short = SHORT[name].sample_length(random.Random(seed), length)
    full = type(TASKS[name])(**({"modulus": (59, 89)} if name == "isq" else {})).sample_length(random.Random(seed), length)
    assert short.question == full.question and short.answer == full.answer  # only the trace differs
    assert short_replay(name, short.question, short.steps) == short.answer == SOLVE[name](short.question)


def test_unknown_trace_is_refused():
    for family in (S5, ModAdd, ISq):
        with pytest.raises(PonderError, match="traces full, short, not 'long'"):
            family(trace="long")
