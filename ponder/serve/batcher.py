"""Dynamic batching: concurrent requests share engine calls.

Requests wait in a bounded queue. One worker thread owns the engine (engines
are not thread-safe): it takes the oldest request, gathers the waiting ones
that can share its engine call (same strategy settings and budget), and solves
them together. A seeded request thinks the same in any batch (each sample draws
from a stream keyed by the seed and its own prompt), so it shares a batch too,
only not with another request for the same question: that one's samples would
be keyed as the second occurrence of the prompt, not the first.
Progress and results go back to each request's asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from ponder.think.base import Question, Strategy, Thought
from ponder.think.stream import Listener

log = logging.getLogger("ponder.serve")


class QueueFull(Exception):
    pass


@dataclass
class Job:
    """One request: `n` choices of one conversation, solved with the strategy that `key` names."""

    question: Question
    n: int
    key: Hashable
    budget: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    deadline: float | None = None
    seeded: bool = False  # the seed fixes its draws: no other job for the same question in its batch
    cancelled: bool = False
    enqueued: float = field(default_factory=time.monotonic)

    def send(self, *event: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the request's loop is gone: nobody is listening
            self.cancelled = True

    def expired(self) -> bool:
        return self.cancelled or (self.deadline is not None and time.monotonic() > self.deadline)


class _BatchListener(Listener):
    """Maps a batch's question indices back to (job, choice)."""

    def __init__(self, slots: list[tuple[Job, int]]) -> None:
        self.slots = slots

    def reasoning(self, index: int, text: str) -> None:
        job, choice = self.slots[index]
        job.send("reasoning", choice, text)

    def answer(self, index: int, text: str) -> None:
        job, choice = self.slots[index]
        job.send("answer", choice, text)

    def cancelled(self, index: int) -> bool:
        return self.slots[index][0].expired()


class Batcher:
    """Owns the engine thread. `strategy_for(key)` builds the strategy a batch runs with."""

    def __init__(self, strategy_for: Callable[[Hashable], Strategy], max_batch: int = 32,
                 max_queue: int = 256, wait_s: float = 0.005) -> None:
        self.strategy_for, self.max_batch, self.max_queue, self.wait_s = strategy_for, max_batch, max_queue, wait_s
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self.busy = 0  # choices in the batch being solved
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name="ponder-engine", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Choices waiting in the queue."""
        with self._cv:
            return sum(j.n for j in self._queue)

    def submit(self, job: Job) -> None:
        with self._cv:
            if sum(j.n for j in self._queue) + job.n > self.max_queue:
                raise QueueFull()
            self._queue.append(job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list[Job] | None:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop:
                return None
        time.sleep(self.wait_s)  # let requests arriving together join the batch
        with self._cv:
            while self._queue and self._queue[0].expired():
                self._queue.popleft().send("error", "cancelled")
            if not self._queue:
                return []
            first = self._queue[0]
            batch, rows = [], 0
            for job in list(self._queue):
                if batch and rows >= self.max_batch:
                    break
                if batch and (job.key != first.key or job.budget != first.budget
                              or rows + job.n > self.max_batch or job.expired()):
                    continue
                if job.seeded and any(job.question == other.question for other in batch):
                    continue
                batch.append(job)
                rows += job.n
            for job in batch:
                self._queue.remove(job)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._solve(batch)

    def _solve(self, batch: list[Job]) -> None:
        slots = [(job, c) for job in batch for c in range(job.n)]
        self.busy = len(slots)
        try:
            strategy = self.strategy_for(batch[0].key)
            thoughts = strategy.solve_batch([job.question for job, _ in slots], batch[0].budget,
                                            _BatchListener(slots))
        except Exception as e:  # one bad batch must not stop the server
            if not isinstance(e, ValueError):
                log.exception("engine call failed")
            for job in batch:
                job.send("error", e)
            return
        finally:
            self.busy = 0
            self.batches += 1
        results: dict[int, list[Thought]] = {}
        for (job, _), thought in zip(slots, thoughts):
            results.setdefault(id(job), []).append(thought)
        for job in batch:
            job.send("done", results[id(job)])

