"""Greedy accuracy per task family and level, for several models side by side.

The built-in model's card and BENCHMARKS.md take their tables from this script:

    python bench/accuracy.py --model thinking=built-in --model direct=runs/ponder-tiny-direct/model -n 200

Problems are held out from training (a fixed hash slice of problem space).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from ponder.engine.local import LocalEngine
from ponder.evaluate import evaluate, heldout_problems
from ponder.model.loading import load_model
from ponder.tasks import get_task
from ponder.think.sampling import ChainOfThought

# The levels the built-in model is trained on (its "shipped" levels).
SHIPPED = {"add": range(1, 9), "mul": range(1, 6), "compare": range(1, 4), "countdown": range(1, 4),
           "s5": range(1, 5), "modadd": range(1, 5), "isq": range(1, 5), "cvp": range(1, 4)}
# One level past the trained ones: does the learned procedure extend?
HARDER = {"add": [9, 10], "mul": [6], "countdown": [4], "s5": [5], "modadd": [5], "isq": [5], "cvp": [4]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="NAME=PATH (PATH may be built-in)")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="only print one table merged from earlier --out files")
    ap.add_argument("-n", type=int, default=200, help="held-out problems per family and level")
    ap.add_argument("--families", default=",".join(SHIPPED))
    ap.add_argument("--harder", action="store_true", help="also evaluate one level past training")
    ap.add_argument("--max-tokens", type=int, default=900)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="bench/results/accuracy.json")
    args = ap.parse_args()
    if args.table:
        results = [r for f in args.table for r in json.loads(Path(f).read_text())["results"]]
        print(markdown(results, list(dict.fromkeys(r["model"] for r in results))))
        return
    if not args.model:
        ap.error("--model NAME=PATH is required unless --table is given")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = dict(m.split("=", 1) for m in args.model)
    cells = [(f, lv, False) for f in args.families.split(",") for lv in SHIPPED[f]]
    if args.harder:
        cells += [(f, lv, True) for f in args.families.split(",") for lv in HARDER.get(f, [])]
    results = []
    for name, path in models.items():
        model, tok, chat = load_model(path)
        strategy = ChainOfThought(LocalEngine(model, tok), chat, max_tokens=args.max_tokens)
        for family, level, harder in tqdm(cells, desc=name):
            res = evaluate(strategy, family, level, heldout_problems(family, level, args.n, seed=1))
            results.append({"model": name, "path": path, "family": family, "level": level, "harder": harder,
                            "describe": get_task(family).describe_level(level), **res.summary()})
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            "command": "python bench/accuracy.py " + " ".join(f"--model {m}" for m in args.model) + f" -n {args.n}"
                       + (" --harder" if args.harder else "")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(markdown(results, list(models)))


def markdown(results: list[dict], names: list[str]) -> str:
    by = {(r["model"], r["family"], r["level"]): r for r in results}
    keys = sorted({(r["family"], r["level"], r["harder"], r["describe"]) for r in results},
                  key=lambda k: (list(SHIPPED).index(k[0]), k[1]))
    head = "| family | level | problems | " + " | ".join(f"{n} accuracy" for n in names) + " | " + \
           " | ".join(f"{n} tokens/q" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    for family, level, harder, describe in keys:
        rs = [by.get((n, family, level)) for n in names]
        acc = " | ".join(f"{r['accuracy']:.1%}" if r else "-" for r in rs)
        toks = " | ".join(f"{r['completion_tokens_per_question']:.0f}" if r else "-" for r in rs)
        lv = f"{level}{' (not trained)' if harder else ''}"
        lines.append(f"| {family} | {lv} | {describe} | {acc} | {toks} |")
    return "\n".join(lines)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f}s)")
