"""Compute-optimal choice by difficulty bin, from `ponder eval scaling` reports on the same questions.

Snell et al.'s compute-optimal strategy picks, for each difficulty bin and budget, the strategy that does
best there. With the bins of `eval scaling` (the model's own pass rate over extra samples: oracle
difficulty, paid for outside the budget) this asks whether choosing per bin beats one strategy for all.
The choice is cross-validated: the questions are split in two halves by index parity, each half is
answered by the strategies that were best per bin on the other half. Differences are paired.

    python bench/compute_optimal.py BON.json BEAM.json --strategies best_of_n,beam --budgets 1,2,4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling_pairs import paired


def correct_by_cell(reports: list[dict]) -> dict[tuple[str, int], list[bool]]:
    out: dict[tuple[str, int], list[bool]] = {}
    for rep in reports:
        for r in rep["results"]:
            out.setdefault((r["strategy"], r["multiplier"]), r["correct"])
    return out


def choose(cells: dict[str, list[bool]], bins: list[int], train: list[int]) -> dict[int, str]:
    """Per bin, the strategy right most often on the `train` questions (ties: the first named)."""
    best = {}
    for b in sorted(set(bins)):
        idx = [i for i in train if bins[i] == b]
        best[b] = max(cells, key=lambda s: sum(cells[s][i] for i in idx))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--strategies", required=True, help="comma-separated; the first is the baseline")
    ap.add_argument("--budgets", default="1,2,4", help="multipliers of B")
    args = ap.parse_args(argv)
    reports = [json.loads(p.read_text()) for p in args.reports]
    if len({tuple(q["question"] for q in r["questions"]) for r in reports}) != 1:
        sys.exit("compute_optimal: the reports are not on the same questions")
    bins = [q["bin"] for q in reports[0]["questions"]]
    table = correct_by_cell(reports)
    names = args.strategies.split(",")
    halves = [[i for i in range(len(bins)) if i % 2 == h] for h in (0, 1)]
    print("| budget | " + " | ".join(names) + " | chosen per bin | chosen - " + names[0] + " (SE) | choice per bin (half 0; half 1) |")
    print("|---:|" + "---:|" * len(names) + "---:|---:|---|")
    for m in (int(x) for x in args.budgets.split(",")):
        missing = [s for s in names if (s, m) not in table]
        if missing:
            sys.exit(f"compute_optimal: no cell {missing[0]}@{m} in the reports")
        cells = {s: table[(s, m)] for s in names}
        chosen: list[bool] = [False] * len(bins)
        picks = []
        for h, test in enumerate(halves):
            rule = choose(cells, bins, halves[1 - h])
            picks.append(" ".join(f"{b}:{rule[b]}" for b in sorted(rule)))
            for i in test:
                chosen[i] = cells[rule[bins[i]]][i]
        diff, se = paired(chosen, cells[names[0]])
        accs = " | ".join(f"{sum(cells[s]) / len(bins):.1%}" for s in names)
        print(f"| {m} x B | {accs} | {sum(chosen) / len(bins):.1%} | {100 * diff:+.1f} ({100 * se:.1f}) | "
              f"{'; '.join(picks)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
