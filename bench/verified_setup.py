"""What the bench scripts that score the built-in model's chains with a verifier share: their arguments,
and the model, engine, task, verifier and held-out problems those name."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch


def add_arguments(ap: argparse.ArgumentParser, n: int, seed: int) -> None:
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=n)
    ap.add_argument("--seed", type=int, default=seed, help="which held-out questions")
    ap.add_argument("--threads", type=int, default=1)


@dataclass
class Setup:
    chat: Any
    engine: Any
    task: Any
    verifier: Any
    problems: list

    @property
    def questions(self) -> list[str]:
        return [p.question for p in self.problems]

    def run(self, strategy, budget: int | None, chunk: int = 64) -> tuple[list[bool], float]:
        """Whether each question was answered right, and the mean generated tokens per question."""
        qs = self.questions
        thoughts = [t for i in range(0, len(qs), chunk) for t in strategy.solve_batch(qs[i:i + chunk], budget)]
        right = [bool(self.task.check(p, t.answer)) for p, t in zip(self.problems, thoughts)]
        return right, sum(t.usage.completion_tokens for t in thoughts) / len(qs)

    def greedy_base(self, **common) -> tuple[float, int]:
        """Greedy accuracy and B, the 0.9 quantile of greedy chain lengths (as `eval scaling` sets it)."""
        from ponder.eval_scaling import base_budget
        from ponder.think.sampling import ChainOfThought

        greedy = ChainOfThought(self.engine, self.chat, **common).solve_batch(self.questions)
        right = sum(bool(self.task.check(p, t.answer)) for p, t in zip(self.problems, greedy))
        return right / len(greedy), base_budget([t.usage.completion_tokens for t in greedy], 0.9)


def load(args: argparse.Namespace) -> Setup:
    torch.set_num_threads(args.threads)
    from ponder.engine.local import LocalEngine
    from ponder.evaluate import heldout_problems
    from ponder.model.loading import load_model
    from ponder.reward import RewardModel
    from ponder.tasks import get_task

    model, tok, chat = load_model("built-in")
    return Setup(chat, LocalEngine(model, tok), get_task(args.task), RewardModel.load(args.verifier),
                 heldout_problems(args.task, args.level, args.n, args.seed))
