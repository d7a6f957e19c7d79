"""Rewards, dynamic sampling and the curriculum: the parts of GRPO that decide what is learned."""

import random

import pytest

from ponder.engine.base import Completion
from ponder.model.chat import ChatFormat
from ponder.tasks import Problem, get_task
from ponder.train.curriculum import Curriculum
from ponder.train.data import parse_mixture
from ponder.train.grpo import GRPOConfig, Group, rollout
from ponder.train.rewards import Score, score

CHAT = ChatFormat()
ADD = get_task("add")
PROBLEM = Problem("add", 1, "What is 6 + 0?", "6", ("6+0+0=", "=6"))


def _c(text: str, finish: str = "eos", n: int | None = None) -> Completion:
    return Completion(text=text, token_ids=[7] * (n if n is not None else len(text)), finish_reason=finish,
                      prompt_tokens=10)


@pytest.mark.parametrize("text, finish, correct, formatted", [
    ("6+0+0=\n=6</think>6<|end|>", "eos", True, True),
    ("6+0+0=\n=6</think>7<|end|>", "eos", False, True),
    ("6+0+0=\n=6 so 6<|end|>", "eos", False, False),  # a number inside an unclosed think block earns nothing
    ("=6</think><|end|>", "eos", False, False),  # closed, but no answer
    ("=6</think>6</think>6<|end|>", "eos", True, False),  # closed twice
    ("<think>=6</think>6<|end|>", "eos", True, False),  # opened again
])
def test_correctness_comes_from_the_task_check_and_format_from_the_markers(text, finish, correct, formatted):
    s = score(ADD, PROBLEM, CHAT, _c(text, finish), correct_weight=1.0, format_weight=0.25)
    assert (s.correct, s.formatted, s.truncated) == (correct, formatted, False)
    assert s.reward == pytest.approx(1.0 * correct + 0.25 * formatted)


def test_a_truncated_completion_scores_zero_even_with_the_right_answer_in_it():
    s = score(ADD, PROBLEM, CHAT, _c("=6</think>6", "length"), correct_weight=1.0, format_weight=0.5)
    assert s == Score(0.0, False, False, True)


def test_a_truncated_completion_pays_the_whole_length_penalty():
    """Never better off than a finished wrong answer, so cutting off is not a way around the penalty."""
    cut = score(ADD, PROBLEM, CHAT, _c("=6</think>6", "length", n=256), length_penalty=0.5, max_completion_length=256)
    wrong = score(ADD, PROBLEM, CHAT, _c("=6</think>7<|end|>", n=255), length_penalty=0.5, max_completion_length=256)
    assert cut.reward == -0.5 < wrong.reward


def test_length_penalty_is_linear_in_tokens_over_the_limit():
    s = score(ADD, PROBLEM, CHAT, _c("=6</think>6<|end|>", n=64), length_penalty=0.5, max_completion_length=256)
    assert s.reward == pytest.approx(1.0 - 0.5 * 64 / 256)


COUNTDOWN = get_task("countdown")
CD_PROBLEM = Problem("countdown", 2, "Using the numbers 2, 6, 7, make 19.", "6*2+7")


def test_step_penalty_charges_the_share_of_miscomputed_moves():
    """The built-in model forces the target with a false move (7*2=19): one of three checkable lines wrong."""
    forced = _c("7*2=19 [6 19]\nno\n6*2=12 [7 12]\n12+7=19 [19]</think>6*2+7<|end|>")
    s = score(COUNTDOWN, CD_PROBLEM, CHAT, forced, step_error_penalty=0.6)
    assert s.correct and s.step_error_rate == pytest.approx(1 / 3)
    assert s.reward == pytest.approx(1.0 - 0.6 / 3)
    honest = score(COUNTDOWN, CD_PROBLEM, CHAT, _c("6*2=12 [7 12]\n12+7=19 [19]</think>6*2+7<|end|>"),
                   step_error_penalty=0.6)
    assert (honest.reward, honest.step_error_rate) == (1.0, 0.0)


def test_step_penalty_is_nothing_where_the_family_checks_no_steps():
    s = score(ADD, PROBLEM, CHAT, _c("6+0+0=\n=6</think>6<|end|>"), step_error_penalty=5.0)
    assert (s.reward, s.step_error_rate) == (1.0, None)


# -- dynamic sampling -----------------------------------------------------------

def _group(signal: bool, tag: str = "") -> Group:
    rewards = [1.0, 0.0] if signal else [0.0, 0.0]
    return Group("add", 1, Problem("add", 1, tag, "0"), [1], [_c("x"), _c("y")],
                 [Score(r, r > 0, True, False) for r in rewards])


def _cfg(mode: str, rounds: int = 2) -> GRPOConfig:  # 2 prompts per step
    return GRPOConfig(num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                      dynamic_sampling=mode, max_resample_rounds=rounds)


def _sampler(plan: list[list[bool]]):
    calls = []

    def sample(step, round_, count):
        calls.append((step, round_, count))
        return [_group(s, f"{round_}.{i}") for i, s in enumerate(plan[round_][:count])]
    return sample, calls


def test_dynamic_sampling_off_trains_on_everything():
    sample, calls = _sampler([[True, False]])
    trained, generated = rollout(_cfg("off"), sample, 5)
    assert len(trained) == 2 and generated == trained and calls == [(5, 0, 2)]


def test_dynamic_sampling_skip_drops_zero_signal_groups():
    sample, _ = _sampler([[False, True]])
    trained, generated = rollout(_cfg("skip"), sample, 0)
    assert [g.problem.question for g in trained] == ["0.1"] and len(generated) == 2


def test_dynamic_sampling_resample_replaces_zero_signal_groups_within_its_rounds():
    sample, calls = _sampler([[False, False], [True, False], [True, True]])
    trained, generated = rollout(_cfg("resample"), sample, 3)
    assert [g.problem.question for g in trained] == ["1.0", "2.0"]
    assert calls == [(3, 0, 2), (3, 1, 2), (3, 2, 1)] and len(generated) == 5


def test_dynamic_sampling_resample_fills_up_with_zero_signal_groups_when_rounds_run_out():
    sample, calls = _sampler([[False, False], [True, False]])
    trained, _ = rollout(_cfg("resample", rounds=1), sample, 0)
    assert [g.problem.question for g in trained] == ["1.0", "0.0"] and len(calls) == 2


# -- curriculum -----------------------------------------------------------------

MIX = parse_mixture([{"task": "add", "levels": [3, 1, 2]}, {"task": "mul", "levels": [1]}])


def test_the_level_rises_when_the_rolling_pass_rate_passes_the_threshold():
    c = Curriculum(MIX, enabled=True, threshold=0.75, window=4)
    add = MIX[0]
    assert c.level(random.Random(0), add) == 1
    c.record("add", 1, "q", [True, True, False])
    assert c.level(random.Random(0), add) == 1  # window not full yet
    c.record("add", 2, "q", [True, True, True, True])  # not the current level: ignored
    c.record("add", 1, "q", [True])
    assert c.level(random.Random(0), add) == 2 and c.metrics()["curriculum_level/add"] == 2
    c.record("add", 2, "q", [True] * 4)
    c.record("add", 3, "q", [True] * 8)
    assert c.level(random.Random(0), add) == 3  # the top level stays
    c.record("add", 3, "q", [True] * 8)
    assert c.level(random.Random(0), add) == 3


def test_without_curriculum_levels_are_drawn_from_the_mixture():
    c = Curriculum(MIX, enabled=False)
    assert {c.level(random.Random(i), MIX[0]) for i in range(50)} == {1, 2, 3}


def test_questions_always_or_never_solved_are_skipped_and_the_state_round_trips():
    c = Curriculum(MIX, enabled=True, threshold=0.9, window=8, drop_after=4)
    c.record("add", 1, "easy", [True] * 4)
    c.record("add", 1, "hard", [False] * 2)
    c.record("add", 1, "mixed", [True, False, False, False])
    assert c.skip("easy") and not c.skip("hard") and not c.skip("mixed") and not c.skip("new")
    c.record("add", 1, "hard", [False] * 2)
    assert c.skip("hard")
    again = Curriculum(MIX, enabled=True, threshold=0.9, window=8, drop_after=4)
    again.load_state_dict(c.state_dict())
    assert again.state_dict() == c.state_dict() and again.skip("easy")
