"""The one place that turns messages into a prompt and a completion back into parts.

Built-in format: `<|user|>Q<|assistant|><think>STEP\\nSTEP</think>ANSWER<|end|>`.
The newline inside the think block is the step boundary that search and the
PRM cut on. Real chat models use their tokenizer's own chat template, with
think markers that can be configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from ponder import PonderError
from ponder.model import tokenizer as tk

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class ParsedCompletion:
    reasoning: str
    answer: str
    finished: bool  # the think block closed and the answer ended


@dataclass
class ChatFormat:
    think_open: str = tk.THINK
    think_close: str = tk.END_THINK
    end: str = tk.END
    step_sep: str = "\n"
    hf_tokenizer: object | None = None  # set for models with their own chat template
    # The user turn that asks for a revision after an earlier attempt (see `revision_messages`).
    revise_instruction: str = "Your answer may be wrong. Think again."

    @classmethod
    def for_tokenizer(cls, tokenizer, think_open: str = "<think>", think_close: str = "</think>") -> "ChatFormat":
        """The built-in format for ponder's own tokenizer, the model's template otherwise."""
        if tk.ASSISTANT in tokenizer.get_vocab():
            return cls()
        if not getattr(tokenizer, "chat_template", None):
            raise PonderError("model's tokenizer has no chat template; ponder needs one to build prompts")
        return cls(think_open=think_open, think_close=think_close,
                   end=tokenizer.eos_token or "", hf_tokenizer=tokenizer)

    def render(self, messages: Iterable[Message]) -> str:
        """A prompt that ends where the assistant starts thinking.

        Earlier assistant turns keep only their answers: reasoning is never fed back.
        """
        messages = list(messages)
        if not messages or messages[-1].role != "user":
            raise PonderError("messages must end with a user message")
        if self.hf_tokenizer is not None:
            chat = [{"role": m.role, "content": m.content} for m in messages]
            text = self.hf_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            return text + self.think_open
        parts = []
        for m in messages:
            if m.role == "system":
                parts.append(f"{tk.SYSTEM}{m.content}")
            elif m.role == "user":
                parts.append(f"{tk.USER}{m.content}")
            elif m.role == "assistant":
                parts.append(f"{tk.ASSISTANT}{self.think_open}{self.think_close}{m.content}{self.end}")
            else:
                raise PonderError(f"unknown message role {m.role!r}")
        return "".join(parts) + tk.ASSISTANT + self.think_open

    def prompt(self, question: str) -> str:
        return self.render([Message("user", question)])

    def revision_messages(self, question: str | Sequence[Message], answers: Sequence[str]) -> list[Message]:
        """The conversation a revision is written in: the question, then per earlier attempt its answer as
        the assistant's turn and `revise_instruction` as the user's.

        Only the earlier answers are shown, as `render` does for every earlier turn: o1 drops reasoning
        between turns, and whole chains would soon fill a small model's context. The revision thinks anew.
        """
        messages = [Message("user", question)] if isinstance(question, str) else list(question)
        for answer in answers:
            messages += [Message("assistant", answer), Message("user", self.revise_instruction)]
        return messages

    def revision_prompt(self, question: str | Sequence[Message], answers: Sequence[str]) -> str:
        """The prompt of a revision after `answers` (the first attempt's prompt when there are none)."""
        return self.render(self.revision_messages(question, answers))

    def completion(self, steps: Iterable[str], answer: str) -> str:
        """The target text after the prompt: hidden steps, then the visible answer."""
        reasoning = self.step_sep.join(steps)
        return f"{reasoning}{self.think_close}{answer}{self.end}"

    def parse(self, completion: str) -> ParsedCompletion:
        """Split generated text (after the prompt) into reasoning and answer."""
        if self.think_close not in completion:
            return ParsedCompletion(reasoning=completion, answer="", finished=False)
        reasoning, _, rest = completion.partition(self.think_close)
        finished = self.end in rest if self.end else True
        answer = rest.split(self.end, 1)[0] if self.end else rest
        return ParsedCompletion(reasoning=reasoning, answer=answer.strip(), finished=finished)

    def steps(self, reasoning: str) -> list[str]:
        return [s for s in reasoning.split(self.step_sep) if s]
