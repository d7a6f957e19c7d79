"""`ponder eval scaling` on a scripted engine whose skill per question is known: bins, budgets, report shape."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder import PonderError
from ponder.cli import main
from ponder.engine.base import Capabilities, Completion
from ponder.eval_scaling import (ScalingConfig, base_budget, difficulty_bins, markdown, parse_budgets, pass_rates,
                                 run_scaling, write_report)
from ponder.evaluate import heldout_problems
from ponder.model.chat import ChatFormat

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()


class SkillEngine:
    """Answers question i right on k_i of every 8 samples (greedy: right when k_i >= 4); its chains are
    10 + 5 * (i % 3) characters of thinking, so the mean greedy length is known."""

    capabilities = Capabilities(streaming=False)

    def __init__(self, problems, skills: list[int]) -> None:
        self.index = {p.question: i for i, p in enumerate(problems)}
        self.problems, self.skills = problems, skills
        self.drawn = [0] * len(problems)
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        for m in ("<|user|>", "<|assistant|>", "<think>", "</think>", "<|end|>"):
            text = text.replace(m, "#")
        return len(text)

    def length(self, i: int) -> int:
        return self.count_tokens(self.text(i, True))

    def text(self, i: int, right: bool) -> str:
        answer = self.problems[i].answer if right else str(int(self.problems[i].answer) + 1)
        return "w" * (10 + 5 * (i % 3)) + f"</think>{answer}<|end|>"

    def generate(self, prompts, params, on_step=None):
        self.calls += 1
        out = []
        for p in prompts:
            i = self.index[p.split("<|user|>", 1)[1].split("<|assistant|>", 1)[0]]
            group = []
            for _ in range(params.n):
                right = self.skills[i] >= 4 if params.temperature == 0 else self.drawn[i] % 8 < self.skills[i]
                self.drawn[i] += params.temperature > 0
                text = self.text(i, right)
                n = self.count_tokens(text)
                finish = "eos"
                if n > params.max_tokens:  # cut inside the thinking: no answer
                    text, n, finish = "w" * params.max_tokens, params.max_tokens, "length"
                group.append(Completion(text, list(range(n)), finish, self.count_tokens(p)))
            out.append(group)
        return out


def test_difficulty_bins_are_quantiles_by_pass_rate_easiest_first():
    assert difficulty_bins([1.0, 0.0, 0.5, 0.75, 0.25]) == [0, 4, 2, 1, 3]
    assert difficulty_bins([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 5) == [0, 0, 1, 1, 2, 3, 4]  # ties by order
    assert difficulty_bins([0.2, 0.9], 5) == [1, 0]  # fewer questions than bins: one bin each
    with pytest.raises(PonderError, match="bins must be >= 1"):
        difficulty_bins([0.5], 0)


@given(rates=st.lists(st.sampled_from([i / 8 for i in range(9)]), min_size=1, max_size=60), bins=st.integers(1, 7))
def test_difficulty_bins_partition_the_questions_by_pass_rate(rates, bins):
    got = difficulty_bins(rates, bins)
    used = sorted(set(got))
    assert used == list(range(min(bins, len(rates))))  # every bin used, each question in one
    sizes = [got.count(b) for b in used]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    for b in used[:-1]:  # an easier bin holds no question with a lower pass rate than a harder one
        assert min(r for r, x in zip(rates, got) if x == b) >= max(r for r, x in zip(rates, got) if x == b + 1)


def test_pass_rates_fit_their_chains_into_the_engines_context():
    """A long question (cvp level 4 fills a third of the built-in model's context) gets what room is left,
    as the strategies' chains do, instead of an error for asking max_tokens past the context."""
    problems = heldout_problems("add", 3, 6)

    class Tight(SkillEngine):
        max_positions = max(len(CHAT.prompt(p.question)) for p in problems) + 40

        def generate(self, prompts, params, on_step=None):
            if max(self.count_tokens(p) for p in prompts) + params.max_tokens > self.max_positions:
                raise PonderError("past the context")
            return super().generate(prompts, params, on_step)

    skills = [0, 2, 4, 6, 8, 8]
    rates = pass_rates(Tight(problems, skills), CHAT, "add", problems, 8, 0.8, 768, 0)
    assert rates == [k / 8 for k in skills]


def test_scaling_report_has_the_right_structure_and_numbers(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    engine = SkillEngine(problems, skills)
    cfg = ScalingConfig("add", 3, ["cot", "majority", "adaptive", "revise"], [1, 2, 4], n=10, samples=8, model="stub")
    report = run_scaling(engine, CHAT, cfg, problems, out=tmp_path, progress=False)
    lengths = sorted(engine.length(i) for i in range(10))
    assert report["base_tokens"] == lengths[8]  # the 0.9 quantile: 9th of 10
    assert report["greedy_mean_tokens"] == pytest.approx(sum(lengths) / 10)
    assert base_budget([5, 1, 3, 2], 0.5) == 2 and base_budget([5, 1, 3, 2], 1.0) == 5 and base_budget([0], 0.9) == 1
    assert [q["pass_rate"] for q in report["questions"]] == [k / 8 for k in skills]
    assert [q["bin"] for q in report["questions"]] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [(b["bin"], b["questions"], b["pass_rate_min"], b["pass_rate_max"]) for b in report["bins"]] == [
        (1, 2, 1.0, 1.0), (2, 2, 0.75, 0.875), (3, 2, 0.375, 0.5), (4, 2, 0.125, 0.25), (5, 2, 0.0, 0.0)]
    assert report["greedy_accuracy"] == 0.5
    cells = {(r["strategy"], r["multiplier"]): r for r in report["results"]}
    assert set(cells) == {(s, m) for s in cfg.strategies for m in cfg.budgets}
    for (s, m), r in cells.items():
        assert r["budget"] == m * report["base_tokens"] and r["max_tokens_used"] <= r["budget"]
        assert len(r["correct"]) == len(r["tokens"]) == 10 and len(r["bins"]) == 5
        assert r["accuracy"] == sum(r["correct"]) / 10
        assert r["mean_tokens"] == pytest.approx(sum(r["tokens"]) / 10, abs=0.05)
        assert r["bins"][0]["accuracy"] == sum(r["correct"][:2]) / 2
    assert cells[("cot", 4)]["accuracy"] == 0.5 and cells[("majority", 4)]["mean_tokens"] > cells[("cot", 4)]["mean_tokens"]
    assert cells[("adaptive", 4)]["bins"][0]["accuracy"] == 1.0  # the easy ones stop after the probe, right

    paths = write_report(report, tmp_path)
    assert [p.name for p in paths] == ["scaling.json", "scaling.md", "scaling.png"] and all(p.stat().st_size for p in paths)
    assert json.loads(paths[0].read_text()) == report
    md = markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0] == "| bin | questions | pass rate |" and len(rows) == 2 + 5 + 2 + 12  # headers and rules, 5 bins, 12 cells
    assert "| strategy | budget (x B) | budget (tokens) | tokens/question | accuracy | bin 1 |" in md
    assert f"| majority | 2 | {2 * report['base_tokens']} |" in md

    again = SkillEngine(problems, skills)  # the same settings read every finished piece back
    assert run_scaling(again, CHAT, cfg, problems, out=tmp_path, progress=False) == report and again.calls == 0
    other = ScalingConfig("add", 3, ["cot"], [1], n=10, samples=4)
    assert run_scaling(again, CHAT, other, problems, out=tmp_path, progress=False)["samples"] == 4 and again.calls


def test_bad_input_gives_one_line_errors(capsys):
    for text, message in (("", "--budgets is empty"), ("1,0", ">= 1, got 0"), ("1,x", "got 'x'")):
        with pytest.raises(PonderError, match=message):
            parse_budgets(text)
    assert parse_budgets("4,1,2,2") == [1, 2, 4]
    for kw, message in ((dict(strategies=[]), "--strategies is empty"), (dict(strategies=["nosuch"]), "unknown strategy"),
                        (dict(budgets=[]), "--budgets is empty"), (dict(budgets=[0]), ">= 1, got 0"),
                        (dict(n=0), "-n must be >= 1"), (dict(base_quantile=0), "base_quantile")):
        with pytest.raises(PonderError, match=message):
            ScalingConfig(**{"task": "add", "level": 1, "strategies": ["cot"], "budgets": [1], **kw})
    problems = heldout_problems("add", 1, 2)
    with pytest.raises(PonderError, match="need a verifier"):
        run_scaling(SkillEngine(problems, [1, 2]), CHAT, ScalingConfig("add", 1, ["beam"], [1]), problems, progress=False)
    base = ["eval", "scaling", "--task", "add", "--level", "1"]
    for extra, message in ((["--strategies", "cot,nosuch"], "unknown strategy 'nosuch'"), (["--budgets", ""], "empty"),
                           (["--budgets", "0"], "got 0"), (["--strategies", "mcts"], "need a verifier"),
                           (["--level", "99"], "levels 1..")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ponder: error:") and message in err and len(err.splitlines()) == 1
    assert main(["eval", "--level", "1"]) == 2 and "needs --task and --level" in capsys.readouterr().err


def test_eval_scaling_end_to_end_on_a_tiny_model(micro_dir, tmp_path, capsys):
    out = tmp_path / "scaling"
    assert main(["eval", "scaling", "--task", "add", "--level", "1", "--model", str(micro_dir), "-n", "3",
                 "--budgets", "1,2", "--strategies", "cot,majority,adaptive", "--samples", "2", "--max-tokens", "8",
                 "--no-progress", "--out", str(out)]) == 0
    assert "base budget" in capsys.readouterr().out
    report = json.loads((out / "scaling.json").read_text())
    assert len(report["results"]) == 6 and (out / "scaling.png").exists()
    assert all(r["max_tokens_used"] <= r["budget"] for r in report["results"])


def test_a_policy_file_recomputes_only_adaptive_and_is_recorded(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    cfg = ScalingConfig("add", 3, ["majority", "adaptive"], [4], n=10, samples=8)
    first = run_scaling(SkillEngine(problems, skills), CHAT, cfg, problems, out=tmp_path, progress=False)
    policy = tmp_path / "greedy-only.yaml"
    policy.write_text("probe: 1\ntiers:\n  - {name: all, upto: 1.0, action: stop}\n")
    second = run_scaling(SkillEngine(problems, skills), CHAT, replace(cfg, policy=str(policy)), problems,
                         out=tmp_path, progress=False)
    before, after = ({r["strategy"]: r for r in rep["results"]} for rep in (first, second))
    assert after["majority"] == before["majority"] and second["policy"] == str(policy)
    # one greedy chain, then stop: exactly the greedy chain's tokens, where the default table spent more
    assert after["adaptive"]["tokens"] == [q["greedy_tokens"] for q in second["questions"]]
    assert sum(before["adaptive"]["tokens"]) > sum(after["adaptive"]["tokens"])
    assert f"adaptive's policy: `{policy}`" in markdown(second)


def test_a_sample_temperature_reaches_every_sampling_strategy_and_keys_its_own_cells(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    cfg = ScalingConfig("add", 3, ["majority", "adaptive"], [4], n=10, samples=8)
    hot = run_scaling(SkillEngine(problems, skills), CHAT, cfg, problems, out=tmp_path, progress=False)
    engine = SkillEngine(problems, skills)
    cold = run_scaling(engine, CHAT, replace(cfg, sample_temperature=0.0), problems, out=tmp_path, progress=False)
    assert engine.calls  # not read back from the first run's cells
    by = {r["strategy"]: r for r in cold["results"]}
    greedy_right = [k >= 4 for k in skills]  # at temperature 0 every sample is the greedy chain
    assert by["majority"]["correct"] == greedy_right and by["adaptive"]["correct"] == greedy_right
    assert {r["strategy"]: r for r in hot["results"]}["majority"]["correct"] != greedy_right
    assert hot["sample_temperature"] is None and "temperature 0." in markdown(cold)
    with pytest.raises(PonderError, match="sample_temperature must be in"):
        replace(cfg, sample_temperature=-1.0)


def test_scaling_pairs_reports_the_paired_difference_and_its_error(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("scaling_pairs", Path(__file__).parents[1] / "bench" / "scaling_pairs.py")
    pairs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pairs)
    qs = [{"question": f"q{i}"} for i in range(4)]
    cell = lambda s, m, c: {"strategy": s, "multiplier": m, "correct": c, "accuracy": sum(c) / 4, "mean_tokens": 10 * m}
    a = {"questions": qs, "results": [cell("beam", 2, [1, 1, 1, 0])]}
    b = {"questions": qs, "results": [cell("best_of_n", 2, [1, 0, 1, 0])]}
    for name, rep in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rep))
    assert pairs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--pairs", "beam@2:best_of_n@2"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "| 75.0% | 50.0% | +25.0 | 25.0 |" in row  # differences 0,1,0,0: mean 0.25, sd 0.5, se 0.25
    for q, bin_ in zip(qs, (1, 1, 2, 2)):
        q["bin"] = bin_
    for name, rep in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rep))
    pairs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--pairs", "beam@2:best_of_n@2", "--bins", "1,2"])
    rows = capsys.readouterr().out.splitlines()[-2:]
    assert "[bins 1]" in rows[0] and "| 100.0% | 50.0% | +50.0 |" in rows[0]  # bin 1: 1,1 against 1,0
    assert "[bins 2]" in rows[1] and "| 50.0% | 50.0% | +0.0 |" in rows[1]
    for q, length in zip(qs, (30, 10, 20, 25)):  # questions 0 and 3 need more than B
        q["greedy_tokens"] = length
    for name, rep in (("a", a), ("b", b)):
        rep["base_tokens"] = 20
        (tmp_path / f"{name}.json").write_text(json.dumps(rep))
    pairs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--pairs", "beam@2:best_of_n@2", "--by-length"])
    rows = capsys.readouterr().out.splitlines()[-2:]
    assert "[greedy <= 20]" in rows[0] and "| 100.0% | 50.0% | +50.0 |" in rows[0]  # questions 1, 2: 1,1 vs 0,1
    assert "[greedy > 20]" in rows[1] and "| 50.0% | 50.0% | +0.0 |" in rows[1]  # questions 0, 3: 1,0 vs 1,0
    b["questions"] = qs[::-1]
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(SystemExit, match="not on the same questions"):
        pairs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--pairs", "beam@2:best_of_n@2"])


def test_scaling_pairs_pools_runs_on_other_questions_into_one_difference(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("scaling_pairs", Path(__file__).parents[1] / "bench" / "scaling_pairs.py")
    pairs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pairs)
    cell = lambda s, c, tok: {"strategy": s, "multiplier": 1, "correct": c, "mean_tokens": tok}
    runs = {  # seed 0: differences 1, 0; seed 1: 1, 1, 0, 0 -> pooled 3 of 6 ahead, 0.5
        "a0": ([1, 1], 10, 2), "b0": ([0, 1], 20, 2), "a1": ([1, 1, 0, 1], 40, 4), "b1": ([0, 0, 0, 1], 20, 4)}
    for name, (correct, tok, n) in runs.items():
        rep = {"questions": [{"question": f"{name[1]}-{i}"} for i in range(n)], "base_tokens": 20 + int(name[1]),
               "results": [cell("beam" if name[0] == "a" else "best_of_n", correct, tok)]}
        (tmp_path / f"{name}.json").write_text(json.dumps(rep))
    a, b = (f"{tmp_path / (x + '0')}.json+{tmp_path / (x + '1')}.json" for x in "ab")
    assert pairs.main([a, b, "--labels", "a,b", "--pairs", "beam@1:best_of_n@1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "(30 tok)" in row and "(20 tok)" in row  # token means weighted by each run's questions
    assert "| 83.3% | 33.3% | +50.0 |" in row
    pairs.main([a, b, "--labels", "a,b", "--pairs", "beam@1:best_of_n@1", "a:beam@1:a:beam@1", "--average"])
    assert capsys.readouterr().out.splitlines()[-1] == \
        "Averaged over the 2 pairs, question by question: +25.00 (SE 11.18)"  # halves of 1,0,1,1,0,0
    with pytest.raises(SystemExit, match="several"):  # B differs between the seeds
        pairs.main([a, b, "--labels", "a,b", "--pairs", "beam@1:best_of_n@1", "--by-length"])
    with pytest.raises(SystemExit, match="not on the same questions"):
        pairs.main([a, f"{tmp_path / 'b1'}.json+{tmp_path / 'b0'}.json", "--labels", "a,b", "--pairs",
                    "beam@1:best_of_n@1"])


def test_compute_optimal_answers_each_half_by_the_strategy_best_per_bin_on_the_other(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("compute_optimal", bench / "compute_optimal.py")
        opt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(opt)
    finally:
        sys.path.remove(str(bench))
    # bin 1 (questions 0-3): best_of_n is right, beam wrong; bin 2 (4-7): the other way round
    qs = [{"question": f"q{i}", "bin": 1 if i < 4 else 2} for i in range(8)]
    cell = lambda s, c: {"strategy": s, "multiplier": 2, "correct": c}
    rep = {"questions": qs, "results": [cell("best_of_n", [1, 1, 1, 1, 0, 0, 0, 0]),
                                        cell("beam", [0, 0, 0, 0, 1, 1, 1, 1])]}
    (tmp_path / "r.json").write_text(json.dumps(rep))
    assert opt.main([str(tmp_path / "r.json"), "--strategies", "best_of_n,beam", "--budgets", "2"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "| 50.0% | 50.0% | 100.0% | +50.0 (18.9) | 1:best_of_n 2:beam; 1:best_of_n 2:beam |" in row
    other = {"questions": [{**q, "question": "other " + q["question"]} for q in qs],  # the roles reversed
             "results": [cell("best_of_n", [0, 0, 0, 0, 1, 1, 1, 1]), cell("beam", [1, 1, 1, 1, 0, 0, 0, 0])]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    opt.main([str(tmp_path / "r.json"), "--strategies", "best_of_n,beam", "--budgets", "2",
              "--choose-from", str(tmp_path / "other.json")])
    assert "| 0.0% | -50.0 (18.9) | 1:beam 2:best_of_n |" in capsys.readouterr().out.splitlines()[-1]


def test_scaling_merge_labels_cells_and_refuses_other_questions(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("scaling_merge", Path(__file__).parents[1] / "bench" / "scaling_merge.py")
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    head = {"task": "cvp", "level": 2, "n": 2, "seed": 2, "base_tokens": 66,
            "questions": [{"question": "q0"}, {"question": "q1"}]}
    cell = lambda s, m: {"strategy": s, "multiplier": m, "accuracy": 0.5}
    prm = {**head, "verifier": "prm", "strategies": ["cot", "best_of_n"], "results": [cell("cot", 1), cell("best_of_n", 2)]}
    orm = {**head, "verifier": "orm", "strategies": ["cot", "best_of_n"], "results": [cell("cot", 1), cell("best_of_n", 2)]}
    out = merge.merge([prm, orm], ["", "orm"])
    assert [(r["strategy"], r["multiplier"]) for r in out["results"]] == [
        ("cot", 1), ("best_of_n", 2), ("cot (orm)", 1), ("best_of_n (orm)", 2)]
    assert out["strategies"] == ["cot", "best_of_n", "cot (orm)", "best_of_n (orm)"]
    assert [r["strategy"] for r in merge.merge([prm, prm], ["", ""])["results"]] == ["cot", "best_of_n"]
    with pytest.raises(SystemExit, match="seed"):
        merge.merge([prm, {**orm, "seed": 1}], ["", ""])
    with pytest.raises(SystemExit, match="different questions"):
        merge.merge([prm, {**orm, "questions": head["questions"][::-1]}], ["", ""])


class CountingVerifier:
    """Scores every step 0.5 and counts its calls."""

    aggregation = "last"

    def __init__(self) -> None:
        self.calls = 0

    def score_batch(self, questions, chains, answers):
        self.calls += 1
        return [[0.5] * (len(c) + (a is not None)) for c, a in zip(chains, answers)]


def test_another_verifier_in_the_same_folder_reuses_what_never_called_the_verifier(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    cfg = ScalingConfig("add", 3, ["cot", "majority", "best_of_n"], [2], n=10, samples=8, verifier="prm")
    first = run_scaling(SkillEngine(problems, skills), CHAT, cfg, problems, CountingVerifier(), out=tmp_path,
                        progress=False)
    engine, orm = SkillEngine(problems, skills), CountingVerifier()
    second = run_scaling(engine, CHAT, replace(cfg, verifier="orm"), problems, orm, out=tmp_path, progress=False)
    # only best_of_n's 2 chains per question were sampled again: the greedy chains, pass rates, cot and
    # majority cells were read back, and the new verifier scored the new chains
    assert sum(engine.drawn) == 2 * len(problems) and orm.calls
    before, after = ({r["strategy"]: r for r in rep["results"]} for rep in (first, second))
    assert after["majority"] == before["majority"] and after["cot"] == before["cot"]
    assert [q["pass_rate"] for q in second["questions"]] == [q["pass_rate"] for q in first["questions"]]


def test_an_aggregation_override_keys_the_verified_cells_and_is_recorded(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    cfg = ScalingConfig("add", 3, ["cot", "best_of_n"], [2], n=10, samples=8, verifier="prm")
    run_scaling(SkillEngine(problems, skills), CHAT, cfg, problems, CountingVerifier(), out=tmp_path, progress=False)
    engine = SkillEngine(problems, skills)
    report = run_scaling(engine, CHAT, replace(cfg, aggregation="prod"), problems, CountingVerifier(), out=tmp_path,
                         progress=False)
    assert sum(engine.drawn) == 2 * len(problems)  # best_of_n again, with the other aggregation; the rest read back
    assert report["aggregation"] == "prod" and "aggregated by `prod`" in markdown(report)
    with pytest.raises(PonderError, match="unknown score aggregation 'mean'"):
        replace(cfg, aggregation="mean")


def test_an_answer_reserve_reaches_the_chain_strategies_and_keys_its_own_cells(tmp_path):
    problems = heldout_problems("add", 3, 10)
    skills = [8, 8, 7, 6, 4, 3, 2, 1, 0, 0]
    cfg = ScalingConfig("add", 3, ["majority"], [1], n=10, samples=8)
    plain = run_scaling(SkillEngine(problems, skills), CHAT, cfg, problems, out=tmp_path, progress=False)
    engine = SkillEngine(problems, skills)
    caps = []
    generate = engine.generate
    engine.generate = lambda prompts, params, on_step=None: caps.append(params.max_tokens) or generate(prompts, params)
    held = run_scaling(engine, CHAT, replace(cfg, answer_reserve=4), problems, out=tmp_path, progress=False)
    base = held["base_tokens"]
    assert plain["base_tokens"] == base and base - min(4, base // 4) in caps  # the first run's cells not reused
    assert held["answer_reserve"] == 4 and "hold back 4 tokens" in markdown(held)
    again = SkillEngine(problems, skills)
    assert run_scaling(again, CHAT, cfg, problems, out=tmp_path, progress=False)["results"] == plain["results"]
    assert not again.calls  # greedy chains, pass rates and the cells without a reserve are all read back
    with pytest.raises(PonderError, match="answer_reserve must be >= 0"):
        replace(cfg, answer_reserve=-1)
