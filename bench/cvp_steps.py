"""Where greedy cvp chains go wrong, step by step: reading a gate's definition, reading an operand's value,
or applying the gate.

    python bench/cvp_steps.py --model built-in --model wide=runs/ponder-4x-grown/model --level 2 -n 200

Each step `g=x op y=v` is judged against the model's own chain, so one wrong value is counted once, where
it is made, and not again in every step that carries it on: the op is the circuit's op for g (else a
misread definition), the operands are the values the chain gave them (inputs from the question, gates
from earlier steps; else a misread value), and v is the op applied to them (else a wrong application).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

from ponder.engine.local import LocalEngine
from ponder.evaluate import answered, heldout_problems
from ponder.model.loading import load_model
from ponder.tasks import get_task
from ponder.tasks.cvp import _STEP, _apply, _circuit
from ponder.think.sampling import ChainOfThought

KINDS = ("consistent", "definition misread", "input value misread", "gate value misread", "misapplied",
         "unreadable")


def step_kinds(question: str, steps: list[str]) -> list[str]:
    """Each step's kind, judged against the chain's own values so far."""
    wires = _circuit(question) or {}
    own = {name: w for name, w in wires.items() if isinstance(w, int)}
    kinds = []
    for step in steps:
        m = _STEP.match(step.strip())
        if m is None or isinstance(wires.get(m.group(1), 0), int):
            kinds.append("unreadable")
            continue
        op, args = wires[m.group(1)]
        written_op = "!" if m.group(2) else m.group(5)
        written = [int(m.group(3))] if m.group(2) else [int(m.group(4)), int(m.group(6))]
        value = int(m.group(7))
        if written_op != op:
            kinds.append("definition misread")
        elif any(a not in own for a in args) or sorted(written) != sorted(own[a] for a in args):
            wrong = [a for a in args if a not in own or own[a] not in written]
            kinds.append("input value misread" if all(isinstance(wires[a], int) for a in wrong)
                         else "gate value misread")
        elif _apply(op, written) != value:
            kinds.append("misapplied")
        else:
            kinds.append("consistent")
        own[m.group(1)] = value
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH or PATH (built-in allowed)")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="a JSON file for the chains and their judgements")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task, problems = get_task("cvp"), heldout_problems("cvp", args.level, args.n)
    rows, chains = [], {}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        model, tok, chat = load_model(path)
        thoughts = ChainOfThought(LocalEngine(model, tok), chat).solve_batch([p.question for p in problems])
        got = []
        for p, t in zip(problems, thoughts):
            steps = chat.steps(t.reasoning)
            got.append({"question": p.question, "steps": steps, "kinds": step_kinds(p.question, steps),
                        "true": task.check_steps(p.question, steps),
                        "right": bool(answered(t) and task.check(p, t.answer))})
        chains[name or path] = got
        kinds = Counter(k for g in got for k in g["kinds"])
        n_steps = sum(kinds.values())
        clean = [g for g in got if g["true"] and all(g["true"])]
        rest = [g for g in got if g not in clean]
        rows.append([name or path, f"{sum(g['right'] for g in got) / len(got):.1%}",
                     f"{sum(sum(g['true'] or []) for g in got) / n_steps:.1%}", f"{len(clean) / len(got):.1%}",
                     f"{sum(g['right'] for g in rest) / max(1, len(rest)):.1%}",
                     *(f"{kinds[k] / n_steps:.1%}" for k in KINDS)])
        print(json.dumps(dict(zip(["model", "greedy", "steps right", "all steps right", "right with a wrong step",
                                   *KINDS], rows[-1]))), flush=True)
    print(f"\ncvp level {args.level}, {args.n} held-out questions, greedy chains; step kinds as a share of steps\n")
    print("| model | greedy | steps right | chains all right | right with a wrong step | " + " | ".join(KINDS) + " |")
    print("|---|" + "---:|" * (4 + len(KINDS)))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(chains, f)


if __name__ == "__main__":
    main()
