"""Beam search that stops at its first answers against beam search that collects N finished chains.

A one-wide beam (2 or 4 expansions, as `eval scaling` sizes it at 2 and 4 x B) stops when its first
chain answers; with `finished_chains` = N it searches on with what the budget leaves, and the verifier
chooses among the answers, as best-of-N does among N whole chains. Same PRM, questions and seeds;
best-of-N at the same budget for the paired differences. Prints one JSON line per cell.

    python bench/beam_collect.py --verifier runs/prm-cvp-2048/model -n 200 --seed 1
"""

from __future__ import annotations

import argparse
import json

from scaling_pairs import paired
from verified_setup import add_arguments, load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=200, seed=1, budgets="2,4")
    args = ap.parse_args()
    s = load(args)
    from ponder.think.search import BeamSearch
    from ponder.think.verified import BestOfN

    common = {"max_tokens": 768, "seed": args.seed, "answer_key": s.task.normalize}
    greedy, base = s.greedy_base(**common)
    print(json.dumps({"base": base, "greedy_accuracy": greedy}), flush=True)
    for m in args.budgets:
        bon, bon_tokens = s.run(BestOfN(s.engine, s.chat, s.verifier, n=m, **common), m * base)
        print(json.dumps({"x_B": m, "strategy": "best_of_n", "accuracy": sum(bon) / args.n,
                          "tokens": round(bon_tokens, 1)}), flush=True)
        for finished in (None, m):
            beam = BeamSearch(s.engine, s.chat, s.verifier, beam_width=max(1, m // 4), expansions=min(4, m),
                              finished_chains=finished, **common)
            right, tokens = s.run(beam, m * base)
            diff, se = paired(right, bon)
            print(json.dumps({"x_B": m, "strategy": "beam", "finished_chains": finished or max(1, m // 4),
                              "accuracy": sum(right) / args.n, "tokens": round(tokens, 1),
                              "minus_best_of_n": round(100 * diff, 1), "se": round(100 * se, 1)}), flush=True)


if __name__ == "__main__":
    main()
