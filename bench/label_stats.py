"""What a reward model's Monte-Carlo labels can teach: do they grade steps, or only questions?

    python bench/label_stats.py runs/prm-isq/labels.jsonl [--json]

Prints, for a `labels.jsonl` written by `ponder train prm`:
- chains, the share that is correct, and the mean lowest step label of right and of wrong chains;
- problems, and those whose chains disagree on correctness (the only ones where a verifier can pick);
- of the wrong chains in those problems, the ones whose steps are a prefix of a right chain's steps or the
  other way round: every line they write is right, and only where they stop is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from statistics import mean


def stats(rows: list[dict]) -> dict:
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_problem[r["question"]].append(r)
    mixed = [v for v in by_problem.values() if any(r["correct"] for r in v) and not all(r["correct"] for r in v)]
    wrong_in_mixed = same_lines = 0
    for chains in mixed:
        rights = [r["steps"] for r in chains if r["correct"]]
        for w in (r["steps"] for r in chains if not r["correct"]):
            wrong_in_mixed += 1
            same_lines += any(w[:len(r)] == r[:len(w)] for r in rights)
    lowest = lambda ok: [min(r["soft"]) for r in rows if r["correct"] == ok and r["soft"]]  # noqa: E731
    return {
        "chains": len(rows),
        "correct": sum(r["correct"] for r in rows) / max(1, len(rows)),
        "lowest_label_right": mean(lowest(True) or [float("nan")]),
        "lowest_label_wrong": mean(lowest(False) or [float("nan")]),
        "problems": len(by_problem),
        "problems_disagreeing": len(mixed),
        "wrong_chains_there": wrong_in_mixed,
        "of_them_same_lines": same_lines,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", help="a labels.jsonl from ponder train prm")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        with open(args.labels) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        print(f"label_stats: cannot read {args.labels}: {e}", file=sys.stderr)
        return 2
    s = stats(rows)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['chains']} chains, {s['correct']:.1%} correct; lowest step label: right {s['lowest_label_right']:.2f}, "
          f"wrong {s['lowest_label_wrong']:.2f}")
    print(f"{s['problems']} problems, {s['problems_disagreeing']} whose chains disagree on correctness; "
          f"{s['of_them_same_lines']} of their {s['wrong_chains_there']} wrong chains write a right chain's lines "
          "and only stop elsewhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
