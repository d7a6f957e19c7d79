"""Benchmark: step search with and without its prefix savings, side by side.

    .venv/bin/python bench/search_prefix.py --verifier runs/prm-cvp-2048/model [--task cvp --level 2]
        [-n 200] [--strategy beam] [--multiplier 2] [--repeats 3] [--out bench/results/search_prefix.json]

Four ways on the same questions, model and verifier, one torch thread (`--ways` picks some):
- `whole`: the verifier scores every candidate whole, the engine prefills every prompt whole;
- `shared`: the verifier runs a prefix its candidates share within a call once (`reward/shared_prefix.py`);
- `cached`: that, and the engine keeps prefilled prompts across calls (`engine/prefix_cache.py`);
- `kept`: that, and the verifier keeps what it ran across calls too (`RewardModel.kept`).
Runs alternate (whole, shared, cached, kept, whole, ...); medians are reported, with the tokens the verifier
ran through its body, the prompt tokens the engine did not prefill again, and whether every answer came
out the same. The budget is `--multiplier` x `--base` tokens (66: the base budget of cvp level 2).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from ponder.engine.local import LocalEngine
from ponder.evaluate import heldout_problems
from ponder.model.loading import load_model
from ponder.reward.prm import RewardModel
from ponder.think.registry import build_strategy, scaled_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--strategy", default="beam", choices=["beam", "dvts", "mcts"])
    ap.add_argument("--multiplier", type=int, default=2)
    ap.add_argument("--base", type=int, default=66, help="base budget in tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--ways", default="whole,shared,cached,kept")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok, chat = load_model()
    verifier = RewardModel.load(args.verifier)
    questions = [p.question for p in heldout_problems(args.task, args.level, args.n, seed=args.seed)]
    budget = args.multiplier * args.base
    runs: dict[str, list[dict]] = {w: [] for w in args.ways.split(",")}
    if set(runs) - {"whole", "shared", "cached", "kept"}:
        raise SystemExit(f"--ways takes whole, shared, cached and kept, got {args.ways}")
    kept = verifier.kept
    for _ in range(args.repeats):
        for name in runs:
            verifier.share_prefixes = name != "whole"
            verifier.kept = kept if name == "kept" else None
            if kept is not None:
                kept.clear()  # each run starts empty, as the engine's fresh cache does
            engine = LocalEngine(model, tok, prefix_cache_mb=256 if name in ("cached", "kept") else 0)
            strategy = build_strategy(args.strategy, engine, chat, verifier,
                                      **scaled_params(args.strategy, args.multiplier))
            before, start = verifier.stats.tokens, time.perf_counter()
            thoughts = strategy.solve_batch(questions, budget)
            runs[name].append({"seconds": time.perf_counter() - start, "scored_tokens": verifier.stats.tokens - before,
                               "prompt_tokens": engine.stats.prompt_tokens,
                               "prefill_saved": engine.prefixes.tokens_saved if engine.prefixes else 0,
                               "answers": [t.answer for t in thoughts]})
    report = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": 1, "task": args.task, "level": args.level, "n": args.n, "strategy": args.strategy,
              "budget": budget, "verifier": args.verifier,
              "same_answers": len({json.dumps(r["answers"]) for rs in runs.values() for r in rs}) == 1}
    for name, rs in runs.items():
        report[name] = {"median_seconds": round(statistics.median(r["seconds"] for r in rs), 2),
                        "seconds": [round(r["seconds"], 2) for r in rs], "scored_tokens": rs[0]["scored_tokens"],
                        "prompt_tokens": rs[0]["prompt_tokens"], "prefill_saved": rs[0]["prefill_saved"]}
    first = next(iter(runs))
    for name in list(runs)[1:]:  # each way against the first one run
        report[f"speedup_{name}"] = round(report[first]["median_seconds"] / report[name]["median_seconds"], 2)
        report[f"scored_token_ratio_{name}"] = round(report[name]["scored_tokens"] / report[first]["scored_tokens"], 3)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
