"""A small model that searches against a larger one that thinks once, at equal FLOPs, per difficulty bin.

    python bench/flops_matched.py --large runs/ponder-4x-stage2/model --verifier runs/prm-cvp/model \
        --policy configs/adaptive-cvp.yaml -n 300 --out bench/results/flops-matched

`--large-from results.json` takes the large model's greedy rows from an earlier run on the same questions
instead (greedy chains are deterministic), for when its weights are gone; `--small-from results.json` takes
everything of the small model's (its bins, B, greedy chains and strategy cells) from an earlier run, and
only the large model's greedy chain runs: another large model against the same search, in minutes.
`--table A.json B.json` prints one table pooled from runs on other seeds (bin k of each run together), and
`--plot PNG` draws it.

The questions are binned by the small model's own pass rate exactly as `ponder eval scaling` bins them
(16 samples at temperature 0.8, chunks of 64 seeded seed + chunk), so the bins are the scaling run's.
Per bin, the large model answers with one greedy chain, and the small model with its own greedy chain and
with each strategy at each budget multiplier (of the base B: the 0.9 quantile of the small model's greedy chain lengths).

FLOPs are counted as 2 x parameters per token a model reads or writes: every prompt token the engine
prefills (`EngineStats.prefilled_tokens`: a prompt sent once with n samples counts once; a beam's prefix
sent again counts only its tokens that the engine's prefix cache did not hold), every generated token,
and every token the verifier runs (a prefix its candidates share, once), at the verifier's size. Until
2026-11-24 every prompt token sent was counted (results.json keeps that count as `sent_tokens`, and the
FLOPs it gives as `flops_per_question_as_sent`). Attention's share (a few per cent at these lengths) is
left out for both sides alike. Writes results.json, results.md and a plot of
accuracy against FLOPs per question, one panel per bin, the large model's greedy chain as a star.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from ponder.engine.local import LocalEngine
from ponder.eval_scaling import base_budget, difficulty_bins, pass_rates
from ponder.evaluate import heldout_problems
from ponder.model.loading import load_model
from ponder.reward import RewardModel
from ponder.tasks import get_task
from ponder.think.registry import build_strategy, scaled_params
from ponder.think.sampling import ChainOfThought


def params_of(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run(strategy, engine, verifier, task, problems, budget) -> dict:
    """Accuracy and FLOPs inputs of one strategy on `problems`: (correct, prompt, generated, scored) sums."""
    # each cell pays for its own prefills and verifier passes, not for ones an earlier cell left behind
    for kept in (getattr(engine, "prefixes", None), getattr(verifier, "kept", None)):
        if kept is not None:
            kept.clear()
    e0 = (engine.stats.prefilled_tokens, engine.stats.generated_tokens, engine.stats.prompt_tokens)
    v0 = verifier.stats.tokens if verifier is not None else 0
    correct, each = 0, []
    for i in range(0, len(problems), 64):
        part = problems[i: i + 64]
        for p, th in zip(part, strategy.solve_batch([p.question for p in part], budget)):
            right = bool(task.check(p, th.answer))
            correct += right
            each.append([p.question, right, th.usage.prompt_tokens, th.usage.completion_tokens])
    return {"correct": correct, "each": each, "prompt_tokens": engine.stats.prefilled_tokens - e0[0],
            "sent_tokens": engine.stats.prompt_tokens - e0[2],
            "generated_tokens": engine.stats.generated_tokens - e0[1],
            "scored_tokens": (verifier.stats.tokens - v0) if verifier is not None else 0}


def flops(r: dict, n_params: int, scored_params: int = 0) -> float:
    return 2 * n_params * (r["prompt_tokens"] + r["generated_tokens"]) + 2 * scored_params * r["scored_tokens"]


def row(cell: str, k: int, qs: list, r: dict, f: float) -> dict:
    return {"cell": cell, "bin": k + 1, "questions": len(qs), "accuracy": round(r["correct"] / len(qs), 4),
            "flops_per_question": f / len(qs), **r}


def large_rows(earlier: dict, args, problems: list, base: int, bins: list, by_bin: list) -> list[dict]:
    """The large model's greedy results per bin from an earlier run: rebinned from its per-question results
    where it kept them, else its own bins, which must then be these."""
    got = {"task": args.task, "level": args.level, "n": len(problems), "seed": args.seed, "base_tokens": base}
    if {k: earlier[k] for k in got} != got:
        raise SystemExit(f"--large-from {args.large_from} ran other questions: {[earlier[k] for k in got]}")
    old = [r for r in earlier["rows"] if r["cell"] == "large greedy"]
    if all("each" in r for r in old):
        each = {q: (c, pt, ct) for r in old for q, c, pt, ct in r["each"]}
        return [{"correct": sum(each[p.question][0] for p in qs), "prompt_tokens": sum(each[p.question][1] for p in qs),
                 "sent_tokens": sum(each[p.question][1] for p in qs),
                 "generated_tokens": sum(each[p.question][2] for p in qs), "scored_tokens": 0,
                 "each": [[p.question, *each[p.question]] for p in qs]} for qs in by_bin]
    if earlier["bins"] != bins:
        raise SystemExit(f"--large-from {args.large_from} binned the questions otherwise and kept no per-question "
                         "results to rebin them")
    return [{k: v for k, v in r.items() if k not in ("cell", "bin", "questions", "accuracy", "flops_per_question")}
            for r in old]


def small_side(earlier: dict, args, problems: list) -> tuple[list[dict], list[dict], list[list], int]:
    """The small model's rows, bins, questions per bin and B from an earlier run on the same questions."""
    got = {"task": args.task, "level": args.level, "n": len(problems), "seed": args.seed, "small": args.small}
    if {k: earlier[k] for k in got} != got:
        raise SystemExit(f"--small-from {args.small_from} ran other questions or another small model: "
                         f"{[earlier[k] for k in got]}")
    rows = [r for r in earlier["rows"] if r["cell"] != "large greedy"]
    if not all("each" in r for r in rows):
        raise SystemExit(f"--small-from {args.small_from} kept no per-question results to take its bins from")
    by_question = {p.question: p for p in problems}
    by_bin = [[by_question[e[0]] for e in r["each"]] for r in rows if r["cell"] == "small greedy"]
    return rows, earlier["bins"], by_bin, earlier["base_tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cvp")
    ap.add_argument("--level", type=int, default=2)
    ap.add_argument("--small", default="built-in")
    large_source = ap.add_mutually_exclusive_group()
    large_source.add_argument("--large", help="the larger model's directory")
    large_source.add_argument("--large-from", type=Path,
                              help="an earlier results.json on the same questions to take the large rows from")
    ap.add_argument("--small-from", type=Path,
                    help="an earlier results.json on the same questions to take all the small model's rows from")
    ap.add_argument("--verifier")
    ap.add_argument("--policy", help="adaptive's policy table")
    ap.add_argument("--strategies", default="adaptive,best_of_n")
    ap.add_argument("--budgets", default="1,2,4,8")
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/flops-matched")
    ap.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                    help="only print one table pooled from earlier results.json files (other seeds)")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="with --table: draw the pooled table there too")
    args = ap.parse_args()
    if args.plot and not args.table:
        ap.error("--plot draws a pooled --table; a run draws its own results.png")
    if args.table:
        pooled = merged([json.loads(p.read_text()) for p in args.table])
        print(markdown(pooled))
        if args.plot:
            plot(pooled, args.plot)
        return
    if not (args.large or args.large_from) or not (args.verifier or args.small_from):
        ap.error("--large or --large-from, and --verifier (or --small-from), are required")
    if args.small_from and not args.large:
        ap.error("--small-from runs only the large model: give it --large")
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    problems = heldout_problems(args.task, args.level, args.n, args.seed)
    earlier = json.loads(args.large_from.read_text()) if args.large_from else None
    if args.small_from:
        mine = json.loads(args.small_from.read_text())
        rows, bins, by_bin, base = small_side(mine, args, problems)
        large, ltok, lchat = load_model(args.large)
        sizes = {**mine["parameters"], "large": params_of(large)}
        args.verifier, args.policy = mine["verifier"], mine["policy"]
        greedy = ChainOfThought(LocalEngine(large, ltok), lchat, max_tokens=args.max_tokens, answer_key=task.normalize)
        for k, qs in enumerate(tqdm(by_bin, desc="large greedy")):
            r = run(greedy, greedy.engine, None, task, qs, None)
            rows.insert(len(by_bin) + k, row("large greedy", k, qs, r, flops(r, sizes["large"])))
        write_report(args, len(problems), sizes, base, bins, rows)
        return
    small, tok, chat = load_model(args.small)
    engine = LocalEngine(small, tok)
    verifier = RewardModel.load(args.verifier)
    if earlier is None:
        large, ltok, lchat = load_model(args.large)
        lengine = LocalEngine(large, ltok)
    sizes = {"small": params_of(small), "large": earlier["parameters"]["large"] if earlier else params_of(large),
             "verifier": params_of(verifier.model)}
    policy = None
    if args.policy:
        from ponder.think.policy import load_policy

        policy = load_policy(args.policy)

    greedy = ChainOfThought(engine, chat, max_tokens=args.max_tokens, answer_key=task.normalize)
    greedy_thoughts = greedy.solve_batch([p.question for p in problems])
    base = base_budget([th.usage.completion_tokens for th in greedy_thoughts], 0.9)
    rates = []
    for ci in tqdm(range(0, len(problems), 64), desc="pass rates"):
        rates += pass_rates(engine, chat, args.task, problems[ci: ci + 64], args.samples, 0.8, args.max_tokens,
                            args.seed + ci // 64)
    binned = difficulty_bins(rates, 5)
    bins = [{"bin": k + 1, "pass_rate_min": min(r for r, b in zip(rates, binned) if b == k),
             "pass_rate_max": max(r for r, b in zip(rates, binned) if b == k)} for k in range(max(binned) + 1)]
    by_bin = [[p for p, b in zip(problems, binned) if b == k] for k in range(max(binned) + 1)]

    rows = []
    for k, qs in enumerate(by_bin):  # the small model's own greedy chain, from the pass that set B
        ths = [th for th, b in zip(greedy_thoughts, binned) if b == k]
        each = [[p.question, bool(task.check(p, th.answer)), th.usage.prompt_tokens, th.usage.completion_tokens]
                for p, th in zip(qs, ths)]
        r = {"correct": sum(e[1] for e in each), "prompt_tokens": sum(e[2] for e in each),
             "generated_tokens": sum(e[3] for e in each), "scored_tokens": 0, "each": each}
        rows.append(row("small greedy", k, qs, r, flops(r, sizes["small"])))
    if earlier is not None:
        rows += [row("large greedy", k, qs, r, flops(r, sizes["large"]))
                 for k, (qs, r) in enumerate(zip(by_bin, large_rows(earlier, args, problems, base, bins, by_bin)))]
    cells = [("large greedy", None, None)] * (earlier is None) + [(s, s, int(m)) for s in args.strategies.split(",")
                                             for m in args.budgets.split(",")]
    for label, name, m in tqdm(cells, desc="cells"):
        for k, qs in enumerate(by_bin):
            if name is None:
                strategy = ChainOfThought(lengine, lchat, max_tokens=args.max_tokens, answer_key=task.normalize)
                r = run(strategy, lengine, None, task, qs, None)
                f = flops(r, sizes["large"])
            else:
                params = scaled_params(name, m) | ({"policy": policy} if name == "adaptive" and policy else {})
                strategy = build_strategy(name, engine, chat, verifier, max_tokens=args.max_tokens, seed=args.seed,
                                          answer_key=task.normalize, **params)
                r = run(strategy, engine, verifier, task, qs, m * base)
                f = flops(r, sizes["small"], sizes["verifier"])
                r["flops_per_question_as_sent"] = flops(r | {"prompt_tokens": r["sent_tokens"]}, sizes["small"],
                                                        sizes["verifier"]) / len(qs)
            rows.append(row(label if name is None else f"{name} x{m}", k, qs, r, f))
    write_report(args, len(problems), sizes, base, bins, rows, earlier)


def write_report(args, n: int, sizes: dict, base: int, bins: list[dict], rows: list[dict],
                 earlier: dict | None = None) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"date": str(date.today()), "machine": platform.platform(), "threads": args.threads,
              "task": args.task, "level": args.level, "n": n, "seed": args.seed, "small": args.small,
              "large": args.large or earlier["large"], "verifier": args.verifier, "policy": args.policy,
              "parameters": sizes,
              "base_tokens": base, "bins": bins, "rows": rows}
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "results.png")
    print(markdown(report))


def merged(reports: list[dict]) -> dict:
    """One report over several runs' questions (other seeds, same task and level): bin k of each run pooled."""
    if len({(r["task"], r["level"], len(r["bins"])) for r in reports}) > 1:
        raise SystemExit("--table: the runs differ in task, level or number of bins")
    rows = {}
    for rep in reports:
        for r in rep["rows"]:
            acc = rows.setdefault((r["cell"], r["bin"]), {"cell": r["cell"], "bin": r["bin"], "questions": 0,
                                                           "correct": 0, "flops": 0.0})
            acc["questions"] += r["questions"]
            acc["correct"] += r["correct"]
            acc["flops"] += r["flops_per_question"] * r["questions"]
            acc.setdefault("each", []).extend(r.get("each", [None] * r["questions"]))
    for r in rows.values():
        r["accuracy"] = r["correct"] / r["questions"]
        r["flops_per_question"] = r.pop("flops") / r["questions"]
    bins = [{"bin": k + 1, "pass_rate_min": min(rep["bins"][k]["pass_rate_min"] for rep in reports),
             "pass_rate_max": max(rep["bins"][k]["pass_rate_max"] for rep in reports)}
            for k in range(len(reports[0]["bins"]))]
    return {**reports[0], "n": sum(rep["n"] for rep in reports), "bins": bins, "rows": list(rows.values())}


def markdown(report: dict) -> str:
    """One row per cell: accuracy and FLOPs per question (in units of the large model's greedy) per bin."""
    nb = len(report["bins"])
    big = {r["bin"]: r for r in report["rows"] if r["cell"] == "large greedy"}
    lines = [f"{report['task']} level {report['level']}, {report['n']} questions; parameters: "
             + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in report["parameters"].items())
             + f"; B = {report['base_tokens']} tokens. In brackets: FLOPs per question over the large model's "
               "greedy chain in that bin.", "",
             "| cell | " + " | ".join(f"bin {b['bin']} ({b['pass_rate_min']:.2f}-{b['pass_rate_max']:.2f})"
                                    for b in report["bins"]) + " | all |",
             "|---|" + "---:|" * (nb + 1)]
    for cell in dict.fromkeys(r["cell"] for r in report["rows"]):
        rs = {r["bin"]: r for r in report["rows"] if r["cell"] == cell}
        n = sum(r["questions"] for r in rs.values())
        acc = sum(r["correct"] for r in rs.values()) / n
        ratio = sum(r["flops_per_question"] * r["questions"] for r in rs.values()) / \
            sum(b["flops_per_question"] * b["questions"] for b in big.values())
        lines.append(f"| {cell} | " + " | ".join(
            f"{rs[b]['accuracy']:.1%} ({rs[b]['flops_per_question'] / big[b]['flops_per_question']:.2f})"
            for b in sorted(rs)) + f" | {acc:.1%} ({ratio:.2f}) |")
    return "\n".join(lines) + "\n" + paired(report)


def paired(report: dict) -> str:
    """Each cell minus the large model's greedy chain, question by question (the rows keep per-question results
    in the same order), with the standard error of that mean difference."""
    rows = report["rows"]
    if not all(r.get("each") and None not in r["each"] for r in rows):
        return ""
    big = {r["bin"]: [e[1] for e in r["each"]] for r in rows if r["cell"] == "large greedy"}

    def diff(pairs: list[tuple[bool, bool]]) -> str:
        d = [int(a) - int(b) for a, b in pairs]
        mean = sum(d) / len(d)
        se = (sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) ** 0.5
        return f"{100 * mean:+.1f} ({100 * se:.1f})"

    lines = ["", "Minus the large model's greedy chain on the same questions, in points (standard error):", "",
             "| cell | " + " | ".join(f"bin {b['bin']}" for b in report["bins"]) + " | all |",
             "|---|" + "---:|" * (len(report["bins"]) + 1)]
    for cell in dict.fromkeys(r["cell"] for r in rows if r["cell"] != "large greedy"):
        rs = {r["bin"]: list(zip((e[1] for e in r["each"]), big[r["bin"]])) for r in rows if r["cell"] == cell}
        lines.append(f"| {cell} | " + " | ".join(diff(rs[b]) for b in sorted(rs))
                     + f" | {diff([p for b in sorted(rs) for p in rs[b]])} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    nb = len(report["bins"])
    fig, axes = plt.subplots(1, nb, figsize=(3.2 * nb, 3.2), sharey=True)
    for k, ax in enumerate(axes, start=1):
        rows = [r for r in report["rows"] if r["bin"] == k]
        for name in dict.fromkeys(r["cell"].split(" x")[0] for r in rows if " x" in r["cell"]):
            rs = [r for r in rows if r["cell"].startswith(name + " x")]
            ax.plot([r["flops_per_question"] for r in rs], [r["accuracy"] for r in rs], "o-", label=f"small {name}")
        big = next(r for r in rows if r["cell"] == "large greedy")
        ax.plot([big["flops_per_question"]], [big["accuracy"]], "k*", markersize=12, label="large greedy")
        own = next(r for r in rows if r["cell"] == "small greedy")
        ax.plot([own["flops_per_question"]], [own["accuracy"]], "kx", markersize=9, label="small greedy")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
        ax.set_title(f"bin {k}")
        ax.set_xlabel("FLOPs per question")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
