"""`reasoning_effort` presets side by side: majority votes against adaptive spending.

    python bench/effort.py -n 200 --out bench/results/effort.json

For each task family and level, the same held-out questions go through low (one greedy chain) and, for
medium and high, through both presets of `ponder/think/effort.py`: `vote` (majority of 5 / 16) and
`adaptive` (probe 4, sample up to 8 / 32 only while the answers disagree). Prints a Markdown table of
accuracy and generated tokens per question.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from ponder.engine.local import LocalEngine
from ponder.evaluate import evaluate, heldout_problems
from ponder.model.loading import load_model
from ponder.think.effort import strategy_for_effort

CELLS = "cvp:2,countdown:2,modadd:4,compare:3,s5:4"
RUNS = [("low", "vote"), ("medium", "vote"), ("medium", "adaptive"), ("high", "vote"), ("high", "adaptive")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="built-in")
    ap.add_argument("--cells", default=CELLS, help="comma-separated TASK:LEVEL")
    ap.add_argument("-n", type=int, default=200, help="held-out questions per cell")
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/effort.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, chat = load_model(args.model)
    engine = LocalEngine(model, tok)
    cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells.split(",")]
    results = []
    for task, level in tqdm(cells, desc="cells"):
        problems = heldout_problems(task, level, args.n)
        for effort, preset in RUNS:
            strategy = strategy_for_effort(effort, engine, chat, max_tokens=args.max_tokens, preset=preset)
            res = evaluate(strategy, task, level, problems)
            results.append({**res.summary(), "effort": effort, "preset": preset})
    Path(args.out).write_text(json.dumps({"date": str(date.today()), "machine": platform.platform(),
                                          "threads": args.threads, "model": args.model, "results": results},
                                         indent=1) + "\n")
    print(markdown(results))


def markdown(results: list[dict]) -> str:
    rows = ["| task | level | low | medium: vote | medium: adaptive | high: vote | high: adaptive |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for task, level in dict.fromkeys((r["task"], r["level"]) for r in results):
        by = {(r["effort"], r["preset"]): r for r in results if (r["task"], r["level"]) == (task, level)}
        cell = [f"{by[k]['accuracy']:.1%} ({by[k]['completion_tokens_per_question']:.0f} tok)" for k in RUNS]
        rows.append(f"| {task} | {level} | " + " | ".join(cell) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
