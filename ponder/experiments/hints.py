"""Hint targets for the serial families: each input item's intermediate result at its position.

The third setting of the expressivity result for chain of thought on serial
problems (ICLR 2024) supervises the running state at the input instead of
writing it out: the model reads `p1 p2 ... pK` and, at the position of item i,
is trained to predict the state after item i, which is never fed back.

Here an item is a span of characters in the question and a state is a short
string (`23154`, `2`, `1`), so `hint_targets` returns, per item, the offset of
the item's last character and the state; `SFTData.hint_positions` lays the
state's tokens on that position and the ones after it (see there for which
position predicts what). Item i's state ends before item i+1 does, so no two
hints share a position. The last item is left out: its state is the answer,
which the completion supervises anyway, and laying it down would run into
the positions that predict the completion.

`isq` has no hint: its question states the number of squarings as a number
(`3^(2^16)`), so no input position stands for a single squaring.
"""

from __future__ import annotations

import re
from typing import Callable

from ponder import PonderError
from ponder.tasks import Problem


def _s5_items(question: str) -> list[int]:
    return [m.end() - 1 for m in re.finditer(r"(?<!\d)[1-5]{5}(?!\d)", question)]


def _modadd_items(question: str) -> list[int]:
    terms = question[: question.rindex(" mod ")]
    return [m.end() - 1 for m in re.finditer(r"\d+", terms)]


def _cvp_items(question: str) -> list[int]:
    # Gates are the definitions with an operator on the right (`c=a&b`, `e=!d`); `a=1` is an input.
    return [m.end() - 1 for m in re.finditer(r"\S+", question) if "=" in m.group() and re.search(r"[&|^!]", m.group())]


ITEMS: dict[str, Callable[[str], list[int]]] = {"s5": _s5_items, "modadd": _modadd_items, "cvp": _cvp_items}


def state_of(line: str) -> str:
    """The running state a trace line ends with: `13245 23154` -> `23154`, `2+6=1` -> `1`, `d=1|1=1` -> `1`."""
    return re.split(r"[ =]", line)[-1]


def has_hints(task: str) -> bool:
    return task in ITEMS


def hint_targets(problem: Problem) -> list[tuple[int, str]]:
    """(offset of item i's last character in the question, state after item i) for every item but the last."""
    if problem.family not in ITEMS:
        raise PonderError(f"task {problem.family!r} has no per-item input positions to put hints on")
    ends = ITEMS[problem.family](problem.question)
    if len(ends) != len(problem.steps):
        raise PonderError(f"found {len(ends)} input items in {problem.question!r} but {len(problem.steps)} trace lines")
    return [(end, state_of(line)) for end, line in zip(ends[:-1], problem.steps[:-1])]
