"""Streaming out of a strategy: what the caller hears while a question is being thought about."""

from __future__ import annotations


class Listener:
    """Receives a strategy's progress per question index; every method is a no-op by default.

    `reasoning` and `answer` carry text as it is generated (only strategies whose
    chosen chain is known while it runs, such as one chain of thought, stream;
    the others say nothing and the caller sends the final Thought).
    `cancelled` lets the caller stop work for a question nobody waits for.
    """

    def reasoning(self, index: int, text: str) -> None:
        pass

    def answer(self, index: int, text: str) -> None:
        pass

    def cancelled(self, index: int) -> bool:
        return False



class RowListener(Listener):
    """`listener` as seen by a call over some of its questions: index i here is `rows[i]` there."""

    def __init__(self, listener: Listener, rows: list[int]) -> None:
        self.listener, self.rows = listener, rows

    def reasoning(self, index: int, text: str) -> None:
        self.listener.reasoning(self.rows[index], text)

    def answer(self, index: int, text: str) -> None:
        self.listener.answer(self.rows[index], text)

    def cancelled(self, index: int) -> bool:
        return self.listener.cancelled(self.rows[index])


class MarkerCut:
    """Passes text through up to the first of `markers`.

    A marker may arrive split over several pieces, so an end of the text that
    could be the start of one is held back until it is clear.
    """

    def __init__(self, markers) -> None:
        self.markers = [m for m in markers if m]
        self.hit: str | None = None  # the marker found, once found
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(text before any marker, text after the marker in this piece); nothing once a marker was found."""
        if self.hit is not None:
            return "", ""
        text, self._held = self._held + text, ""
        for i in range(len(text)):  # the first place where a marker starts, or may start
            rest = text[i:]
            full = next((m for m in self.markers if rest.startswith(m)), None)
            if full is not None:
                self.hit = full
                return text[:i], rest[len(full):]
            if any(m.startswith(rest) for m in self.markers):
                self._held = rest
                return text[:i], ""
        return text, ""

    def flush(self) -> str:
        """The text is over: what was held back, up to a marker that starts inside it."""
        held, self._held = self._held, ""
        found = min(((held.index(m), m) for m in self.markers if m in held), default=None)
        if found is None:
            return held
        self.hit = found[1]
        return held[: found[0]]


class ThinkSplitter:
    """Routes a completion's text deltas to reasoning or answer, cutting at the think and end markers."""

    def __init__(self, think_close: str, end: str) -> None:
        self._think, self._answer = MarkerCut([think_close]), MarkerCut([end])

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning delta, answer delta) for this piece of generated text."""
        if self._think.hit is not None:
            return "", self._answer.feed(text)[0]
        reasoning, rest = self._think.feed(text)
        answer = self._answer.feed(rest)[0] if self._think.hit is not None else ""
        return reasoning, answer
