"""Sampled chains with and without the anytime close (`answer_reserve`), side by side on the same questions.

Without it, a question whose chains the budget cuts all has no answer; with it, the chains run to a share
of the budget less the reserve, and a question whose chains were all cut closes the one that got furthest
(best_of_n: the one its verifier likes best) and answers from its whole steps, as step search does with its
best prefix. Same questions and seeds; one JSON line per cell, with the paired difference (reserve minus
none, points, and its standard error) and how many questions were answered by a close.

    python bench/anytime_close.py --verifier runs/prm-cvp-2048-best/model -n 1000 --seed 2
    python bench/anytime_close.py --plot OUT.png RESULTS.jsonl...   # accuracy by budget, with and without
"""

from __future__ import annotations

import argparse
import json
import sys

from scaling_pairs import paired
from verified_setup import add_arguments, load


def plot(out: str, files: list[str]) -> None:
    """One panel per results file: accuracy against the budget, a line per strategy and reserve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(files), figsize=(5 * len(files), 4), squeeze=False)
    for ax, path in zip(axes[0], files):
        rows = [json.loads(line) for line in open(path)]
        head = next(r for r in rows if "base" in r)
        lines: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for r in rows:
            if "strategy" in r:
                lines.setdefault((r["strategy"], r["answer_reserve"]), []).append((r["x_B"], 100 * r["accuracy"]))
        colors = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(n for n, _ in lines))}
        for (name, reserve), pts in sorted(lines.items()):
            ax.plot(*zip(*sorted(pts)), marker="o", linestyle="-" if reserve else ":", color=colors[name],
                    label=f"{name}, reserve {reserve}")
        ax.axhline(100 * head["greedy_accuracy"], color="grey", linewidth=0.8, label="greedy, no budget")
        ax.set(xscale="log", xlabel=f"budget (x B = {head['base']} tokens, quantile {head['base_quantile']:g})",
               ylabel="accuracy (%)", title=path.rsplit("/", 1)[-1])
        ax.set_xticks(sorted({x for pts in lines.values() for x, _ in pts}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--plot":
        return plot(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=200, seed=1, budgets="1,2,4")
    ap.add_argument("--base-quantile", type=float, default=0.9, help="B's quantile (0.9, as eval scaling)")
    ap.add_argument("--strategies", default="cot,majority,best_of_n")
    ap.add_argument("--reserve", type=int, default=16, help="the answer_reserve compared with none")
    args = ap.parse_args()
    s = load(args)
    from ponder.eval_scaling import parse_list
    from ponder.think.registry import build_strategy, scaled_params

    common = {"max_tokens": 768, "seed": args.seed, "answer_key": s.task.normalize}
    accuracy, base = s.greedy_base(args.base_quantile, **common)
    print(json.dumps({"base": base, "base_quantile": args.base_quantile, "greedy_accuracy": accuracy}), flush=True)
    for name in parse_list(args.strategies, "strategies"):
        for m in args.budgets:
            runs = {}
            for reserve in (0, args.reserve):
                strategy = build_strategy(name, s.engine, s.chat, s.verifier if name == "best_of_n" else None,
                                          answer_reserve=reserve, **scaled_params(name, m), **common)
                thoughts = s.solve(strategy, m * base)
                right = runs[reserve] = s.right(thoughts)
                closed = sum(t.budget_exhausted and bool(t.answer) for t in thoughts)
                unanswered = sum(not t.answer for t in thoughts)
                row = {"strategy": name, "x_B": m, "answer_reserve": reserve, "accuracy": sum(right) / args.n,
                       "tokens": round(sum(t.usage.completion_tokens for t in thoughts) / args.n, 1),
                       "max_tokens_used": max(t.usage.completion_tokens for t in thoughts),
                       "closed": closed, "unanswered": unanswered}
                if reserve:
                    diff, se = paired(runs[reserve], runs[0])
                    row.update(minus_none=round(100 * diff, 1), se=round(100 * se, 1))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
