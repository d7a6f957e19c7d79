"""`reasoning_effort` presets side by side: majority votes against adaptive spending.

    python bench/effort.py -n 200 --out bench/results/effort.json
    python bench/effort.py -n 400 --runs high:vote,high:adaptive --variant high:pool20=POLICY.yaml

For each task family and level, the same held-out questions go through low (one greedy chain) and, for
medium and high, through the presets of `ponder/think/effort.py`: `vote` (majority of 5 / 16) and
`adaptive` (probe 4, sample more only while the answers disagree). `--variant EFFORT:NAME=FILE` adds an
adaptive policy read from a YAML file as one more preset. Prints a Markdown table of accuracy and generated
tokens per question, then each adaptive run against the vote of its effort on the same questions (paired
difference in points, with its standard error). The JSON keeps every question's correctness.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from ponder.engine.local import LocalEngine
from ponder.evaluate import evaluate, heldout_problems
from ponder.model.loading import load_model
from ponder.think.adaptive import Adaptive
from ponder.think.policy import load_policy
from ponder.think.effort import strategy_for_effort

CELLS = "cvp:2,countdown:2,modadd:4,compare:3,s5:4"
RUNS = "low:vote,medium:vote,medium:adaptive,high:vote,high:adaptive"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="built-in")
    ap.add_argument("--cells", default=CELLS, help="comma-separated TASK:LEVEL")
    ap.add_argument("--runs", default=RUNS, help="comma-separated EFFORT:PRESET")
    ap.add_argument("--variant", action="append", default=[], metavar="EFFORT:NAME=POLICY.yaml",
                    help="an adaptive policy from a file, run as preset NAME of EFFORT (repeatable)")
    ap.add_argument("-n", type=int, default=200, help="held-out questions per cell")
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/effort.json")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved run and stop")
    args = ap.parse_args()
    if args.report:
        results = json.loads(Path(args.report).read_text())["results"]
        print(markdown(results, list(dict.fromkeys((r["effort"], r["preset"]) for r in results))))
        print()
        print(paired(results))
        return
    torch.set_num_threads(args.threads)
    model, tok, chat = load_model(args.model)
    engine = LocalEngine(model, tok)
    cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells.split(",")]
    runs = [tuple(r.split(":")) for r in args.runs.split(",")]
    variants = {}
    for v in args.variant:
        key, path = v.split("=", 1)
        variants[tuple(key.split(":"))] = load_policy(path)
    runs += list(variants)
    results = []
    for task, level in tqdm(cells, desc="cells"):
        problems = heldout_problems(task, level, args.n)
        for effort, preset in runs:
            if (effort, preset) in variants:
                strategy = Adaptive(engine, chat, policy=variants[effort, preset], max_tokens=args.max_tokens, seed=0)
            else:
                strategy = strategy_for_effort(effort, engine, chat, max_tokens=args.max_tokens, preset=preset)
            res = evaluate(strategy, task, level, problems)
            results.append({**res.summary(), "effort": effort, "preset": preset,
                            "correct": "".join("1" if r["correct"] else "0" for r in res.records)})
    Path(args.out).write_text(json.dumps({"date": str(date.today()), "machine": platform.platform(),
                                          "threads": args.threads, "model": args.model,
                                          "variants": dict(v.split("=", 1) for v in args.variant),
                                          "results": results}, indent=1) + "\n")
    print(markdown(results, runs))
    print()
    print(paired(results))


def markdown(results: list[dict], runs: list[tuple[str, str]]) -> str:
    rows = ["| task | level | " + " | ".join(f"{e}: {p}" for e, p in runs) + " |",
            "|---|---:|" + "---:|" * len(runs)]
    for task, level in dict.fromkeys((r["task"], r["level"]) for r in results):
        by = {(r["effort"], r["preset"]): r for r in results if (r["task"], r["level"]) == (task, level)}
        cell = [f"{by[k]['accuracy']:.1%} ({by[k]['completion_tokens_per_question']:.0f})" for k in runs]
        rows.append(f"| {task} | {level} | " + " | ".join(cell) + " |")
    return "\n".join(rows)


def paired(results: list[dict]) -> str:
    """Each non-vote preset minus the vote of its effort, question by question: points (SE), token ratio.

    A last row per preset pools every cell's questions (tokens: the ratio of the totals)."""
    rows = ["| task | level | effort | preset | - vote, points (SE) | tokens / vote's |", "|---|---:|---|---|---:|---:|"]
    by = {(r["task"], r["level"], r["effort"], r["preset"]): r for r in results}
    pooled: dict[tuple[str, str], list] = {}
    for (task, level, effort, preset), r in by.items():
        vote = by.get((task, level, effort, "vote"))
        if preset == "vote" or vote is None or "correct" not in r or "correct" not in vote:
            continue
        d = [int(a) - int(b) for a, b in zip(r["correct"], vote["correct"])]
        tokens = (r["completion_tokens_per_question"] * r["n"], vote["completion_tokens_per_question"] * vote["n"])
        rows.append(f"| {task} | {level} | {effort} | {preset} | {_mean_se(d)} | {tokens[0] / tokens[1]:.2f} |")
        all_d, ours, theirs = pooled.get((effort, preset), ([], 0.0, 0.0))
        pooled[effort, preset] = (all_d + d, ours + tokens[0], theirs + tokens[1])
    for (effort, preset), (d, ours, theirs) in pooled.items():
        rows.append(f"| all | | {effort} | {preset} | {_mean_se(d)} | {ours / theirs:.2f} |")
    return "\n".join(rows)


def _mean_se(d: list[int]) -> str:
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1) / len(d))
    return f"{100 * mean:+.1f} ({100 * se:.1f})"


if __name__ == "__main__":
    main()
