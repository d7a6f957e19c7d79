"""The serial experiment: what each setting trains on, equal budgets, resume, outputs, bad input."""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from ponder import PonderError
from ponder.cli import main
from ponder.experiments import serial
from ponder.experiments.hints import hint_targets
from ponder.experiments.serial import QUICK, Cell, chance, heldout_set, run_sweep
from ponder.model.chat import ChatFormat
from ponder.model.configs import model_config
from ponder.model.tokenizer import build_char_tokenizer
from ponder.tasks import get_task
from ponder.train.data import SFTData, is_heldout, parse_mixture
from ponder.train.sft import step_loss

TOK = build_char_tokenizer()
CHAT = ChatFormat()


def data(task: str, length: int, setting: str) -> SFTData:
    mixture = parse_mixture([serial.mixture_entry(task, length)])
    return SFTData(mixture, TOK, CHAT, seed=0, cot=setting == "cot", max_length=4096,
                   hints=hint_targets if setting == "hint" else None)


def text(ids) -> str:
    return TOK.decode([int(i) for i in ids], skip_special_tokens=False)


# ------------------------------------------------------------- what each setting sees


def s5_prefixes(perms: list[str]) -> list[str]:
    """Independent: where each point 1..5 goes after the first k permutations, applied left to right."""
    out = []
    for k in range(1, len(perms) + 1):
        out.append("".join(str(_push(point, perms[:k])) for point in range(1, 6)))
    return out


def _push(point: int, perms: list[str]) -> int:
    for p in perms:
        point = int(p[point - 1])
    return point


@pytest.mark.parametrize("task", ["s5", "modadd", "cvp"])
def test_hint_labels_put_the_running_state_after_each_input_item(task):
    d = data(task, 6, "hint")
    p = get_task(task).sample_length(random.Random(3), 6)
    ex = d.encode([p])[0]
    hints = dict(ex.hints)
    if task == "s5":
        perms = p.question.removeprefix("Compose: ").split()
        states = s5_prefixes(perms)
        items = perms
    elif task == "modadd":
        terms = [int(t) for t in p.question.removeprefix("What is ").split(" mod ")[0].split(" + ")]
        states = [str(sum(terms[: k + 1]) % 7) for k in range(len(terms))]
        items = [str(t) for t in terms]
    else:
        items = [g for g in p.question.split() if any(op in g for op in "&|^!")]
        states = [line[-1] for line in p.steps]
    assert len(items) == 6
    positions = sorted(hints)
    width = len(states[0])
    assert len(positions) == 5 * width  # every item but the last; the last state is the answer
    for i in range(5):
        first = positions[i * width]
        # the first hint position holds the item's last character, so it has read the whole item
        assert text(ex.ids[first - len(items[i]) + 1 : first + 1]) == items[i]
        assert text([hints[first + k] for k in range(width)]) == states[i]
    assert states[-1] == p.answer
    assert max(positions) < ex.start - 1  # none reaches the positions that predict the completion


def test_base_answers_at_once_and_cot_writes_the_trace_first():
    p = get_task("s5").sample_length(random.Random(1), 5)
    for setting, want in (("base", "</think>" + p.answer + "<|end|>"),
                          ("hint", "</think>" + p.answer + "<|end|>"),
                          ("cot", "\n".join(p.steps) + "</think>" + p.answer + "<|end|>")):
        ex = data("s5", 5, setting).encode([p])[0]
        assert text(ex.ids[: ex.start]) == CHAT.prompt(p.question)  # the prompt is the same in every setting
        assert text(ex.ids[ex.start :]) == want
    assert data("s5", 5, "base").encode([p])[0].hints == ()


def test_hint_batches_carry_unshifted_labels_only_inside_the_prompt():
    batch = data("modadd", 8, "hint").step_batches(0, 4, 1)[0]
    assert set(batch) == {"input_ids", "labels", "hint_labels"}
    hinted = batch["hint_labels"] != -100
    supervised = batch["labels"] != -100
    assert int(hinted.sum(dim=1).min()) == 7
    first_label = supervised.float().argmax(dim=1)  # the completion's first token
    assert bool((hinted.float().cumsum(dim=1).argmax(dim=1) < first_label - 1).all())
    assert "hint_labels" not in data("modadd", 8, "base").step_batches(0, 4, 1)[0]


def test_the_hint_loss_is_the_answer_loss_plus_the_mean_loss_at_hint_positions(one_thread):
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config("ponder-h32-l1-a2-f64", len(TOK)))
    batch = data("s5", 4, "hint").step_batches(0, 3, 1)[0]
    total, n = step_loss(model, [batch], bf16=False)
    logits = model(input_ids=batch["input_ids"]).logits
    answer = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1))
    hints = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["hint_labels"].reshape(-1))  # position t itself
    assert n == int((batch["labels"] != -100).sum())
    assert total == pytest.approx(float((answer + hints).detach()), rel=1e-5)


# --------------------------------------------------------------------- test sets, chance


def test_test_problems_are_held_out_distinct_and_of_the_exact_length():
    tests = heldout_set("s5", 8, 40)
    assert len(tests) == 40 and len({p.question for p in tests}) == 40
    assert all(is_heldout(p.question) and len(p.steps) == 8 for p in tests)
    assert [p.question for p in heldout_set("s5", 8, 40)] == [p.question for p in tests]
    isq = heldout_set("isq", 16, 200)  # 544 questions at one length (nine primes): only the held-out ~34
    assert 20 <= len(isq) <= 50 and len({p.question.rsplit(" mod ", 1)[1] for p in isq}) >= 6


def test_chance_is_one_over_the_number_of_answers():
    assert chance("s5", 4) == pytest.approx(1 / 120)
    assert chance("modadd", 4) == pytest.approx(1 / 7)
    assert chance("cvp", 4) == pytest.approx(1 / 2)
    # isq names its modulus: a guess picks among that modulus's answers (11 for 47, 28 for 59, ...)
    assert chance("isq", 8) == pytest.approx(0.05, abs=0.01)


# ------------------------------------------------------------------------ the sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial-quick")
    before = torch.get_num_threads()
    assert main(["experiment", "serial", "--quick", "--out", str(out)]) == 0
    torch.set_num_threads(before)
    return out


def test_quick_writes_one_record_per_cell_a_table_and_heatmaps(quick):
    results = json.loads((quick / "results.json").read_text())
    cells = results["cells"]
    assert {(r["task"], r["length"], r["depth"], r["setting"]) for r in cells} == \
        {(c.task, c.length, c.depth, c.setting) for c in QUICK.cells()}
    assert len(cells) == 12
    for r in cells:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["correct"] == round(r["accuracy"] * r["n_test"])
        assert r["n_test"] == QUICK.n_test and r["seconds"] > 0
        assert r["chance"] == pytest.approx({"s5": 1 / 120, "modadd": 1 / 7}[r["task"]], rel=1e-3)
    md = (quick / "results.md").read_text()
    assert "## modadd" in md and "## s5" in md and "--quick" in md
    assert md.count("\n| 4 | ") == 4  # a row per (task, depth)
    png = (quick / "heatmaps.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_every_setting_reads_the_same_number_of_tokens(quick):
    cells = json.loads((quick / "results.json").read_text())["cells"]
    for task in ("modadd", "s5"):
        for depth in (1, 2):
            by = {r["setting"]: r for r in cells if r["task"] == task and r["depth"] == depth}
            budget = QUICK.train_tokens
            for r in by.values():  # the run stops at the first step that reaches the budget
                assert budget <= r["train_tokens"] < budget * 1.05
            assert by["base"]["train_examples"] == by["hint"]["train_examples"]
            assert by["cot"]["train_examples"] < 0.8 * by["base"]["train_examples"]  # longer sequences, fewer problems
            steps = [r["train_steps"] for r in by.values()]  # batches of about the same number of tokens
            assert max(steps) <= 1.1 * min(steps)
            assert by["cot"]["reasoning_tokens_per_question"] > 10 * by["base"]["reasoning_tokens_per_question"]


def test_a_rerun_skips_finished_cells_and_redoes_changed_ones(quick, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "results.json").write_text((quick / "results.json").read_text())
    ran = []

    def fake(cell: Cell, spec) -> dict:
        ran.append(cell.key)
        return {"task": cell.task, "length": cell.length, "depth": cell.depth, "setting": cell.setting,
                "accuracy": 1.0, "correct": 1, "n_test": 1, "chance": 0.5, "train_examples": 1,
                "training": spec.training()}

    monkeypatch.setattr(serial, "run_cell", fake)
    run_sweep(QUICK, out)
    assert ran == []  # all finished
    run_sweep(replace(QUICK, lengths=(4, 5)), out, command="ponder experiment serial --lengths 4 5")
    assert len(ran) == 12 and all(k.split("/")[1] == "5" for k in ran)  # only the new length
    # each record keeps the command that made it, and the table names every command
    commands = {r["length"]: r["command"] for r in json.loads((out / "results.json").read_text())["cells"]}
    assert commands == {4: json.loads((quick / "results.json").read_text())["command"],
                        5: "ponder experiment serial --lengths 4 5"}
    md = (out / "results.md").read_text()
    assert "--quick" in md and "--lengths 4 5" in md
    ran.clear()
    run_sweep(replace(QUICK, train_tokens=QUICK.train_tokens + 1, tasks=("s5",)), out)
    assert len(ran) == 6  # a changed budget makes a finished cell stale
    kept = json.loads((out / "results.json").read_text())["cells"]
    assert len(kept) == 24  # other cells are kept, each key once
    assert not list(out.glob(".tmp-*"))  # no half-written file left behind


def test_two_workers_train_cells_in_parallel_processes(tmp_path):
    spec = replace(QUICK, tasks=("modadd",), depths=(1,), settings=("base", "cot"), train_tokens=4000, n_test=8)
    results = run_sweep(spec, tmp_path, workers=2)
    assert sorted(results) == ["modadd/4/1/base", "modadd/4/1/cot"]
    assert all(r["train_tokens"] >= 4000 for r in results.values())


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nosuch"], "unknown task 'nosuch'"),
    (["--tasks", "add"], "unknown task 'add'"),
    (["--lengths", "0"], "length"),
    (["--tasks", "cvp", "--lengths", "700"], "up to 672"),
    (["--depths", "0"], "depth must be"),
    (["--settings", "think"], "unknown setting 'think'"),
    (["--tasks", "isq", "--settings", "hint"], "isq has no hint"),
    (["--workers", "0"], "--workers"),
])
def test_bad_input_is_refused_in_one_line(args, message, tmp_path, capsys):
    assert main(["experiment", "serial", "--quick", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ponder: error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("entry, message", [
    ({"task": "add", "length": 4}, "no fixed input length"),
    ({"task": "s5", "length": 4, "levels": [1]}, "either 'levels' or 'length'"),
    ({"task": "s5", "length": "4"}, "whole number"),
    ({"task": "cvp", "length": 999}, "up to 672"),
    ({"task": "isq", "options": {"base": 3}}, "does not take the options ['base']"),
    ({"task": "isq", "options": [59]}, "must be a mapping"),
])
def test_fixed_length_mixture_entries_are_checked_when_parsed(entry, message):
    with pytest.raises(PonderError, match=re.escape(message)):
        parse_mixture([entry])


# ------------------------------------------------------- what a step of the short trace reads


@pytest.mark.parametrize("task", ["s5", "modadd"])
def test_each_short_trace_line_reads_its_input_item_at_the_same_distance(task):
    """The point of the short trace with item tokens: line k's first token is a fixed number of
    positions after item k's, for every k, so one attention head can fetch it by position."""
    cell = Cell(task, 9, 1, "cot")
    tok = build_char_tokenizer(serial.words(cell, serial.SweepSpec()))
    mixture = parse_mixture(serial.training_mixture(task, 9, "short"))
    d = SFTData(mixture, tok, CHAT, seed=0, cot=True, max_length=4096)
    for seed in range(5):
        p = d.problem(random.Random(seed))
        ex = d.encode([p])[0]
        pieces = [tok.decode([i]) for i in ex.ids]
        if task == "s5":
            items = [t for t in range(ex.start) if len(pieces[t]) == 5]  # one token per permutation
            lines = [t for t in range(ex.start, len(pieces)) if len(pieces[t]) == 5][:-1]  # the last is the answer
        else:
            items = [t for t in range(ex.start) if pieces[t].isdigit() and pieces[t + 1] in (" ", "?")][:-1]
            lines = [t for t in range(ex.start, len(pieces) - 1) if pieces[t + 1] == "="]
        assert len(items) == len(lines) == 9
        assert len({line - item for item, line in zip(items, lines)}) == 1


def test_isq_trains_on_every_length_up_to_the_cells_and_tests_on_its_own():
    mixture = parse_mixture(serial.training_mixture("isq", 6, "short"))
    assert sorted(m.length for m in mixture) == [1, 2, 3, 4, 5, 6]
    assert [m.length for m in parse_mixture(serial.training_mixture("s5", 6, "short"))] == [6]
    tests = heldout_set("isq", 6, 50, trace="short")
    assert all(len(p.steps) == 6 and " mod " in p.steps[0] for p in tests)
    # nearly every held-out question's first squaring is a training question at a shorter length
    firsts = [p.question.replace("(2^6)", "(2^1)") for p in tests]
    assert sum(not is_heldout(q) for q in firsts) >= 0.8 * len(firsts)
