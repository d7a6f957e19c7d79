"""`ponder train revise`: revision examples from the built-in model's own wrong answers, fine-tuned on,
resumable round by round, refused when configured badly."""

import json

import pytest

import ponder.train.revise as revise
from ponder import PonderError
from ponder.cli import main
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_tokenizer
from ponder.tasks import Problem, get_task
from ponder.train.data import Example, SFTData, parse_mixture
from ponder.train.revise import ReviseConfig, RevisionData, train_revise

pytestmark = pytest.mark.usefixtures("one_thread")
MIX = [{"task": "countdown", "levels": [2]}]  # the built-in model gets most of these wrong when sampling


def _cfg(out, **kw) -> ReviseConfig:
    base = dict(output_dir=str(out), mixture=MIX, num_problems=4, batch_problems=2, attempts=3, max_new_tokens=96,
                max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, logging_steps=1,
                save_steps=1, torch_threads=1)
    return ReviseConfig(**(base | kw))


def _rounds(out) -> list[dict]:
    return [json.loads(line) for line in (out / "revision_data.jsonl").read_text().splitlines()]


def test_examples_revise_the_models_own_wrong_answers_into_correct_chains(tmp_path):
    out = tmp_path / "run"
    model_dir = train_revise(_cfg(out, target="reference"))
    assert (model_dir / "model.safetensors").exists()
    examples = [e for r in _rounds(out) for e in r["examples"]]
    assert [r["round"] for r in _rounds(out)] == [0, 1] and examples
    chat, task = ChatFormat(), get_task("countdown")
    for e in examples:
        problem = Problem("countdown", 2, e["question"], e["expected"])
        assert e["prompt"] == chat.revision_prompt(e["question"], e["wrong_answers"])
        assert chat.parse(e["completion"]).answer == e["expected"] and task.check(problem, e["expected"])
        assert e["wrong_answers"] and not any(task.check(problem, w) for w in e["wrong_answers"])
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_a_killed_data_phase_resumes_from_its_last_finished_round(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = revise.build_revision_data, []

    def crash_in_round_1(engine, chat, problems, **kw):
        calls.append(kw["seed"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(engine, chat, problems, **kw)

    monkeypatch.setattr(revise, "build_revision_data", crash_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        train_revise(_cfg(out))
    first = _rounds(out)
    assert [r["round"] for r in first] == [0]
    with pytest.raises(PonderError, match="--resume"):
        train_revise(_cfg(out))
    monkeypatch.setattr(revise, "build_revision_data", real)
    train_revise(_cfg(out), resume=True)
    assert _rounds(out)[0] == first[0] and [r["round"] for r in _rounds(out)] == [0, 1]


def test_each_batch_holds_the_replay_fraction_of_first_attempts():
    tok = load_tokenizer()
    chat = ChatFormat.for_tokenizer(tok)
    revision = chat.revision_prompt("What is 2 + 2?", ["5"]) + chat.completion(["2+2=4"], "4")
    ids = tok(revision, add_special_tokens=False)["input_ids"]
    replay = SFTData(parse_mixture([{"task": "add", "levels": [1]}]), tok, chat, 0)
    data = RevisionData([Example(ids, 10)], replay, replay=0.25, seed=0)
    batches = data.step_batches(0, batch_size=4, accumulation=2)
    texts = [tok.decode(row) for b in batches for row in b["input_ids"].tolist()]
    assert len(texts) == 8 and sum(chat.revise_instruction in t for t in texts) == 6


@pytest.mark.parametrize("text, field", [
    ("target: mine", "target"),
    ("replay: 1.0", "replay"),
    ("attempts: 0", "attempts"),
    ("model: /no/such/model", "no/such/model"),
])
def test_bad_config_is_refused_naming_the_field(tmp_path, capsys, text, field):
    p = tmp_path / "c.yaml"
    p.write_text(f"output_dir: {tmp_path / 'run'}\n{text}\n")
    assert main(["train", "revise", "--config", str(p)]) != 0
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
