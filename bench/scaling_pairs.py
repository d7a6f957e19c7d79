"""Paired differences between cells of `ponder eval scaling` reports run on the same questions.

Two strategies answer the same questions, so the noise of their difference is the noise of the
questions on which they disagree, much smaller than two independent accuracies' errors:
the standard error here is that of the mean per-question difference.

    python bench/scaling_pairs.py runs/A/scaling.json runs/B/scaling.json \\
        --pairs beam@2:best_of_n@2 adaptive@4:majority@16 [--labels A,B] [--bins 1-2,3-5] [--by-length]

A cell is `strategy@multiplier`, looked up in the reports in order (a `label:` prefix picks one report).
A report may be `A.json+B.json+...`: the same cells run on other questions (other seeds), pooled into one
report, so a pair's difference is taken over all their questions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def cells(reports: dict[str, dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for label, rep in reports.items():
        for r in rep["results"]:
            key = f"{r['strategy']}@{r['multiplier']}"
            out.setdefault(key, r)
            out[f"{label}:{key}"] = r
    return out


def load(spec: str) -> dict:
    """One report, or several pooled (`A.json+B.json`): questions and per-question results end to end."""
    reps = [json.loads(Path(p).read_text()) for p in spec.split("+")]
    if len(reps) == 1:
        return reps[0]
    keys = [[(r["strategy"], r["multiplier"]) for r in rep["results"]] for rep in reps]
    if any(k != keys[0] for k in keys):
        sys.exit(f"scaling_pairs: {spec} pools reports with different cells")
    n = [len(rep["questions"]) for rep in reps]
    results = []  # only what pairing reads: a first run's per-bin figures would not be the pool's
    for cells in zip(*(rep["results"] for rep in reps)):
        correct = [x for c in cells for x in c["correct"]]
        results.append({"strategy": cells[0]["strategy"], "multiplier": cells[0]["multiplier"], "correct": correct,
                        "accuracy": sum(correct) / len(correct),
                        "mean_tokens": sum(c["mean_tokens"] * m for c, m in zip(cells, n)) / sum(n)})
    bases = {rep["base_tokens"] for rep in reps}
    return {**reps[0], "questions": [q for rep in reps for q in rep["questions"]], "results": results,
            "base_tokens": bases.pop() if len(bases) == 1 else None}


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b and its standard error (right/wrong as 1/0)."""
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    return mean, math.sqrt(var / n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="scaling.json files (A.json+B.json pools runs on other questions)")
    ap.add_argument("--pairs", nargs="+", required=True, help="CELL:CELL, e.g. beam@2:best_of_n@2")
    ap.add_argument("--labels", help="comma-separated names for the reports (default: their folder names, or paths)")
    ap.add_argument("--bins", help="also each pair within groups of difficulty bins, e.g. 1-2,3-5 (1: easiest)")
    ap.add_argument("--by-length", action="store_true",
                    help="also each pair within the questions whose greedy chain is longer than the base budget B "
                         "and the rest (whole-chain strategies split a budget evenly, so at N x B with N chains "
                         "none of them may run past B)")
    ap.add_argument("--average", action="store_true",
                    help="also the pairs' differences averaged question by question (one figure over several budgets)")
    args = ap.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [Path(p.split("+")[0]).parent.name for p in args.reports]
    if len(set(labels)) != len(labels):  # reports side by side in one folder
        labels = [str(p) for p in args.reports]
    if len(labels) != len(args.reports):
        sys.exit("scaling_pairs: --labels needs one name per report")
    reports = {lab: load(p) for lab, p in zip(labels, args.reports)}
    questions = {tuple(q["question"] for q in rep["questions"]) for rep in reports.values()}
    if len(questions) != 1:
        sys.exit("scaling_pairs: the reports are not on the same questions")
    table = cells(reports)
    first = next(iter(reports.values()))
    bins = [q.get("bin", 0) for q in first["questions"]]
    groups = [("", list(range(len(bins))))] + [
        (f" [bins {g}]", [i for i, b in enumerate(bins) if b in _bin_range(g)]) for g in (args.bins or "").split(",") if g]
    if args.by_length:
        base = first["base_tokens"]
        if base is None:
            sys.exit("scaling_pairs: --by-length needs one base budget B; the pooled runs have several")
        long = [q["greedy_tokens"] > base for q in first["questions"]]
        groups += [(f" [greedy <= {base}]", [i for i, x in enumerate(long) if not x]),
                   (f" [greedy > {base}]", [i for i, x in enumerate(long) if x])]
    if any(not idx for _, idx in groups):
        sys.exit(f"scaling_pairs: no questions in one of the groups ({args.bins or 'by length'})")
    print("| A | B | A | B | A - B | SE |\n|---|---|---:|---:|---:|---:|")
    each_pair = []  # per pair, each question's difference (all questions)
    for pair in args.pairs:
        left, right = _split(pair)
        if left not in table or right not in table:
            sys.exit(f"scaling_pairs: unknown pair {pair!r}; cells are {', '.join(sorted(table))}")
        a, b = table[left], table[right]
        each_pair.append([int(x) - int(y) for x, y in zip(a["correct"], b["correct"])])
        for tag, idx in groups:
            ca, cb = [a["correct"][i] for i in idx], [b["correct"][i] for i in idx]
            diff, se = paired(ca, cb)
            print(f"| {left}{tag} ({a['mean_tokens']:.0f} tok) | {right} ({b['mean_tokens']:.0f} tok) | "
                  f"{sum(ca) / len(ca):.1%} | {sum(cb) / len(cb):.1%} | {100 * diff:+.1f} | {100 * se:.1f} |")
    if args.average:
        diff, se = paired([sum(d) / len(each_pair) for d in zip(*each_pair)], [0] * len(each_pair[0]))
        print(f"\nAveraged over the {len(each_pair)} pairs, question by question: {100 * diff:+.2f} (SE {100 * se:.2f})")
    return 0


def _bin_range(group: str) -> range:
    lo, _, hi = group.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def _split(pair: str) -> tuple[str, str]:
    """CELL:CELL where cells may carry a `label:` prefix: split at the first colon after the first `@`."""
    at = pair.find("@")
    cut = pair.find(":", at) if at >= 0 else -1
    return (pair[:cut], pair[cut + 1:]) if cut >= 0 else (pair, "")


if __name__ == "__main__":
    raise SystemExit(main())
