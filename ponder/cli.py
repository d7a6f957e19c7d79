"""The `ponder` command: ask, eval, serve, train, plot, sample, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ponder import PonderError


def _load(model_path: str, engine: str = "local"):
    """(engine, tokenizer, chat format): the local sampler on CPU, or vLLM (`--engine vllm`, GPUs)."""
    if engine == "vllm":
        from ponder.engine.vllm import VLLMEngine
        from ponder.model.chat import ChatFormat
        from ponder.model.loading import load_tokenizer, resolve

        path = resolve(model_path)
        tok = load_tokenizer(path)
        return VLLMEngine(path, tok), tok, ChatFormat.for_tokenizer(tok)
    from ponder.engine.local import LocalEngine
    from ponder.model.loading import load_model

    model, tok, chat = load_model(model_path)
    return LocalEngine(model, tok), tok, chat


def _check_question(question: str, tok) -> None:
    from ponder.model.tokenizer import text_checker

    check = text_checker(tok)
    if check is not None:
        check(question)


def cmd_ask(args) -> None:
    from ponder.think import strategy_for_effort

    if not args.question.strip():
        raise PonderError("the question is empty")
    engine, tok, chat = _load(args.model, args.engine)
    _check_question(args.question, tok)
    t0 = time.perf_counter()
    if args.strategy:
        strategy = _search_strategy(args, engine, chat)
    else:
        strategy = strategy_for_effort(args.effort, engine, chat, max_tokens=args.max_tokens, seed=args.seed)
    thought = strategy.solve(args.question, args.budget)
    seconds = time.perf_counter() - t0
    u = thought.usage
    if args.json:
        out = {"answer": thought.answer, "reasoning": thought.reasoning if args.show_reasoning else None,
               "finish_reason": thought.finish_reason,
               "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                         "reasoning_tokens": u.reasoning_tokens}, "seconds": round(seconds, 3)}
        if args.show_tree:
            out["tree"], out["budget_exhausted"] = thought.to_dict()["tree"], thought.budget_exhausted
        print(json.dumps(out))
        return
    if args.show_tree:
        from ponder.think.show import describe

        print(describe(thought))
    if args.show_reasoning:
        print("--- reasoning ---\n" + thought.reasoning + "\n--- answer ---")
    print(thought.answer if thought.answer else "(no answer: the token budget ran out while thinking)")
    how = f"strategy {args.strategy}" if args.strategy else f"effort {args.effort}"
    cut = ", budget ran out: best answer so far" if thought.budget_exhausted and thought.answer else ""
    print(f"[{u.reasoning_tokens} reasoning tokens, {u.answer_tokens} answer tokens, {seconds:.2f}s, {how}{cut}]")


def _search_strategy(args, engine, chat):
    """`ask --strategy NAME`: a strategy by name, with its verifier when it needs one."""
    from ponder.think.registry import build_strategy

    verifier = None
    if args.verifier:
        from ponder.reward import RewardModel

        verifier = RewardModel.load(args.verifier)
    policy = None
    if getattr(args, "policy", None):
        from ponder.think.adaptive import load_policy

        if args.strategy != "adaptive":
            raise PonderError("--policy is for --strategy adaptive")
        policy = load_policy(args.policy)
    return build_strategy(args.strategy, engine, chat, verifier, max_tokens=args.max_tokens, seed=args.seed,
                          n=args.n, beam_width=args.beam_width, expansions=args.expansions,
                          finished_chains=args.finished_chains, answer_reserve=args.answer_reserve, policy=policy)


def cmd_eval(args) -> None:
    from ponder.evaluate import evaluate, heldout_problems
    from ponder.tasks import get_task
    from ponder.think import strategy_for_effort

    if args.task is None or args.level is None:
        raise PonderError("eval needs --task and --level (or: ponder eval scaling --task T --level L ...)")
    task = get_task(args.task)
    if args.n < 1:
        raise PonderError(f"-n must be a positive number of problems, got {args.n}")
    task.sample(__import__("random").Random(0), args.level)  # validates the level
    engine, _, chat = _load(args.model, args.engine)
    strategy = strategy_for_effort(args.effort, engine, chat, max_tokens=args.max_tokens, seed=args.seed,
                                   answer_key=task.normalize)
    res = evaluate(strategy, args.task, args.level, heldout_problems(args.task, args.level, args.n, args.seed))
    s = {**res.summary(), "effort": args.effort, "model": args.model}
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{args.task} level {args.level} ({task.describe_level(args.level)}), effort {args.effort}: "
              f"accuracy {s['accuracy']:.1%} on {s['n']} held-out problems, "
              f"{s['completion_tokens_per_question']:.0f} tokens/question, {s['seconds']:.1f}s")


def cmd_eval_scaling(args) -> None:
    """`eval scaling`: checks every input before loading anything, then writes JSON, Markdown and PNG."""
    import random
    from pathlib import Path

    from ponder.eval_scaling import ScalingConfig, parse_budgets, parse_list, run_scaling, write_report
    from ponder.evaluate import heldout_problems
    from ponder.tasks import get_task

    get_task(args.task).sample(random.Random(0), args.level)  # validates the task and level
    cfg = ScalingConfig(args.task, args.level, parse_list(args.strategies, "strategies"), parse_budgets(args.budgets),
                        n=args.n, samples=args.samples, seed=args.seed, max_tokens=args.max_tokens, model=args.model,
                        verifier=args.verifier, base_quantile=args.base_quantile, policy=args.policy,
                        sample_temperature=args.sample_temperature, aggregation=args.aggregation,
                        answer_reserve=args.answer_reserve)
    from ponder.think.registry import NEEDS_VERIFIER

    needs = [s for s in cfg.strategies if s in NEEDS_VERIFIER]
    if needs and not args.verifier:
        raise PonderError(f"strategies {', '.join(needs)} need a verifier: pass --verifier PATH")
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    engine, _, chat = _load(args.model, args.engine)
    verifier = None
    if args.verifier:
        from ponder.reward import RewardModel

        verifier = RewardModel.load(args.verifier)
    out = Path(args.out or f"runs/scaling-{args.task}-L{args.level}")
    report = run_scaling(engine, chat, cfg, problems, verifier, out=out, progress=not args.no_progress)
    paths = write_report(report, out)
    best = max(report["results"], key=lambda r: (r["accuracy"], -r["mean_tokens"]))
    print(f"{report['n']} questions, base budget {report['base_tokens']} tokens, greedy {report['greedy_accuracy']:.1%}; "
          f"best: {best['strategy']} x{best['multiplier']} {best['accuracy']:.1%} at {best['mean_tokens']:.0f} tokens")
    print("wrote " + ", ".join(str(p) for p in paths))


def _train(args, config_cls, train, extra: dict | None = None) -> None:
    """Every trainer's command: a YAML config plus --set overrides, saved beside the run, then train."""
    from pathlib import Path

    from ponder.config import load_config, parse_override

    overrides = {**dict(parse_override(o) for o in args.set), **(extra or {})}
    cfg = load_config(config_cls, args.config, overrides)
    text = Path(args.config).read_text() if args.config else ""
    text += "".join(f"\n# override: {k}={v!r}" for k, v in overrides.items())
    print(f"saved to {train(cfg, resume=args.resume, config_text=text)}")


def cmd_train_sft(args) -> None:
    from ponder.train.sft import SFTConfig, train_sft

    _train(args, SFTConfig, train_sft)


def cmd_train_prm(args) -> None:
    """`train prm` (and `train orm`, the same trainer on final correctness only)."""
    from ponder.train.prm import PRMConfig, train_prm

    _train(args, PRMConfig, train_prm, {"kind": "orm"} if args.trainer == "orm" else None)


def cmd_train_grpo(args) -> None:
    from ponder.train.grpo import GRPOConfig, train_grpo

    _train(args, GRPOConfig, train_grpo)


def cmd_train_star(args) -> None:
    from ponder.train.star import STaRConfig, train_star

    _train(args, STaRConfig, train_star)


def cmd_train_revise(args) -> None:
    from ponder.train.revise import ReviseConfig, train_revise

    _train(args, ReviseConfig, train_revise)


def cmd_plot(args) -> None:
    from ponder.plot import plot_compare, plot_run

    if len(args.run_dir) > 1 or args.out:
        print(plot_compare(args.run_dir, args.out or "compare.png"))
        return
    for path in plot_run(args.run_dir[0]):
        print(path)


def cmd_sample(args) -> None:
    import random

    from ponder.tasks import get_task

    task = get_task(args.task)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        p = task.sample(rng, args.level)
        print(p.question)
        print("  " + p.reasoning.replace("\n", "\n  "))
        print("=> " + p.answer + "\n")


def cmd_demo(args) -> None:
    from ponder.think import EFFORTS, strategy_for_effort

    engine, _, chat = _load(args.model)
    questions = ["What is 48213 + 7395?", "What is 482 * 37?", "Which is larger: 9.11 or 9.8?",
                 "Compose: 21345 13254 54321", "What is 3^(2^5) mod 97?",
                 "Using the numbers 3, 7, 25, 50, make 75."]
    print("ponder demo: the built-in model thinks before it answers (reasoning hidden, tokens counted)\n")
    for q in questions:
        print(q)
        for effort in EFFORTS:
            t0 = time.perf_counter()
            th = strategy_for_effort(effort, engine, chat).solve(q)
            u = th.usage
            print(f"  {effort:>6}: {th.answer or '(no answer)':<14} reasoning {u.reasoning_tokens:>5} tok, "
                  f"answer {u.answer_tokens:>2} tok, {time.perf_counter() - t0:5.2f}s")
        print()


def cmd_serve(args) -> None:
    import logging
    from pathlib import Path

    import uvicorn

    from ponder.serve import ServeConfig, build_app

    if not 0 < args.port < 65536:
        raise PonderError(f"--port must be in 1..65535, got {args.port}")
    if args.upstream:
        from ponder.engine.remote import RemoteEngine
        from ponder.model.chat import ChatFormat

        if not args.upstream_model:
            raise PonderError("--upstream needs --upstream-model NAME (the model the upstream server serves)")
        tokenizer, chat = None, ChatFormat()
        if args.tokenizer:
            from transformers import AutoTokenizer

            if not Path(args.tokenizer).is_dir():
                raise PonderError(f"--tokenizer {args.tokenizer!r} is not a directory")
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
            chat = ChatFormat.for_tokenizer(tokenizer)
        engine = RemoteEngine(args.upstream, args.upstream_model, api_key=args.upstream_key, tokenizer=tokenizer)
        name = args.served_model_name or args.upstream_model
    else:
        engine, tokenizer, chat = _load(args.model, args.engine)
        name = args.served_model_name or ("ponder-tiny" if args.model == "built-in" else Path(args.model).name)
    cfg = ServeConfig(model_name=name, api_keys=tuple(args.api_key), expose_reasoning=args.expose_reasoning,
                      max_batch=args.max_batch, max_queue=args.max_queue, request_timeout=args.timeout)
    app = build_app(engine, chat, cfg, tokenizer=tokenizer, max_tokens=args.max_tokens)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not cfg.api_keys:
        logging.getLogger("ponder.serve").warning("no --api-key given: anyone who can reach %s:%d may use the server",
                                                  args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def cmd_experiment_serial(args) -> None:
    from dataclasses import replace
    from pathlib import Path

    from ponder.experiments.serial import QUICK, SweepSpec, run_sweep, with_axes

    spec = with_axes(QUICK if args.quick else SweepSpec(), args.tasks, args.lengths, args.depths, args.settings)
    if args.train_tokens is not None:
        spec = replace(spec, train_tokens=args.train_tokens)
    out = Path(args.out or ("experiments/serial-quick" if args.quick else "experiments/serial"))
    command = "ponder experiment serial" + "".join(
        f" --{k} {' '.join(map(str, v))}" for k, v in (("tasks", args.tasks), ("lengths", args.lengths),
                                                      ("depths", args.depths), ("settings", args.settings)) if v)
    command += (" --quick" if args.quick else "") + (f" --train-tokens {args.train_tokens}" if args.train_tokens else "")
    command += f" --workers {args.workers} --out {out}"
    results = run_sweep(spec, out, workers=args.workers, command=command)
    print(f"{len(results)} cells in {out}/results.json; table {out}/results.md, heatmaps {out}/heatmaps.png")


def build_parser() -> argparse.ArgumentParser:
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
    a.add_argument("--policy", help="adaptive: a YAML or JSON policy table (see ponder/think/adaptive.py)")
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
    a.set_defaults(func=cmd_ask)

    e = sub.add_parser("eval", help="accuracy on held-out problems of one task and level (eval scaling: curves)")
    e.add_argument("--task", help="task family (required)")
    e.add_argument("--level", type=int, help="difficulty level (required)")
    e.add_argument("-n", type=int, default=200)
    e.add_argument("--effort", choices=["low", "medium", "high"], default="low")
    e.add_argument("--model", default="built-in")
    e.add_argument("--json", action="store_true")
    e.add_argument("--max-tokens", type=int, default=768)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_eval)
    es = e.add_subparsers(dest="eval_kind").add_parser(
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
    es.add_argument("--policy", help="adaptive's policy table, a YAML or JSON file (see ponder/think/adaptive.py)")
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
    es.set_defaults(func=cmd_eval_scaling)

    t = sub.add_parser("train", help="train a model").add_subparsers(dest="trainer", required=True)
    trainers = (
        ("sft", "supervised training on reference chains of thought", cmd_train_sft, None),
        ("prm", "process reward model on Monte-Carlo step labels", cmd_train_prm,
         "continue labelling or training where it stopped"),
        ("orm", "outcome reward model on final correctness (same config as prm)", cmd_train_prm,
         "continue labelling or training where it stopped"),
        ("grpo", "reinforcement learning on verifiable rewards (GRPO)", cmd_train_grpo, None),
        ("star", "self-taught reasoner: keep correct chains, rationalize failures, fine-tune", cmd_train_star, None),
        ("revise", "self-revision: fine-tune on the model's own wrong answers paired with correct chains",
         cmd_train_revise, "continue the data rounds or the fine-tuning where they stopped"),
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
    pl.set_defaults(func=cmd_plot)

    sm = sub.add_parser("sample", help="print problems of a task family with their reference reasoning")
    sm.add_argument("--task", required=True)
    sm.add_argument("--level", type=int, default=1)
    sm.add_argument("-n", type=int, default=3)
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(func=cmd_sample)

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
    sv.set_defaults(func=cmd_serve)

    for parser in (a, e, es, sv):
        parser.add_argument("--engine", choices=["local", "vllm"], default="local",
                            help="what samples: the local sampler, or vLLM on a GPU (an optional extra)")

    d = sub.add_parser("demo", help="ask the built-in model a few questions at each effort level")
    d.add_argument("--model", default="built-in")
    d.set_defaults(func=cmd_demo)

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
    xs.set_defaults(func=cmd_experiment_serial)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ponder: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
