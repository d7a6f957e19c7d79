"""Verifiable rewards for one completion: the task's own check, the think format, a length cost.

The trainer is task-agnostic: correctness is whatever `task.check` says about the
visible answer, so a reward never knows more about a task than its check does.
Only the answer after the closed think block is checked: a number left inside an
unfinished chain of thought earns nothing. A completion cut by the token limit
(finish reason `length`) has not answered: it earns nothing for correctness or
format and pays the full length cost, so its reward is 0 without a length penalty
and never above a finished completion's. Whether it also drops out of the loss is
the trainer's `mask_truncated_completions`.

The optional step penalty charges the share of the chain's steps that the family
can check itself and finds false (`task.step_errors`: a countdown move that
miscomputes). It is still the task's own check, of the steps instead of the answer,
so it rewards honest work without a learned verifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.engine.base import Completion
from ponder.model.chat import ChatFormat, ParsedCompletion
from ponder.tasks import Problem, Task


@dataclass(frozen=True)
class Score:
    reward: float
    correct: bool
    formatted: bool
    truncated: bool
    step_error_rate: float | None = None  # share of checkable steps that are wrong; None: none checkable


def well_formed(chat: ChatFormat, text: str, finish_reason: str, parsed: ParsedCompletion | None = None) -> bool:
    """The prompt opened the think block; the completion closes it once and then ends with an answer.
    `parsed`: `chat.parse(text)` where the caller has it already."""
    if finish_reason == "length" or chat.think_open in text or text.count(chat.think_close) != 1:
        return False
    return bool((parsed if parsed is not None else chat.parse(text)).answer)


def visible_answer(chat: ChatFormat, text: str, parsed: ParsedCompletion | None = None) -> str | None:
    """The answer after the think block, or None when the block never closed."""
    if chat.think_close not in text:
        return None
    return (parsed if parsed is not None else chat.parse(text)).answer


def score(task: Task, problem: Problem, chat: ChatFormat, completion: Completion, *,
          correct_weight: float = 1.0, format_weight: float = 0.0, length_penalty: float = 0.0,
          step_error_penalty: float = 0.0, max_completion_length: int = 256) -> Score:
    """correct_weight * correct + format_weight * well-formed - length_penalty * tokens / max_completion_length
    - step_error_penalty * wrong steps / checkable steps (a truncated completion: -length_penalty)."""
    if completion.finish_reason == "length":
        return Score(-float(length_penalty), False, False, True)
    parsed = chat.parse(completion.text)  # once: this runs for every completion of every RL step
    answer = visible_answer(chat, completion.text, parsed)
    correct = answer is not None and task.check(problem, answer)
    formatted = well_formed(chat, completion.text, completion.finish_reason, parsed)
    checked, wrong = task.step_errors(parsed.reasoning)
    error_rate = wrong / checked if checked else None
    reward = (correct_weight * correct + format_weight * formatted
              - length_penalty * completion.num_tokens / max_completion_length
              - step_error_penalty * (error_rate or 0.0))
    return Score(float(reward), correct, formatted, False, error_rate)
