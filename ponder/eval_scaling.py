"""`ponder eval scaling`: accuracy against generated tokens, per strategy and budget, overall and by difficulty.

Budgets. First one greedy chain of thought runs on every question, without a budget; the base B is the
`base_quantile` (0.9) quantile of those chains' lengths in generated tokens. At multiplier m a strategy gets a
hard budget of m x B tokens per question and sizes scaled to m whole chains (`registry.scaled_params`: majority
and best_of_n sample m chains, beam keeps m/4 beams of 4 expansions, revise makes m attempts, ...; cot and
adaptive need only the budget). One base for all questions keeps the budgets comparable. It is a high quantile
rather than the mean because strategies that split a budget over m chains cap each at m x B / m = B: at the
mean, every longer-than-average chain would be cut and voting strategies judged on broken chains
(`base_quantile=0.5` gives the median, 1.0 the longest). The x axis is what was spent, the mean generated
tokens per question, not the budget.

Difficulty. A question's pass rate is the fraction of `samples` sampled chains (temperature 0.8) that answer it
correctly. Sorted by pass rate, highest first (ties by question order), the questions are cut into `bins`
(5) quantiles of equal size (the first bins take one more where it does not divide): bin 1 is the easiest, as
in Snell et al. 2024.

Output in `out`: scaling.json (settings, bins, per-question pass rates, and per cell the accuracy, tokens and
per-question results), scaling.md (tables) and scaling.png (accuracy against mean generated tokens, log x, one
line per strategy; overall and one panel per bin). Finished pieces are appended to cells.jsonl, so a rerun
with the same settings picks up where an interrupted one stopped, and a run with another verifier in the
same folder reuses the greedy chains, pass rates and the cells that never call a verifier.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ponder import PonderError
from ponder.engine.base import Engine
from ponder.evaluate import answered
from ponder.model.chat import ChatFormat
from ponder.reward.base import check_aggregation
from ponder.tasks import Problem, get_task
from ponder.think.registry import (NEEDS_VERIFIER, STRATEGIES, TAKES_VERIFIER, WHOLE_CHAINS, build_strategy,
                                   scaled_params)
from ponder.think.sampling import ChainOfThought


@dataclass
class ScalingConfig:
    task: str
    level: int
    strategies: list[str]
    budgets: list[int]  # multipliers of the base budget
    n: int = 64  # held-out questions
    samples: int = 16  # sampled chains per question for its pass rate
    bins: int = 5
    seed: int = 0
    max_tokens: int = 768  # cap on one chain
    temperature: float = 0.8  # of the pass-rate samples
    sample_temperature: float | None = None  # of every strategy that samples; None: their own default (0.8)
    aggregation: str | None = None  # how verified strategies combine step scores; None: the verifier's own
    base_quantile: float = 0.9  # the base budget: this quantile of the greedy chains' lengths
    chunk: int = 64  # questions per solve_batch call
    model: str = ""  # recorded, and part of the resume key
    verifier: str | None = None
    policy: str | None = None  # adaptive's policy table (a YAML/JSON file); None: the default table
    answer_reserve: int = 0  # tokens cot, majority, best_of_n and adaptive hold back to answer; 0: none

    def __post_init__(self) -> None:
        if not self.strategies:
            raise PonderError("--strategies is empty; name at least one strategy")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise PonderError(f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
        if not self.budgets:
            raise PonderError("--budgets is empty; give multipliers such as 1,2,4")
        for b in self.budgets:
            if not isinstance(b, int) or b < 1:
                raise PonderError(f"budget multipliers must be whole numbers >= 1, got {b!r}")
        for what, v in (("-n", self.n), ("samples", self.samples), ("bins", self.bins), ("chunk", self.chunk),
                        ("max_tokens", self.max_tokens)):
            if v < 1:
                raise PonderError(f"{what} must be >= 1, got {v}")
        if self.aggregation is not None:
            check_aggregation(self.aggregation)
        if self.sample_temperature is not None and not 0 <= self.sample_temperature <= 2:
            raise PonderError(f"sample_temperature must be in [0, 2], got {self.sample_temperature}")
        if self.answer_reserve < 0:
            raise PonderError(f"answer_reserve must be >= 0, got {self.answer_reserve}")
        if not 0 < self.base_quantile <= 1:
            raise PonderError(f"base_quantile must be in (0, 1], got {self.base_quantile}")


def parse_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        example = "1,2,4" if what == "budgets" else "cot,majority"
        raise PonderError(f"--{what} is empty; give a comma-separated list such as {example}")
    return items


def parse_budgets(text: str) -> list[int]:
    """"1,2,4" -> [1, 2, 4] (sorted, without repeats); anything but positive whole numbers fails."""
    out = []
    for x in parse_list(text, "budgets"):
        try:
            v = int(x)
        except ValueError:
            raise PonderError(f"--budgets wants whole-number multipliers such as 1,2,4, got {x!r}") from None
        if v < 1:
            raise PonderError(f"budget multipliers must be >= 1, got {v}")
        out.append(v)
    return sorted(set(out))


def base_budget(lengths: list[int], quantile: float) -> int:
    """The `quantile` of the greedy chains' lengths (nearest rank), at least 1."""
    ranked = sorted(lengths)
    return max(1, ranked[max(0, math.ceil(quantile * len(ranked)) - 1)])


def difficulty_bins(rates: list[float], bins: int = 5) -> list[int]:
    """The bin (0 = easiest) of each question: quantiles by pass rate, highest first, ties by order."""
    if bins < 1:
        raise PonderError(f"bins must be >= 1, got {bins}")
    order = sorted(range(len(rates)), key=lambda i: (-rates[i], i))
    bins = min(bins, len(rates)) or 1
    size, extra = divmod(len(rates), bins)
    out, start = [0] * len(rates), 0
    for b in range(bins):
        end = start + size + (1 if b < extra else 0)
        for i in order[start:end]:
            out[i] = b
        start = end
    return out


def pass_rates(engine: Engine, chat: ChatFormat, task_name: str, problems: list[Problem], samples: int,
               temperature: float, max_tokens: int, seed: int) -> list[float]:
    """The share of `samples` sampled chains that answer each problem correctly, sampled as a whole-chain
    strategy samples them (each problem's chains get the room its own prompt leaves in the context)."""
    task = get_task(task_name)
    _, parts, _, _ = ChainOfThought(engine, chat, max_tokens=max_tokens).sample_answers(
        [p.question for p in problems], None, None, n=samples, temperature=temperature, top_p=1.0, seed=seed)
    return [sum(1 for _, answer, _, _ in group if answer and task.check(p, answer)) / len(group)
            for p, group in zip(problems, parts)]


@dataclass
class _Cache:
    """Finished pieces of a run, keyed by the settings that decide them (cells.jsonl).

    `key` covers every setting; `free_key` all but the verifier and its aggregation, for the pieces that
    never call it (the greedy chains, the pass rates, cot and majority cells), so a rerun with another
    verifier in the same folder reuses them. A piece written under `key` by an older run is still found."""

    path: Path | None
    key: str
    free_key: str = ""
    done: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free_key = self.free_key or self.key
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if d.get("key") in (self.key, self.free_key):
                    self.done[(d["key"], d["name"])] = d["value"]

    def get(self, name: str, make: Callable[[], Any], verifier_free: bool = False) -> Any:
        key = self.free_key if verifier_free else self.key
        for k in (key, self.key):
            if (k, name) in self.done:
                return self.done[(k, name)]
        value = self.done[(key, name)] = make()
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "name": name, "value": value}) + "\n")
        return value


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_scaling(engine: Engine, chat: ChatFormat, cfg: ScalingConfig, problems: list[Problem], verifier=None,
                out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Base, pass rates and difficulty bins, then every (strategy, multiplier) cell; the report as a dict."""
    from tqdm import tqdm

    missing = [s for s in cfg.strategies if s in NEEDS_VERIFIER]
    if missing and verifier is None:
        raise PonderError(f"strategies {', '.join(missing)} need a verifier: pass --verifier PATH")
    if not problems:
        raise PonderError("no questions to evaluate")
    task = get_task(cfg.task)
    # the policy keys only adaptive's cells: other cells (and the pass rates) are reused across policies
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("strategies", "budgets", "chunk", "policy")}
    settings.pop("answer_reserve")  # it keys only the cells of the strategies it reaches
    for opt in ("sample_temperature", "aggregation"):
        if settings[opt] is None:  # runs from before the option keep their key
            del settings[opt]
    policy, policy_tag = None, ""
    if cfg.policy is not None:
        from ponder.think.policy import load_policy

        policy = load_policy(cfg.policy)
        policy_tag = "/policy-" + hashlib.sha256(Path(cfg.policy).read_bytes()).hexdigest()[:8]
    settings["questions"] = [p.question for p in problems]
    key = _digest(settings)
    free_key = _digest({k: v for k, v in settings.items() if k not in ("verifier", "aggregation")})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cache = _Cache(out / "cells.jsonl" if out is not None else None, key, free_key)
    n = len(problems)
    total = n + n * cfg.samples + sum(n * m for _ in cfg.strategies for m in cfg.budgets)  # in chains' worth
    bar = tqdm(total=total, desc=f"scaling {cfg.task}/{cfg.level}", unit="chain", dynamic_ncols=True,
               mininterval=1.0, smoothing=0.1, disable=not progress)
    chunks = [problems[i: i + cfg.chunk] for i in range(0, n, cfg.chunk)]

    def solve(strategy, budget: int | None, weight: int) -> list[list]:
        rows = []
        for part in chunks:
            for p, th in zip(part, strategy.solve_batch([p.question for p in part], budget)):
                rows.append([answered(th) and task.check(p, th.answer), th.usage.completion_tokens])
            bar.update(weight * len(part))
        return rows

    greedy = ChainOfThought(engine, chat, max_tokens=cfg.max_tokens, answer_key=task.normalize)
    g = cache.get("greedy", lambda: solve(greedy, None, 1), verifier_free=True)
    if bar.n == 0:  # read from cells.jsonl
        bar.update(n)
    base = base_budget([t for _, t in g], cfg.base_quantile)

    def rates() -> list[float]:
        r = []
        for ci, part in enumerate(chunks):
            r += pass_rates(engine, chat, cfg.task, part, cfg.samples, cfg.temperature, cfg.max_tokens, cfg.seed + ci)
            bar.update(cfg.samples * len(part))
        return r

    before = bar.n
    rate = cache.get("pass_rates", rates, verifier_free=True)
    if bar.n == before:
        bar.update(n * cfg.samples)
    binned = difficulty_bins(rate, cfg.bins)
    results = []
    for name in cfg.strategies:
        for m in cfg.budgets:
            before = bar.n
            uses_verifier = name in NEEDS_VERIFIER + TAKES_VERIFIER
            reserve = cfg.answer_reserve if name in WHOLE_CHAINS + ("adaptive",) else 0

            def cell(name=name, m=m, uses_verifier=uses_verifier, reserve=reserve) -> list[list]:
                params = scaled_params(name, m)
                if name == "adaptive" and policy is not None:
                    params["policy"] = policy
                if name != "cot" and cfg.sample_temperature is not None:
                    params["temperature"] = cfg.sample_temperature
                if uses_verifier:
                    params["aggregation"] = cfg.aggregation
                if reserve:
                    params["answer_reserve"] = reserve
                s = build_strategy(name, engine, chat, verifier, max_tokens=cfg.max_tokens, seed=cfg.seed,
                                   answer_key=task.normalize, **params)
                return solve(s, m * base, m)

            tag = (policy_tag if name == "adaptive" else "") + (f"/reserve-{reserve}" if reserve else "")
            rows = cache.get(f"{name}/{m}{tag}", cell, verifier_free=not uses_verifier)
            if bar.n == before:
                bar.update(n * m)
            results.append(_summarise(name, m, m * base, rows, binned))
    bar.close()
    nb = max(binned) + 1
    return {
        "task": cfg.task, "level": cfg.level, "n": n, "seed": cfg.seed, "model": cfg.model,
        "verifier": cfg.verifier, "policy": cfg.policy, "sample_temperature": cfg.sample_temperature,
        "answer_reserve": cfg.answer_reserve, "aggregation": cfg.aggregation, "samples": cfg.samples,
        "base_tokens": base, "base_quantile": cfg.base_quantile,
        "greedy_mean_tokens": round(sum(t for _, t in g) / n, 1), "multipliers": cfg.budgets,
        "strategies": cfg.strategies, "greedy_accuracy": round(sum(ok for ok, _ in g) / n, 4),
        "bins": [{"bin": b + 1, "questions": sum(1 for x in binned if x == b),
                  "pass_rate_min": min(r for r, x in zip(rate, binned) if x == b),
                  "pass_rate_max": max(r for r, x in zip(rate, binned) if x == b)} for b in range(nb)],
        "questions": [{"question": p.question, "expected": p.answer, "pass_rate": r, "bin": b + 1,
                       "greedy_tokens": t} for p, r, b, (_, t) in zip(problems, rate, binned, g)],
        "results": results,
    }


def _summarise(name: str, m: int, budget: int, rows: list[list], binned: list[int]) -> dict[str, Any]:
    def stats(idx: list[int]) -> tuple[float, float]:
        if not idx:
            return 0.0, 0.0
        return (round(sum(rows[i][0] for i in idx) / len(idx), 4),
                round(sum(rows[i][1] for i in idx) / len(idx), 1))

    acc, tokens = stats(list(range(len(rows))))
    per_bin = []
    for b in range(max(binned) + 1):
        a, t = stats([i for i, x in enumerate(binned) if x == b])
        per_bin.append({"bin": b + 1, "accuracy": a, "mean_tokens": t})
    return {"strategy": name, "multiplier": m, "budget": budget, "accuracy": acc, "mean_tokens": tokens,
            "max_tokens_used": max(t for _, t in rows), "bins": per_bin,
            "correct": [bool(ok) for ok, _ in rows], "tokens": [t for _, t in rows]}


def markdown(report: dict[str, Any]) -> str:
    """The report's tables: difficulty bins, then accuracy per strategy and budget, overall and per bin."""
    nb = len(report["bins"])
    lines = [f"# Scaling: {report['task']} level {report['level']}", "",
             f"{report['n']} held-out questions (seed {report['seed']}), model `{report['model'] or '?'}`, "
             f"verifier `{report['verifier'] or 'none'}`. Base budget B = {report['base_tokens']} tokens (the "
             f"{report['base_quantile']:g} quantile of greedy chain lengths; their mean is "
             f"{report['greedy_mean_tokens']:.0f}); greedy accuracy {report['greedy_accuracy']:.1%}. Pass rates from "
             f"{report['samples']} samples per question."
             + (f" adaptive's policy: `{report['policy']}`." if report.get("policy") else "")
             + (f" Strategies sample at temperature {report['sample_temperature']:g}."
                if report.get("sample_temperature") is not None else "")
             + (f" Verifier scores aggregated by `{report['aggregation']}`." if report.get("aggregation") else "")
             + (f" cot, majority, best_of_n and adaptive hold back {report['answer_reserve']} tokens to answer"
                " from a chain the budget cuts." if report.get("answer_reserve") else ""),
             "", "| bin | questions | pass rate |", "| --- | --- | --- |"]
    for b in report["bins"]:
        lines.append(f"| {b['bin']} | {b['questions']} | {b['pass_rate_min']:.2f}-{b['pass_rate_max']:.2f} |")
    head = "| strategy | budget (x B) | budget (tokens) | tokens/question | accuracy | " + \
           " | ".join(f"bin {b + 1}" for b in range(nb)) + " |"
    lines += ["", head, "|" + " --- |" * (5 + nb)]
    for r in report["results"]:
        cells = " | ".join(f"{b['accuracy']:.1%}" for b in r["bins"])
        lines.append(f"| {r['strategy']} | {r['multiplier']} | {r['budget']} | {r['mean_tokens']:.0f} | "
                     f"{r['accuracy']:.1%} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against mean generated tokens (log x), one line per strategy: overall, then each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(report["bins"])
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= panels:
            ax.axis("off")
            continue
        for name in report["strategies"]:
            rs = sorted((r for r in report["results"] if r["strategy"] == name), key=lambda r: r["multiplier"])
            pts = [(r["mean_tokens"], r["accuracy"]) if k == 0 else (r["bins"][k - 1]["mean_tokens"],
                                                                    r["bins"][k - 1]["accuracy"]) for r in rs]
            pts = [(x, y) for x, y in pts if x > 0]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        tokens_axes(ax)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("all questions" if k == 0 else f"bin {k} ({'easiest' if k == 1 else 'hardest' if k == panels - 1 else 'harder'})")
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{report['task']} level {report['level']}: accuracy against test-time compute")
    return save_figure(fig, path)


def tokens_axes(ax) -> None:
    """Accuracy against mean generated tokens per question, the tokens on a log axis."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.set_xlabel("mean generated tokens per question")
    ax.set_ylabel("accuracy")


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(report, indent=1))
    (out / "scaling.md").write_text(markdown(report))
    return [out / "scaling.json", out / "scaling.md", plot(report, out / "scaling.png")]
