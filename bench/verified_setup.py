"""What the bench scripts that score the built-in model's chains with a verifier share: their arguments,
and the model, engine, task, verifier and held-out problems those name."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch


def add_arguments(ap: argparse.ArgumentParser, n: int, seed: int, budgets: str | None = None) -> None:
    """The shared arguments; `budgets`, where given, is the default of `--budgets` (parsed to a list)."""
    ap.add_argument("--verifier", required=True)
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("-n", type=int, default=n)
    ap.add_argument("--seed", type=int, default=seed, help="which held-out questions")
    ap.add_argument("--threads", type=int, default=1)
    if budgets is not None:
        ap.add_argument("--budgets", default=budgets, type=_budgets,
                        help="multipliers of B, a quantile of greedy chain lengths (0.9 unless said)")


def _budgets(text: str) -> list[int]:
    from ponder import PonderError
    from ponder.eval_scaling import parse_budgets

    try:
        return parse_budgets(text)
    except PonderError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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

    def solve(self, strategy, budget: int | None, chunk: int = 64) -> list:
        """Every question's Thought, `chunk` questions per batch."""
        qs = self.questions
        return [t for i in range(0, len(qs), chunk) for t in strategy.solve_batch(qs[i:i + chunk], budget)]

    def right(self, thoughts: list) -> list[bool]:
        return [bool(self.task.check(p, t.answer)) for p, t in zip(self.problems, thoughts)]

    def run(self, strategy, budget: int | None) -> tuple[list[bool], float]:
        """Whether each question was answered right, and the mean generated tokens per question."""
        thoughts = self.solve(strategy, budget)
        return self.right(thoughts), sum(t.usage.completion_tokens for t in thoughts) / len(thoughts)

    def greedy_base(self, quantile: float = 0.9, **common) -> tuple[float, int]:
        """Greedy accuracy and B, the `quantile` of greedy chain lengths (0.9: as `eval scaling` sets it)."""
        from ponder.eval_scaling import base_budget
        from ponder.think.sampling import ChainOfThought

        greedy = ChainOfThought(self.engine, self.chat, **common).solve_batch(self.questions)
        return sum(self.right(greedy)) / len(greedy), base_budget([t.usage.completion_tokens for t in greedy],
                                                                    quantile)

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
