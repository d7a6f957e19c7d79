"""Scripted stand-ins for a model and a verifier, shared by the strategy tests."""

from __future__ import annotations

import re

from ponder.engine.base import Capabilities, Completion, SamplingParams, cut_at_stop

TOKEN = re.compile(r"<\|end\|>|</think>|<think>|<\|user\|>|<\|assistant\|>|.", re.S)


# chains of 2-5 steps with answers 0-3, one of them written over several lines: enough variety for the
# property tests over budgets
WORLD = ["\n".join(f"{p}{i}=step{i}" for i in range(2)) + "</think>\nso 3\nor 4<|end|>" for p in "gh"] + \
        ["\n".join(f"{p}{i}=step{i}" for i in range(5)) + f"</think>{k}<|end|>" for k, p in enumerate("abcd")] + \
        ["\n".join(f"{p}{i}=step{i}" for i in range(3)) + "</think>3<|end|>" for p in "ef"]


def tokens(text: str) -> list[str]:
    """Markers are one token, every other character is one."""
    return TOKEN.findall(text)


class WorldEngine:
    """A scripted model: it can only write one of `chains` (whole completions).

    A call continues each prompt with the chains that extend what is already
    written after `<think>`; sample j of a prompt takes the j-th of them (the
    same prompt repeated in one call takes the next ones), wrapping around.
    """

    capabilities = Capabilities(streaming=False)

    def __init__(self, chains: list[str], fallback: str = "0<|end|>") -> None:
        self.chains, self.fallback = chains, fallback
        self.generated = 0
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def count_tokens(self, text: str) -> int:
        return len(tokens(text))

    def generate(self, prompts, params, on_step=None):
        self.calls.append((list(prompts), params))
        seen: dict[str, int] = {}
        out = []
        for p in prompts:
            written = p.split("<think>", 1)[1]
            options = [c[len(written):] for c in self.chains if c.startswith(written)] or [self.fallback]
            first = seen.get(p, 0)
            seen[p] = first + params.n
            out.append([self._complete(options[(first + j) % len(options)], params, p) for j in range(params.n)])
        return out

    def _complete(self, rest: str, params: SamplingParams, prompt: str) -> Completion:
        text, stop = cut_at_stop(rest, params.stop)
        toks = tokens(text)
        finish = "stop" if stop else "eos" if text.endswith("<|end|>") else "length"
        if len(toks) > params.max_tokens:
            toks, finish, stop = toks[: params.max_tokens], "length", None
        self.generated += len(toks)
        return Completion("".join(toks), list(range(len(toks))), finish, self.count_tokens(prompt), stop)


class TableVerifier:
    """Scores each step (and answer, as `=ANSWER`) from a table; anything else gets `default`."""

    def __init__(self, table: dict[str, float], aggregation: str = "last", default: float = 0.5) -> None:
        self.table, self.aggregation, self.default = table, aggregation, default
        self.calls = 0

    def score_batch(self, questions, chains, answers):
        self.calls += 1
        return [[self.table.get(s, self.default) for s in steps] +
                ([self.table.get(f"={a}", self.default)] if a is not None else [])
                for steps, a in zip(chains, answers)]


class VoteEngine:
    """Each completion for a question takes the next of its scripted answers (wrapping around), greedy or not.

    A completion is `work\\nso A</think>A<|end|>`: markers are one token, other characters one each.
    """

    capabilities = Capabilities(streaming=False)

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers, self.cursor, self.generated = answers, {q: 0 for q in answers}, 0
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def count_tokens(self, text: str) -> int:
        return len(tokens(text))

    def generate(self, prompts, params, on_step=None):
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            q = p.split("<|user|>", 1)[1].split("<|assistant|>", 1)[0]
            group = []
            for _ in range(params.n):
                a = self.answers[q][self.cursor[q] % len(self.answers[q])]
                self.cursor[q] += 1
                toks = tokens(f"work\nso {a}</think>{a}<|end|>")
                finish = "eos"
                if len(toks) > params.max_tokens:
                    toks, finish = toks[: params.max_tokens], "length"
                self.generated += len(toks)
                group.append(Completion("".join(toks), list(range(len(toks))), finish, self.count_tokens(p)))
            out.append(group)
        return out


CHAIN = len(tokens("work\nso 5</think>5<|end|>"))  # tokens of one scripted chain
