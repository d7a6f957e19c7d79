"""Compute-optimal thinking (Snell et al. 2024): a cheap probe estimates how hard the question is, and a
small policy table decides what more to spend on it.

The probe is one greedy chain (what `cot` answers) and `probe - 1` sampled chains, as many as the budget
left pays for at `slack` x the greedy chain's length. The policy (`ponder/think/policy.py`) turns the
probe's agreement, and with a verifier its scores, into a difficulty and picks the first row of its table
that covers it: stop, sample more, or run another strategy.

`sample` draws waves of `wave` chains and stops as soon as the difficulty re-estimated over all chains so
far falls in a tier that stops (the answers agree); its answer pools every chain, probe included. Any other
action is a strategy from the registry, run with `share` of the budget left; its parameters, where the row
does not set them, are scaled to the whole chains that budget buys (`registry.scaled_params`), and its answer
is final when it gave one: it starts afresh, without the probe's chains (`sample` pools them). Where that
share does not pay for one whole chain (`slack` x the greedy chain), nothing is delegated and the probe
answers: a strategy cut short would answer from a chain that never finished.
Pass another `AdaptivePolicy` to change the table.

The budget is a hard cap: the greedy chain, every wave and a delegated strategy each get at most what is
left, and all their tokens are counted. The tree holds a `probe` node (its text states the estimate and the
tier) with the probe chains, then a node for what followed. With `answer_reserve` R (0: off) the greedy chain
is `cot`'s with that reserve, closed to answer where the budget cuts it (`think/anytime.py`), and delegated
cot, majority and best_of_n get R too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ponder import PonderError
from ponder.engine.base import SamplingParams
from ponder.reward.base import Verifier, check_aggregation, rate
from ponder.think.base import Node, Question, Strategy, Thought, Usage, drop_cut_answer, split_completion
from ponder.think.policy import AdaptivePolicy, Tier, estimate
from ponder.think.stream import Listener
from ponder.think.verified import pick


@dataclass
class _Chain:
    reasoning: str
    answer: str  # "" when it did not answer
    answer_tokens: int
    node: Node
    score: float | None = None


@dataclass
class _Q:
    """One question's state."""

    question: Question
    prompt: str
    budget: float  # tokens left (inf: no cap)
    usage: Usage = field(default_factory=Usage)
    chains: list[_Chain] = field(default_factory=list)
    root: Node = field(default_factory=lambda: Node(text="", visits=1))
    length: int = 1  # the greedy chain's length: what a sampled chain is budgeted at (x slack)
    tier: Tier | None = None
    action: str = "stop"
    limit: int = 0  # sample: the most chains in all
    reserve: float = 0.0  # sample: the part of the budget this tier may not spend
    follow: Node | None = None  # the tree node of what followed the probe
    result: Thought | None = None  # a delegated strategy's answer
    exhausted: bool = False
    done: bool = False


class Adaptive(Strategy):
    """Probe, estimate difficulty, then spend by the policy's table (see the module docstring)."""

    def __init__(self, engine, chat, verifier: Verifier | None = None, *, policy: AdaptivePolicy | None = None,
                 temperature: float = 0.8, top_p: float = 1.0, seed: int | None = 0, weighted: bool = True,
                 aggregation: str | None = None, answer_reserve: int = 0, **kw) -> None:
        super().__init__(engine, chat, **kw)
        from ponder.think.registry import STRATEGIES
        from ponder.think.sampling import ChainOfThought

        self.answer_reserve = answer_reserve  # for the probe's greedy chain and delegated whole chains
        # the probe's greedy chain when it answers anytime (its constructor checks the reserve)
        self._anytime_cot = None if answer_reserve == 0 else ChainOfThought(
            engine, chat, top_p=top_p, seed=seed, max_tokens=self.max_tokens, answer_key=self.answer_key,
            answer_reserve=answer_reserve)

        if verifier is not None and not callable(getattr(verifier, "score_batch", None)):
            raise PonderError("adaptive: the verifier must be a reward model (score_batch)")
        self.policy = policy if policy is not None else AdaptivePolicy()
        if not isinstance(self.policy, AdaptivePolicy):
            self.policy = AdaptivePolicy.from_dict(self.policy)
        for t in self.policy.tiers:
            for action in (t.action, t.unverified):
                if action not in ("stop", "sample") and action not in STRATEGIES:
                    raise PonderError(f"adaptive policy: tier {t.name!r} has unknown action {action!r}; "
                                      f"choose stop, sample or one of {', '.join(STRATEGIES)}")
        self.verifier = verifier
        self.aggregation = check_aggregation(aggregation or getattr(verifier, "aggregation", "last"))
        self.temperature, self.top_p, self.seed, self.weighted = temperature, top_p, seed, weighted

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        if budget is not None and budget < 1:
            raise PonderError(f"the token budget must be >= 1, got {budget}")
        qs = [_Q(q, self.prompt_of(q), math.inf if budget is None else budget) for q in questions]
        for q in qs:
            q.root.children.append(Node(text="probe", visits=1))
        probe_node = lambda q: q.root.children[0]  # noqa: E731
        greedy = self._greedy(qs, probe_node)
        self._wave(qs, lambda q: self.policy.probe - 1, probe_node)
        # A lone greedy chain whose budget pays for nothing more is the answer whatever it scores:
        # the verifier's pass over it would be compute spent for nothing.
        self._score([(q, c) for q, c in greedy if not (q.done and len(q.chains) == 1)])
        for i, q in enumerate(qs):
            q.done = q.done or (listener is not None and listener.cancelled(i))
            self._choose(q)
        self._sample_more(qs)
        self._delegate(qs, budget)
        return [self._answer(q) for q in qs]

    # -- the probe, and more samples -----------------------------------------------

    def _greedy(self, qs: list[_Q], under) -> list[tuple[_Q, _Chain]]:
        """Each question's greedy chain, not yet scored (the probe's wave decides whether it needs to be)."""
        if self._anytime_cot is not None and not any(math.isinf(q.budget) for q in qs):
            return self._greedy_anytime(qs, under)
        by_cap: dict[int, list[_Q]] = {}
        for q in qs:
            by_cap.setdefault(self.max_new_tokens(q.prompt, _left(q)), []).append(q)
        new = []
        for cap, group in by_cap.items():
            params = SamplingParams(n=1, temperature=0.0, top_p=self.top_p, max_tokens=cap, seed=self.seed)
            new += self._run(group, params, under)
            for q in group:
                q.length = max(1, q.usage.completion_tokens)
                q.exhausted = q.exhausted or (not q.chains[0].answer and cap < self.max_tokens)
        return new

    def _greedy_anytime(self, qs: list[_Q], under) -> list[tuple[_Q, _Chain]]:
        """The greedy chains as `cot` with `answer_reserve` writes them: closed to answer if the budget cuts them."""
        by_budget: dict[int, list[_Q]] = {}
        for q in qs:
            by_budget.setdefault(int(q.budget), []).append(q)
        new = []
        for budget, group in by_budget.items():
            for q, th in zip(group, self._anytime_cot.solve_batch([q.question for q in group], budget)):
                q.usage.add(th.usage)
                q.budget -= th.usage.completion_tokens
                ch = _Chain(th.reasoning, th.answer, th.usage.answer_tokens,
                            Node(text=th.reasoning, visits=1, answer=th.answer or None))
                under(q).children.append(ch.node)
                q.chains.append(ch)
                new.append((q, ch))
                q.length = max(1, q.usage.completion_tokens)
                q.exhausted = q.exhausted or th.budget_exhausted
        return new

    def _wave(self, qs: list[_Q], wanted, under) -> None:
        """Up to `wanted(q)` more sampled chains per question, as many as its budget pays for: the next ones of
        its samples, so a question's sampled chains are its first samples at the seed, as best_of_n's are."""
        rows: dict[tuple[int, int, int], list[_Q]] = {}
        for q in qs:
            n = 0 if q.done else wanted(q)
            if n < 1:
                continue
            each = math.ceil(self.policy.slack * q.length)
            k = n if math.isinf(q.budget) else min(n, int(q.budget // each))
            if k < 1:
                q.exhausted = q.done = True  # the budget cannot pay for another chain
                continue
            drawn = len(q.chains) - 1  # the sampled chains so far (the first chain is greedy)
            rows.setdefault((k, self.max_new_tokens(q.prompt, _left(q), chains=k), drawn), []).append(q)
        new = []
        for (k, cap, drawn), group in rows.items():
            params = SamplingParams(n=k, temperature=self.temperature, top_p=self.top_p, max_tokens=cap,
                                    seed=self.seed, first_sample=drawn)
            new += self._run(group, params, under)
        self._score(new)

    def _run(self, qs: list[_Q], params: SamplingParams, under) -> list[tuple[_Q, _Chain]]:
        """One engine call; every completion becomes a chain of its question, its tokens charged."""
        new = []
        for q, group in zip(qs, self.engine.generate([q.prompt for q in qs], params)):
            q.usage.prompt_tokens += group[0].prompt_tokens if group else 0
            q.usage.engine_calls += 1
            for c in group:
                reasoning, answer, answer_tokens, _ = drop_cut_answer(split_completion(self.chat, self.engine, c))
                q.usage.completion_tokens += c.num_tokens
                q.budget -= c.num_tokens
                ch = _Chain(reasoning, answer, answer_tokens, Node(text=reasoning, visits=1, answer=answer or None))
                under(q).children.append(ch.node)
                q.chains.append(ch)
                new.append((q, ch))
        return new

    def _score(self, new: list[tuple[_Q, _Chain]]) -> None:
        if self.verifier is None:
            return
        scored = [(q, c) for q, c in new if c.answer]
        scores = rate(self.verifier, [q.question for q, _ in scored], [self.chat.steps(c.reasoning) for _, c in scored],
                      [c.answer for _, c in scored], self.aggregation)
        for (_, c), s in zip(scored, scores):
            c.score = c.node.score = s

    def _estimate(self, q: _Q) -> tuple[float, float, float | None]:
        keys = [self.answer_key(c.answer) if c.answer else None for c in q.chains]
        scored = self.verifier is not None and all(c.score is not None for c in q.chains if c.answer)
        scores = [c.score for c in q.chains] if scored else None  # unscored: agreement alone
        return estimate(keys, scores, self.policy.score_weight)

    def _choose(self, q: _Q) -> None:
        """Read the probe, pick the tier and its action, and say so in the tree."""
        d, agreement, mean = self._estimate(q)
        q.tier = self.policy.tier(d)
        q.action = q.tier.action
        chains = q.tier.chains
        if q.action not in ("stop", "sample") and self.verifier is None and _needs_verifier(q.action):
            q.action, chains = q.tier.unverified, q.tier.unverified_chains or q.tier.chains
        q.limit = chains
        probe = q.root.children[0]
        probe.visits = len(q.chains)
        score = f", mean score {mean:.2f}" if mean is not None else ""
        probe.text = (f"probe: {len(q.chains)} chains, agreement {agreement:.2f}{score}, difficulty {d:.2f} "
                      f"-> {q.tier.name}: {q.action}")
        if q.done or q.action == "stop" or q.tier.share == 0:
            q.done = True
            return
        q.follow = Node(text=q.action, visits=1)
        q.root.children.append(q.follow)

    def _sample_more(self, qs: list[_Q]) -> None:
        """Waves of samples until each sampling question has its chains, its budget share, or agreement."""
        live = [q for q in qs if not q.done and q.action == "sample"]
        for q in live:  # the tier may spend `share` of what the probe left
            q.reserve = 0.0 if math.isinf(q.budget) else q.budget - int(q.tier.share * q.budget)
            q.budget -= q.reserve
        while live:
            self._wave(live, lambda q: min(self.policy.wave, q.limit - len(q.chains)), lambda q: q.follow)
            for q in live:
                if self.policy.tier(self._estimate(q)[0]).action == "stop" or len(q.chains) >= q.limit:
                    q.done = True
            live = [q for q in live if not q.done]
        for q in qs:
            if q.action == "sample" and q.follow is not None:
                q.budget += q.reserve
                n = sum(1 for _ in q.follow.children)
                d, agreement, _ = self._estimate(q)
                q.follow.text = f"sample: {n} more chains, agreement {agreement:.2f}, difficulty {d:.2f}"

    def _delegate(self, qs: list[_Q], budget: int | None) -> None:
        """Questions whose tier runs another strategy, batched by strategy, parameters and budget."""
        from ponder.think.registry import WHOLE_CHAINS, build_strategy, scaled_params

        quantum = 1 if budget is None else max(1, budget // 16)  # budgets rounded down, so questions batch
        groups: dict[tuple, list[_Q]] = {}
        for q in qs:
            if q.done or q.action in ("stop", "sample"):
                continue
            left = q.tier.share * q.budget
            params = dict(q.tier.params)
            if math.isinf(left):
                share = None
            else:
                share = int(left // quantum) * quantum or int(left)
                affordable = int(share // math.ceil(self.policy.slack * q.length))
                if affordable < 1:  # its answer would come from a chain cut short, a guess over the probe's
                    q.exhausted = q.done = True
                    q.follow.text += ": no budget left for a whole chain"
                    continue
                params = {**scaled_params(q.action, affordable), **params}
            if q.action != "cot":  # delegated samples are drawn as hot as the probe's
                params.setdefault("temperature", self.temperature)
            if q.action in WHOLE_CHAINS and self.answer_reserve:
                params.setdefault("answer_reserve", self.answer_reserve)
            groups.setdefault((q.action, tuple(sorted(params.items())), share), []).append(q)
        for (action, params, share), group in groups.items():
            strategy = build_strategy(action, self.engine, self.chat, self.verifier, max_tokens=self.max_tokens,
                                      seed=self.seed, answer_key=self.answer_key, **dict(params))
            for q, th in zip(group, strategy.solve_batch([q.question for q in group], share)):
                q.usage.add(th.usage)
                q.budget -= th.usage.completion_tokens
                q.result, q.exhausted = th, q.exhausted or th.budget_exhausted
                q.follow.text = f"{action}" + (f" with a budget of {share} tokens" if share is not None else "")
                q.follow.score = None
                q.follow.children = th.tree.children if th.tree is not None else []

    # -- the answer ------------------------------------------------------------------

    def _answer(self, q: _Q) -> Thought:
        u = q.usage
        th = q.result
        if th is not None and th.answer:
            u.reasoning_tokens = u.completion_tokens - th.usage.answer_tokens
            if q.follow is not None:
                q.follow.chosen = True
            return Thought(th.answer, th.reasoning, u, "stop", q.root, q.exhausted)
        answered = [c for c in q.chains if c.answer]
        if not answered:
            u.reasoning_tokens = u.completion_tokens
            return Thought("", q.chains[0].reasoning if q.chains else "", u, "length", q.root, q.exhausted)
        keys = [self.answer_key(c.answer) for c in answered]
        if self.verifier is None or any(c.score is None for c in answered):  # a vote; greedy comes first, wins ties
            best = answered[pick(keys, [1.0] * len(keys), weighted=True)]
        else:
            best = answered[pick(keys, [c.score for c in answered], self.weighted)]
        best.node.chosen = True
        for phase in q.root.children:
            phase.chosen = any(n is best.node for n in phase.children)
        u.reasoning_tokens = u.completion_tokens - best.answer_tokens
        return Thought(best.answer, best.reasoning, u, "stop", q.root, q.exhausted)


def _left(q: _Q) -> int | None:
    return None if math.isinf(q.budget) else int(q.budget)


def _needs_verifier(action: str) -> bool:
    from ponder.think.registry import NEEDS_VERIFIER

    return action in NEEDS_VERIFIER
