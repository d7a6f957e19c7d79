"""Step-level search scored by a verifier: beam search and diverse verifier tree search.

A chain grows one reasoning step per engine call (stop string: the step
separator). Each round, every kept chain is expanded by sampling
`expansions` next steps; the verifier scores the candidates; each group keeps
its best. Beam search is one group of `beam_width` chains; DVTS splits the same
work into `n // expansions` independent groups of one chain each, so the
subtrees stay diverse. A chain that closes its thinking and answers is
finished and leaves its group; a group stops once it holds `finished_chains`
finished chains (its width by default: classic beam search, where each answer
takes a beam's slot). More than the width lets a narrow beam search on after its
first answer, so that the verifier chooses among several (as Snell et al.'s
beam search collects N). The answer is picked among finished chains (the best
one, or the best answer by summed score).

Two ways to read the verifier. While searching, a chain is ranked by
`step_aggregation` of its step scores, "last" by default: a Math-Shepherd PRM's
score of the newest step estimates the chance that the chain so far still ends
right, which is the value a search needs. "min" there would make siblings tie
whenever their shared prefix holds the weakest step, so the verifier could not
choose between them. The final answer is picked by `aggregation` (the
verifier's own unless set), as best-of-N picks.

The budget is a hard cap on generated tokens: a round asks for no more rows
than the remaining budget can pay for at full step length, narrowing to the
best chains when it cannot. When the search cannot go on it answers from the
best chain so far (anytime), closing its thinking if no chain had finished,
and sets `budget_exhausted` when the budget was what stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder import PonderError
from ponder.engine.base import Completion, SamplingParams, cut_at_stop
from ponder.reward.base import Verifier, aggregate, check_aggregation, rate
from ponder.think.base import Node, Question, Strategy, Thought, Usage
from ponder.think.stream import Listener
from ponder.think.verified import pick, verifier_setup


@dataclass
class Chain:
    """A partial (or finished) chain of thought in the search."""

    steps: list[str]
    path: list[Node]  # tree nodes from below the root down to this chain's last step
    tokens: int  # tokens generated along this chain, for the per-chain cap
    group: int
    score: float = 0.0  # the search's value of the chain: `step_aggregation` of `step_scores`
    step_scores: list[float] = field(default_factory=list)  # the verifier's, per step (and answer)
    text: str = ""  # the completion so far, exactly as generated (what a continuation is prompted with)
    answer: str | None = None  # set once the chain closed its thinking and answered
    pending: bool = False  # closed its thinking, but a stop string or the step cap cut the answer
    answer_tokens: int = 0

    @property
    def node(self) -> Node | None:
        return self.path[-1] if self.path else None


@dataclass
class _State:
    """One question's search."""

    question: Question
    prompt: str
    chain_cap: int  # the most tokens one chain may generate
    budget: int | None  # tokens left; None: no cap
    reserve: int  # held back (while nothing finished) to close the best chain and answer
    root: Node = field(default_factory=lambda: Node(text="", visits=1))
    usage: Usage = field(default_factory=Usage)
    beams: list[tuple[Chain, int]] = field(default_factory=list)  # (chain, expansions this round)
    finals: list[Chain] = field(default_factory=list)
    best_open: Chain | None = None  # best unfinished chain seen, to answer from if nothing finishes
    longest: int | None = None  # the most tokens one step (or closing step and answer) took so far
    exhausted: bool = False
    cancelled: bool = False  # nobody waits for the answer any more

    def spend(self, tokens: int) -> None:
        self.usage.completion_tokens += tokens
        if self.budget is not None:
            self.budget -= tokens

    def available(self) -> float:
        if self.budget is None:
            return float("inf")
        return self.budget - (self.reserve if not self.finals else 0)


class StepSearch(Strategy):
    """The search loop shared by beam search and DVTS (see the module docstring)."""

    name = "step search"

    def __init__(self, engine, chat, verifier: Verifier, *, groups: int, width: int, expansions: int,
                 lookahead: int = 0, finished_chains: int | None = None, weighted: bool = True,
                 aggregation: str | None = None, step_aggregation: str = "last", temperature: float = 0.8,
                 top_p: float = 1.0, seed: int | None = 0, max_depth: int = 64,
                 max_step_tokens: int = 128, answer_reserve: int = 16, answer_tokens: int = 64, **kw) -> None:
        super().__init__(engine, chat, **kw)
        finished_chains = width if finished_chains is None else finished_chains
        for what, v, least in (("groups", groups, 1), ("width", width, 1), ("expansions", expansions, 1),
                               ("lookahead", lookahead, 0), ("finished_chains", finished_chains, 1),
                               ("max_depth", max_depth, 1), ("max_step_tokens", max_step_tokens, 1),
                               ("answer_reserve", answer_reserve, 0), ("answer_tokens", answer_tokens, 1)):
            if v < least:
                raise PonderError(f"{self.name}: {what} must be >= {least}, got {v}")
        caps = engine.capabilities
        if not getattr(caps, "prefix_continuation", True):
            raise PonderError(f"{self.name} needs an engine that continues a partial answer (prefix continuation)")
        self.verifier, self.aggregation = verifier_setup(verifier, aggregation, self.name)
        self.step_aggregation = check_aggregation(step_aggregation)
        self.groups, self.width, self.expansions, self.lookahead = groups, width, expansions, lookahead
        self.finished_chains = finished_chains
        self.weighted, self.temperature, self.top_p, self.seed = weighted, temperature, top_p, seed
        self.max_depth, self.max_step_tokens = max_depth, max_step_tokens
        self.answer_reserve, self.answer_tokens = answer_reserve, answer_tokens
        self._close_tokens = engine.count_tokens(chat.think_close)

    # -- the loop ----------------------------------------------------------------

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        states = self._start(questions, budget)
        for s in states:
            s.beams = [(Chain([], [], 0, g), self.width * self.expansions) for g in range(self.groups)]
        for depth in range(self.max_depth):
            for i, s in enumerate(states):
                if listener is not None and listener.cancelled(i):
                    s.beams, s.cancelled = [], True
            if not any(s.beams for s in states):
                break
            fresh = self._expand(states, depth)
            self._finish_answers(states, fresh)
            self._score(states, fresh, open_too=not self.lookahead)  # lookahead scores the open ones itself
            if self.lookahead:
                self._look_ahead(states, fresh, depth)
            self._select(states, fresh)
        return [self._answer(s) for s in states]

    def _start(self, questions: list[Question], budget: int | None) -> list[_State]:
        if budget is not None and budget < 1:
            raise PonderError(f"the token budget must be >= 1, got {budget}")
        states = []
        for q in questions:
            prompt = self.prompt_of(q)
            reserve = 0 if budget is None else min(self.answer_reserve, budget // 4)
            s = _State(q, prompt, self.max_new_tokens(prompt), budget, reserve)
            s.usage.prompt_tokens = self.engine.count_tokens(prompt)
            states.append(s)
        return states

    def _expand(self, states: list[_State], depth: int) -> list[list[Chain]]:
        """Sample the next step of every kept chain; the candidates per question."""
        rows = []  # (state index, chain, n, cap)
        for si, s in enumerate(states):
            for chain, n, cap in self._plan(s):
                if chain.node is not None:
                    chain.node.visits += 1
                rows.append((si, chain, n, cap))
            s.beams = []
        fresh: list[list[Chain]] = [[] for _ in states]
        outs = self._run([(states[si], states[si].prompt + c.text, n, cap) for si, c, n, cap in rows],
                         self.temperature, (self.chat.step_sep,), depth)
        for (si, chain, n, cap), group in zip(rows, outs):
            for c in group:
                child = self._absorb(states[si], chain, c, cap)
                if child is not None:
                    fresh[si].append(child)
        return fresh

    def _plan(self, s: _State) -> list[tuple[Chain, int, int]]:
        """(chain, samples, max tokens) for this round.

        Every row gets the full step cap when the budget pays for that; else an equal share of
        what is left, when that is still twice the longest step this question has produced; else
        fewer rows, best chains first, at that length each; at the very end one short last try.
        """
        wanted = []
        for chain, n in sorted(s.beams, key=lambda b: -b[0].score):
            cap = min(self.max_step_tokens, s.chain_cap - chain.tokens)
            if cap >= 1:
                wanted.append((chain, n, cap))
            else:  # the chain is at the per-chain cap: it can take no more steps
                self._remember_open(s, chain)
        avail = s.available()
        if sum(n * cap for _, n, cap in wanted) <= avail:
            return wanted
        need = [cap if s.longest is None else min(cap, 2 * s.longest) for _, _, cap in wanted]
        rows = sum(n for _, n, _ in wanted)
        share = int(avail // rows) if rows else 0
        if rows and all(share >= nd for nd in need):
            return [(chain, n, min(cap, share)) for chain, n, cap in wanted]
        s.exhausted = True
        granted = [0] * len(wanted)
        progress = True
        while progress:  # round robin over the chains, best first, one sample at a time
            progress = False
            for i, (_, n, _) in enumerate(wanted):
                if granted[i] < n and need[i] <= avail:
                    granted[i], avail, progress = granted[i] + 1, avail - need[i], True
        plan = [(chain, g, nd) for (chain, _, _), g, nd in zip(wanted, granted, need) if g]
        if not plan and wanted and avail >= 1:
            plan = [(wanted[0][0], 1, int(min(wanted[0][2], avail)))]
        planned = {id(p[0]) for p in plan}
        for chain, _, _ in wanted:
            if id(chain) not in planned:
                self._remember_open(s, chain)
        return plan

    def _run(self, rows: list[tuple[_State, str, int, int]], temperature: float, stop: tuple[str, ...],
             tag: int) -> list[list[Completion]]:
        """One engine call per distinct (samples, max tokens); completions in row order, tokens charged."""
        out: list[list[Completion]] = [[] for _ in rows]
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, (_, _, n, cap) in enumerate(rows):
            by_shape.setdefault((n, cap), []).append(i)
        for (n, cap), idx in by_shape.items():
            seed = None if self.seed is None else self.seed + 7919 * tag + 31 * n + cap
            params = SamplingParams(n=n, temperature=temperature, top_p=self.top_p, max_tokens=cap, stop=stop,
                                    seed=seed)
            for i, group in zip(idx, self.engine.generate([rows[i][1] for i in idx], params)):
                out[i] = group
            for s in {id(rows[i][0]): rows[i][0] for i in idx}.values():
                s.usage.engine_calls += 1
        for (s, _, _, _), group in zip(rows, out):
            for c in group:
                s.spend(c.num_tokens)
        return out

    def _absorb(self, s: _State, parent: Chain, c: Completion, cap: int, record: bool = True) -> Chain | None:
        """The chain one completion makes of `parent`, or None (a dead leaf in the tree) when it neither
        ended a step nor closed its thinking. `record` False keeps it out of the tree (lookahead)."""
        text, _ = cut_at_stop(c.text, (self.chat.step_sep,))  # engines without stop strings
        sep, close = self.chat.step_sep, self.chat.think_close
        under = (parent.node or s.root) if record else Node(text="")
        child = Chain(list(parent.steps), list(parent.path), parent.tokens + c.num_tokens, parent.group,
                      text=parent.text + text)
        if close in text:
            step, _, tail = text.partition(close)
            child.steps += [step] if step.strip() else []
            child.answer_tokens = min(c.num_tokens, self.engine.count_tokens(tail))
            if self.chat.end in tail or c.finish_reason == "eos":
                child.answer = self.chat.parse(close + tail).answer
            elif c.finish_reason in ("stop", "length"):
                child.pending = True  # _finish_answers writes the rest
            else:
                child = None
        elif text.endswith(sep):
            step = text[: -len(sep)]
            child.steps.append(step)
        else:
            step, child = text, None  # cut short, or ended without answering
            if c.finish_reason == "length" and cap < self.max_step_tokens and s.budget is not None:
                s.exhausted = True
        node = Node(text=step)
        under.children.append(node)
        if child is not None:
            child.path.append(node)
            if record:
                s.longest = max(s.longest or 0, c.num_tokens)
        return child

    def _finish_answers(self, states: list[_State], fresh: list[list[Chain]]) -> None:
        """Answers that a stop string or the step cap cut short are written to their end, without stops."""
        rows, chains = [], []
        for s, cands in zip(states, fresh):
            left = s.budget  # shared by this question's answers, the reserve included
            for ch in cands:
                if not ch.pending:
                    continue
                cap = min(self.answer_tokens, s.chain_cap - ch.tokens, left if left is not None else self.answer_tokens)
                if cap >= 1:
                    rows.append((s, s.prompt + ch.text, 1, cap))
                    chains.append(ch)
                    left = left - cap if left is not None else None
        for ch, group in zip(chains, self._run(rows, 0.0, (), 10_000)):
            c = group[0]
            ch.text += c.text
            ch.tokens += c.num_tokens
            ch.answer_tokens += c.num_tokens
            tail = ch.text.partition(self.chat.think_close)[2]
            if self.chat.end in tail or c.finish_reason in ("eos", "stop"):
                ch.answer, ch.pending = self.chat.parse(self.chat.think_close + tail).answer, False
        for i, cands in enumerate(fresh):
            fresh[i] = [ch for ch in cands if not ch.pending]  # still unfinished: the cap cut the answer
            for ch in fresh[i]:
                ch.node.answer = ch.answer

    def _score(self, states: list[_State], fresh: list[list[Chain]], open_too: bool = True) -> None:
        flat = [(states[si], ch) for si, cands in enumerate(fresh) for ch in cands
                if open_too or ch.answer is not None]
        raw = self.verifier.score_batch([s.question for s, _ in flat], [ch.steps for _, ch in flat],
                                        [ch.answer for _, ch in flat])
        for (_, ch), scores in zip(flat, raw):
            ch.step_scores = scores
            ch.score = ch.node.score = aggregate(scores, self.step_aggregation)

    def _select(self, states: list[_State], fresh: list[list[Chain]]) -> None:
        """Finished chains leave their group; each group keeps its best open chains while it still
        needs finished ones."""
        for s, cands in zip(states, fresh):
            s.finals += [ch for ch in cands if ch.answer is not None]
            for g in {ch.group for ch in cands}:
                done = sum(1 for f in s.finals if f.group == g)
                open_ = sorted((ch for ch in cands if ch.group == g and ch.answer is None), key=lambda c: -c.score)
                distinct: dict[tuple[str, ...], Chain] = {}  # a step sampled twice must not take two slots
                for ch in open_:
                    distinct.setdefault(tuple(ch.steps), ch)
                slots = max(0, min(self.width, self.finished_chains - done))
                s.beams += [(ch, self.expansions) for ch in list(distinct.values())[:slots]]
                for ch in open_:
                    self._remember_open(s, ch)

    def _remember_open(self, s: _State, chain: Chain) -> None:
        best = s.best_open  # ties go to the longer chain: it got further
        if chain.steps and (best is None or (chain.score, len(chain.steps)) > (best.score, len(best.steps))):
            s.best_open = chain

    def _look_ahead(self, states: list[_State], fresh: list[list[Chain]], depth: int) -> None:
        """Re-score each open candidate by where greedy steps from it lead (those steps are not kept)."""
        ext = [(states[si], ch, ch) for si, cands in enumerate(fresh) for ch in cands if ch.answer is None]
        for j in range(self.lookahead):
            avail = {id(s): s.available() for s in states}
            rows, live = [], []
            for k, (s, _, sh) in enumerate(ext):
                cap = min(self.max_step_tokens, s.chain_cap - sh.tokens)
                if sh.answer is not None or sh.pending or cap < 1 or cap > avail[id(s)]:
                    continue
                avail[id(s)] -= cap
                rows.append((s, s.prompt + sh.text, 1, cap))
                live.append(k)
            for k, row, group in zip(live, rows, self._run(rows, 0.0, (self.chat.step_sep,), 20_000 + 64 * depth + j)):
                s, ch, sh = ext[k]
                nxt = self._absorb(s, sh, group[0], row[3], record=False)
                if nxt is not None:
                    if nxt.pending:  # the answer is all the verifier needs; cut or not, read what is there
                        nxt.answer = self.chat.parse(self.chat.think_close + nxt.text.partition(
                            self.chat.think_close)[2]).answer
                    ext[k] = (s, ch, nxt)
        scores = rate(self.verifier, [s.question for s, _, _ in ext], [sh.steps for _, _, sh in ext],
                      [sh.answer for _, _, sh in ext], self.step_aggregation)
        for (_, ch, _), score in zip(ext, scores):
            ch.score = ch.node.score = score

    # -- the answer ----------------------------------------------------------------

    def _force(self, s: _State) -> None:
        """Nothing finished: close the best open chain's thinking and let it answer, if the budget allows."""
        ch = s.best_open
        if ch is None:
            return
        cap = min(self.answer_tokens, s.chain_cap - ch.tokens - self._close_tokens)
        if s.budget is not None:
            cap = min(cap, s.budget - self._close_tokens)
        if cap < 1:
            return
        s.spend(self._close_tokens)  # the marker is written for the model: it is output all the same
        c = self._run([(s, s.prompt + ch.text + self.chat.think_close, 1, cap)], 0.0, (), 30_000)[0][0]
        answer = self.chat.parse(self.chat.think_close + c.text).answer
        node = Node(text="", answer=answer)
        (ch.node or s.root).children.append(node)
        s.finals.append(Chain(ch.steps, ch.path + [node], ch.tokens + c.num_tokens, ch.group, ch.score,
                              ch.step_scores, answer=answer, answer_tokens=c.num_tokens))

    def _answer(self, s: _State) -> Thought:
        for chain, _ in s.beams:  # stopped at max_depth: the open chains are candidates to answer from
            self._remember_open(s, chain)
        if not any(f.answer for f in s.finals) and not s.cancelled:
            self._force(s)
        answered = [f for f in s.finals if f.answer]
        s.usage.reasoning_tokens = s.usage.completion_tokens
        if not answered:
            best = s.best_open
            return Thought("", self.chat.step_sep.join(best.steps) if best else "", s.usage, "length", s.root,
                           s.exhausted)
        final = [aggregate(f.step_scores, self.aggregation) if f.step_scores else f.score for f in answered]
        best = answered[pick([self.answer_key(f.answer) for f in answered], final, self.weighted)]
        for node in best.path:
            node.chosen = True
        s.usage.reasoning_tokens -= best.answer_tokens
        return Thought(best.answer, self.chat.step_sep.join(best.steps), s.usage, "stop", s.root, s.exhausted)


class BeamSearch(StepSearch):
    """Step-level beam search: keep the `beam_width` best chains, each expanded `expansions` ways per step."""

    name = "beam"

    def __init__(self, engine, chat, verifier: Verifier, *, beam_width: int = 4, expansions: int = 4, **kw) -> None:
        if beam_width < 1:
            raise PonderError(f"beam: beam_width must be >= 1, got {beam_width}")
        super().__init__(engine, chat, verifier, groups=1, width=beam_width, expansions=expansions, **kw)


class DVTS(StepSearch):
    """Diverse verifier tree search: `n // expansions` independent subtrees, each kept to its one best chain."""

    name = "dvts"

    def __init__(self, engine, chat, verifier: Verifier, *, n: int = 16, expansions: int = 4, **kw) -> None:
        if n < 1 or expansions < 1:
            raise PonderError(f"dvts: n and expansions must be >= 1, got n={n}, expansions={expansions}")
        super().__init__(engine, chat, verifier, groups=max(1, n // expansions), width=1, expansions=expansions, **kw)
