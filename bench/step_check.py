"""Do a reward model's step scores find the wrong step? Judged against the task's own check of each step.

    python bench/step_check.py runs/prm-cvp-2048/labels.jsonl --task cvp \\
        --verifier mc=runs/prm-cvp-2048/model orm=runs/prm-cvp-2048-orm/model checked=runs/prm-cvp-2048-checked/model

On the labelled chains of the held-out split (the problems `ponder train prm` evaluates on), for each verifier:
- `first wrong step`: AUC of its score at a chain's first wrong step against its scores at right steps
  (does the score drop where the error is?);
- `clean chain`: AUC of the chain's score (the verifier's own aggregation) for chains whose every step is
  right against chains with a wrong step;
- `pick`: how often its pick among a problem's chains is right, and at random; also apart for the problems
  with a chain whose every step is right and for those without one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from verifier_pairs import auc

from ponder import PonderError
from ponder.reward import RewardModel, aggregate
from ponder.train.prm import read_labels
from ponder.train.prm_data import LabelledChain, check_labels, is_eval_chain


def step_scores(rm: RewardModel, chains: list[LabelledChain], batch: int = 32) -> list[list[float]]:
    """Each chain's per-position probabilities: its steps, then its answer."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(chains), batch):
            part = chains[i : i + batch]
            out += [torch.sigmoid(x).tolist() for x in rm.logits([rm.encode(c.question, c.steps, c.answer)
                                                                  for c in part])]
    return out


def judge(rm: RewardModel, chains: list[LabelledChain]) -> dict:
    probs = step_scores(rm, chains)
    right, first_wrong, clean, dirty = [], [], [], []
    by_problem: dict[str, list[tuple[float, bool]]] = {}
    for c, p in zip(chains, probs):
        ok = c.checked
        right += [s for s, k in zip(p, ok) if k]
        first_wrong += [p[ok.index(0.0)]] if 0.0 in ok else []
        score = aggregate(p, rm.aggregation)
        (clean if all(ok) else dirty).append(score)
        by_problem.setdefault(c.question, []).append((score, c.correct))
    picks = [max(v, key=lambda t: t[0])[1] for v in by_problem.values()]
    has_clean = [any(c.question == q and all(c.checked) for c in chains) for q in by_problem]
    split = {f"pick_{'with' if want else 'without'}_clean": _share([p for p, h in zip(picks, has_clean) if h == want])
             for want in (True, False)}
    return {"first_wrong_step_auc": auc(right, first_wrong), "clean_chain_auc": auc(clean, dirty),
            "pick": sum(picks) / len(picks), "random_pick": sum(c.correct for c in chains) / len(chains),
            **split, "problems_with_clean": sum(has_clean), "problems": len(picks),
            "chains": len(chains), "clean_chains": len(clean)}


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels")
    ap.add_argument("--task", required=True, help="the family whose own step check judges the steps")
    ap.add_argument("--verifier", nargs="+", required=True, metavar="NAME=PATH")
    ap.add_argument("--eval-fraction", type=float, default=0.1, help="the held-out split (the trainer's)")
    args = ap.parse_args(argv)
    try:
        chains = [c for c in read_labels(Path(args.labels)) if is_eval_chain(c.question, args.eval_fraction)]
        check_labels(args.task, chains)
        verifiers = {name: RewardModel.load(path) for name, path in (v.split("=", 1) for v in args.verifier)}
    except (OSError, ValueError, PonderError) as e:
        print(f"step_check: {e}", file=sys.stderr)
        return 2
    for name, rm in verifiers.items():
        print(json.dumps({"verifier": name, **{k: round(v, 4) if isinstance(v, float) else v
                                               for k, v in judge(rm, chains).items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
