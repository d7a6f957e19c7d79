"""bench/sibling_choice.py turns a beam search's tree into the step choices it judges verifiers on: a choice
must hold only siblings the search scored, each once, judged by the task's check (a closing step by its answer)."""

import importlib.util
import sys
from pathlib import Path

from ponder.tasks import get_task
from ponder.tasks.base import Problem
from ponder.think.base import Node

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # as when run as a script: it reads scaling_pairs beside it
try:
    spec = importlib.util.spec_from_file_location("sibling_choice", BENCH / "sibling_choice.py")
    sibling_choice = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sibling_choice)
finally:
    sys.path.remove(str(BENCH))

Q = "Evaluate: a=0 b=1 c=0 d=a^b e=a^b f=e^a g=f^e h=g&a ?h"  # d=1 e=1 f=1 g=0 h=0


def test_choices_are_the_scored_siblings_that_disagree_judged_by_step_or_answer():
    task = get_task("cvp")
    problem = Problem("cvp", 2, Q, "0")
    tree = Node("", children=[
        Node("d=0^1=1", score=0.9, children=[  # kept: its children make the second choice
            Node("e=0^1=1", score=0.8),
            Node("e=0^1=0", score=0.7),
            Node("e=0^1=0", score=0.6),  # the same step sampled twice counts once
            Node("e=0^1=", score=None),  # a dead leaf (cut short): never scored, not a candidate
        ]),
        Node("d=0^1=0", score=0.4),
        Node("d=0&1=1", score=0.3),  # operands written otherwise: the value decides
        Node("", score=0.2, answer="1"),  # closed at once with a wrong answer
    ])
    (first, second) = sibling_choice.choices(task, problem, tree)
    assert first == ([["d=0^1=1"], ["d=0^1=0"], ["d=0&1=1"], []], [None, None, None, "1"], [True, False, True, False])
    assert second == ([["d=0^1=1", "e=0^1=1"], ["d=0^1=1", "e=0^1=0"]], [None, None], [True, False])
    agreeing = Node("", children=[Node("d=0^1=1", score=0.5), Node("d=1^0=1", score=0.4)])
    assert sibling_choice.choices(task, problem, agreeing) == []  # both right: nothing to choose
