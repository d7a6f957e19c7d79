"""Where an adaptive high loses to the 16-vote: questions split by whether the adaptive probe stopped.

    python bench/effort_split.py --task cvp --level 2 -n 400 --policy bench/policies/high-fresh16.yaml

Runs the 16-vote preset and the adaptive policy on the same held-out questions (one batch each) and counts,
for the questions the probe stopped on and for the rest, where each was right and the other wrong. For
the rest it also counts the questions whose delegated chains drew the same answers as the vote's.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from ponder.engine.local import LocalEngine
from ponder.evaluate import heldout_problems
from ponder.model.loading import load_model
from ponder.tasks import get_task
from ponder.think.adaptive import Adaptive
from ponder.think.policy import load_policy
from ponder.think.effort import strategy_for_effort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--policy", default="bench/policies/high-fresh16.yaml")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, chat = load_model("built-in")
    engine = LocalEngine(model, tok)
    task, problems = get_task(args.task), heldout_problems(args.task, args.level, args.n)
    questions = [p.question for p in problems]
    vote = strategy_for_effort("high", engine, chat, preset="vote").solve_batch(questions)
    adaptive = Adaptive(engine, chat, policy=load_policy(args.policy), seed=0).solve_batch(questions)
    counts, same = Counter(), 0
    for p, v, a in zip(problems, vote, adaptive):
        stopped = a.tree.children[0].text.endswith(": stop")
        counts[stopped, task.check(p, v.answer), task.check(p, a.answer)] += 1
        if not stopped:
            same += [n.answer for n in v.tree.children] == [n.answer for n in a.tree.children[1].children]
    for stopped in (True, False):
        part = {k[1:]: c for k, c in counts.items() if k[0] == stopped}
        print(f"probe {'stopped' if stopped else 'went on'}: {sum(part.values())} questions; both right "
              f"{part.get((True, True), 0)}, only the vote {part.get((True, False), 0)}, only adaptive "
              f"{part.get((False, True), 0)}, neither {part.get((False, False), 0)}")
    print(f"went on with the vote's very answers: {same}")
    print(f"accuracy: vote {sum(task.check(p, v.answer) for p, v in zip(problems, vote)) / len(problems):.1%}, "
          f"adaptive {sum(task.check(p, a.answer) for p, a in zip(problems, adaptive)) / len(problems):.1%}")


if __name__ == "__main__":
    main()
