"""The `ponder` command: ask, eval, serve, train, plot, sample, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ponder import PonderError
from ponder.cli_args import build_parser as parser_for


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
        strategy = strategy_for_effort(args.effort, engine, chat, max_tokens=args.max_tokens, seed=args.seed,
                                       preset=args.effort_preset)
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
        from ponder.think.policy import load_policy

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
    from ponder.think.effort import preset_of

    if args.task is None or args.level is None:
        raise PonderError("eval needs --task and --level (or: ponder eval scaling --task T --level L ...)")
    task = get_task(args.task)
    if args.n < 1:
        raise PonderError(f"-n must be a positive number of problems, got {args.n}")
    task.sample(__import__("random").Random(0), args.level)  # validates the level
    engine, _, chat = _load(args.model, args.engine)
    strategy = strategy_for_effort(args.effort, engine, chat, max_tokens=args.max_tokens, seed=args.seed,
                                   answer_key=task.normalize, preset=args.effort_preset)
    res = evaluate(strategy, args.task, args.level, heldout_problems(args.task, args.level, args.n, args.seed))
    s = {**res.summary(), "effort": args.effort, "effort_preset": preset_of(args.effort, args.effort_preset),
         "model": args.model}
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


def cmd_eval_policy(args) -> None:
    """`eval policy`: checks every input before loading anything, then fits (or replays) and writes the files."""
    import random
    from pathlib import Path

    from ponder.eval_policy import PolicyFitConfig, run_policy_fit, write_report
    from ponder.eval_scaling import parse_budgets
    from ponder.evaluate import heldout_problems
    from ponder.tasks import get_task

    get_task(args.task).sample(random.Random(0), args.level)  # validates the task and level
    cfg = PolicyFitConfig(args.task, args.level, args.verifier, n=args.n, samples=args.samples, seed=args.seed,
                          budgets=tuple(parse_budgets(args.budgets)), share=args.share, max_tokens=args.max_tokens,
                          model=args.model)
    policy, spec = None, None
    if args.replay:
        from ponder.eval_policy import replayable
        from ponder.think.policy import load_policy

        policy = replayable(load_policy(args.replay), cfg.samples)
    else:
        from ponder.config import load_config
        from ponder.eval_policy import PolicyGrid, fittable

        spec = load_config(PolicyGrid, args.grid) if args.grid else None
        fittable(cfg.samples, cfg.verifier is not None, spec)
    if args.verifier is not None and not Path(args.verifier).is_dir():
        raise PonderError(f"--verifier {args.verifier}: no such reward model directory")
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    engine, _, chat = _load(args.model)
    verifier = None
    if args.verifier is not None:
        from ponder.reward import RewardModel

        verifier = RewardModel.load(args.verifier)
    out = Path(args.out or f"runs/policy-{args.task}-L{args.level}")
    got = run_policy_fit(engine, chat, verifier, problems, cfg, out, policy,
                         workers=args.workers, progress=not args.no_progress, spec=spec)
    if policy is not None:
        print(f"{args.replay} replayed on {len(problems)} questions (seed {args.seed}):\n  " + "\n  ".join(got))
        return
    best, maj = got["best"][0], got["majority"]
    print(f"{got['questions']} questions, B = {got['base_tokens']} tokens, majority@{cfg.samples} "
          f"{maj['accuracy']:.1%} at {maj['tokens']:.0f} tokens; fit: {best['accuracy']:.1%} at "
          f"{best['tokens']:.0f} tokens ({best['tokens'] / maj['tokens']:.1%}) at {best['multiplier']} x B: {best['table']}")
    print("wrote " + ", ".join(str(p) for p in write_report(got, out)))


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
    app = build_app(engine, chat, cfg, tokenizer=tokenizer, max_tokens=args.max_tokens, preset=args.effort_preset)
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


COMMANDS = {f.__name__: f for f in (
    cmd_ask, cmd_demo, cmd_eval, cmd_eval_policy, cmd_eval_scaling, cmd_experiment_serial, cmd_plot, cmd_sample,
    cmd_serve, cmd_train_grpo, cmd_train_prm, cmd_train_revise, cmd_train_sft, cmd_train_star,
)}


def build_parser() -> argparse.ArgumentParser:
    return parser_for(COMMANDS)


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
