"""What RL did to a model's countdown chains: greedy accuracy, and how the chains search and compute.

    python bench/countdown_chains.py --level 2 --models built-in runs/star-countdown-steps/model

Per model, on the held-out questions that the trainers evaluate on (`heldout_problems`, seed 0): accuracy,
mean completion tokens, moves per chain (lines that combine two numbers), `back` lines (backtracking:
the chain searched), and the share of checkable lines that miscompute (`Task.step_errors`, the check
behind GRPO's `step_error_penalty` and STaR's `require_correct_steps`).
"""

from __future__ import annotations

import argparse
import re

import torch

from ponder.evaluate import greedy_chains
from ponder.tasks import get_task

MOVE = re.compile(r"^\d+[-+*/]\d+=\d+ \[")  # a move: two numbers combined, then the new state


def profile(model_path: str, level: int, n: int, max_tokens: int) -> dict[str, float]:
    task = get_task("countdown")
    problems, chat, outs = greedy_chains(model_path, "countdown", level, n, max_tokens)
    correct = tokens = moves = backs = checked = wrong = 0
    for p, c in zip(problems, outs):
        parsed = chat.parse(c.text)
        lines = [line.strip() for line in parsed.reasoning.split("\n")]
        correct += task.check(p, parsed.answer)
        tokens += c.num_tokens
        moves += sum(bool(MOVE.match(line)) for line in lines)
        backs += sum(line.startswith("back") for line in lines)
        k, w = task.step_errors(parsed.reasoning)
        checked, wrong = checked + k, wrong + w
    return {"accuracy": correct / n, "tokens": tokens / n, "moves": moves / n, "backs": backs / n,
            "wrong_lines": wrong / max(1, checked)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["built-in"])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | accuracy | tokens | moves | `back` lines | lines that miscompute |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.models:
        r = profile(path, args.level, args.n, args.max_tokens)
        print(f"| {path} | {r['accuracy']:.1%} | {r['tokens']:.0f} | {r['moves']:.2f} | {r['backs']:.2f} | "
              f"{r['wrong_lines']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
