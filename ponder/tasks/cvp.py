"""The circuit value problem, the fourth serial family (see `serial.py` for what the families share)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ponder import PonderError
from ponder.tasks import register
from ponder.tasks.base import Problem
from ponder.tasks.serial import _check_length, _SerialTask

_OPS = {"&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}


def _apply(op: str, operands: list[int]) -> int:
    """A gate's value from its operands' values: the one rule that both drawing and checking circuits use."""
    return 1 - operands[0] if op == "!" else _OPS[op](*operands)


_BIT = re.compile(r"(?<![0-9])[01](?![0-9])")


@dataclass(frozen=True)
class Gate:
    op: str  # "&", "|", "^" or "!"
    args: tuple[int, ...]  # indices of earlier wires: two, or one for "!"


def wire_names(n_wires: int, width: int) -> list[str]:
    """`n_wires` names of exactly `width` lowercase letters: a..z, or aa, ab, ..."""
    if n_wires > 26**width:
        raise PonderError(f"{n_wires} wires do not fit in names of {width} letters")
    names = []
    for i in range(n_wires):
        letters = []
        for _ in range(width):
            i, r = divmod(i, 26)
            letters.append(chr(ord("a") + r))
        names.append("".join(reversed(letters)))
    return names


@register
class CVP(_SerialTask):
    """The circuit value problem: `Evaluate: a=1 b=0 c=a&b d=c|a e=!d f=e^b ?f`.

    A few input constants (2..4), then gates `&`, `|`, `^` of two earlier wires
    or `!` of one; the question asks for the last wire. Most gates (90%) take
    the previous gate as an operand, so the output sits at the end of a long
    serial chain. Answers are 0 and 1 equally often.

    Wire names all have the same number of letters within one circuit: one
    letter while `gates + 4 <= 26` (up to 22 gates), two letters (`aa`, `ab`,
    ...) beyond that, so a name is never a prefix or suffix of another.

    Trace: one line per gate, `{w}={x}{op}{y}={v}` with the operand values
    substituted, e.g. `c=1&0=0`, `e=!1=0`.
    """

    name = "cvp"
    lengths = (4, 8, 16, 32)
    max_level = 4
    unit = "gates"
    max_inputs = 4
    chain_p = 0.9  # chance a gate takes the previous gate as an operand
    op_weights = {"&": 3, "|": 3, "^": 3, "!": 1}
    max_gates = 26**2 - 4

    @staticmethod
    def name_width(n_gates: int) -> int:
        return 1 if n_gates + CVP.max_inputs <= 26 else 2

    def make(self, inputs: list[int], gates: list[Gate], level: int | None = None) -> Problem:
        if not inputs or not all(v in (0, 1) for v in inputs):
            raise PonderError("cvp needs one or more input constants, each 0 or 1")
        _check_length(self.name, len(gates), self.max_gates)
        n_in = len(inputs)
        if n_in > self.max_inputs:
            raise PonderError(f"cvp takes at most {self.max_inputs} inputs, not {n_in}")
        names = wire_names(n_in + len(gates), self.name_width(len(gates)))
        values = list(inputs)
        parts = [f"{names[i]}={v}" for i, v in enumerate(inputs)]
        steps = []
        for k, g in enumerate(gates):
            w = n_in + k
            if not all(isinstance(a, int) and 0 <= a < w for a in g.args):
                raise PonderError(f"gate {k + 1} must read earlier wires only")
            if g.op == "!" and len(g.args) == 1:
                (a,) = g.args
                v = _apply("!", [values[a]])
                parts.append(f"{names[w]}=!{names[a]}")
                steps.append(f"{names[w]}=!{values[a]}={v}")
            elif g.op in _OPS and len(g.args) == 2:
                a, b = g.args
                v = _apply(g.op, [values[a], values[b]])
                parts.append(f"{names[w]}={names[a]}{g.op}{names[b]}")
                steps.append(f"{names[w]}={values[a]}{g.op}{values[b]}={v}")
            else:
                raise PonderError(f"gate {k + 1} is not one of &, |, ^ of two wires or ! of one")
            values.append(v)
        return Problem(
            family=self.name,
            level=level if level is not None else self.level_of_length(len(gates)),
            question="Evaluate: " + " ".join(parts) + f" ?{names[-1]}",
            answer=str(values[-1]),
            steps=tuple(steps),
        )

    def _random_circuit(self, rng: random.Random, length: int) -> tuple[list[int], list[Gate]]:
        n_in = rng.randint(2, self.max_inputs)
        inputs = [rng.randrange(2) for _ in range(n_in)]
        ops = list(self.op_weights)
        weights = list(self.op_weights.values())
        gates = []
        for k in range(length):
            w = n_in + k  # this gate's wire; wires 0..w-1 exist
            op = rng.choices(ops, weights)[0]
            prev = w - 1
            if k > 0 and rng.random() < self.chain_p:
                if op == "!":
                    args: tuple[int, ...] = (prev,)
                else:
                    other = rng.randrange(w - 1)  # any earlier wire but the previous gate
                    args = (prev, other) if rng.random() < 0.5 else (other, prev)
            elif op == "!":
                args = (rng.randrange(w),)
            else:
                args = tuple(rng.sample(range(w), 2))
            gates.append(Gate(op, args))
        return inputs, gates

    def sample_length(self, rng: random.Random, length: int) -> Problem:
        _check_length(self.name, length, self.max_gates)
        want = str(rng.randrange(2))  # draw the answer first, so 0 and 1 are balanced
        for _ in range(1000):
            problem = self.make(*self._random_circuit(rng, length))
            if problem.answer == want:
                return problem
        raise RuntimeError("cvp could not draw a circuit with the wanted answer")  # pragma: no cover

    def extract(self, text: str) -> str | None:
        bits = _BIT.findall(text)
        return bits[-1] if bits else None

    def check_steps(self, question: str, steps: list[str]) -> list[bool] | None:
        """A step `w=x op y=v` is right when w is a gate of the circuit and v its true value: the running
        state is what decides the answer. The operands as written are not judged (the model often writes
        them in another order or with another op and still carries the right value on)."""
        wires = _circuit(question)
        if wires is None:
            return None
        values: dict[str, int] = {}
        for name, wire in wires.items():
            values[name] = wire if isinstance(wire, int) else _apply(wire[0], [values[a] for a in wire[1]])
        out = []
        for step in steps:
            m = _STEP.match(step.strip())
            name = m.group(1) if m else None
            out.append(name is not None and not isinstance(wires.get(name, 0), int)
                       and int(m.group(7)) == values[name])
        return out


_WIRE = re.compile(r"^([a-z]+)=(?:([01])|!([a-z]+)|([a-z]+)([&|^])([a-z]+))$")
_STEP = re.compile(r"^([a-z]+)=(?:(!)([01])|([01])([&|^])([01]))=([01])$")


def _circuit(question: str) -> dict[str, int | tuple[str, list[str]]] | None:
    """The wires of a cvp question in order: an input's value, or a gate's (op, operand names)."""
    body = question.removeprefix("Evaluate:").split("?")[0].split()
    wires: dict[str, int | tuple[str, list[str]]] = {}
    for part in body:
        m = _WIRE.match(part)
        if m is None:
            return None
        name, const, neg, x, op, y = m.groups()
        args = [neg] if neg else [x, y] if x else []
        if any(a not in wires for a in args):
            return None
        wires[name] = int(const) if const is not None else ("!", args) if neg else (op, args)
    return wires or None
