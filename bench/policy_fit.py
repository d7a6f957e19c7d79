"""Choose `adaptive`'s policy table offline, on questions it will not be reported on.

Snell et al. choose the compute-optimal strategy per difficulty on held-out questions. Here each question's
greedy chain and N sampled chains are drawn once and scored by the verifier (`--chains`, kept and reused);
then every table of a grid (probe size, wave, the verifier's weight in the difficulty, the easy tier's bound,
the medium tier's bound and chains, whether the hardest tier stops or samples too) is replayed on those chains
at each budget, as `adaptive` would spend it: the same hard cap, the same per-chain caps (a chain longer
than its cap is charged the cap and gives no answer), the same stopping and the same weighted pick. Only
tables of `stop` and `sample` rows replay this way: a delegated search draws chains of its own.

The replay draws a question's samples in order, so it is faithful in distribution, not draw for draw: the
real strategy seeds its waves otherwise. `--replay POLICY.yaml` replays one table (e.g. on the questions a
chosen table is then reported on, beside its real run, to see how far the replay is from the real thing).

    python bench/policy_fit.py --verifier runs/prm-cvp-2048/model --level 3 -n 300 --seed 1 \\
        --chains runs/policy-fit-cvp-l3-seed1.json --out bench/results/policy-fit-cvp-l3
    python bench/policy_fit.py ... --seed 0 --chains runs/policy-fit-cvp-l3-seed0.json --replay configs/X.yaml
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict
from multiprocessing import Pool
from pathlib import Path

import verified_setup

from ponder.think.policy import AdaptivePolicy, Tier, estimate, load_policy
from ponder.think.verified import pick

Chain = tuple  # (answer key or None, right, tokens, score or None)


def draw(args: argparse.Namespace) -> dict:
    """Every question's greedy chain and `--samples` sampled ones, with their verifier scores."""
    from tqdm import tqdm

    from ponder.eval_scaling import base_budget
    from ponder.reward.base import rate
    from ponder.think.base import drop_cut_answer, split_completion
    from ponder.think.sampling import ChainOfThought

    s = verified_setup.load(args)
    cot = ChainOfThought(s.engine, s.chat, max_tokens=args.max_tokens)
    out = []
    chunk = 32
    for i in tqdm(range(0, len(s.problems), chunk), desc="chains", unit="chunk"):
        probs = s.problems[i:i + chunk]
        qs = [p.question for p in probs]
        greedy = cot.solve_batch(qs)
        groups, _ = cot.sample_chains(qs, None, None, n=args.samples, temperature=args.temperature, top_p=1.0,
                                      seed=args.seed + i)
        rows = []  # (question index, reasoning, answer, tokens)
        for j, (th, group) in enumerate(zip(greedy, groups)):
            rows.append((j, th.reasoning, th.answer if th.finish_reason == "stop" else "", th.usage.completion_tokens))
            for c in group:
                reasoning, answer, _, _ = drop_cut_answer(split_completion(s.chat, s.engine, c))
                rows.append((j, reasoning, answer, c.num_tokens))
        answered = [r for r in rows if r[2]]
        scores = rate(s.verifier, [qs[j] for j, *_ in answered], [s.chat.steps(r) for _, r, _, _ in answered],
                      [a for _, _, a, _ in answered])
        score_of = {id(r): sc for r, sc in zip(answered, scores)}
        chains: list[list[Chain]] = [[] for _ in probs]
        for r in rows:
            j, _, answer, tokens = r
            key = s.task.normalize(answer) if answer else None
            chains[j].append((key, bool(answer) and bool(s.task.check(probs[j], answer)), tokens, score_of.get(id(r))))
        out += chains
    lengths = [c[0][2] for c in out]
    return {"level": args.level, "seed": args.seed, "n": len(out), "verifier": args.verifier,
            "temperature": args.temperature, "max_tokens": args.max_tokens,
            "base_tokens": base_budget(lengths, 0.9), "chains": out}


def replay(policy: AdaptivePolicy, chains: list[Chain], budget: int, max_tokens: int) -> tuple[bool, int]:
    """(right, tokens) of `adaptive` with this table on one question's chains (greedy first)."""
    greedy, samples = chains[0], iter(chains[1:])
    if greedy[2] > budget:  # the cap cuts the greedy chain: no answer, and nothing left for more
        return False, budget
    left, got = budget - greedy[2], [greedy]
    each = math.ceil(policy.slack * max(1, greedy[2]))

    def wave(n: int) -> bool:
        nonlocal left
        k = min(n, left // each)
        if k < 1:
            return False
        cap = min(max_tokens, max(1, left // k))
        for _ in range(k):
            key, right, tokens, score = next(samples)
            if tokens > cap:
                key, right, tokens = None, False, cap
            got.append((key, right, tokens, score))
            left -= tokens
        return True

    def tier() -> Tier:
        keys = [c[0] for c in got]
        return policy.tier(estimate(keys, [c[3] for c in got], policy.score_weight)[0])

    if policy.probe > 1 and wave(policy.probe - 1):
        t = tier()
        limit = t.chains
        if t.action == "sample":
            while len(got) < limit and wave(min(policy.wave, limit - len(got))):
                if tier().action == "stop":
                    break
    answered = [c for c in got if c[0] is not None]
    tokens = budget - left
    if not answered:
        return False, tokens
    best = answered[pick([c[0] for c in answered], [c[3] for c in answered], True)]
    return best[1], tokens


def majority(chains: list[Chain], n: int, budget: int, max_tokens: int) -> tuple[bool, int]:
    """(right, tokens) of a vote over the first n samples, each capped at its share of the budget."""
    cap = min(max_tokens, budget // n)
    votes: dict[str, list[bool]] = {}
    tokens = 0
    for key, right, t, _ in chains[1:n + 1]:
        tokens += min(t, cap)
        if key is not None and t <= cap:
            votes.setdefault(key, []).append(right)
    if not votes:
        return False, tokens
    return max(votes.values(), key=len)[0], tokens


def grid() -> list[AdaptivePolicy]:
    """The tables tried: stop when easy, sample when medium, stop or sample when hard."""
    out = []
    for probe, wave, w, easy, medium, chains, hard in itertools.product(
            (2, 3, 4), (1, 2, 4), (0.0, 0.25, 0.5, 0.75, 1.0), (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
            (0.45, 0.6, 0.75, 0.9, 1.0), (4, 6, 8, 12, 16), ("stop", "sample")):
        if medium == 1.0 and hard == "sample":
            continue
        tiers = [Tier("easy", easy, "stop"), Tier("medium", medium, "sample", chains=chains)]
        if medium < 1.0:
            tiers.append(Tier("hard", 1.0, hard, chains=chains if hard == "sample" else 0))
        out.append(AdaptivePolicy(probe=probe, wave=wave, score_weight=w, tiers=tuple(tiers)))
    return out


_DATA: dict = {}


def _score(policy: AdaptivePolicy) -> list[tuple[float, float]]:
    """(accuracy, mean tokens) at each budget."""
    d = _DATA
    out = []
    for budget in d["budgets"]:
        runs = [replay(policy, c, budget, d["max_tokens"]) for c in d["chains"]]
        out.append((sum(r for r, _ in runs) / len(runs), sum(t for _, t in runs) / len(runs)))
    return out


def describe(p: AdaptivePolicy) -> str:
    rows = "; ".join(f"{t.name} <= {t.upto}: {t.action}" + (f" {t.chains}" if t.action == "sample" else "")
                     for t in p.tiers)
    return f"probe {p.probe}, wave {p.wave}, weight {p.score_weight}; {rows}"


def as_yaml(p: AdaptivePolicy) -> str:
    lines = [f"probe: {p.probe}", f"wave: {p.wave}", f"score_weight: {p.score_weight}", "tiers:"]
    for t in p.tiers:
        chains = f", chains: {t.chains}" if t.action == "sample" else ""
        lines.append(f"  - {{name: {t.name}, upto: {t.upto}, action: {t.action}{chains}}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verified_setup.add_arguments(ap, n=300, seed=1, budgets="1,2,3,4")
    ap.add_argument("--samples", type=int, default=16, help="sampled chains drawn per question")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-tokens", type=int, default=768)
    ap.add_argument("--chains", type=Path, required=True, help="the drawn chains (JSON), drawn if missing")
    ap.add_argument("--replay", type=Path, help="replay this policy file instead of fitting")
    ap.add_argument("--quarter", type=float, default=0.25, help="token share of majority@N to fit under")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.chains.exists():
        data = json.loads(args.chains.read_text())
    else:
        data = draw(args)
        args.chains.parent.mkdir(parents=True, exist_ok=True)
        args.chains.write_text(json.dumps(data))
    chains, base, cap = data["chains"], data["base_tokens"], data["max_tokens"]
    n = len(chains[0]) - 1
    maj = [majority(c, n, n * base, cap) for c in chains]
    maj_acc, maj_tokens = sum(r for r, _ in maj) / len(maj), sum(t for _, t in maj) / len(maj)
    greedy_acc = sum(c[0][1] for c in chains) / len(chains)
    lines = [f"{len(chains)} questions (cvp level {data['level']}, seed {data['seed']}), B = {base} tokens, "
             f"greedy {greedy_acc:.1%}; majority@{n} (budget {n} x B) {maj_acc:.1%} at {maj_tokens:.0f} tokens, "
             f"a quarter of that: {args.quarter * maj_tokens:.0f}", ""]
    _DATA.update(chains=chains, max_tokens=cap, budgets=[m * base for m in args.budgets])
    if args.replay:
        p = load_policy(str(args.replay))
        for t in p.tiers:
            if t.action not in ("stop", "sample"):
                sys.exit(f"policy_fit: only stop and sample rows replay; tier {t.name!r} runs {t.action}")
        lines.append(f"replay of {args.replay} ({describe(p)}):")
        lines += [f"  {m} x B: {a:.1%} at {t:.0f} tokens ({t / maj_tokens:.1%} of majority@{n})"
                  for m, (a, t) in zip(args.budgets, _score(p))]
        print("\n".join(lines))
        return 0
    policies = grid()
    with Pool(args.threads) as pool:
        scores = pool.map(_score, policies, chunksize=64)
    cells = [(a, t, m, p) for p, s in zip(policies, scores) for m, (a, t) in zip(args.budgets, s)]
    under = [c for c in cells if c[1] <= args.quarter * maj_tokens]
    if not under:
        sys.exit("policy_fit: no table stays under the token mark")
    under.sort(key=lambda c: (-c[0], c[1]))
    lines.append(f"{len(policies)} tables x {len(args.budgets)} budgets; the best under the mark:")
    lines.append("")
    lines.append("| accuracy | tokens | share | budget | table |")
    lines.append("|---:|---:|---:|---:|---|")
    lines += [f"| {a:.1%} | {t:.0f} | {t / maj_tokens:.1%} | {m} x B | {describe(p)} |" for a, t, m, p in under[:15]]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fit.md").write_text("\n".join(lines) + "\n")
        (args.out / "chosen.yaml").write_text(as_yaml(under[0][3]))
        (args.out / "fit.json").write_text(json.dumps(
            {"majority": [maj_acc, maj_tokens], "greedy": greedy_acc, "base_tokens": base,
             "best": [{"accuracy": a, "tokens": t, "multiplier": m, "policy": asdict(p)} for a, t, m, p in under[:50]]},
            indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
