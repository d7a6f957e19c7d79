"""What every strategy returns: an answer, the hidden reasoning, the tree, honest usage."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from ponder import PonderError
from ponder.engine.base import Completion, Engine, SamplingParams
from ponder.model.chat import ChatFormat, Message
from ponder.think.stream import Listener, ThinkSplitter

# A question is its text, or a whole conversation whose last message is the user's.
Question = str | Sequence[Message]


@dataclass
class Usage:
    """Token counts over every branch a strategy generated, shown or not."""

    prompt_tokens: int = 0
    completion_tokens: int = 0  # every generated token, hidden ones included
    reasoning_tokens: int = 0  # generated tokens the user does not see
    engine_calls: int = 0

    @property
    def answer_tokens(self) -> int:
        return self.completion_tokens - self.reasoning_tokens

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.engine_calls += other.engine_calls


@dataclass
class Node:
    """One reasoning step (or whole chain) in a strategy's search tree."""

    text: str
    score: float | None = None
    visits: int = 0
    chosen: bool = False
    children: list["Node"] = field(default_factory=list)
    answer: str | None = None  # set on a node whose chain ended with an answer

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        known = {f.name for f in fields(cls)}
        kids = [cls.from_dict(c) for c in d.get("children", [])]
        return cls(**{k: v for k, v in d.items() if k in known and k != "children"}, children=kids)

    def walk(self):
        """This node and every node below it, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class Thought:
    answer: str
    reasoning: str
    usage: Usage
    finish_reason: str = "stop"  # "length" when the budget ran out before an answer
    tree: Node | None = None
    budget_exhausted: bool = False  # the search stopped at the budget; the answer is the best found by then

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["usage"]["answer_tokens"] = self.usage.answer_tokens
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Thought":
        usage = {k: v for k, v in d["usage"].items() if k in {f.name for f in fields(Usage)}}
        tree = Node.from_dict(d["tree"]) if d.get("tree") is not None else None
        return cls(d["answer"], d["reasoning"], Usage(**usage), d.get("finish_reason", "stop"), tree,
                   d.get("budget_exhausted", False))

    @classmethod
    def from_json(cls, text: str) -> "Thought":
        return cls.from_dict(json.loads(text))


AnswerKey = Callable[[str], str]


def default_key(answer: str) -> str:
    return " ".join(answer.split())


def context_room(engine, prompt: str) -> int | None:
    """New tokens the prompt leaves room for in the engine's context (None: no limit known)."""
    limit = getattr(engine, "max_positions", None)
    return limit - engine.count_tokens(prompt) if limit else None


def context_cap(engine, prompt: str, cap: int) -> int:
    """`cap` new tokens, or fewer where the prompt leaves less room in the engine's context. One prompt at a
    time: a batch capped by its longest prompt would give a question's chains a length set by its batch-mates."""
    room = context_room(engine, prompt)
    if room is None:
        return cap
    if room < 1:
        raise PonderError(f"the question is too long: the prompt fills the model's "
                          f"{engine.max_positions}-token context")
    return min(cap, room)


class Strategy(ABC):
    """Turns questions into Thoughts using only an engine and a chat format.

    `max_tokens` caps one chain; the `budget` of a call caps every token
    generated for a question, over all its chains (a hard cap: the user's
    `max_completion_tokens`).
    """

    def __init__(self, engine: Engine, chat: ChatFormat, max_tokens: int = 768,
                 answer_key: AnswerKey = default_key) -> None:
        if max_tokens < 1:
            raise PonderError(f"max_tokens must be >= 1, got {max_tokens}")
        self.engine, self.chat, self.max_tokens, self.answer_key = engine, chat, max_tokens, answer_key

    def solve(self, question: Question, budget: int | None = None) -> Thought:
        return self.solve_batch([question], budget)[0]

    def prompt_of(self, question: Question) -> str:
        return self.chat.prompt(question) if isinstance(question, str) else self.chat.render(question)

    def max_new_tokens(self, prompt: str, budget: int | None = None, chains: int = 1) -> int:
        """The per-chain cap: `max_tokens`, the budget shared by `chains` chains, and the room
        the prompt leaves in the engine's context, whichever is least."""
        cap = self.max_tokens
        if budget is not None:
            if budget < 1:
                raise PonderError(f"the token budget must be >= 1, got {budget}")
            cap = min(cap, max(1, budget // chains))
        return context_cap(self.engine, prompt, cap)

    def generate(self, prompts: list[str], params: SamplingParams, listener: Listener | None,
                 stream_text: bool = False) -> list[list[Completion]]:
        """engine.generate, telling `listener` the text as it comes (`stream_text`, one chain per
        prompt) and ending the chains of cancelled questions, where the engine can."""
        if listener is None or not getattr(self.engine.capabilities, "streaming", False):
            return self.engine.generate(prompts, params)
        splitters = [ThinkSplitter(self.chat.think_close, self.chat.end) for _ in prompts] if stream_text else None

        def on_step(rows: list[tuple[int, int]], deltas: list[str]) -> list[int]:
            if splitters is not None:
                for (i, _), text in zip(rows, deltas):
                    if text:
                        reasoning, answer = splitters[i].feed(text)
                        if reasoning:
                            listener.reasoning(i, reasoning)
                        if answer:
                            listener.answer(i, answer)
            return [i for i in {i for i, _ in rows} if listener.cancelled(i)]

        return self.engine.generate(prompts, params, on_step=on_step)

    @abstractmethod
    def solve_batch(self, questions: list[Question], budget: int | None = None,
                    listener: Listener | None = None) -> list[Thought]:
        """Several questions at once, so an engine can batch them."""


def split_completion(chat: ChatFormat, engine: Engine, c: Completion) -> tuple[str, str, int, str]:
    """(reasoning, answer, answer_tokens, finish_reason) of one engine completion."""
    parsed = chat.parse(c.text)
    if chat.think_close not in c.text:
        return parsed.reasoning, "", 0, "length"
    after = c.text.partition(chat.think_close)[2]
    answer_tokens = min(c.num_tokens, engine.count_tokens(after))
    finish = "length" if not parsed.finished and c.finish_reason == "length" else "stop"
    return parsed.reasoning, parsed.answer, answer_tokens, finish


def drop_cut_answer(part: tuple[str, str, int, str]) -> tuple[str, str, int, str]:
    """A `split_completion` part without its answer where the cap cut the answer short: such an answer is
    no answer to vote or pick with (a lenient check would credit whatever followed `</think>`)."""
    return part if part[3] == "stop" else (part[0], "", 0, "length")
