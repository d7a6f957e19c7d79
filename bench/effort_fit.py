"""Fit the `high` effort's adaptive table offline, across the effort bench's task families, against the 16-vote.

`ponder eval policy` fits one task and level under a token budget; the effort presets run on every question a
server gets, with no budget, answers voted by exact text. This draws each question's greedy chain and 16
samples on each cell's seed-1 questions (bench/effort.py reports on seed 0), keyed by exact text and without a
verifier, replays `eval policy`'s verifier-free tables with no budget (each chain capped at --max-tokens, as
the presets are), and keeps the most accurate table, pooled over all cells, whose mean tokens stay under
--share of the 16-vote's.

    python bench/effort_fit.py -n 200 --share 0.75 --out bench/results/effort-fit
    python bench/effort.py -n 400 --runs high:vote --variant high:fit=bench/results/effort-fit/policy.yaml ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ponder.eval_policy import (PolicyFitConfig, describe, draw, fittable, load_or_draw, mean_of, score_all,
                                table_yaml, vote)
from ponder.evaluate import heldout_problems
from ponder.think.base import default_key

CELLS = "cvp:2,countdown:2,modadd:4,compare:3,s5:4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=CELLS, help="comma-separated TASK:LEVEL")
    ap.add_argument("-n", type=int, default=200, help="questions per cell")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--share", type=float, default=0.75, help="of the 16-vote's mean tokens")
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=Path, default=Path("runs/effort-fit"), help="where drawn chains are kept")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--draw-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = chat = None
    chains, per_cell = [], {}
    for cell in args.cells.split(","):
        task_name, level = cell.split(":")[0], int(cell.split(":")[1])
        cfg = PolicyFitConfig(task_name, level, None, n=args.n, seed=args.seed, max_tokens=args.max_tokens)
        problems = heldout_problems(task_name, level, args.n, args.seed)

        def make(cfg=cfg, problems=problems):
            nonlocal engine, chat
            if engine is None:
                from ponder.engine.local import LocalEngine
                from ponder.model.loading import load_model

                model, tok, chat = load_model("built-in")
                engine = LocalEngine(model, tok)
            from ponder.tasks import get_task

            return draw(engine, chat, get_task(cfg.task), None, problems, cfg, key=default_key)

        settings = {"cell": cell, "n": args.n, "seed": args.seed, "max_tokens": args.max_tokens, "key": "exact",
                    "questions": [p.question for p in problems]}
        got = load_or_draw(args.runs / f"chains-{task_name}-{level}.json", settings, make)
        per_cell[cell] = (len(chains), len(chains) + len(got))
        chains += got
    if args.draw_only:
        return
    big = 17 * args.max_tokens  # no budget binds: each chain is capped at max_tokens alone
    votes = [vote(q, 16, 16 * args.max_tokens, args.max_tokens) for q in chains]
    vote_acc, vote_tokens = mean_of(votes)
    tables = fittable(16, verified=False)
    scores = score_all(tables, chains, [big], args.max_tokens, args.workers, progress=True)
    ranked = sorted(((s[0][0], s[0][1], p) for p, s in zip(tables, scores) if s[0][1] <= args.share * vote_tokens),
                    key=lambda c: (-c[0], c[1]))
    lines = [f"{len(chains)} questions ({args.cells}, seed {args.seed}); 16-vote {vote_acc:.2%} with "
             f"{vote_tokens:.0f} tokens; mark {args.share:g} of that; {len(tables)} tables", "",
             "| accuracy | tokens | share of the 16-vote's | table |", "|---:|---:|---:|---|"]
    lines += [f"| {a:.2%} | {t:.0f} | {t / vote_tokens:.1%} | {describe(p)} |" for a, t, p in ranked[:15]]
    print("\n".join(lines))
    if args.out and ranked:
        a, t, best = ranked[0]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fit.md").write_text("\n".join(lines) + "\n")
        (args.out / "policy.yaml").write_text(table_yaml(best, [
            f"high, fitted by bench/effort_fit.py on {len(chains)} seed-{args.seed} questions of {args.cells}:",
            f"{a:.2%} with {t:.0f} tokens a question against the 16-vote's {vote_acc:.2%} with {vote_tokens:.0f}."]))
        (args.out / "fit.json").write_text(json.dumps({"vote": [vote_acc, vote_tokens], "cells": per_cell,
                                                        "best": [[a, t, describe(p)] for a, t, p in ranked[:50]]}))


if __name__ == "__main__":
    main()
