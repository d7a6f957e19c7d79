"""How much of a level's greedy accuracy comes from answers written as trained, and how much from reading
a number out of whatever followed `</think>`.

    python bench/answer_form.py --task cvp --levels 2 3 4 -n 200

A task's check reads its answer leniently (an integer family takes the last integer of the visible answer).
For each level: greedy accuracy as `ponder eval` counts it, the answers that are exactly what the check
extracts (well-formed), and how often those are right.
"""

from __future__ import annotations

import argparse

import torch

from ponder.engine.local import LocalEngine
from ponder.evaluate import answered, heldout_problems
from ponder.model.loading import load_model
from ponder.tasks import get_task
from ponder.tasks.base import answer_part
from ponder.think.sampling import ChainOfThought


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="built-in")
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--levels", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, chat = load_model(args.model)
    engine, task = LocalEngine(model, tok), get_task(args.task)
    print("| level | greedy (as eval counts) | answers cut short | well-formed answers | right among them |")
    print("|---:|---:|---:|---:|---:|")
    for level in args.levels:
        problems = heldout_problems(args.task, level, args.n)
        thoughts = ChainOfThought(engine, chat).solve_batch([p.question for p in problems])
        right = sum(answered(t) and task.check(p, t.answer) for p, t in zip(problems, thoughts))
        cut = sum(not answered(t) for t in thoughts)
        formed = [(p, t) for p, t in zip(problems, thoughts) if answered(t)
                  and task.extract(answer_part(t.answer)) == t.answer.strip()]
        good = sum(task.check(p, t.answer) for p, t in formed)
        n = len(problems)
        print(f"| {level} | {right / n:.1%} | {cut} of {n} | {len(formed)} of {n} | "
              f"{good} ({good / max(1, len(formed)):.0%}) |")


if __name__ == "__main__":
    main()
