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


class ThinkSplitter:
    """Routes a completion's text deltas to reasoning or answer, cutting at the think and end markers.

    A marker may arrive split over several deltas, so text that could be the
    start of one is held back until it is clear.
    """

    def __init__(self, think_close: str, end: str) -> None:
        self.think_close, self.end = think_close, end
        self.in_answer = False
        self.done = False
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning delta, answer delta) for this piece of generated text."""
        if self.done:
            return "", ""
        text = self._held + text
        self._held = ""
        if not self.in_answer:
            head, sep, rest = text.partition(self.think_close)
            if not sep:
                keep = partial_suffix(head, self.think_close)
                self._held = head[len(head) - keep:] if keep else ""
                return head[: len(head) - keep], ""
            self.in_answer = True
            reasoning, (_, answer) = head, self._answer(rest)
            return reasoning, answer
        return self._answer(text)

    def _answer(self, text: str) -> tuple[str, str]:
        if self.end:
            head, sep, _ = text.partition(self.end)
            if sep:
                self.done = True
                return "", head
            keep = partial_suffix(head, self.end)
            self._held = head[len(head) - keep:] if keep else ""
            return "", head[: len(head) - keep]
        return "", text


def partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper start of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0
