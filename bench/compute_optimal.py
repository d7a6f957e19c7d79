"""Compute-optimal choice by difficulty bin, from `ponder eval scaling` reports on the same questions.

Snell et al.'s compute-optimal strategy picks, for each difficulty bin and budget, the strategy that does
best there. With the bins of `eval scaling` (the model's own pass rate over extra samples: oracle
difficulty, paid for outside the budget) this asks whether choosing per bin beats one strategy for all.
The choice is cross-validated: the questions are split in two halves by index parity, each half is
answered by the strategies that were best per bin on the other half. With `--choose-from`, the choice is
made on other questions (reports with the same cells, e.g. another `--seed`) and every question here is
answered by it. Differences are paired.

    python bench/compute_optimal.py BON.json BEAM.json --strategies best_of_n,beam --budgets 1,2,4
    python bench/compute_optimal.py S3-BON.json S3-BEAM.json --choose-from S2-BON.json S2-BEAM.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling_pairs import cells as cells_by_name
from scaling_pairs import paired


def choose(cells: dict[str, list[bool]], bins: list[int], train: list[int]) -> dict[int, str]:
    """Per bin, the strategy right most often on the `train` questions (ties: the first named)."""
    best = {}
    for b in sorted(set(bins)):
        idx = [i for i in train if bins[i] == b]
        best[b] = max(cells, key=lambda s: sum(cells[s][i] for i in idx))
    return best


def _load(paths: list[Path]) -> tuple[list[int], dict[str, dict]]:
    """The questions' bins, and every cell of these reports by `strategy@multiplier` (first report first)."""
    reports = [json.loads(p.read_text()) for p in paths]
    if len({tuple(q["question"] for q in r["questions"]) for r in reports}) != 1:
        sys.exit("compute_optimal: the reports are not on the same questions")
    return [q["bin"] for q in reports[0]["questions"]], cells_by_name({str(i): r for i, r in enumerate(reports)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--strategies", required=True, help="comma-separated; the first is the baseline")
    ap.add_argument("--budgets", default="1,2,4", help="multipliers of B")
    ap.add_argument("--choose-from", nargs="+", type=Path, help="reports on other questions to choose on")
    args = ap.parse_args(argv)
    bins, table = _load(args.reports)
    names = args.strategies.split(",")
    if args.choose_from:
        other_bins, other = _load(args.choose_from)
        # (questions answered, questions chosen on) per fold: here one fold, all of them
        folds = [(list(range(len(bins))), list(range(len(other_bins))))]
    else:
        other_bins, other = bins, table
        halves = [[i for i in range(len(bins)) if i % 2 == h] for h in (0, 1)]
        folds = [(halves[0], halves[1]), (halves[1], halves[0])]
    where = "choice per bin" if args.choose_from else "choice per bin (half 0; half 1)"
    print("| budget | " + " | ".join(names) + f" | chosen per bin | chosen - {names[0]} (SE) | {where} |")
    print("|---:|" + "---:|" * len(names) + "---:|---:|---|")
    for m in (int(x) for x in args.budgets.split(",")):
        missing = [s for s in names for t in (table, other) if f"{s}@{m}" not in t]
        if missing:
            sys.exit(f"compute_optimal: no cell {missing[0]}@{m} in the reports")
        cells = {s: table[f"{s}@{m}"]["correct"] for s in names}
        chosen: list[bool] = [False] * len(bins)
        picks = []
        for test, train in folds:
            rule = choose({s: other[f"{s}@{m}"]["correct"] for s in names}, other_bins, train)
            picks.append(" ".join(f"{b}:{rule[b]}" for b in sorted(rule)))
            for i in test:
                chosen[i] = cells[rule.get(bins[i], names[0])][i]
        diff, se = paired(chosen, cells[names[0]])
        accs = " | ".join(f"{sum(cells[s]) / len(bins):.1%}" for s in names)
        print(f"| {m} x B | {accs} | {sum(chosen) / len(bins):.1%} | {100 * diff:+.1f} ({100 * se:.1f}) | "
              f"{'; '.join(picks)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
