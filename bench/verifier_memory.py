"""Peak memory and time of one large verifier call: all its chains in one pass against passes of 256.

A shared-prefix pass holds every segment it ran (keys and values of every layer) until it returns, so one
call of thousands of chains grew with all of them. Each setting runs in a fresh process (peak RSS is per
process), on the reference chains of held-out questions, `--per-question` chains per question (each cut after
a different step, as step search's candidates are).

    python bench/verifier_memory.py --verifier runs/prm-cvp-2048/model --questions 300 --per-question 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(args: argparse.Namespace) -> dict:
    import torch

    from ponder.evaluate import heldout_problems
    from ponder.reward import RewardModel

    torch.set_num_threads(1)
    rm = RewardModel.load(args.verifier)
    rm.pass_sequences = args.pass_sequences
    qs, chains, answers = [], [], []
    for p in heldout_problems(args.task, args.level, args.questions, 0):
        for k in range(args.per_question):
            cut = 1 + k % max(1, len(p.steps))
            qs.append(p.question)
            chains.append(list(p.steps[:cut]) + [f"try {k}"])
            answers.append(p.answer if k % 2 else None)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    rm.score_batch(qs, chains, answers)
    return {"pass_sequences": args.pass_sequences, "chains": len(qs), "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_mb": round(before / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--per-question", type=int, default=16)
    ap.add_argument("--pass-sequences", type=int, help="(internal) one setting, in this process")
    args = ap.parse_args()
    if args.pass_sequences is not None:
        print(json.dumps(one(args)))
        return
    for setting in (args.questions * args.per_question, 256):
        cmd = [sys.executable, __file__, "--verifier", args.verifier, "--task", args.task, "--level", str(args.level),
               "--questions", str(args.questions), "--per-question", str(args.per_question),
               "--pass-sequences", str(setting)]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
