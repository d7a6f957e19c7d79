"""`ponder eval policy`: fit `adaptive`'s policy table to a task and a verifier (or none), on questions it will
not be reported on (Snell et al. choose what to spend per difficulty on held-out questions).

Each question's greedy chain and `samples` sampled chains are drawn once and scored by the verifier, where there
is one (kept in chains.json, reused while the settings match). Every table of a grid (probe size, wave, the
verifier's weight in the difficulty, the easy tier's bound, the medium tier's bound and chains, the hardest tier
stopping or sampling) is then replayed on those chains at each budget m x B, spending as `adaptive` spends: the
same hard cap, per-chain caps (a chain longer than its cap is charged the cap and gives no answer), waves, stops
and weighted pick. Only tables of stop and sample rows replay (a delegated search draws chains of its own), and
only those that draw at most `samples` chains a question. The replay takes a question's samples in order, as
adaptive's waves draw them (each goes on where the last stopped), so on the local engine with the same seed it
is adaptive's own run, draw for draw.

The mark is `share` (a quarter) of the mean tokens of majority voting over all `samples` chains, each capped
at B as `eval scaling` caps them; the fit is the most accurate table under it (fewest tokens among equals).
B is the 0.9 quantile of the greedy chains' lengths, as in `eval scaling`. Output in `out`: policy.yaml (the
fit, for `--policy`), fit.md (the best tables under the mark, and the best at each budget), fit.json and
fit.png (accuracy against tokens of every table, majority and the mark).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from ponder import PonderError
from ponder.think.policy import AdaptivePolicy, Tier, estimate
from ponder.think.verified import pick


class Chain(NamedTuple):
    key: str | None  # the normalised answer; None: no answer
    right: bool
    tokens: int
    score: float | None  # the verifier's aggregated score (None: no answer, or no verifier)


@dataclass(frozen=True)
class PolicyFitConfig:
    task: str
    level: int
    verifier: str | None  # None: tables read agreement alone, and vote
    n: int = 300  # held-out questions
    samples: int = 16  # sampled chains drawn per question
    seed: int = 1  # which held-out questions: not the ones reported on (eval scaling's default is 0)
    budgets: tuple[int, ...] = (1, 2, 3, 4)  # multipliers of B
    share: float = 0.25  # the mark: this share of majority@samples' tokens
    temperature: float = 0.8  # adaptive's own
    max_tokens: int = 768
    model: str = "built-in"

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise PonderError(f"--share must be in (0, 1], got {self.share}")
        for what, v in (("-n", self.n), ("--samples", self.samples)):
            if v < 1:
                raise PonderError(f"{what} must be >= 1, got {v}")
        if not self.budgets or min(self.budgets) < 1:
            raise PonderError(f"budgets must be whole multipliers >= 1, got {list(self.budgets)}")


def samples_needed(policy: AdaptivePolicy) -> int:
    """The most sampled chains a table may draw on one question (besides the greedy one)."""
    return max([policy.probe - 1] + [t.chains - 1 for t in policy.tiers if t.action == "sample"])


def replayable(policy: AdaptivePolicy, samples: int) -> AdaptivePolicy:
    for t in policy.tiers:
        if t.action not in ("stop", "sample"):
            raise PonderError(f"only stop and sample rows replay on drawn chains; tier {t.name!r} runs {t.action}")
    if samples_needed(policy) > samples:
        raise PonderError(f"the table may draw {samples_needed(policy)} sampled chains a question; "
                          f"--samples {samples} draws too few")
    return policy


def replay(policy: AdaptivePolicy, chains: Sequence[Chain], budget: int, max_tokens: int) -> tuple[bool, int]:
    """(right, tokens spent) of `adaptive` with this table on one question's chains, the greedy one first."""
    greedy, samples = chains[0], iter(chains[1:])
    if greedy.tokens > budget:  # the cap cuts the greedy chain: no answer, and nothing left for more
        return False, budget
    left, got = budget - greedy.tokens, [greedy]
    each = math.ceil(policy.slack * max(1, greedy.tokens))

    def wave(n: int) -> bool:
        nonlocal left
        k = min(n, left // each)
        if k < 1:
            return False
        cap = min(max_tokens, max(1, left // k))
        for c in itertools.islice(samples, k):
            got.append(c if c.tokens <= cap else Chain(None, False, cap, None))
            left -= got[-1].tokens
        return True

    def tier() -> Tier:  # without scores (no verifier), agreement alone
        scores = [c.score for c in got] if any(c.score is not None for c in got) else None
        return policy.tier(estimate([c.key for c in got], scores, policy.score_weight)[0])

    probed = policy.probe == 1 or wave(policy.probe - 1)  # a probe the budget cannot pay for ends it
    if probed and (t := tier()).action == "sample":
        reserve = left - int(t.share * left)  # what this tier may not spend
        left -= reserve
        while len(got) < t.chains and wave(min(policy.wave, t.chains - len(got))) and tier().action != "stop":
            pass
        left += reserve
    answered = [c for c in got if c.key is not None]
    if not answered:
        return False, budget - left
    weights = [1.0 if c.score is None else c.score for c in answered]  # no verifier: a vote, greedy wins ties
    return answered[pick([c.key for c in answered], weights, True)].right, budget - left


def vote(chains: Sequence[Chain], n: int, budget: int, max_tokens: int) -> tuple[bool, int]:
    """(right, tokens) of majority voting over the first n samples, each capped at budget / n."""
    cap = min(max_tokens, budget // n)
    votes: dict[str, list[bool]] = {}
    for c in chains[1:n + 1]:
        if c.key is not None and c.tokens <= cap:
            votes.setdefault(c.key, []).append(c.right)
    right = max(votes.values(), key=len)[0] if votes else False
    return right, sum(min(c.tokens, cap) for c in chains[1:n + 1])


@dataclass(frozen=True)
class PolicyGrid:
    """The tables `eval policy` tries: every combination of these values. `--grid FILE.yaml` with any of these
    keys replaces those lists (a task whose questions need longer votes, a finer easy bound...)."""

    probe: list[int] = field(default_factory=lambda: [2, 3, 4])  # chains in the probe
    wave: list[int] = field(default_factory=lambda: [1, 2, 4])  # chains a sampling tier draws at a time
    score_weight: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    easy: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])  # stop below
    medium: list[float] = field(default_factory=lambda: [0.45, 0.6, 0.75, 0.9, 1.0])  # sample below
    chains: list[int] = field(default_factory=lambda: [4, 6, 8, 12, 16])  # a sampling tier's chains
    hard: list[str] = field(default_factory=lambda: ["stop", "sample"])  # above medium

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name):
                raise PonderError(f"policy grid: {f.name} needs at least one value")
        odd = sorted(set(self.hard) - {"stop", "sample"})
        if odd:
            raise PonderError(f"policy grid: hard must be stop or sample, got {odd[0]!r}")
        if not any(e < m for e in self.easy for m in self.medium):
            raise PonderError("policy grid: no easy bound lies below a medium bound")


def grid(spec: PolicyGrid | None = None) -> list[AdaptivePolicy]:
    """The tables tried: stop when easy, sample when medium, stop or sample when hard."""
    spec = spec or PolicyGrid()
    out = []
    for probe, wave, weight, easy, medium, chains, hard in itertools.product(
            spec.probe, spec.wave, spec.score_weight, spec.easy, spec.medium, spec.chains, spec.hard):
        if medium == 1.0 and hard == "sample" or easy >= medium:
            continue
        tiers = [Tier("easy", easy, "stop"), Tier("medium", medium, "sample", chains=chains)]
        if medium < 1.0:
            tiers.append(Tier("hard", 1.0, hard, chains=chains if hard == "sample" else 0))
        out.append(AdaptivePolicy(probe=probe, wave=wave, score_weight=weight, tiers=tuple(tiers)))
    return out


def fittable(samples: int, verified: bool = True, spec: PolicyGrid | None = None) -> list[AdaptivePolicy]:
    """The grid's tables that `samples` drawn chains a question can replay (without a verifier, one of each
    set that differs only in the verifier's weight)."""
    spec = spec or PolicyGrid()
    tables = grid(spec)
    if not verified and 0.0 not in spec.score_weight:
        raise PonderError("policy grid: without a verifier the tables read agreement alone; give score_weight 0.0")
    fit = [p for p in tables if samples_needed(p) <= samples and (verified or p.score_weight == 0)]
    if not fit:
        raise PonderError(f"--samples {samples} draws too few chains for any table to replay: "
                          f"at least {min(map(samples_needed, tables))}")
    return fit


_WORK: dict[str, Any] = {}  # what a worker replays on: set once per process


def _set_work(chains: list[list[Chain]], budgets: list[int], max_tokens: int) -> None:
    _WORK.update(chains=chains, budgets=budgets, max_tokens=max_tokens)


def score(policy: AdaptivePolicy) -> list[tuple[float, float]]:
    """(accuracy, mean tokens) of a table at each budget, on the chains of `_set_work`."""
    return [mean_of([replay(policy, c, budget, _WORK["max_tokens"]) for c in _WORK["chains"]])
            for budget in _WORK["budgets"]]


def mean_of(runs: Sequence[tuple[bool, int | float]]) -> tuple[float, float]:
    """(accuracy, mean tokens) of (right, tokens) runs."""
    return sum(r for r, _ in runs) / len(runs), sum(t for _, t in runs) / len(runs)


def score_all(policies: list[AdaptivePolicy], chains: list[list[Chain]], budgets: list[int], max_tokens: int,
              workers: int = 1, progress: bool = False) -> list[list[tuple[float, float]]]:
    """`score` of every table, over `workers` processes, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(policies), desc="tables", unit="table", disable=not progress, mininterval=1.0)
    if workers <= 1:
        _set_work(chains, budgets, max_tokens)
        out = []
        for p in policies:
            out.append(score(p))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_set_work, initargs=(chains, budgets, max_tokens)) as pool:
            out = []
            for s in pool.map(score, policies, chunksize=64):
                out.append(s)
                bar.update()
    bar.close()
    return out


def draw(engine, chat, task, verifier, problems, cfg: PolicyFitConfig, progress: bool = True,
         key=None) -> list[list[Chain]]:
    """Every question's greedy chain and `cfg.samples` sampled ones, scored by the verifier (if any); answers
    keyed by `key` (default: the task's normalisation)."""
    key = task.normalize if key is None else key
    from tqdm import tqdm

    from ponder.reward.base import rate
    from ponder.think.sampling import ChainOfThought

    cot = ChainOfThought(engine, chat, max_tokens=cfg.max_tokens)
    out: list[list[Chain]] = []
    chunk = 32
    for i in tqdm(range(0, len(problems), chunk), desc="drawing chains", unit="chunk", disable=not progress):
        part = problems[i:i + chunk]
        qs = [p.question for p in part]
        greedy = cot.solve_batch(qs)
        groups, parts, _, _ = cot.sample_answers(qs, None, None, n=cfg.samples, temperature=cfg.temperature,
                                                 top_p=1.0, seed=cfg.seed)
        rows = []  # (question, reasoning, answer, tokens)
        for j, (th, group, group_parts) in enumerate(zip(greedy, groups, parts)):
            rows.append((j, th.reasoning, th.answer if th.finish_reason == "stop" else "", th.usage.completion_tokens))
            rows += [(j, r, a, c.num_tokens) for c, (r, a, _, _) in zip(group, group_parts)]
        answered = [k for k, r in enumerate(rows) if r[2]]
        scores = {} if verifier is None else dict(zip(answered, rate(
            verifier, [qs[rows[k][0]] for k in answered], [chat.steps(rows[k][1]) for k in answered],
            [rows[k][2] for k in answered])))
        chains: list[list[Chain]] = [[] for _ in part]
        for k, (j, _, answer, tokens) in enumerate(rows):
            right = bool(answer) and bool(task.check(part[j], answer))
            chains[j].append(Chain(key(answer) if answer else None, right, tokens, scores.get(k)))
        out += chains
    return out


def load_or_draw(path: Path, settings: dict[str, Any], make) -> list[list[Chain]]:
    """The chains kept at `path` when drawn with these settings, or `make()`'s, kept there."""
    from ponder.train.checkpoint import write_text_atomic

    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    if path.exists():
        kept = json.loads(path.read_text())
        if kept.get("key") == key:
            return [[Chain(*c) for c in q] for q in kept["chains"]]
    chains = make()
    write_text_atomic(path, json.dumps({"key": key, "chains": chains}))
    return chains


def describe(p: AdaptivePolicy) -> str:
    rows = "; ".join(f"{t.name} <= {t.upto:g}: {t.action}" + (f" up to {t.chains}" if t.action == "sample" else "")
                     for t in p.tiers)
    return f"probe {p.probe}, wave {p.wave}, weight {p.score_weight:g}; {rows}"


def fit(chains: list[list[Chain]], cfg: PolicyFitConfig, policies: list[AdaptivePolicy] | None = None,
        workers: int = 1, progress: bool = False, spec: PolicyGrid | None = None) -> dict[str, Any]:
    """Every table at every budget, the mark, and the best tables under it (the first is the fit; none where
    no table stays under it)."""
    from ponder.eval_scaling import base_budget

    base = base_budget([q[0].tokens for q in chains], 0.9)
    maj_acc, maj_tokens = mean_of([vote(q, cfg.samples, cfg.samples * base, cfg.max_tokens) for q in chains])
    mark = cfg.share * maj_tokens
    policies = fittable(cfg.samples, cfg.verifier is not None, spec) if policies is None else policies
    scores = score_all(policies, chains, [m * base for m in cfg.budgets], cfg.max_tokens, workers, progress)
    cells = [{"accuracy": round(a, 4), "tokens": round(t, 1), "multiplier": m, "table": describe(p),
              "policy": asdict(p)} for p, s in zip(policies, scores) for m, (a, t) in zip(cfg.budgets, s)]
    under = sorted((c for c in cells if c["tokens"] <= mark), key=lambda c: (-c["accuracy"], c["tokens"]))
    per_budget = [max((c for c in cells if c["multiplier"] == m), key=lambda c: (c["accuracy"], -c["tokens"]))
                  for m in cfg.budgets]
    return {**asdict(cfg), "budgets": list(cfg.budgets), "questions": len(chains), "base_tokens": base,
            "greedy_accuracy": round(sum(q[0].right for q in chains) / len(chains), 4),
            "majority": {"accuracy": round(maj_acc, 4), "tokens": round(maj_tokens, 1)}, "mark_tokens": round(mark, 1),
            "tables": len(policies), "grid": asdict(spec or PolicyGrid()), "best": under[:15],
            "per_budget": per_budget,
            "points": [[c["tokens"], c["accuracy"]] for c in cells]}


def markdown(report: dict[str, Any]) -> str:
    r, maj = report, report["majority"]
    head = (f"# Policy fit: {r['task']} level {r['level']}\n\n{r['questions']} held-out questions (seed {r['seed']}), "
            f"verifier `{r['verifier'] or 'none'}`, B = {r['base_tokens']} tokens; greedy {r['greedy_accuracy']:.1%}; "
            f"majority@{r['samples']} {maj['accuracy']:.1%} at {maj['tokens']:.0f} tokens; the mark "
            f"({r['share']:g} of that): {r['mark_tokens']:.0f} tokens. {r['tables']} tables at "
            f"{', '.join(f'{m} x B' for m in r['budgets'])}.\n")
    table = ["| accuracy | tokens | share of majority's | budget | table |", "|---:|---:|---:|---:|---|"]
    row = lambda c: (f"| {c['accuracy']:.1%} | {c['tokens']:.0f} | {c['tokens'] / maj['tokens']:.1%} | "  # noqa: E731
                     f"{c['multiplier']} x B | {c['table']} |")
    return "\n".join([head, "The best under the mark (the first is policy.yaml):", "", *table,
                      *map(row, r["best"]), "", "The best at each budget:", "", *table,
                      *map(row, r["per_budget"])]) + "\n"


def policy_yaml(report: dict[str, Any]) -> str:
    r, c = report, report["best"][0]
    verifier = f" --verifier {r['verifier']}" if r["verifier"] else ""
    return table_yaml(AdaptivePolicy.from_dict(c["policy"]), [
        f"adaptive's table for {r['task']} level {r['level']} "
        + (f"with the verifier {r['verifier']}" if r["verifier"] else "without a verifier") + ", fitted by",
        f"ponder eval policy on {r['questions']} held-out questions (seed {r['seed']}): "
        f"{c['accuracy']:.1%} with {c['tokens']:.0f} tokens at {c['multiplier']} x B",
        f"({c['tokens'] / r['majority']['tokens']:.1%} of majority@{r['samples']}'s tokens, which got "
        f"{r['majority']['accuracy']:.1%}).",
        f"Use: ponder eval scaling --task {r['task']} --level {r['level']} --strategies adaptive{verifier} "
        "--policy THIS_FILE ...",
        f"     ponder ask \"...\" --strategy adaptive{verifier} --policy THIS_FILE"])


def table_yaml(p: AdaptivePolicy, header: Sequence[str]) -> str:
    """A table as the YAML `--policy` reads, every field it sets written out, under `header` as comments."""
    lines = [f"# {h}" for h in header]
    lines += [f"probe: {p.probe}", f"wave: {p.wave}", f"score_weight: {p.score_weight}", f"slack: {p.slack}", "tiers:"]
    for t in p.tiers:
        chains = f", chains: {t.chains}" if t.action == "sample" else ""
        share = f", share: {t.share}" if t.share != 1 else ""
        lines.append(f"  - {{name: {t.name}, upto: {t.upto}, action: {t.action}{chains}{share}}}")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against mean tokens of every table at every budget, with majority and the mark."""
    import matplotlib

    from ponder.eval_scaling import save_figure, tokens_axes

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs, ys = zip(*report["points"])
    ax.scatter(xs, ys, s=3, alpha=0.25, color="tab:blue", label="a table at a budget")
    best, maj = report["best"][0], report["majority"]
    ax.scatter([best["tokens"]], [best["accuracy"]], color="tab:red", zorder=3, label="the fit")
    ax.scatter([maj["tokens"]], [maj["accuracy"]], color="black", marker="s", zorder=3,
               label=f"majority@{report['samples']}")
    ax.axvline(report["mark_tokens"], color="gray", ls="--", lw=1, label=f"{report['share']:g} of majority's tokens")
    tokens_axes(ax)
    ax.legend(fontsize=7)
    ax.set_title(f"adaptive tables replayed: {report['task']} level {report['level']}")
    return save_figure(fig, path)


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("policy.yaml", "fit.md", "fit.json")}
    paths["policy.yaml"].write_text(policy_yaml(report))
    paths["fit.md"].write_text(markdown(report))
    paths["fit.json"].write_text(json.dumps(report, indent=1))
    return [*paths.values(), plot(report, out / "fit.png")]


def run_policy_fit(engine, chat, verifier, problems, cfg: PolicyFitConfig, out: Path, replay_policy=None,
                   workers: int = 1, progress: bool = True, spec: PolicyGrid | None = None
                   ) -> dict[str, Any] | list[str]:
    """Draw (or read back) the chains, then fit a table, or with `replay_policy` replay that one table."""
    from ponder.tasks import get_task

    task = get_task(cfg.task)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("budgets", "share")}
    settings["questions"] = [p.question for p in problems]
    chains = load_or_draw(out / "chains.json", settings,
                          lambda: draw(engine, chat, task, verifier, problems, cfg, progress))
    if replay_policy is None:
        report = fit(chains, cfg, workers=workers, progress=progress, spec=spec)
        if not report["best"]:
            raise PonderError(f"no table spends under the mark ({report['mark_tokens']:.0f} tokens a question): "
                              "raise --share or add smaller --budgets")
        return report
    one = fit(chains, cfg, [replayable(replay_policy, cfg.samples)])
    maj = one["majority"]
    return [f"majority@{cfg.samples}: {maj['accuracy']:.1%} with {maj['tokens']:.0f} tokens"] + [
        f"{c['multiplier']} x B: {c['accuracy']:.1%} with {c['tokens']:.0f} tokens ({c['tokens'] / maj['tokens']:.1%} "
        "of majority's)" for c in one["per_budget"]]
