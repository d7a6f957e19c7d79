"""What a model does on isq past its trained lengths: accuracy by modulus, and whether its greedy chain
has as many lines as the question asks (n) or only a line count of the same parity.

    python bench/isq_shortcut.py --level 5 --models built-in runs/grpo-isq/model runs/star-isq-plain/model

Why: squaring mod 97 falls after five squarings into the subgroup {1, 35, 61}, where it alternates
with period 2 (or stays at 1), so the answer depends only on the parity of n; mod 59 it does not.
A chain of five or more lines whose count has n's parity is right mod 97 without counting to n.
"""

from __future__ import annotations

import argparse
import re

import torch

from ponder.evaluate import greedy_chains
from ponder.tasks import get_task


def profile(model_path: str, level: int, n: int, max_tokens: int) -> dict[str, dict[str, float]]:
    task = get_task("isq")
    problems, chat, outs = greedy_chains(model_path, "isq", level, n, max_tokens)
    rows: dict[str, list[tuple[bool, int, int]]] = {}
    for p, c in zip(problems, outs):
        modulus = re.search(r"mod (\d+)", p.question).group(1)
        k = int(re.search(r"\^\(2\^(\d+)\)", p.question).group(1))
        parsed = chat.parse(c.text)
        lines = sum(1 for line in parsed.reasoning.split("\n") if line.strip())
        rows.setdefault(modulus, []).append((task.check(p, parsed.answer), lines, k))
    return {m: {"questions": len(r), "accuracy": sum(ok for ok, _, _ in r) / len(r),
                "exactly_n_lines": sum(lines == k for _, lines, k in r) / len(r),
                "same_parity_as_n": sum(lines % 2 == k % 2 for _, lines, k in r) / len(r),
                "mean_lines": sum(lines for _, lines, _ in r) / len(r)} for m, r in sorted(rows.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["built-in"])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=320)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| model | modulus | questions | accuracy | exactly n lines | line count of n's parity | mean lines |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.models:
        for m, r in profile(path, args.level, args.n, args.max_tokens).items():
            print(f"| {path} | {m} | {r['questions']} | {r['accuracy']:.0%} | {r['exactly_n_lines']:.0%} | "
                  f"{r['same_parity_as_n']:.0%} | {r['mean_lines']:.1f} |")


if __name__ == "__main__":
    main()
