"""`ponder eval policy`: the replay spends and answers as `adaptive` does, the fit is the best table under the
mark, drawn chains are kept and reused, and bad input gets a one-line error."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.cli import main
from ponder.eval_policy import (Chain, PolicyFitConfig, fit, fittable, grid, load_or_draw, policy_yaml, replay,
                                replayable, score_all, vote, write_report)
from ponder.model.chat import ChatFormat
from ponder.think.adaptive import Adaptive
from ponder.think.policy import AdaptivePolicy, Tier, load_policy
from scripted import CHAIN, TableVerifier, VoteEngine

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ChatFormat()
Q = "What is the thing?"
RIGHT = "2"


def tables():
    """Stop/sample tables of every shape a user may write, probe of one chain and shares below 1 included."""
    return st.builds(
        lambda probe, wave, weight, easy, medium, chains, hard, share: AdaptivePolicy(
            probe=probe, wave=wave, score_weight=weight,
            tiers=(Tier("easy", easy, "stop"), Tier("medium", medium, "sample", chains=chains, share=share),
                   Tier("hard", 1.0, hard, chains=chains))),
        st.integers(1, 4), st.integers(1, 4), st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from([0.0, 0.2, 0.4]),
        st.sampled_from([0.5, 0.7, 0.9]), st.integers(1, 8), st.sampled_from(["stop", "sample"]),
        st.sampled_from([1.0, 0.5]))


HALF = AdaptivePolicy(probe=2, wave=1, score_weight=0.0, tiers=(  # a tier that may spend half of what is left
    Tier("easy", 0.0, "stop"), Tier("medium", 0.9, "sample", chains=8, share=0.5), Tier("hard", 1.0, "stop")))


@settings(max_examples=150, deadline=None)
@example(policy=HALF, answers=list("012301230123"), scores=[0.5] * 4, budget=14 * CHAIN, max_tokens=200,
         verified=True)
@given(policy=tables(), answers=st.lists(st.sampled_from("0123"), min_size=12, max_size=12),
       scores=st.lists(st.sampled_from([0.1, 0.4, 0.6, 0.9]), min_size=4, max_size=4),
       budget=st.integers(1, 14 * CHAIN), max_tokens=st.sampled_from([CHAIN - 3, 200]), verified=st.booleans())
def test_the_replay_spends_and_answers_as_adaptive_does(policy, answers, scores, budget, max_tokens, verified):
    table = {f"={a}": s for a, s in zip("0123", scores)}
    th = Adaptive(VoteEngine({Q: answers}), CHAT, TableVerifier(table) if verified else None, policy=policy,
                  max_tokens=max_tokens).solve(Q, budget)
    whole = CHAIN <= max_tokens
    chains = [Chain(a if whole else None, a == RIGHT and whole, min(CHAIN, max_tokens),
                    table[f"={a}"] if verified and whole else None) for a in answers]
    assert replay(policy, chains, budget, max_tokens) == (th.answer == RIGHT, th.usage.completion_tokens)


def test_majority_votes_over_whole_chains_within_its_cap():
    chains = [Chain("9", False, 5, 1.0)] + [Chain(k, k == "1", t, 0.5) for k, t in
                                            [("1", 10), ("2", 10), ("2", 30), ("2", 30), ("1", 10)]]
    # each of 5 chains gets 100 // 5 = 20 tokens: the two 30-token "2"s are cut, so "1" wins 2 to 1
    assert vote(chains, 5, 100, 768) == (True, 10 + 10 + 20 + 20 + 10)
    assert vote(chains, 5, 500, 768) == (False, 90)


def _questions(n: int = 24) -> list[list[Chain]]:
    """Questions where agreeing probes are right and split ones are coin flips, greedy 10 tokens, samples 12."""
    out = []
    for i in range(n):
        if i % 2:  # easy: every chain right
            out.append([Chain("a", True, 10, 0.9)] + [Chain("a", True, 12, 0.9)] * 16)
        else:  # split: greedy wrong, samples alternate
            out.append([Chain("b", False, 10, 0.3)] + [
                Chain("a" if j % 2 else "b", bool(j % 2), 12, 0.5 + 0.1 * (j % 2)) for j in range(16)])
    return out


def test_the_fit_is_the_most_accurate_table_under_the_mark(tmp_path):
    chains = _questions()
    cfg = PolicyFitConfig("add", 2, "prm", n=len(chains), budgets=(1, 2, 4))
    policies = grid()[::97]
    report = fit(chains, cfg, policies)
    mark = report["mark_tokens"]
    assert mark == pytest.approx(0.25 * report["majority"]["tokens"])
    best = report["best"][0]
    assert best["tokens"] <= mark
    budgets = [m * report["base_tokens"] for m in cfg.budgets]
    every = [cell for s in score_all(policies, chains, budgets, cfg.max_tokens) for cell in s]
    assert best["accuracy"] == pytest.approx(max(a for a, t in every if t <= mark), abs=1e-4)
    paths = write_report(report, tmp_path)
    assert {p.name for p in paths} == {"policy.yaml", "fit.md", "fit.json", "fit.png"}
    written = load_policy(str(tmp_path / "policy.yaml"))  # what --policy reads is the table that was fitted
    assert written == AdaptivePolicy.from_dict(best["policy"])
    assert "ponder eval scaling" in policy_yaml(report)
    assert "The best under the mark" in (tmp_path / "fit.md").read_text()


def test_drawn_chains_are_kept_and_drawn_again_only_when_the_settings_change(tmp_path):
    drawn = []

    def make(tag):
        drawn.append(tag)
        return [[Chain("a", True, 3, 0.5)]]

    path = tmp_path / "chains.json"
    first = load_or_draw(path, {"seed": 1}, lambda: make(1))
    again = load_or_draw(path, {"seed": 1}, lambda: make(2))
    other = load_or_draw(path, {"seed": 2}, lambda: make(3))
    assert drawn == [1, 3] and first == again == other == [[Chain("a", True, 3, 0.5)]]
    assert json.loads(path.read_text())["key"]


def test_bad_input_gives_one_line_errors(capsys, tmp_path):
    with pytest.raises(PonderError, match="share"):
        PolicyFitConfig("add", 2, "prm", share=0)
    beam = AdaptivePolicy(tiers=(Tier("all", 1.0, "beam"),))
    with pytest.raises(PonderError, match="tier 'all' runs beam"):
        replayable(beam, 16)
    with pytest.raises(PonderError, match="--samples 2 draws too few"):
        replayable(HALF, 2)
    (tmp_path / "beam.yaml").write_text("tiers:\n  - {name: all, upto: 1.0, action: beam}\n")
    (tmp_path / "grid-hard.yaml").write_text("hard: [stop, vote]\n")
    (tmp_path / "grid-typo.yaml").write_text("wav: [1]\n")
    (tmp_path / "grid-bounds.yaml").write_text("easy: [0.5]\nmedium: [0.5]\n")
    here = ["--task", "add", "--level", "2", "--verifier", str(tmp_path)]
    for argv, message in [(["--task", "add", "--level", "2", "--verifier", str(tmp_path / "none")], "no such reward"),
                          (here + ["--replay", str(tmp_path / "beam.yaml")], "runs beam"),
                          (here + ["--budgets", "0"], "got 0"),
                          (here + ["--samples", "2"], "at least 3"),
                          (["--task", "add", "--level", "99", "--verifier", str(tmp_path)], "level"),
                          (here + ["--grid", str(tmp_path / "grid-hard.yaml")], "hard must be stop or sample, got 'vote'"),
                          (here + ["--grid", str(tmp_path / "grid-typo.yaml")], "unknown config field 'wav'"),
                          (here + ["--grid", str(tmp_path / "grid-bounds.yaml")], "no easy bound lies below")]:
        assert main(["eval", "policy", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_eval_policy_end_to_end_on_a_tiny_model(micro_dir, tmp_path, capsys):
    from ponder.reward import RewardModel

    RewardModel.from_policy(micro_dir).save(tmp_path / "rm")
    common = ["eval", "policy", "--task", "add", "--level", "1", "--model", str(micro_dir), "--verifier",
              str(tmp_path / "rm"), "-n", "3", "--samples", "4", "--budgets", "1,2", "--max-tokens", "12",
              "--share", "1", "--workers", "1", "--no-progress", "--out", str(tmp_path / "fit")]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "fit:" in out and "policy.yaml" in out
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert report["questions"] == 3 and report["budgets"] == [1, 2] and report["tables"] == len(fittable(4)) > 0
    kept = (tmp_path / "fit" / "chains.json").stat().st_mtime_ns
    (tmp_path / "grid.yaml").write_text("probe: [2]\nwave: [1]\nscore_weight: [0.5]\neasy: [0.2]\nmedium: [0.6, 1.0]\n"
                                        "chains: [4]\n")
    assert main(common + ["--grid", str(tmp_path / "grid.yaml")]) == 0  # a grid of its own, on the kept chains
    report = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert report["tables"] == 3 and report["grid"]["medium"] == [0.6, 1.0]  # 0.6 with stop or sample, 1.0 stop
    assert {(t["policy"]["tiers"][1]["upto"], len(t["policy"]["tiers"])) for t in report["per_budget"]} <= {
        (0.6, 3), (1.0, 2)}
    capsys.readouterr()
    assert main(common + ["--replay", str(tmp_path / "fit" / "policy.yaml")]) == 0  # the kept chains, replayed
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].strip().startswith("majority@4") and lines[-1].strip().startswith("2 x B")
    assert (tmp_path / "fit" / "chains.json").stat().st_mtime_ns == kept
    unverified = [a for a in common if a not in ("--verifier", str(tmp_path / "rm"))]
    assert main(unverified[:-1] + [str(tmp_path / "vote")]) == 0  # without a verifier: agreement alone
    report = json.loads((tmp_path / "vote" / "fit.json").read_text())
    assert report["verifier"] is None and report["tables"] == len(fittable(4, verified=False)) < len(fittable(4))
    assert "without a verifier" in (tmp_path / "vote" / "policy.yaml").read_text()
