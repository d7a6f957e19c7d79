"""How well a verifier chooses between two chains: the greedy chain against a sample, and two samples.

Weighted best-of-N and `adaptive`'s probe both end in the verifier choosing between chains that disagree.
This measures that choice on its own, per pairing: how often the two disagree, and how often the verifier's
pick is the right one when they do (with two answers, exactly one can be right on a 0/1 task only; here a
disagreement counts when exactly one chain is right). Also each kind of chain's mean score when right
and when wrong, and the AUC of the score within each kind. The lines without an `aggregation` field use
the verifier's own; with `--aggregations` the same step scores are also combined each other way, so a PRM
read as `last`, `min` or `prod` is compared on the very same chains.

    python bench/verifier_pairs.py --verifier runs/prm-cvp/model -n 1000 --seed 2
"""

from __future__ import annotations

import argparse
import json

from verified_setup import add_arguments, load


def auc(right: list[float], wrong: list[float]) -> float | None:
    """P(a right chain outscores a wrong one), ties half."""
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def pick_accuracy(a: list[tuple[bool, float]], b: list[tuple[bool, float]]) -> dict:
    """Over questions where exactly one of chains a and b is right: how often the higher score is that one."""
    split = [(ra, sa, sb) for (ra, sa), (rb, sb) in zip(a, b) if ra != rb]
    good = sum((sa > sb) == ra for ra, sa, sb in split)
    first_right = sum(ra for ra, _, _ in split)
    return {"split": len(split), "first_right": first_right,
            "verifier_right": good, "verifier_accuracy": round(good / max(1, len(split)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap, n=1000, seed=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--aggregations", action="store_true", help="also report last, min and prod")
    args = ap.parse_args()
    s = load(args)
    from ponder.reward.base import AGGREGATIONS, aggregate
    from ponder.think.sampling import ChainOfThought

    engine, chat, task, verifier, problems, questions = s.engine, s.chat, s.task, s.verifier, s.problems, s.questions

    def chains(temperature: float, seed: int) -> list[tuple[bool, list[float]]]:
        """(right, the verifier's step scores) per question."""
        cot = ChainOfThought(engine, chat, temperature=temperature, seed=seed, max_tokens=768,
                             answer_key=task.normalize)
        thoughts = [t for i in range(0, args.n, 64) for t in cot.solve_batch(questions[i:i + 64])]
        steps = verifier.score_batch(questions, [chat.steps(t.reasoning) for t in thoughts],
                                     [t.answer or None for t in thoughts])
        return [(bool(task.check(p, t.answer)), s) for p, t, s in zip(problems, thoughts, steps)]

    kinds = {"greedy": chains(0.0, 0), "sample 1": chains(args.temperature, 101),
             "sample 2": chains(args.temperature, 202)}
    ways = [verifier.aggregation] + ([a for a in AGGREGATIONS if a != verifier.aggregation] if args.aggregations else [])
    for how in ways:
        tag = {} if how == verifier.aggregation else {"aggregation": how}
        scored = {name: [(r, aggregate(s, how)) for r, s in cs] for name, cs in kinds.items()}
        for name, cs in scored.items():
            right = [s for r, s in cs if r]
            wrong = [s for r, s in cs if not r]
            print(json.dumps({**tag, "chain": name, "accuracy": round(len(right) / len(cs), 3),
                              "mean_score_right": round(sum(right) / max(1, len(right)), 3),
                              "mean_score_wrong": round(sum(wrong) / max(1, len(wrong)), 3),
                              "auc": round(auc(right, wrong) or 0.0, 3)}), flush=True)
        for a, b in (("greedy", "sample 1"), ("sample 1", "sample 2")):
            print(json.dumps({**tag, "pair": f"{a} / {b}", **pick_accuracy(scored[a], scored[b])}), flush=True)


if __name__ == "__main__":
    main()
