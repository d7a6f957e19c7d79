"""Weighted best-of-N with several verifiers on the very same chains, averaged over many draws of N of them.

A `ponder eval scaling` cell is one draw of N samples per question, so two verifiers' best-of-N cells differ
by the draw as well as by the verifiers when they are run apart, and by a few points either way. Here each
question's `--samples` chains are drawn once and scored by every verifier; at each N, `--draws` random subsets
of N chains per question are answered by each verifier's weighted pick and by a plain vote, and a question's
accuracy is its mean over the subsets. What is left is the noise of the questions themselves: differences are
paired over them, with the standard error of the mean per-question difference.

    python bench/verifier_bon.py --verifiers prm=runs/prm-cvp-2048/model,orm=runs/prm-cvp-2048-orm/model \
        --level 3 -n 300 --out bench/results/verifier-bon-cvp-l3.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import torch
from tqdm import tqdm

from ponder.evaluate import heldout_problems
from ponder.reward.base import rate
from ponder.tasks import get_task
from ponder.think.verified import pick


def draw_chains(args: argparse.Namespace, problems) -> list[list[tuple[list[str], str, bool]]]:
    """Per question, its sampled chains as (steps, answer or '', right)."""
    from ponder.engine.local import LocalEngine
    from ponder.model.loading import load_model
    from ponder.think.sampling import ChainOfThought

    model, tok, chat = load_model("built-in")
    engine = LocalEngine(model, tok)
    task = get_task(args.task)
    cot = ChainOfThought(engine, chat, max_tokens=args.max_tokens)
    out = []
    for i in tqdm(range(0, len(problems), 32), desc="drawing chains", unit="chunk"):
        part = problems[i:i + 32]
        _, parts, _, _ = cot.sample_answers([p.question for p in part], None, None, n=args.samples,
                                            temperature=args.temperature, top_p=1.0, seed=args.seed)
        out += [[(chat.steps(reasoning), answer, bool(answer) and bool(task.check(p, answer)))
                 for reasoning, answer, _, _ in group] for p, group in zip(part, parts)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifiers", required=True, help="comma-separated LABEL=PATH; the first is compared to each")
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--ns", default="2,4,8,16")
    ap.add_argument("--draws", type=int, default=200, help="subsets of N chains per question")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    verifiers = dict(v.split("=", 1) for v in args.verifiers.split(","))
    task = get_task(args.task)
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    chains = draw_chains(args, problems)
    flat = [(qi, ci) for qi, q in enumerate(chains) for ci, (_, a, _) in enumerate(q) if a]
    scores: dict[str, dict[tuple[int, int], float]] = {}
    from ponder.reward import RewardModel

    for label, path in verifiers.items():
        v = RewardModel.load(path)
        got = []
        for i in range(0, len(flat), 256):  # a few hundred chains a call: one call for all would pad them all
            part = flat[i:i + 256]
            got += rate(v, [problems[qi].question for qi, _ in part], [chains[qi][ci][0] for qi, ci in part],
                        [chains[qi][ci][1] for qi, ci in part])
        scores[label] = dict(zip(flat, got))
    methods = ["majority", *verifiers]
    rng = random.Random(0)
    per_q: dict[int, dict[str, list[float]]] = {}
    for n in map(int, args.ns.split(",")):
        acc = {m: [0.0] * len(chains) for m in methods}
        for qi, q in enumerate(chains):
            for _ in range(args.draws):
                idx = [ci for ci in sorted(rng.sample(range(len(q)), n)) if q[ci][1]]
                if not idx:
                    continue
                keys = [task.normalize(q[ci][1]) for ci in idx]
                for m in methods:
                    w = [1.0] * len(idx) if m == "majority" else [scores[m][qi, ci] for ci in idx]
                    acc[m][qi] += q[idx[pick(keys, w, True)]][2] / args.draws
        per_q[n] = acc
    first = next(iter(verifiers))
    head = "| N | " + " | ".join(methods) + " | " + " | ".join(f"{first} - {m}" for m in methods if m != first) + " |"
    lines = [f"{args.task} level {args.level}, {len(chains)} questions (seed {args.seed}), {args.samples} chains each, "
             f"{args.draws} subsets per N; paired differences in points (SE)", "", head,
             "|" + "---:|" * (1 + 2 * len(methods) - 1)]
    for n, acc in per_q.items():
        mean = {m: sum(a) / len(a) for m, a in acc.items()}
        diffs = []
        for m in methods:
            if m == first:
                continue
            d = [x - y for x, y in zip(acc[first], acc[m])]
            mu = sum(d) / len(d)
            se = math.sqrt(sum((x - mu) ** 2 for x in d) / (len(d) - 1) / len(d))
            diffs.append(f"{100 * mu:+.1f} ({100 * se:.1f})")
        lines.append(f"| {n} | " + " | ".join(f"{mean[m]:.1%}" for m in methods) + " | " + " | ".join(diffs) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"verifiers": verifiers, "table": lines,
                                        "per_question": {n: acc for n, acc in per_q.items()}}, indent=1))


if __name__ == "__main__":
    main()
