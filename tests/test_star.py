"""STaR: which chains are kept, rationalization without the hint, rounds that resume, configs refused by field."""

import json
import random
import zlib

import pytest
import torch
from safetensors.torch import load_file

import ponder.train.star as star
from ponder import PonderError
from ponder.cli import main
from ponder.config import load_config
from ponder.engine.base import Capabilities, Completion
from ponder.model.loading import load_model
from ponder.model.tokenizer import USER, ASSISTANT, check_text
from ponder.tasks import get_task
from ponder.train.data import parse_mixture
from ponder.train.star import (HINT, Kept, STaRConfig, encode, hinted, round_problems, sample_round, train_star)

pytestmark = pytest.mark.usefixtures("one_thread")
MIX = [{"task": "add", "levels": [1]}]
TIMING = {"seconds", "gen_seconds", "gen_tokens_per_s", "train_tokens_per_s", "tokens_per_s"}


def role(question: str) -> int:
    return zlib.crc32(question.encode()) % 4


class Scripted:
    """An engine that answers by rule, by the question's `role`
    0: one chain right, the others a wrong answer, an unclosed think block, a cut-off chain;
    1: wrong unhinted, right when hinted;  2: wrong either way;  3: right but never closes its think block."""
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.calls = []  # (round, hinted) of every prompt

    def generate(self, prompts, params, on_step=None):
        out = []
        for prompt in prompts:
            q = prompt.split(USER, 1)[1].split(ASSISTANT, 1)[0]
            plain = q.split(" (answer: ")[0]
            ans = str(eval(plain[8:-1]))
            self.calls.append((params.seed // 1009, q != plain))
            right, wrong = f"add {plain[8:-1]}\nso {ans}</think>{ans}<|end|>", f"guess</think>{int(ans) + 1}<|end|>"
            if role(plain) == 0 and q == plain:
                texts = [wrong, f"so {ans} {ans}", right, right]
                reasons = ["eos", "eos", "eos", "eos"]
                texts[1], reasons[1] = f"{ans}", "length"  # cut off: never kept even though it says the answer
            elif role(plain) == 1 and q != plain:
                texts, reasons = [wrong, right.replace("add", "hinted add")], ["eos", "eos"]
            elif role(plain) == 3:
                texts, reasons = [f"so {ans}", f"{ans}<|end|>"], ["eos", "eos"]
            else:
                texts, reasons = [wrong, wrong], ["eos", "eos"]
            texts, reasons = (texts * params.n)[: params.n], (reasons * params.n)[: params.n]
            out.append([Completion(t, [5] * len(t), f, 0) for t, f in zip(texts, reasons)])
        return out

    def count_tokens(self, text):
        return len(text)


def _cfg(out, model, **kw) -> STaRConfig:
    base = dict(output_dir=str(out), model=str(model), mixture=MIX, rounds=3, questions_per_round=8,
                num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                learning_rate=1e-2, max_completion_length=32, bf16=False, logging_steps=1, torch_threads=1)
    return STaRConfig(**(base | kw))


def test_a_round_keeps_exactly_the_correct_chains_and_rationalized_ones_without_the_hint(micro_dir, tmp_path):
    _, tok, chat = load_model(micro_dir)
    cfg = _cfg(tmp_path, micro_dir, questions_per_round=8, keep_per_question=1)
    picks = round_problems(cfg, parse_mixture(MIX), 1)
    kept, counts = sample_round(cfg, picks, Scripted(), chat, tok, 1)
    def chain(p):
        return f"add {p.question[8:-1]}\nso {p.answer}</think>{p.answer}<|end|>"
    want = [Kept(p.question, chain(p), False, "add", 1) for _, p in picks if role(p.question) == 0]
    want += [Kept(p.question, "hinted " + chain(p), True, "add", 1) for _, p in picks if role(p.question) == 1]
    roles = [role(p.question) for _, p in picks]
    assert kept == want  # direct ones first, then the rationalized, each in question order
    assert all(HINT.split("{")[0] not in k.question for k in kept)
    assert 0 < roles.count(0) and 0 < roles.count(1) and len(want) < len(picks)  # every case is there
    assert counts["solved_directly"] == counts["correct_samples"] / 2 == roles.count(0)
    assert counts["solved_by_rationalization"] == roles.count(1) and counts["kept"] == len(want)
    assert counts["rationalized_questions"] == len(picks) - roles.count(0) and counts["samples"] == 4 * len(picks)
    # trained on the plain question: no hint anywhere in the token ids
    for ex, k in zip(encode(kept, tok, chat, 1024), kept):
        assert tok.decode(ex.ids[: ex.start]) == chat.prompt(k.question)
        assert "answer:" not in tok.decode(ex.ids)


def test_keep_per_question_and_rationalize_off(micro_dir, tmp_path):
    _, tok, chat = load_model(micro_dir)
    cfg = _cfg(tmp_path, micro_dir, keep_per_question=3, rationalize=False)
    engine = Scripted()
    kept, counts = sample_round(cfg, round_problems(cfg, parse_mixture(MIX), 1), engine, chat, tok, 1)
    assert len(kept) == 2  # the two right chains of a question are one distinct target
    assert not any(k.rationalized for k in kept) and not any(hinted for _, hinted in engine.calls)


def test_require_correct_steps_drops_a_right_answer_reached_through_a_miscomputed_move():
    from ponder.model.chat import ChatFormat
    from ponder.tasks import Problem

    chat, task = ChatFormat(), get_task("countdown")
    p = Problem("countdown", 2, "Using the numbers 2, 6, 7, make 19.", "6*2+7")
    forced = "7*2=19 [6 19]\nno\n6*2=12 [7 12]\n12+7=19 [19]</think>6*2+7<|end|>"
    honest = "6*2=12 [7 12]\n12+7=19 [19]</think>6*2+7<|end|>"
    comps = [Completion(t, [1] * 9, "eos", 9) for t in (forced, honest)]
    assert star.correct_chains(task, p, chat, comps, 2) == [forced, honest]
    assert star.correct_chains(task, p, chat, comps, 2, require_correct_steps=True) == [honest]


def test_the_hint_is_spelled_by_the_builtin_tokenizer():
    for name in ("countdown", "add", "compare"):
        for level in (1, 2):
            p = get_task(name).sample(random.Random(level), level)
            check_text(hinted(p.question, p.answer))
            assert hinted(p.question, p.answer).startswith(p.question)


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _rounds(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in _records(run) if "kept" in r]


def test_an_interrupted_run_resumes_at_the_right_round_with_the_same_result(micro_dir, tmp_path, monkeypatch):
    straight = _cfg(tmp_path / "straight", micro_dir)
    engine = Scripted()
    train_star(straight, engine_factory=lambda m, t: engine)
    rounds = _rounds(tmp_path / "straight")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert [(r["kept"], r["train_steps"], r["step"]) for r in rounds] == [(4, 2, 2), (4, 2, 4), (2, 1, 5)]
    assert all(r["train_loss"] > 0 for r in rounds)

    real, calls = star.step_loss, []

    def crash_in_round_2(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # round 2's second step: round 2 was sampled and saved, round 1 checkpointed
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(star, "step_loss", crash_in_round_2)
    killed = _cfg(tmp_path / "killed", micro_dir)
    with pytest.raises(KeyboardInterrupt):
        train_star(killed, engine_factory=lambda m, t: Scripted())
    monkeypatch.setattr(star, "step_loss", real)
    with pytest.raises(PonderError, match="--resume"):
        train_star(killed, engine_factory=lambda m, t: Scripted())
    again = Scripted()
    train_star(killed, resume=True, engine_factory=lambda m, t: again)
    assert {r for r, _ in again.calls} == {3}  # round 2's chains were read back, not sampled again
    assert _rounds(tmp_path / "killed") == rounds
    wa = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def test_a_kill_inside_a_round_resumes_at_its_step_checkpoint(micro_dir, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path / "run", micro_dir, rounds=1, save_steps=1, max_time_minutes=None)
    real, calls = star.step_loss, []

    def crash_at_step_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(star, "step_loss", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_star(cfg, engine_factory=lambda m, t: Scripted())
    state = json.loads((tmp_path / "run" / "checkpoint-1" / "trainer_state.json").read_text())
    assert (state["round"], state["round_step"], state["round_done"]) == (1, 1, False)
    monkeypatch.setattr(star, "step_loss", real)
    train_star(cfg, resume=True, engine_factory=lambda m, t: Scripted())
    steps = [r["step"] for r in _records(tmp_path / "run") if "loss" in r]
    assert steps == [1, 2]  # step 1 kept, step 2 done once


def test_restart_from_base_trains_the_base_on_every_round_so_far(micro_dir, tmp_path):
    cfg = _cfg(tmp_path / "run", micro_dir, rounds=2, restart_from_base=True)
    train_star(cfg, engine_factory=lambda m, t: Scripted())
    assert [r["train_steps"] for r in _rounds(tmp_path / "run")] == [2, 4]  # 4 chains, then 4 + 4


def test_the_cli_runs_a_round_with_the_local_engine(micro_dir, tmp_path):
    p = tmp_path / "star.yaml"
    p.write_text(json.dumps(dict(output_dir=str(tmp_path / "run"), model=str(micro_dir), mixture=MIX, rounds=1,
                                 questions_per_round=2, num_generations=2, max_completion_length=16,
                                 bf16=False, torch_threads=1)))
    assert main(["train", "star", "--config", str(p), "--set", "rationalize=false"]) == 0
    (rec,) = _rounds(tmp_path / "run")
    assert rec["questions"] == 2 and rec["round"] == 1 and "accuracy" in rec
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("text, field", [
    ("rounds: 0", "rounds"),
    ("num_generations: 0", "num_generations"),
    ("questions_per_round: -3", "questions_per_round"),
    ("temperature: -1", "temperature"),
    ("num_train_epochs: 0", "num_train_epochs"),
    ("max_steps_per_round: 0", "max_steps_per_round"),
    ("lr_scheduler_type: foo", "lr_scheduler_type"),
    ("rationalize: maybe", "rationalize"),
    ("engine: vllm", "engine"),
    ("engine: sglang", "engine"),
    ("mixture: [{task: countdown, levels: [9]}]", "levels"),
    ("num_generation: 2", "num_generation"),
])
def test_bad_config_is_refused_in_one_line_naming_the_field(tmp_path, text, field):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(PonderError, match=field) as e:
        load_config(STaRConfig, p)
    assert "\n" not in str(e.value)


def test_the_example_config_loads():
    cfg = load_config(STaRConfig, "configs/star-countdown.yaml")
    assert cfg.rationalize and cfg.model == "built-in"
