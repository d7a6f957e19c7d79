"""Accuracy of a strategy on held-out problems of a task family and level."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ponder import PonderError
from ponder.tasks import Problem, get_task
from ponder.think.base import Strategy, Thought, Usage
from ponder.train.data import parse_mixture, sample_problem


def heldout_problems(task_name: str, level: int, n: int, seed: int = 0) -> list[Problem]:
    """n distinct held-out problems (never seen in training), the same for the same seed."""
    if n < 1:
        raise PonderError(f"-n must be a positive number of problems, got {n}")
    rng = random.Random(f"eval/{task_name}/{level}/{seed}")
    seen: dict[str, Problem] = {}
    for _ in range(n * 50):
        p = sample_problem(rng, task_name, level, heldout=True)
        seen.setdefault(p.question, p)
        if len(seen) == n:
            break
    return list(seen.values())


@dataclass
class EvalResult:
    task: str
    level: int
    n: int
    correct: int
    usage: Usage
    seconds: float
    records: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def summary(self) -> dict:
        return {"task": self.task, "level": self.level, "n": self.n, "accuracy": round(self.accuracy, 4),
                "completion_tokens_per_question": round(self.usage.completion_tokens / max(1, self.n), 1),
                "reasoning_tokens_per_question": round(self.usage.reasoning_tokens / max(1, self.n), 1),
                "seconds": round(self.seconds, 2)}


def greedy_chains(model_path: str, task_name: str, level: int, n: int, max_tokens: int):
    """(problems, chat format, one greedy completion each) on the held-out problems the trainers evaluate
    on: what a script needs to look inside a model's chains, not only at its accuracy."""
    from ponder.engine.base import SamplingParams
    from ponder.engine.local import LocalEngine
    from ponder.model.loading import load_model

    problems = heldout_problems(task_name, level, n, 0)
    model, tok, chat = load_model(model_path)
    model.eval()
    outs = LocalEngine(model, tok).generate([chat.prompt(p.question) for p in problems],
                                            SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens))
    return problems, chat, [group[0] for group in outs]


def answered(th: Thought) -> bool:
    """Whether a thought's answer counts: one cut short by the token cap (finish `length`) does not, whatever
    it reads as (a lenient check would credit the last digit of whatever followed `</think>`)."""
    return th.finish_reason == "stop" and bool(th.answer)


def evaluate(strategy: Strategy, task_name: str, level: int, problems: list[Problem],
             chunk: int = 256) -> EvalResult:
    task = get_task(task_name)
    usage, correct, records = Usage(), 0, []
    t0 = time.perf_counter()
    for i in range(0, len(problems), chunk):
        part = problems[i : i + chunk]
        for p, th in zip(part, strategy.solve_batch([p.question for p in part])):
            ok = answered(th) and task.check(p, th.answer)
            correct += ok
            usage.add(th.usage)
            records.append({"question": p.question, "expected": p.answer, "answer": th.answer, "correct": ok,
                            "completion_tokens": th.usage.completion_tokens})
    return EvalResult(task_name, level, len(problems), correct, usage, time.perf_counter() - t0, records)


def accuracy_by_level(model, tokenizer, chat, mixture: list[dict], n: int, seed: int = 0,
                      max_tokens: int = 768) -> dict[str, float]:
    """Greedy accuracy per `task/level` over a training mixture, for logging during training."""
    from ponder.engine.local import LocalEngine
    from ponder.think.sampling import ChainOfThought

    engine = LocalEngine(model, tokenizer)
    strategy = ChainOfThought(engine, chat, max_tokens=max_tokens)
    out = {}
    for item in parse_mixture(mixture):
        for level in item.levels:
            res = evaluate(strategy, item.task, level, heldout_problems(item.task, level, n, seed))
            out[f"{item.task}/{level}"] = res.accuracy
    return out
