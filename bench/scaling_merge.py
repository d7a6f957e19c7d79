"""One table and one plot from several `ponder eval scaling` reports on the same questions.

Each invocation of `ponder eval scaling` writes the cells it was asked for; runs with different verifiers
or policies live in different reports. This puts them side by side, refusing reports that were not run on
the same questions (task, level, n, seed, base budget). A label marks a report's strategies, e.g.
`best_of_n (orm)`; an empty label leaves them as they are.

    python bench/scaling_merge.py vote/scaling.json prm/bon.json orm/scaling.json --labels ,,orm --out merged
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SAME = ("task", "level", "n", "seed", "base_tokens")


def merge(reports: list[dict], labels: list[str]) -> dict:
    """The first report with every report's cells (renamed by its label), in order, duplicates dropped."""
    first = reports[0]
    merged = {**first, "results": [], "strategies": []}
    seen: set[tuple[str, int]] = set()
    for report, label in zip(reports, labels):
        for k in SAME:
            if report[k] != first[k]:
                raise SystemExit(f"reports differ in {k}: {first[k]!r} and {report[k]!r}; not the same questions")
        if [q["question"] for q in report["questions"]] != [q["question"] for q in first["questions"]]:
            raise SystemExit("reports hold different questions; not the same questions")
        for r in report["results"]:
            name = f"{r['strategy']} ({label})" if label else r["strategy"]
            if (name, r["multiplier"]) in seen:
                continue
            seen.add((name, r["multiplier"]))
            merged["results"].append({**r, "strategy": name})
            if name not in merged["strategies"]:
                merged["strategies"].append(name)
    verifiers = sorted({r["verifier"] for r in reports if r.get("verifier")})
    merged["verifier"] = ", ".join(verifiers) or None
    merged["policy"] = next((r["policy"] for r in reports if r.get("policy")), None)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--labels", default="", help="comma-separated, one per report (empty: no label)")
    ap.add_argument("--out", required=True, help="folder for scaling.json, scaling.md and scaling.png")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else [""] * len(args.reports)
    if len(labels) != len(args.reports):
        raise SystemExit(f"{len(labels)} labels for {len(args.reports)} reports")
    from ponder.eval_scaling import write_report

    merged = merge([json.loads(Path(p).read_text()) for p in args.reports], labels)
    for path in write_report(merged, Path(args.out)):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
