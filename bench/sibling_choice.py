"""Which verifier picks the right next step? The choice beam search asks of it, judged by the task's own check.

    python bench/sibling_choice.py --task cvp --level 2 -n 300 --seed 8 \\
        --verifier prm=runs/prm-cvp-2048/model orm=runs/prm-cvp-2048-orm/model

Beam search (width 1, 4 expansions: the search at 1-4 x B), guided by the first verifier and run to the end
without a budget, samples 4 next steps of the chain it keeps at every round. Each such set of siblings whose
candidates differ in being right is a choice: every verifier scores each candidate as the search ranks it
(its score of the newest step, `last`), and its pick is right when the candidate it scores highest is. A step
is right by the task's check (cvp: the gate's true value); a candidate that closes the chain, by its answer.
The verifiers choose among the very same candidates, so their difference is paired, choice by choice. The
guide shaped the prefixes (it kept the chains the others are then asked about), so the first verifier is
not a neutral party; give the other one first to see the same from its side.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations

import torch
from scaling_pairs import paired as mean_difference
from tqdm import tqdm

from ponder import PonderError
from ponder.engine.local import LocalEngine
from ponder.evaluate import heldout_problems
from ponder.model.loading import load_model
from ponder.reward import RewardModel, rate
from ponder.tasks import get_task
from ponder.think.base import Node
from ponder.think.registry import build_strategy


def choices(task, problem, tree: Node) -> list[tuple[list[list[str]], list[str | None], list[bool]]]:
    """(each candidate's steps, its answer, right) for every set of scored siblings that disagree on right."""
    out = []

    def visit(node: Node, prefix: list[str]) -> None:
        kids = [c for c in node.children if c.score is not None]  # scored: neither a dead leaf nor a copy
        steps, answers, right, seen = [], [], [], set()
        for c in kids:
            own = prefix + ([c.text] if c.text.strip() else [])
            if (tuple(own), c.answer) in seen:
                continue
            seen.add((tuple(own), c.answer))
            ok = bool(task.check(problem, c.answer)) if c.answer is not None else \
                bool((task.check_steps(problem.question, own) or [False])[-1])
            steps.append(own), answers.append(c.answer), right.append(ok)
        if len(set(right)) == 2:
            out.append((steps, answers, right))
        for c in node.children:
            if c.children:
                visit(c, prefix + [c.text])

    visit(tree, [])
    return out


def paired(a: list[float], b: list[float]) -> str:
    mean, se = mean_difference(a, b)
    return f"{100 * mean:+.1f} ({100 * se:.1f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--verifier", nargs="+", required=True, metavar="NAME=PATH", help="the first guides the search")
    ap.add_argument("--model", default="built-in")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write each choice's scores here (JSON lines)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        task = get_task(args.task)
        verifiers = {name: RewardModel.load(path) for name, path in (v.split("=", 1) for v in args.verifier)}
        model, tok, chat = load_model(args.model)
    except (OSError, ValueError, PonderError) as e:
        print(f"sibling_choice: {e}", file=sys.stderr)
        return 2
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    if task.check_steps(problems[0].question, []) is None:
        print(f"sibling_choice: {args.task} has no step check", file=sys.stderr)
        return 2
    guide = next(iter(verifiers.values()))
    beam = build_strategy("beam", LocalEngine(model, tok), chat, guide, beam_width=1, expansions=4, seed=args.seed,
                          answer_key=task.normalize)
    found = []
    for i in tqdm(range(0, len(problems), 32), desc="beam"):
        part = problems[i: i + 32]
        for p, th in zip(part, beam.solve_batch([p.question for p in part])):
            found += [(p, *c) for c in choices(task, p, th.tree)]
    picks: dict[str, list[float]] = {name: [] for name in verifiers}
    order: dict[str, list[float]] = {name: [] for name in verifiers}  # per choice: right above wrong, of all pairs
    rows = []
    for name, v in verifiers.items():
        for p, steps, answers, right in tqdm(found, desc=name):
            s = rate(v, [p.question] * len(steps), steps, answers, "last")
            best = max(range(len(s)), key=s.__getitem__)
            picks[name].append(float(right[best]))
            pairs = [(s[a] > s[b]) + 0.5 * (s[a] == s[b]) if right[a] else (s[b] > s[a]) + 0.5 * (s[a] == s[b])
                     for a, b in combinations(range(len(s)), 2) if right[a] != right[b]]
            order[name].append(sum(pairs) / len(pairs))
            rows.append({"verifier": name, "question": p.question, "scores": s, "right": right})
    at_random = [sum(r) / len(r) for _, _, _, r in found]
    print(f"{len(found)} choices on {len({p.question for p, *_ in found})} of {len(problems)} questions "
          f"(cvp level {args.level}, seed {args.seed}); guide: {next(iter(verifiers))}\n")
    print("| verifier | picks a right step | right above wrong (per choice) | minus random pick |")
    print("|---|---:|---:|---:|")
    for name in verifiers:
        print(f"| {name} | {sum(picks[name]) / len(found):.1%} | {sum(order[name]) / len(found):.1%} | "
              f"{paired(picks[name], at_random)} |")
    names = list(verifiers)
    for a, b in combinations(names, 2):
        print(f"\n{a} - {b}: picks {paired(picks[a], picks[b])}, order {paired(order[a], order[b])} (points, SE)")
    if args.out:
        with open(args.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
