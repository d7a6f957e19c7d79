"""Sequential self-revision: each attempt sees the earlier answers and is asked to think again.

Attempt 1 answers the question (greedy by default); attempt i+1 is prompted
with the question, the last `context` earlier answers and the chat format's
revision instruction (`ChatFormat.revision_prompt`; earlier reasoning is not
fed back). The final answer is picked over all attempts, never taken blindly
from the last one, since unverified self-correction is known to make answers
worse: with a verifier, weighted best-of-N over the attempts (or the single
best one); without, the most common answer (ties go to the earlier attempt).

The budget is a hard cap: attempt i may use at most what is left divided by
the attempts still to come, so later attempts inherit what earlier ones left.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder import PonderError
from ponder.engine.base import Completion, SamplingParams
from ponder.reward.base import Verifier, check_aggregation, rate
from ponder.think.base import (Node, Question, Strategy, Thought, Usage, context_room, drop_cut_answer,
                               split_completion)
from ponder.think.stream import Listener
from ponder.think.verified import pick


@dataclass
class _Attempt:
    reasoning: str
    answer: str  # "" when it did not answer (cut by its cap)
    answer_tokens: int
    score: float | None = None


@dataclass
class _Run:
    """One question's attempts."""

    question: Question
    budget: int | None  # tokens left; None: no cap
    usage: Usage
    attempts: list[_Attempt]
    exhausted: bool = False
    done: bool = False


class Revise(Strategy):
    """`n` attempts in sequence, each revising the earlier answers; the verifier (or a vote) picks."""

    def __init__(self, engine, chat, verifier: Verifier | None = None, *, n: int = 4, context: int = 4,
                 first_temperature: float = 0.0, temperature: float = 0.8, top_p: float = 1.0,
                 seed: int | None = 0, weighted: bool = True, aggregation: str | None = None,
                 accept: float | None = None, **kw) -> None:
        super().__init__(engine, chat, **kw)
        if n < 1:
            raise PonderError(f"revise needs n >= 1 attempts, got {n}")
        if context < 1:
            raise PonderError(f"revise: context must be >= 1 earlier answers, got {context}")
        if verifier is not None and not callable(getattr(verifier, "score_batch", None)):
            raise PonderError("revise: the verifier must be a reward model (score_batch)")
        if accept is not None and verifier is None:
            raise PonderError("revise: accept (stop once the verifier scores an answer that high) needs a verifier")
        self.verifier = verifier
        self.aggregation = check_aggregation(aggregation or getattr(verifier, "aggregation", "last"))
        self.n, self.context, self.first_temperature, self.temperature = n, context, first_temperature, temperature
        self.top_p, self.seed, self.weighted, self.accept = top_p, seed, weighted, accept

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        if budget is not None and budget < 1:
            raise PonderError(f"the token budget must be >= 1, got {budget}")
        runs = [_Run(q, budget, Usage(), []) for q in questions]
        for i in range(self.n):
            rows = []  # (run, prompt, cap)
            for qi, r in enumerate(runs):
                if listener is not None and listener.cancelled(qi):
                    r.done = True
                if r.done:
                    continue
                prompt = self.chat.revision_prompt(r.question, [a.answer for a in r.attempts if a.answer][-self.context:])
                share = None if r.budget is None else max(1, r.budget // (self.n - i))
                if r.budget is not None and r.budget < 1:
                    r.done = r.exhausted = True
                    continue
                room = context_room(self.engine, prompt) if i > 0 else None
                if room is not None and room < 1:
                    r.done = True  # the earlier answers fill the context: no room to revise, keep what it has
                    continue
                rows.append((r, prompt, self.max_new_tokens(prompt, share)))
            if not rows:
                break
            new = self._attempt(rows, i)
            self._score(new)
            if self.accept is not None:
                for r, a in new:
                    r.done = r.done or (a.score is not None and a.score >= self.accept)
        return [self._answer(r) for r in runs]

    def _attempt(self, rows: list[tuple[_Run, str, int]], i: int) -> list[tuple[_Run, _Attempt]]:
        """One attempt for each row: one engine call per distinct token cap."""
        temperature = self.first_temperature if i == 0 else self.temperature
        outs: list[Completion | None] = [None] * len(rows)
        by_cap: dict[int, list[int]] = {}
        for k, (_, _, cap) in enumerate(rows):
            by_cap.setdefault(cap, []).append(k)
        for cap, idx in by_cap.items():
            seed = None if self.seed is None else self.seed + 1009 * i
            params = SamplingParams(n=1, temperature=temperature, top_p=self.top_p, max_tokens=cap, seed=seed)
            for k, group in zip(idx, self.engine.generate([rows[k][1] for k in idx], params)):
                outs[k] = group[0]
        new = []
        for (r, _, cap), c in zip(rows, outs):
            reasoning, answer, answer_tokens, finish = drop_cut_answer(split_completion(self.chat, self.engine, c))
            if finish == "length":
                r.exhausted = r.exhausted or (r.budget is not None and cap < self.max_tokens)
            r.usage.add(Usage(c.prompt_tokens, c.num_tokens, 0, 1))
            if r.budget is not None:
                r.budget -= c.num_tokens
            a = _Attempt(reasoning, answer, answer_tokens)
            r.attempts.append(a)
            new.append((r, a))
        return new

    def _score(self, new: list[tuple[_Run, _Attempt]]) -> None:
        if self.verifier is None:
            return
        scored = [(r, a) for r, a in new if a.answer]
        scores = rate(self.verifier, [r.question for r, _ in scored], [self.chat.steps(a.reasoning) for _, a in scored],
                      [a.answer for _, a in scored], self.aggregation)
        for (_, a), s in zip(scored, scores):
            a.score = s

    def _answer(self, r: _Run) -> Thought:
        root = Node(text="", visits=1)
        parent = root
        for a in r.attempts:  # each attempt is a child of the one it revised
            node = Node(text=a.reasoning, score=a.score, visits=1, answer=a.answer or None)
            parent.children.append(node)
            parent = node
        nodes = list(root.walk())[1:]
        answered = [k for k, a in enumerate(r.attempts) if a.answer]
        u = r.usage
        if not answered:
            u.reasoning_tokens = u.completion_tokens
            last = r.attempts[-1].reasoning if r.attempts else ""
            return Thought("", last, u, "length", root, r.exhausted)
        keys = [self.answer_key(r.attempts[k].answer) for k in answered]
        if self.verifier is None:  # a vote: every attempt weighs the same
            i = pick(keys, [1.0] * len(keys), weighted=True)
        else:
            i = pick(keys, [r.attempts[k].score for k in answered], self.weighted)
        chosen = r.attempts[answered[i]]
        nodes[answered[i]].chosen = True
        u.reasoning_tokens = u.completion_tokens - chosen.answer_tokens
        return Thought(chosen.answer, chosen.reasoning, u, "stop", root, r.exhausted)
