"""Training data for self-revision: the model's own wrong attempts, each paired with a correct completion.

A revision example is prompted exactly as `think.revise` prompts a revision
(`ChatFormat.revision_prompt`: the question, the earlier wrong answers, "think
again") and its target is a correct chain of thought and answer: the task's
reference chain by default, or one of the model's own correct chains for the
same question (`target="own"`, closer to what the model writes, falling back to
the reference where it had none). Only attempts that answered and were wrong
make examples: an attempt without an answer has nothing to revise, a correct
one would teach the model to change right answers. Up to `context` earlier
wrong answers are shown, as at inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ponder import PonderError
from ponder.engine.base import Engine, SamplingParams
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem, get_task
from ponder.train.prm_data import split_chain


@dataclass
class RevisionExample:
    question: str
    wrong_answers: list[str]  # the model's own earlier answers shown in the prompt, oldest first
    expected: str  # the reference answer
    prompt: str  # the revision prompt, as inference renders it
    completion: str  # the target after the prompt: a correct chain of thought and its answer
    own: bool = False  # the target is one of the model's own correct chains, not the reference

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Attempt:
    """One of the model's own chains for a problem, as (steps, answer); answer None when it did not answer."""

    steps: list[str]
    answer: str | None


def revision_examples(chat: ChatFormat, problems: list[Problem], attempts: list[list[Attempt]],
                      per_problem: int = 2, context: int = 1, target: str = "reference") -> list[RevisionExample]:
    """Examples from each problem's wrong attempts (distinct answers, in the order sampled).

    The i-th example of a problem shows its wrong answers i-context+1..i and targets a correct completion.
    """
    if len(problems) != len(attempts):
        raise PonderError(f"{len(problems)} problems but attempts for {len(attempts)}")
    if per_problem < 1 or context < 1:
        raise PonderError(f"per_problem and context must be >= 1, got {per_problem} and {context}")
    if target not in ("reference", "own"):
        raise PonderError(f"target must be 'reference' or 'own', got {target!r}")
    out = []
    for p, tries in zip(problems, attempts):
        task = get_task(p.family)
        wrong: list[str] = []
        right: list[Attempt] = []
        for a in tries:
            if a.answer is None or not a.answer.strip():
                continue
            if task.check(p, a.answer):
                right.append(a)
            elif task.normalize(a.answer) not in {task.normalize(w) for w in wrong}:
                wrong.append(a.answer)
        own = target == "own" and bool(right)
        completion = chat.completion(right[0].steps, right[0].answer) if own else chat.completion(p.steps, p.answer)
        for i in range(min(per_problem, len(wrong))):
            shown = wrong[max(0, i - context + 1): i + 1]
            out.append(RevisionExample(p.question, shown, p.answer, chat.revision_prompt(p.question, shown),
                                       completion, own))
    return out


def sample_attempts(engine: Engine, chat: ChatFormat, problems: list[Problem], n: int, temperature: float,
                    max_tokens: int, seed: int | None) -> list[list[Attempt]]:
    """n of the model's own attempts per problem (in one engine call)."""
    if n < 1:
        raise PonderError(f"attempts per problem must be >= 1, got {n}")
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed)
    groups = engine.generate([chat.prompt(p.question) for p in problems], params)
    return [[Attempt(*split_chain(chat, c.text, c.finish_reason)) for c in group] for group in groups]


def build_revision_data(engine: Engine, chat: ChatFormat, problems: list[Problem], n: int = 8,
                        temperature: float = 0.8, max_tokens: int = 768, seed: int | None = 0,
                        per_problem: int = 2, context: int = 1, target: str = "reference") -> list[RevisionExample]:
    """Sample the model's attempts, then pair its wrong ones with correct completions."""
    attempts = sample_attempts(engine, chat, problems, n, temperature, max_tokens, seed)
    return revision_examples(chat, problems, attempts, per_problem, context, target)


def encode(examples: list[RevisionExample], tokenizer, max_length: int = 1024) -> list[tuple[list[int], int]]:
    """(token ids of prompt + completion, where the completion starts) per example, for an SFT loss on the
    completion only (the shape of `train.data.Example`'s first two fields)."""
    if not examples:
        return []
    p_ids = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    c_ids = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    return [((list(p) + list(c))[:max_length], len(p)) for p, c in zip(p_ids, c_ids)]
