"""Training speed on a CPU: bfloat16 autocast against float32, side by side on the same cell.

    python bench/train_dtype.py --repeats 2 --out bench/results/train_dtype.json

Trains one serial-experiment cell (a fresh 1-layer model, modadd, length 8, cot) with `bf16` on and
off, alternating, one thread, and prints seconds per optimizer step. Why it matters: the serial
experiment trains about 100 such models, and its cells need many small steps.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from ponder.experiments.serial import Cell, SweepSpec, run_cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train-tokens", type=int, default=300_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cell = Cell("modadd", 8, 1, "cot")
    spec = replace(SweepSpec(), train_tokens=args.train_tokens, n_test=16)
    runs = []
    for r in range(args.repeats):
        for bf16 in (True, False):
            t0 = time.perf_counter()
            record = run_cell(cell, replace(spec, bf16=bf16))
            runs.append({"bf16": bf16, "repeat": r, "steps": record["train_steps"],
                         "train_seconds": record["train_seconds"], "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(runs[-1]))
    per_step = {b: sum(x["train_seconds"] / x["steps"] for x in runs if x["bf16"] == b) / args.repeats
                for b in (True, False)}
    print("| dtype | ms per step |\n|---|---:|")
    print(f"| bfloat16 autocast | {1000 * per_step[True]:.1f} |\n| float32 | {1000 * per_step[False]:.1f} |")
    if args.out:
        args.out.write_text(json.dumps({"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                                        "cell": cell.key, "runs": runs,
                                        "ms_per_step": {"bf16": 1000 * per_step[True],
                                                        "float32": 1000 * per_step[False]}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
