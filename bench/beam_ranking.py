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
    add_arguments(ap, n=200, seed=1, budgets="1,2,4")
    args = ap.parse_args()
    s = load(args)
    from ponder.think.search import BeamSearch

    greedy, base = s.greedy_base(max_tokens=768, answer_key=s.task.normalize)
    print(json.dumps({"base": base, "greedy_accuracy": greedy}), flush=True)
    for m in args.budgets:
        for ranking in ("min", "last"):
            beam = BeamSearch(s.engine, s.chat, s.verifier, beam_width=max(1, m // 4), expansions=min(4, m),
                              step_aggregation=ranking, max_tokens=768, seed=args.seed, answer_key=s.task.normalize)
            right, tokens = s.run(beam, m * base)
            print(json.dumps({"x_B": m, "step_aggregation": ranking, "accuracy": sum(right) / args.n,
                              "tokens": round(tokens, 1)}), flush=True)


if __name__ == "__main__":
    main()
