"""Beam search with partial chains ranked by their newest step ("last") or their weakest ("min").

Same PRM, same questions, same seeds; only the ranking differs. Prints one JSON line per cell.

    python bench/beam_ranking.py --verifier runs/prm-cvp/model -n 200 --seed 1
"""

from __future__ import annotations

import argparse
import json

from verified_setup import add_arguments, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=200, seed=1)
    ap.add_argument("--budgets", default="1,2,4", help="multipliers of B, the 0.9 quantile of greedy lengths")
    args = ap.parse_args()
    s = load(args)
    from ponder.eval_scaling import base_budget, parse_budgets
    from ponder.think.sampling import ChainOfThought
    from ponder.think.search import BeamSearch

    engine, chat, task, verifier, problems, questions = s.engine, s.chat, s.task, s.verifier, s.problems, s.questions

    def score(thoughts) -> tuple[float, float]:
        right = sum(bool(task.check(p, t.answer)) for p, t in zip(problems, thoughts))
        return right / args.n, sum(t.usage.completion_tokens for t in thoughts) / args.n

    greedy = ChainOfThought(engine, chat, max_tokens=768, answer_key=task.normalize).solve_batch(questions)
    base = base_budget([t.usage.completion_tokens for t in greedy], 0.9)
    print(json.dumps({"base": base, "greedy_accuracy": score(greedy)[0]}), flush=True)
    for m in parse_budgets(args.budgets):
        for ranking in ("min", "last"):
            beam = BeamSearch(engine, chat, verifier, beam_width=max(1, m // 4), expansions=min(4, m),
                              step_aggregation=ranking, max_tokens=768, seed=args.seed, answer_key=task.normalize)
            thoughts = [t for i in range(0, args.n, 64) for t in beam.solve_batch(questions[i:i + 64], m * base)]
            acc, tokens = score(thoughts)
            print(json.dumps({"x_B": m, "step_aggregation": ranking, "accuracy": acc, "tokens": round(tokens, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
