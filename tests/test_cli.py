import json
import subprocess
import sys

import pytest

from ponder.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ponder", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["ask", ""], "question is empty"),
    (["ask", "   "], "question is empty"),
    (["ask", "Qué es 2 + 2?", "--model", "{micro}"], "'é'"),
    (["ask", "What is 1 + 2?", "--model", "/no/such/model"], "does not exist"),
    (["eval", "--task", "add", "--level", "2", "-n", "-5", "--model", "{micro}"], "-n must be a positive"),
    (["eval", "--task", "nosuch", "--level", "1", "--model", "{micro}"], "unknown task"),
    (["eval", "--task", "add", "--level", "99", "--model", "{micro}"], "levels 1..10"),
    (["train", "sft", "--config", "/no/such.yaml"], "config file does not exist"),
    (["plot", "/no/such/run"], "no metrics.jsonl"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(args, message, micro_dir, capsys):
    args = [a.replace("{micro}", str(micro_dir)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ponder: error:") and message in err
    assert len(err.splitlines()) == 1


def test_ask_json_reports_answer_and_usage_from_real_tokens(micro_dir, capsys):
    assert main(["ask", "What is 2 + 3?", "--model", str(micro_dir), "--json", "--max-tokens", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"answer", "reasoning", "usage"}
    assert out["reasoning"] is None  # hidden unless asked for
    u = out["usage"]
    assert 0 < u["completion_tokens"] <= 12 and u["reasoning_tokens"] <= u["completion_tokens"]
    assert u["prompt_tokens"] == 3 + len("What is 2 + 3?")  # <|user|>, <|assistant|>, <think> + one per char


def test_ask_shows_reasoning_only_when_asked(micro_dir, capsys):
    main(["ask", "What is 2 + 3?", "--model", str(micro_dir), "--max-tokens", "8"])
    hidden = capsys.readouterr().out
    assert "reasoning ---" not in hidden and "reasoning tokens" in hidden
    main(["ask", "What is 2 + 3?", "--model", str(micro_dir), "--max-tokens", "8", "--show-reasoning"])
    assert "--- reasoning ---" in capsys.readouterr().out


def test_effort_preset_chooses_what_high_runs(micro_dir, capsys):
    ask = ["ask", "What is 2 + 3?", "--model", str(micro_dir), "--json", "--show-tree", "--max-tokens", "6",
           "--effort", "high"]
    assert main(ask) == 0
    assert len(json.loads(capsys.readouterr().out)["tree"]["children"]) == 16  # the default: a 16-vote
    assert main(ask + ["--effort-preset", "adaptive"]) == 0
    assert json.loads(capsys.readouterr().out)["tree"]["children"][0]["text"].startswith("probe: 4 chains")
    assert main(["eval", "--task", "modadd", "--level", "3", "-n", "2", "--model", str(micro_dir), "--json",
                 "--max-tokens", "6", "--effort", "medium"]) == 0
    assert json.loads(capsys.readouterr().out)["effort_preset"] == "adaptive"


def test_eval_json_counts_problems_and_tokens(micro_dir, capsys):
    assert main(["eval", "--task", "modadd", "--level", "3", "-n", "5", "--model", str(micro_dir), "--json",
                 "--max-tokens", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 5 and 0.0 <= out["accuracy"] <= 1.0
    assert 0 < out["completion_tokens_per_question"] <= 10


def test_console_script_module_entry_point_reports_errors(micro_dir):
    proc = run_cli("ask", "", "--model", str(micro_dir))
    assert proc.returncode == 2 and proc.stderr.startswith("ponder: error:") and "Traceback" not in proc.stderr


def test_every_effort_option_offers_exactly_the_presets_that_exist():
    """The parser spells the choices itself (importing the strategies would slow every `ponder --help`), so
    a new effort or preset family must reach every subcommand that takes one."""
    import argparse

    from ponder.cli import build_parser
    from ponder.think.effort import EFFORTS, PRESETS

    def options(parser: argparse.ArgumentParser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            else:
                yield from ((flag, action.choices) for flag in action.option_strings)

    seen = {}
    for flag, choices in options(build_parser()):
        if flag in ("--effort", "--effort-preset"):
            seen.setdefault(flag, []).append(tuple(choices))
    assert set(seen["--effort"]) == {EFFORTS} and set(seen["--effort-preset"]) == {PRESETS}
    assert len(seen["--effort"]) >= 2 and len(seen["--effort-preset"]) >= 3  # ask, eval (and serve)
