"""Strategies that only sample whole chains: one greedy chain, or a majority vote."""

from __future__ import annotations

from collections import Counter

from ponder import PonderError
from ponder.think.anytime import ChainStrategy, Closed
from ponder.think.base import Node, Question, Thought, Usage, split_completion
from ponder.think.stream import Listener


class ChainOfThought(ChainStrategy):
    """One chain of thought, greedy by default."""

    def __init__(self, *args, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = 0, **kw) -> None:
        super().__init__(*args, **kw)
        self.temperature, self.top_p, self.seed = temperature, top_p, seed

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        groups, calls = self.sample_chains(questions, budget, listener, n=1, temperature=self.temperature,
                                           top_p=self.top_p, seed=self.seed, stream_text=True)
        parts = [[split_completion(self.chat, self.engine, g[0])] for g in groups]
        closed = self.close_cut(questions, groups, parts, budget, listener)
        out = []
        for group, (part,), shut, called in zip(groups, parts, closed, calls):
            c = group[0]
            reasoning, answer, answer_tokens, finish = part
            if shut is not None and answer and listener is not None:
                listener.answer(len(out), answer)
            tokens = c.num_tokens + (shut.tokens if shut else 0)
            usage = Usage(c.prompt_tokens, tokens, tokens - answer_tokens, called + (shut is not None))
            tree = Node(text=reasoning, chosen=True, visits=1, answer=answer or None)
            cut = self.budget_decided(budget, group, answer, shut)
            out.append(Thought(answer, reasoning, usage, finish, tree, cut))
        return out


class MajorityVote(ChainStrategy):
    """Self-consistency: sample n chains, answer with the most common final answer."""

    def __init__(self, *args, n: int = 5, temperature: float = 0.8, top_p: float = 1.0, seed: int | None = 0,
                 **kw) -> None:
        super().__init__(*args, **kw)
        if n < 1:
            raise PonderError(f"majority needs n >= 1, got {n}")
        self.n, self.temperature, self.top_p, self.seed = n, temperature, top_p, seed

    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        groups, parts, closed, calls = self.sample_answers(questions, budget, listener, n=self.n,
                                                           temperature=self.temperature, top_p=self.top_p,
                                                           seed=self.seed)
        return [self._vote(*row, budget) for row in zip(groups, parts, closed, calls)]

    def _vote(self, group, parts, shut: Closed | None, called: int, budget: int | None) -> Thought:
        answered = [i for i, p in enumerate(parts) if p[1]]
        completion_tokens = sum(c.num_tokens for c in group) + (shut.tokens if shut else 0)
        calls = called + (shut is not None)
        root = Node(text="", visits=len(group))
        if not answered:
            usage = Usage(group[0].prompt_tokens, completion_tokens, completion_tokens, calls)
            root.children = [Node(text=p[0], visits=1) for p in parts]
            return Thought("", parts[0][0], usage, "length", root, self.budget_decided(budget, group, "", shut))
        votes = Counter(self.answer_key(parts[i][1]) for i in answered)
        best_key, best_votes = votes.most_common(1)[0]
        chosen = next(i for i in answered if self.answer_key(parts[i][1]) == best_key)
        reasoning, answer, answer_tokens, _ = parts[chosen]
        usage = Usage(group[0].prompt_tokens, completion_tokens, completion_tokens - answer_tokens, calls)
        for i, p in enumerate(parts):
            share = votes.get(self.answer_key(p[1]), 0) / len(answered) if p[1] else 0.0
            root.children.append(Node(text=p[0], score=share, visits=1, chosen=i == chosen, answer=p[1] or None))
        return Thought(answer, reasoning, usage, "stop", root, self.budget_decided(budget, group, answer, shut))
