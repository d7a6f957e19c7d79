"""The `ponder` command's arguments: every subcommand, its options and their help.

Kept apart from `cli.py`, which holds what each subcommand does, so either reads on its own.
"""

from __future__ import annotations

import argparse
from typing import Callable, Mapping


def build_parser(commands: Mapping[str, Callable]) -> argparse.ArgumentParser:
    """The argument parser; each subcommand's `func` is `commands` at its function's name ("cmd_ask", ...)."""
    p = argparse.ArgumentParser(prog="ponder", description="A language model that thinks before it speaks.")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("ask", help="ask a question; prints the answer and token usage")
    a.add_argument("question")
    a.add_argument("--effort", choices=["low", "medium", "high"], default="low")
    a.add_argument("--show-reasoning", action="store_true", help="print the hidden chain of thought")
    a.add_argument("--model", default="built-in", help="built-in, or a Hugging Face model directory")
    a.add_argument("--json", action="store_true")
    a.add_argument("--max-tokens", type=int, default=768, help="cap on generated tokens per chain")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--strategy", help="search strategy instead of the effort preset: cot, majority, best_of_n, "
                                      "beam, dvts, mcts, revise, adaptive")
    a.add_argument("--verifier", help="reward model directory (ponder train prm) for best_of_n, beam, dvts, mcts; "
                                      "optional for revise and adaptive")
    a.add_argument("--policy", help="adaptive: a YAML or JSON policy table (see ponder/think/policy.py)")
    a.add_argument("--budget", type=int, help="hard cap on all generated tokens, every branch counted")
    a.add_argument("-n", type=int, help="chains for majority, best_of_n and dvts; attempts for revise")
    a.add_argument("--beam-width", type=int, help="chains beam search keeps")
    a.add_argument("--expansions", type=int, help="next steps sampled per kept chain (beam, dvts)")
    a.add_argument("--finished-chains", type=int,
                   help="beam, dvts: answers a group collects before it stops (default: its width)")
    a.add_argument("--answer-reserve", type=int,
                   help="budget tokens held back to answer from a chain the budget cuts (cot, majority, best_of_n, "
                        "adaptive: 0, off; beam, dvts: 16)")
    a.add_argument("--show-tree", action="store_true", help="print the search tree (steps, scores, chosen path)")
    a.set_defaults(func=commands["cmd_ask"])

    e = sub.add_parser("eval", help="accuracy on held-out problems of one task and level (eval scaling: curves; "
                                          "eval policy: fit adaptive's table)")
    e.add_argument("--task", help="task family (required)")
    e.add_argument("--level", type=int, help="difficulty level (required)")
    e.add_argument("-n", type=int, default=200)
    e.add_argument("--effort", choices=["low", "medium", "high"], default="low")
    e.add_argument("--model", default="built-in")
    e.add_argument("--json", action="store_true")
    e.add_argument("--max-tokens", type=int, default=768)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=commands["cmd_eval"])
    kinds = e.add_subparsers(dest="eval_kind")
    es = kinds.add_parser(
        "scaling", help="accuracy against generated tokens per strategy and budget, overall and by difficulty bin")
    es.add_argument("--task", required=True)
    es.add_argument("--level", type=int, required=True)
    es.add_argument("--strategies", default="cot,majority,adaptive",
                    help="comma-separated: cot, majority, best_of_n, beam, dvts, mcts, revise, adaptive")
    es.add_argument("--budgets", default="1,2,4,8,16",
                    help="multipliers of the base budget (a quantile of greedy chain lengths), e.g. 1,2,4,8,16,32,64")
    es.add_argument("--base-quantile", type=float, default=0.9,
                    help="the base budget is this quantile of the greedy chains' lengths (0.5: median)")
    es.add_argument("--verifier", help="reward model directory, for best_of_n, beam, dvts, mcts (and revise, adaptive)")
    es.add_argument("--policy", help="adaptive's policy table, a YAML or JSON file (see ponder/think/policy.py)")
    es.add_argument("--sample-temperature", type=float,
                    help="temperature of every strategy that samples (default: each strategy's own, 0.8)")
    es.add_argument("--aggregation", choices=["last", "min", "prod"],
                    help="how verified strategies combine a chain's step scores (default: the verifier's own)")
    es.add_argument("--answer-reserve", type=int, default=0,
                    help="tokens cot, majority, best_of_n and adaptive hold back to answer from a chain the "
                         "budget cuts (default 0: none; step search always holds 16)")
    es.add_argument("-n", type=int, default=64, help="held-out questions")
    es.add_argument("--samples", type=int, default=16, help="sampled chains per question for its pass rate (bins)")
    es.add_argument("--model", default="built-in")
    es.add_argument("--out", help="results folder (default runs/scaling-TASK-LLEVEL)")
    es.add_argument("--max-tokens", type=int, default=768, help="cap on generated tokens per chain")
    es.add_argument("--seed", type=int, default=0)
    es.add_argument("--no-progress", action="store_true", help="no progress bar")
    es.set_defaults(func=commands["cmd_eval_scaling"])
    ep = kinds.add_parser(
        "policy", help="fit adaptive's policy table on held-out questions: the most accurate table under a token mark")
    ep.add_argument("--task", required=True)
    ep.add_argument("--level", type=int, required=True)
    ep.add_argument("--verifier", help="reward model directory: the one adaptive will run with (default: none; "
                                       "tables then read agreement alone and vote)")
    ep.add_argument("-n", type=int, default=300, help="held-out questions to fit on")
    ep.add_argument("--seed", type=int, default=1,
                    help="which held-out questions (default 1: not eval scaling's default 0, where you report)")
    ep.add_argument("--samples", type=int, default=16, help="sampled chains drawn per question (and majority's N)")
    ep.add_argument("--budgets", default="1,2,3,4", help="multipliers of the base budget B to replay at")
    ep.add_argument("--share", type=float, default=0.25, help="the mark: this share of majority@N's tokens")
    ep.add_argument("--replay", help="replay this policy file on the drawn chains instead of fitting one")
    ep.add_argument("--grid", help="a YAML file of the values to try (keys probe, wave, score_weight, easy, medium, "
                                   "chains, hard; see PolicyGrid in ponder/eval_policy.py)")
    ep.add_argument("--model", default="built-in")
    ep.add_argument("--out", help="results folder (default runs/policy-TASK-LLEVEL)")
    ep.add_argument("--max-tokens", type=int, default=768, help="cap on generated tokens per chain")
    ep.add_argument("--workers", type=int, default=2, help="processes replaying tables")
    ep.add_argument("--no-progress", action="store_true", help="no progress bars")
    ep.set_defaults(func=commands["cmd_eval_policy"])

    t = sub.add_parser("train", help="train a model").add_subparsers(dest="trainer", required=True)
    trainers = (
        ("sft", "supervised training on reference chains of thought", commands["cmd_train_sft"], None),
        ("prm", "process reward model on Monte-Carlo step labels", commands["cmd_train_prm"],
         "continue labelling or training where it stopped"),
        ("orm", "outcome reward model on final correctness (same config as prm)", commands["cmd_train_prm"],
         "continue labelling or training where it stopped"),
        ("grpo", "reinforcement learning on verifiable rewards (GRPO)", commands["cmd_train_grpo"], None),
        ("star", "self-taught reasoner: keep correct chains, rationalize failures, fine-tune",
         commands["cmd_train_star"], None),
        ("revise", "self-revision: fine-tune on the model's own wrong answers paired with correct chains",
         commands["cmd_train_revise"], "continue the data rounds or the fine-tuning where they stopped"),
    )
    for name, what, func, resume_help in trainers:
        tr = t.add_parser(name, help=what)
        tr.add_argument("--config", required=True)
        tr.add_argument("--resume", action="store_true",
                        help=resume_help or "continue from the last checkpoint in output_dir")
        tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
        tr.set_defaults(func=func)

    pl = sub.add_parser("plot", help="draw a run's metrics to PNG files; several runs: held-out accuracy "
                                     "against training minutes in one plot")
    pl.add_argument("run_dir", nargs="+")
    pl.add_argument("--out", help="the comparison's PNG file (default compare.png)")
    pl.set_defaults(func=commands["cmd_plot"])

    sm = sub.add_parser("sample", help="print problems of a task family with their reference reasoning")
    sm.add_argument("--task", required=True)
    sm.add_argument("--level", type=int, default=1)
    sm.add_argument("-n", type=int, default=3)
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(func=commands["cmd_sample"])

    sv = sub.add_parser("serve", help="serve the OpenAI chat-completions API (o1 semantics)")
    sv.add_argument("--model", default="built-in", help="built-in, or a Hugging Face model directory")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", action="append", default=[], help="accepted bearer key (repeatable); none = open")
    sv.add_argument("--expose-reasoning", action="store_true",
                    help="return reasoning_content to requests that set include_reasoning")
    sv.add_argument("--served-model-name", help="the model id clients send (default: from --model)")
    sv.add_argument("--max-batch", type=int, default=32, help="choices solved together in one engine call")
    sv.add_argument("--max-queue", type=int, default=256, help="waiting choices before 429")
    sv.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    sv.add_argument("--max-tokens", type=int, default=768, help="cap on generated tokens per chain")
    sv.add_argument("--upstream", help="base URL of an OpenAI-compatible server to think with, e.g. http://host:8001/v1")
    sv.add_argument("--upstream-model", help="model name on the upstream server")
    sv.add_argument("--upstream-key", help="API key for the upstream server")
    sv.add_argument("--tokenizer", help="local tokenizer directory of the upstream model (chat template, counts)")
    sv.set_defaults(func=commands["cmd_serve"])

    for parser in (a, e, sv):
        parser.add_argument("--effort-preset", choices=["vote", "adaptive"],
                            help="what medium and high run: majority votes, or adaptive spending (default: medium "
                                 "adaptive, high a 16-vote; see BENCHMARKS.md, Effort presets)")
    for parser in (a, e, es, sv):
        parser.add_argument("--engine", choices=["local", "vllm"], default="local",
                            help="what samples: the local sampler, or vLLM on a GPU (an optional extra)")

    d = sub.add_parser("demo", help="ask the built-in model a few questions at each effort level")
    d.add_argument("--model", default="built-in")
    d.set_defaults(func=commands["cmd_demo"])

    x = sub.add_parser("experiment", help="run an experiment sweep").add_subparsers(dest="experiment", required=True)
    xs = x.add_parser("serial", help="chain of thought vs answering directly on serial problems, by length and depth")
    xs.add_argument("--quick", action="store_true", help="a few small cells (about a minute), to check the pipeline")
    xs.add_argument("--out", help="results folder (default experiments/serial, or experiments/serial-quick)")
    xs.add_argument("--tasks", nargs="+", metavar="TASK", help="modadd s5 isq cvp (default: all)")
    xs.add_argument("--lengths", nargs="+", type=int, metavar="N", help="input lengths (default 4 8 16; adding 32 adds a third more cells)")
    xs.add_argument("--depths", nargs="+", type=int, metavar="L", help="layers (default 1 2 4)")
    xs.add_argument("--settings", nargs="+", metavar="S", help="base cot hint (default: all)")
    xs.add_argument("--workers", type=int, default=1, help="cells trained at once, one thread each")
    xs.add_argument("--train-tokens", type=int, metavar="N", help="training tokens per cell (default: the preset's)")
    xs.set_defaults(func=commands["cmd_experiment_serial"])
    return p
