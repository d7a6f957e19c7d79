"""Prometheus metrics of one server: requests, errors, tokens, queue depth, latency."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """A registry per server, so several servers in one process (tests) never share counts."""

    def __init__(self, queue_depth: Callable[[], int], busy: Callable[[], int], batches: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ponder_requests", "Chat completion requests answered, by HTTP status",
                                ["status"], registry=r)
        self.errors = Counter("ponder_errors", "Requests answered with an error, by error type", ["type"], registry=r)
        self.tokens = Counter("ponder_tokens", "Tokens processed, by kind (prompt, completion, reasoning)",
                              ["kind"], registry=r)
        self.latency = Histogram("ponder_request_seconds", "Time from request to last byte", registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        Gauge("ponder_queue_depth", "Choices waiting for the engine", registry=r).set_function(queue_depth)
        Gauge("ponder_batch_rows", "Choices in the engine call now running", registry=r).set_function(busy)
        Gauge("ponder_engine_batches", "Engine calls (batches) run so far", registry=r).set_function(batches)

    def record(self, status: int, seconds: float, error_type: str | None = None) -> None:
        self.requests.labels(status=str(status)).inc()
        if error_type:
            self.errors.labels(type=error_type).inc()
        self.latency.observe(seconds)

    def count_tokens(self, prompt: int, completion: int, reasoning: int) -> None:
        self.tokens.labels(kind="prompt").inc(prompt)
        self.tokens.labels(kind="completion").inc(completion)
        self.tokens.labels(kind="reasoning").inc(reasoning)

    def render(self) -> bytes:
        return generate_latest(self.registry)
