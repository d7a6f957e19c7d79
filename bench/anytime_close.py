"""Sampled chains with and without the anytime close (`answer_reserve`), side by side on the same questions.

Without it, a question whose chains the budget cuts all has no answer; with it, the chains run to a share
of the budget less the reserve, and a question whose chains were all cut closes the one that got furthest
(best_of_n: the one its verifier likes best) and answers from its whole steps, as step search does with its
best prefix. Same questions and seeds; one JSON line per cell, with the paired difference (reserve minus
none, points, and its standard error) and how many questions were answered by a close.

    python bench/anytime_close.py --verifier runs/prm-cvp-2048-best/model -n 1000 --seed 2
"""

from __future__ import annotations

import argparse
import json

from scaling_pairs import paired
from verified_setup import add_arguments, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=200, seed=1)
    ap.add_argument("--budgets", default="1,2,4", help="multipliers of B, a quantile of greedy lengths")
    ap.add_argument("--base-quantile", type=float, default=0.9, help="B's quantile (0.9, as eval scaling)")
    ap.add_argument("--strategies", default="cot,majority,best_of_n")
    ap.add_argument("--reserve", type=int, default=16, help="the answer_reserve compared with none")
    args = ap.parse_args()
    s = load(args)
    from ponder.eval_scaling import base_budget, parse_budgets, parse_list
    from ponder.think.registry import build_strategy, scaled_params
    from ponder.think.sampling import ChainOfThought

    common = {"max_tokens": 768, "seed": args.seed, "answer_key": s.task.normalize}
    greedy = ChainOfThought(s.engine, s.chat, **common).solve_batch(s.questions)
    base = base_budget([t.usage.completion_tokens for t in greedy], args.base_quantile)
    accuracy = sum(bool(s.task.check(p, t.answer)) for p, t in zip(s.problems, greedy)) / args.n
    print(json.dumps({"base": base, "base_quantile": args.base_quantile, "greedy_accuracy": accuracy}), flush=True)
    for name in parse_list(args.strategies, "strategies"):
        for m in parse_budgets(args.budgets):
            runs = {}
            for reserve in (0, args.reserve):
                strategy = build_strategy(name, s.engine, s.chat, s.verifier if name == "best_of_n" else None,
                                          answer_reserve=reserve, **scaled_params(name, m), **common)
                thoughts = [t for i in range(0, args.n, 64) for t in strategy.solve_batch(s.questions[i:i + 64],
                                                                                           m * base)]
                right = [bool(s.task.check(p, t.answer)) for p, t in zip(s.problems, thoughts)]
                runs[reserve] = right
                closed = sum(t.budget_exhausted and bool(t.answer) for t in thoughts)
                unanswered = sum(not t.answer for t in thoughts)
                row = {"strategy": name, "x_B": m, "answer_reserve": reserve, "accuracy": sum(right) / args.n,
                       "tokens": round(sum(t.usage.completion_tokens for t in thoughts) / args.n, 1),
                       "max_tokens_used": max(t.usage.completion_tokens for t in thoughts),
                       "closed": closed, "unanswered": unanswered}
                if reserve:
                    diff, se = paired(runs[reserve], runs[0])
                    row.update(minus_none=round(100 * diff, 1), se=round(100 * se, 1))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
