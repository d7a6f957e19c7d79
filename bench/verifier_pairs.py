"""How well a verifier chooses between two chains: the greedy chain against a sample, and two samples.

Weighted best-of-N and `adaptive`'s probe both end in the verifier choosing between chains that disagree.
This measures that choice on its own, per pairing: how often the two disagree, and how often the verifier's
pick is the right one when they do (with two answers, exactly one can be right on a 0/1 task only; here a
disagreement counts when exactly one chain is right). Also each kind of chain's mean score when right
and when wrong, and the AUC of the score within each kind.

    python bench/verifier_pairs.py --verifier runs/prm-cvp/model -n 1000 --seed 2
"""

from __future__ import annotations

import argparse
import json

import torch


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
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ponder.engine.local import LocalEngine
    from ponder.evaluate import heldout_problems
    from ponder.model.loading import load_model
    from ponder.reward import RewardModel
    from ponder.reward.base import rate
    from ponder.think.sampling import ChainOfThought

    from ponder.tasks import get_task

    model, tok, chat = load_model("built-in")
    engine, task, verifier = LocalEngine(model, tok), get_task(args.task), RewardModel.load(args.verifier)
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    questions = [p.question for p in problems]

    def chains(temperature: float, seed: int) -> list[tuple[bool, float]]:
        cot = ChainOfThought(engine, chat, temperature=temperature, seed=seed, max_tokens=768,
                             answer_key=task.normalize)
        thoughts = [t for i in range(0, args.n, 64) for t in cot.solve_batch(questions[i:i + 64])]
        scores = rate(verifier, questions, [chat.steps(t.reasoning) for t in thoughts],
                      [t.answer or None for t in thoughts])
        return [(bool(task.check(p, t.answer)), s) for p, t, s in zip(problems, thoughts, scores)]

    kinds = {"greedy": chains(0.0, 0), "sample 1": chains(args.temperature, 101),
             "sample 2": chains(args.temperature, 202)}
    for name, cs in kinds.items():
        right = [s for r, s in cs if r]
        wrong = [s for r, s in cs if not r]
        print(json.dumps({"chain": name, "accuracy": round(len(right) / len(cs), 3),
                          "mean_score_right": round(sum(right) / max(1, len(right)), 3),
                          "mean_score_wrong": round(sum(wrong) / max(1, len(wrong)), 3),
                          "auc": round(auc(right, wrong) or 0.0, 3)}), flush=True)
    for a, b in (("greedy", "sample 1"), ("sample 1", "sample 2")):
        print(json.dumps({"pair": f"{a} / {b}", **pick_accuracy(kinds[a], kinds[b])}), flush=True)


if __name__ == "__main__":
    main()
