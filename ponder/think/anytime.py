"""Whole sampled chains that still answer when the budget cuts them all.

A budget split over n chains cuts the long ones before they answer. When it cuts every chain of a question,
a strategy of whole chains would have nothing to say, while step search answers from its best prefix. So
with `answer_reserve` R these strategies hold R tokens of each chain's share back (at most a quarter):

1. every chain runs to its share less R, in one call;
2. a question where some chain answered lets its cut chains run on to their whole share, as without R;
3. in a question where none did, all its cut chains but one run on to their whole share too; the one left
   (the first) goes on a step at a time (stopping at the step separator or the close marker) while its
   share still leaves room to close the thinking and answer: the marker and the longest answer seen in
   the batch, at most R. If it closes its thinking on the way, it writes its answer on to its share;
4. if still no chain answered, the one that got furthest (best_of_n: the one its verifier likes best) is
   closed after its last whole step and the model answers greedily from there: the best answer so far,
   with `budget_exhausted` set.

Without a budget, with R = 0 (the default), or on an engine that cannot continue a partial answer, chains
run to their share in one call and a question whose chains were all cut has no answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder import PonderError
from ponder.engine.base import Completion, SamplingParams
from ponder.think.base import Question, Strategy, drop_cut_answer, split_completion
from ponder.think.stream import Listener, RowListener

Part = tuple[str, str, int, str]  # split_completion's (reasoning, answer, answer_tokens, finish_reason)


@dataclass
class Closed:
    """A cut chain closed by force: its whole steps, the answer, and what closing it generated."""

    reasoning: str
    answer: str
    answer_tokens: int
    tokens: int  # the close marker and the answer: spent on top of the chain's own tokens

    def part(self) -> Part:
        """As split_completion would give it; a close that wrote no answer leaves the chain unanswered."""
        if not self.answer:
            return self.reasoning, "", 0, "length"
        return self.reasoning, self.answer, self.answer_tokens, "stop"


class ChainStrategy(Strategy):
    """A strategy of whole chains that answers anytime (see the module docstring)."""

    def __init__(self, engine, chat, *, answer_reserve: int = 0, answer_tokens: int = 64, **kw) -> None:
        super().__init__(engine, chat, **kw)
        for what, v, least in (("answer_reserve", answer_reserve, 0), ("answer_tokens", answer_tokens, 1)):
            if v < least:
                raise PonderError(f"{what} must be >= {least}, got {v}")
        self.answer_reserve, self.answer_tokens = answer_reserve, answer_tokens
        self._close_tokens = engine.count_tokens(chat.think_close)
        self._anytime = answer_reserve > 0 and getattr(engine.capabilities, "prefix_continuation", True)

    def sample_chains(self, questions: list[Question], budget: int | None, listener: Listener | None, *, n: int,
                      temperature: float, top_p: float, seed: int | None,
                      stream_text: bool = False) -> tuple[list[list[Completion]], list[int]]:
        """n sampled whole chains per question, sharing the budget (a tiny budget buys fewer chains), and the
        engine calls each question took part in.

        Each question's chains get the room its own prompt leaves in the context: questions with the same
        cap share engine calls, so a long question never shortens the chains of the others in its batch."""
        prompts = [self.prompt_of(q) for q in questions]
        n = n if budget is None else max(1, min(n, budget))
        by_cap: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_cap.setdefault(self.max_new_tokens(p, budget, chains=n), []).append(i)
        if len(by_cap) == 1:
            return self._sample_capped(prompts, next(iter(by_cap)), budget, listener, n=n, temperature=temperature,
                                       top_p=top_p, seed=seed, stream_text=stream_text)
        groups: list[list[Completion]] = [[] for _ in prompts]
        calls = [0] * len(prompts)
        for full, rows in by_cap.items():
            sub = None if listener is None else RowListener(listener, rows)
            got, called = self._sample_capped([prompts[i] for i in rows], full, budget, sub, n=n,
                                              temperature=temperature, top_p=top_p, seed=seed, stream_text=stream_text)
            for i, g, c in zip(rows, got, called):
                groups[i], calls[i] = g, c
        return groups, calls

    def sample_answers(self, questions: list[Question], budget: int | None, listener: Listener | None, *, n: int,
                       temperature: float, top_p: float, seed: int | None
                       ) -> tuple[list[list[Completion]], list[list[Part]], list[Closed | None], list[int]]:
        """The n chains of each question read as answers to vote or pick among: (chains, their parts with any
        answer the cap cut short dropped, the chain closed where the budget cut them all, engine calls)."""
        groups, calls = self.sample_chains(questions, budget, listener, n=n, temperature=temperature, top_p=top_p,
                                           seed=seed)
        parts = [[drop_cut_answer(split_completion(self.chat, self.engine, c)) for c in group] for group in groups]
        closed = self.close_cut(questions, groups, parts, budget, listener)
        return groups, parts, closed, calls

    def _sample_capped(self, prompts: list[str], full: int, budget: int | None, listener: Listener | None, *,
                       n: int, temperature: float, top_p: float, seed: int | None,
                       stream_text: bool) -> tuple[list[list[Completion]], list[int]]:
        """sample_chains for prompts that share the per-chain cap `full`."""
        reserve = min(self.answer_reserve, full // 4) if budget is not None and self._anytime else 0
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, seed=seed, max_tokens=full - reserve)
        groups = self.generate(prompts, params, listener, stream_text=stream_text)
        if not reserve:
            return groups, [1] * len(groups)
        run = _Continue(self, prompts, groups, full, temperature, top_p, seed, listener, stream_text)
        run.on_to_share(answered=True)
        run.step_on(reserve)
        run.on_to_share(answered=True)
        return groups, [1 + c for c in run.calls_of]

    def unfinished(self, c: Completion) -> bool:
        """Cut by a token cap (or at a step separator) before its answer was written to its end."""
        return c.finish_reason in ("length", "stop") and not self.chat.parse(c.text).finished

    def budget_decided(self, budget: int | None, group: list[Completion], answer: str, shut: Closed | None) -> bool:
        """The budget decided the answer: a cut chain was closed, or the budget cut chains and none answered."""
        return shut is not None or (budget is not None and not answer and any(
            self.unfinished(c) and c.num_tokens < self.max_tokens for c in group))

    def whole_steps(self, c: Completion) -> str:
        """A cut chain's reasoning up to its last finished step ('' when it finished none)."""
        reasoning = self.chat.parse(c.text).reasoning
        return reasoning if self.chat.think_close in c.text else reasoning.rpartition(self.chat.step_sep)[0]

    def chain_to_close(self, questions: list[Question], cut: list[list[int]],
                       groups: list[list[Completion]]) -> list[int]:
        """Per question, which of its cut chains to close: the one with the most whole steps, first on ties."""
        return [max(ids, key=lambda ci: (len(self.chat.steps(self.whole_steps(g[ci]))), -ci))
                for ids, g in zip(cut, groups)]

    def close_cut(self, questions: list[Question], groups: list[list[Completion]], parts: list[list[Part]],
                  budget: int | None, listener: Listener | None = None) -> list[Closed | None]:
        """For each question whose chains all lack an answer and the budget cut: one chain closed, or None.

        The closed chain's part in `parts` becomes `Closed.part()`; the strategy counts `Closed.tokens`."""
        out: list[Closed | None] = [None] * len(questions)
        if budget is None or not self._anytime:
            return out
        todo = [qi for qi, ps in enumerate(parts) if not any(p[1] for p in ps)
                and not (listener is not None and listener.cancelled(qi))]
        cut = {qi: [ci for ci, c in enumerate(groups[qi]) if self.unfinished(c)
                    and self.chat.steps(self.whole_steps(c))] for qi in todo}
        todo = [qi for qi in todo if cut[qi]]
        if not todo:
            return out
        chosen = self.chain_to_close([questions[qi] for qi in todo], [cut[qi] for qi in todo],
                                     [groups[qi] for qi in todo])
        limit = getattr(self.engine, "max_positions", None)
        by_cap: dict[int, list[tuple[int, int, str, str]]] = {}  # cap -> (question, chain, reasoning, prompt)
        for qi, ci in zip(todo, chosen):
            reasoning = self.whole_steps(groups[qi][ci])
            prompt = self.prompt_of(questions[qi]) + reasoning + self.chat.think_close  # as trained: no separator
            cap = min(self.answer_tokens, budget - sum(c.num_tokens for c in groups[qi]) - self._close_tokens)
            if limit:
                cap = min(cap, limit - self.engine.count_tokens(prompt))
            if cap >= 1:
                by_cap.setdefault(cap, []).append((qi, ci, reasoning, prompt))
        for cap, rows in by_cap.items():
            params = SamplingParams(n=1, temperature=0.0, max_tokens=cap, seed=0)
            for (qi, ci, reasoning, _), group in zip(rows, self.engine.generate([r[3] for r in rows], params)):
                c = group[0]
                answer = self.chat.parse(self.chat.think_close + c.text).answer  # '' is no answer, still paid
                out[qi] = Closed(reasoning, answer, c.num_tokens, self._close_tokens + c.num_tokens)
                parts[qi][ci] = out[qi].part()
        return out


class _Continue:
    """Steps 2 and 3 of the module docstring: cut chains continued in place, one engine call per length."""

    def __init__(self, strategy: ChainStrategy, prompts: list[str], groups: list[list[Completion]], full: int,
                 temperature: float, top_p: float, seed: int | None, listener: Listener | None,
                 stream_text: bool) -> None:
        self.s, self.prompts, self.groups, self.full = strategy, prompts, groups, full
        self.temperature, self.top_p, self.seed, self.listener = temperature, top_p, seed, listener
        self.stream_text = stream_text and listener is not None
        self.calls = 0
        self.calls_of = [0] * len(groups)  # per question

    def answered(self, qi: int) -> bool:
        return any(self.s.chat.parse(c.text).finished for c in self.groups[qi])

    def cut(self, answered: bool) -> list[tuple[int, int]]:
        """(question, chain) of the cut chains with room left, in questions that have (or lack) an answer."""
        return [(qi, ci) for qi, g in enumerate(self.groups) if self.answered(qi) == answered
                and not (self.listener is not None and self.listener.cancelled(qi))
                for ci, c in enumerate(g) if self.s.unfinished(c) and c.num_tokens < self.full]

    def on_to_share(self, answered: bool) -> None:
        self.extend({(qi, ci): self.full - self.groups[qi][ci].num_tokens for qi, ci in self.cut(answered)}, ())

    def step_on(self, reserve: int) -> None:
        sep, close = self.s.chat.step_sep, self.s.chat.think_close
        holder: dict[int, int] = {}  # per question, the one cut chain that keeps room to close
        for qi, ci in self.cut(answered=False):
            holder.setdefault(qi, ci)
        self.extend({(qi, ci): self.full - self.groups[qi][ci].num_tokens for qi, ci in self.cut(answered=False)
                     if holder[qi] != ci}, ())
        answers = [self.s.engine.count_tokens(c.text.partition(close)[2]) for g in self.groups for c in g
                   if self.s.chat.parse(c.text).finished]
        need = min(reserve, self.s._close_tokens + max(answers, default=reserve))
        live = [(qi, ci) for qi, ci in holder.items() if close not in self.groups[qi][ci].text]
        while live:
            rooms = {(qi, ci): self.full - self.groups[qi][ci].num_tokens - need for qi, ci in live
                     if not self.answered(qi)}
            self.extend({k: r for k, r in rooms.items() if r >= 1}, (sep, close))
            live = [(qi, ci) for qi, ci in live if (qi, ci) in rooms and rooms[qi, ci] >= 1
                    and self.groups[qi][ci].finish_reason == "stop" and close not in self.groups[qi][ci].text]
        # an answer begun on the way, cut by the separator or the room: written on to the whole share
        begun = [(qi, ci) for qi, g in enumerate(self.groups) for ci, c in enumerate(g)
                 if close in c.text and self.s.unfinished(c) and c.num_tokens < self.full]
        self.extend({(qi, ci): self.full - self.groups[qi][ci].num_tokens for qi, ci in begun}, ())

    def extend(self, caps: dict[tuple[int, int], int], stop: tuple[str, ...]) -> None:
        """Continue each chain by up to its cap: one engine call per distinct cap."""
        by_cap: dict[int, list[tuple[int, int]]] = {}
        for key, cap in caps.items():
            by_cap.setdefault(cap, []).append(key)
        for cap, idx in by_cap.items():
            self.calls += 1
            seed = None if self.seed is None else self.seed + 7919 * self.calls + cap
            params = SamplingParams(n=1, temperature=self.temperature, top_p=self.top_p, max_tokens=cap, stop=stop,
                                    seed=seed)
            outs = self.s.engine.generate([self.prompts[qi] + self.groups[qi][ci].text for qi, ci in idx], params)
            for qi in {qi for qi, _ in idx}:
                self.calls_of[qi] += 1
            for (qi, ci), (d,) in zip(idx, outs):
                c = self.groups[qi][ci]
                if self.stream_text:
                    self.tell(qi, c.text, d.text)
                self.groups[qi][ci] = Completion(c.text + d.text, c.token_ids + d.token_ids, d.finish_reason,
                                                 c.prompt_tokens, d.stop_reason)

    def tell(self, qi: int, before: str, text: str) -> None:
        """The listener hears a streamed chain's continuation as reasoning, then answer."""
        close, end = self.s.chat.think_close, self.s.chat.end
        reasoning, _, answer = ("", "", text) if close in before else text.partition(close)
        if reasoning:
            self.listener.reasoning(qi, reasoning)
        answer = answer.partition(end)[0] if end else answer
        if answer:
            self.listener.answer(qi, answer)
