"""Comparing runs: held-out accuracy lined up by the trainers' own training time, not by step."""

import json

import pytest

from ponder import PonderError
from ponder.cli import main
from ponder.plot import eval_by_time, plot_compare


def _run(path, records):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GRPO = [{"step": 0, "eval/countdown/2": 0.15},  # before any training: minute 0
        {"step": 1, "reward": 0.1, "seconds": 30.0}, {"step": 2, "reward": 0.2, "seconds": 60.0},
        {"step": 2, "eval/countdown/2": 0.2},  # logged after the step it follows
        {"step": 3, "reward": 0.3, "seconds": 95.0}]
STAR = [{"step": 0, "round": 0, "eval/countdown/2": 0.15},
        {"step": 4, "round": 5, "kept": 9, "seconds": 120.0, "eval/countdown/2": 0.3}]  # same record


def test_eval_points_take_the_training_time_last_logged_before_them():
    assert eval_by_time(GRPO) == {"countdown/2": ([0.0, 1.0], [0.15, 0.2])}
    assert eval_by_time(STAR) == {"countdown/2": ([0.0, 2.0], [0.15, 0.3])}


def test_plot_of_several_runs_writes_one_png_and_refuses_a_run_without_evals(tmp_path, capsys):
    a, b = _run(tmp_path / "grpo", GRPO), _run(tmp_path / "star", STAR)
    out = tmp_path / "both.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and capsys.readouterr().out.strip() == str(out)
    bare = _run(tmp_path / "sft", [{"step": 1, "loss": 1.0, "seconds": 3.0}])
    with pytest.raises(PonderError, match="no held-out evaluations"):
        plot_compare([a, bare], tmp_path / "x.png")
