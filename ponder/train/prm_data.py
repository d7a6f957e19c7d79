"""Monte-Carlo step labels (Math-Shepherd style) from the policy's own chains.

For every chain the policy samples, each prefix `s1..si` is continued `k`
times through the engine; the soft label of step i is the fraction of those
rollouts that reach a correct answer (the task's `check`), the hard label is
whether any does. The prefix after the last step is closed with the think
marker, so its rollouts write only the answer. The chain's own final
correctness is the outcome label (all an ORM sees).
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from ponder import PonderError
from ponder.engine.base import Engine, SamplingParams
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem, get_task


@dataclass
class LabelledChain:
    question: str
    expected: str  # the reference answer
    steps: list[str]
    answer: str | None  # the chain's own answer; None when it never closed its thinking
    correct: bool  # outcome: the chain's answer is right
    soft: list[float] = field(default_factory=list)  # per step: fraction of rollouts that end correct
    hard: list[float] = field(default_factory=list)  # per step: 1.0 when any rollout ends correct
    level: int = 0
    checked: list[float] = field(default_factory=list)  # per step, the task's own check (see check_labels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LabelledChain":
        return cls(**d)

    def targets(self, kind: str, label: str) -> list[float]:
        """Labels for the reward model's positions: every step then the answer (prm), or the last only (orm)."""
        final = [1.0 if self.correct else 0.0]
        if kind == "orm":
            return final
        steps = {"soft": self.soft, "hard": self.hard, "checked": self.checked, "checked_each": self.checked}[label]
        return list(steps) + (final if self.answer is not None else [])


def is_eval_chain(question: str, fraction: float) -> bool:
    """A stable split of labelled problems into training and evaluation, by the question's hash."""
    return zlib.crc32(question.encode()) % 10_000 < fraction * 10_000


def split_chain(chat: ChatFormat, text: str, finish_reason: str = "stop") -> tuple[list[str], str | None]:
    """(steps, answer) of one sampled completion; the answer is None when thinking never closed
    or the token cap cut the answer short."""
    parsed = chat.parse(text)
    steps = [s for s in chat.steps(parsed.reasoning) if s.strip()]
    if chat.think_close not in text or (finish_reason == "length" and not parsed.finished):
        return steps, None
    return steps, parsed.answer


def prefix_texts(chat: ChatFormat, steps: list[str]) -> list[str]:
    """The completion text a rollout continues from after each step (the last closes the thinking)."""
    out = []
    for i in range(1, len(steps) + 1):
        tail = chat.step_sep if i < len(steps) else chat.think_close
        out.append(chat.step_sep.join(steps[:i]) + tail)
    return out


def sample_chains(engine: Engine, chat: ChatFormat, problems: list[Problem], n: int, temperature: float,
                  max_tokens: int, seed: int | None) -> list[list[tuple[list[str], str | None]]]:
    """n sampled chains per problem, as (steps, answer), exact duplicates dropped."""
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    out = []
    for group in engine.generate([chat.prompt(p.question) for p in problems], params):
        seen, chains = set(), []
        for c in group:
            steps, answer = split_chain(chat, c.text, c.finish_reason)
            key = (tuple(steps), answer)
            if steps and key not in seen:
                seen.add(key)
                chains.append((steps, answer))
        out.append(chains)
    return out


def mc_labels(engine: Engine, chat: ChatFormat, problems: list[Problem],
              chains: list[list[tuple[list[str], str | None]]], k: int, temperature: float,
              max_tokens: int, seed: int | None) -> list[LabelledChain]:
    """Label every step of every chain by k rollouts from it, in one engine call over all prefixes.

    A prefix shared by several chains of the same problem is rolled out once.
    """
    if k < 1:
        raise PonderError(f"rollouts must be >= 1, got {k}")
    wanted: dict[tuple[int, str], int] = {}  # (problem index, prefix text) -> row in the engine call
    for pi, problem_chains in enumerate(chains):
        for steps, _ in problem_chains:
            for text in prefix_texts(chat, steps):
                wanted.setdefault((pi, text), len(wanted))
    keys = list(wanted)
    results: list[tuple[int, int]] = []  # (correct rollouts, rollouts) per row
    if keys:
        prompts = [chat.prompt(problems[pi].question) + text for pi, text in keys]
        params = SamplingParams(n=k, temperature=temperature, max_tokens=max_tokens, seed=seed)
        for (pi, text), group in zip(keys, engine.generate(prompts, params)):
            task, problem = get_task(problems[pi].family), problems[pi]
            hits = sum(_reaches(chat, task, problem, text + c.text, c.finish_reason) for c in group)
            results.append((hits, len(group)))
    out = []
    for pi, problem_chains in enumerate(chains):
        p = problems[pi]
        task = get_task(p.family)
        for steps, answer in problem_chains:
            rows = [results[wanted[(pi, text)]] for text in prefix_texts(chat, steps)]
            correct = answer is not None and task.check(p, answer)
            out.append(LabelledChain(p.question, p.answer, steps, answer, bool(correct),
                                     soft=[h / n for h, n in rows], hard=[1.0 if h else 0.0 for h, _ in rows],
                                     level=p.level))
    return out


def _reaches(chat: ChatFormat, task, problem: Problem, completion: str, finish_reason: str) -> bool:
    _, answer = split_chain(chat, completion, finish_reason)
    return bool(answer) and task.check(problem, answer)


def label_problems(engine: Engine, chat: ChatFormat, problems: list[Problem], chains_per_problem: int,
                   rollouts: int, temperature: float, max_tokens: int, seed: int | None) -> list[LabelledChain]:
    """Sample chains for each problem, then label their steps by rollouts."""
    chains = sample_chains(engine, chat, problems, chains_per_problem, temperature, max_tokens, seed)
    rollout_seed = None if seed is None else seed + 1
    return mc_labels(engine, chat, problems, chains, rollouts, temperature, max_tokens, rollout_seed)


def problems_for_round(task_name: str, levels: list[int], count: int, seed: int, round_index: int) -> list[Problem]:
    """The training-side problems labelled in one round: a pure function of (seed, round)."""
    from ponder.train.data import sample_problem

    rng = random.Random(f"prm/{task_name}/{seed}/{round_index}")
    return [sample_problem(rng, task_name, rng.choice(levels), heldout=False) for _ in range(count)]


def check_labels(task_name: str, chains: list[LabelledChain], each: bool = False) -> None:
    """Fill each chain's `checked` labels from the task's own step check: 1 up to the first wrong step, 0 from
    there on (a right answer after a wrong step is luck, not reasoning); with `each`, every step by its own
    check (in cvp the last gate's value alone decides the answer, whatever went wrong before)."""
    task = get_task(task_name)
    for c in chains:
        ok = task.check_steps(c.question, c.steps)
        if ok is None:
            raise PonderError(f"exact step labels need a task that checks its own steps; {task_name!r} cannot "
                              f"check the steps of {c.question!r}")
        first_wrong = len(ok) if each or False not in ok else ok.index(False)
        c.checked = [1.0 if right and i < first_wrong else 0.0 for i, right in enumerate(ok)]


def label_summary(chains: list[LabelledChain]) -> dict[str, int]:
    """What the labels leave a verifier to learn. It can only choose in problems whose chains disagree on
    correctness; a wrong chain whose steps are a prefix of a right chain's (or the other way round) writes
    no wrong line, only stops in the wrong place, so its step labels grade the question, not a step."""
    by_problem: dict[str, list[LabelledChain]] = defaultdict(list)
    for c in chains:
        by_problem[c.question].append(c)
    disagreeing = wrong = same_lines = 0
    for group in by_problem.values():
        rights = [c.steps for c in group if c.correct]
        wrongs = [c.steps for c in group if not c.correct]
        if not rights or not wrongs:
            continue
        disagreeing += 1
        wrong += len(wrongs)
        same_lines += sum(any(w[:len(r)] == r[:len(w)] for r in rights) for w in wrongs)
    return {"problems": len(by_problem), "problems_disagreeing": disagreeing,
            "wrong_chains_there": wrong, "wrong_with_right_lines": same_lines}
