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
from pathlib import Path
from statistics import mean

from ponder import PonderError
from ponder.train.prm import read_labels
from ponder.train.prm_data import LabelledChain, label_summary


def stats(chains: list[LabelledChain]) -> dict:
    lowest = lambda ok: [min(c.soft) for c in chains if c.correct == ok and c.soft] or [float("nan")]  # noqa: E731
    return {"chains": len(chains), "correct": sum(c.correct for c in chains) / len(chains),
            "lowest_label_right": mean(lowest(True)), "lowest_label_wrong": mean(lowest(False)),
            **label_summary(chains)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels", help="a labels.jsonl from ponder train prm")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        chains = read_labels(Path(args.labels))
    except (OSError, PonderError) as e:
        print(f"label_stats: cannot read {args.labels}: {e}", file=sys.stderr)
        return 2
    s = stats(chains)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['chains']} chains, {s['correct']:.1%} correct; lowest step label: right {s['lowest_label_right']:.2f}, "
          f"wrong {s['lowest_label_wrong']:.2f}")
    print(f"{s['problems']} problems, {s['problems_disagreeing']} whose chains disagree on correctness; "
          f"{s['wrong_with_right_lines']} of their {s['wrong_chains_there']} wrong chains write a right chain's lines "
          "and only stop elsewhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
