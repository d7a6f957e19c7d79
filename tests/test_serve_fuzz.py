"""Fuzzing the server from its own OpenAPI schema: whatever a client sends, never a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from live_server import live_server
from ponder.engine.base import Completion
from ponder.model.chat import ChatFormat
from ponder.model.tokenizer import check_text
from ponder.serve import ServeConfig, create_app
from ponder.serve.completions import RawKey
from ponder.think.base import Strategy, Thought, Usage


class _Instant(Strategy):
    """Answers at once, so the fuzzer spends its time on the HTTP layer."""

    def __init__(self):
        pass

    def solve_batch(self, questions, budget=None, listener=None):
        if listener is not None:
            for i in range(len(questions)):
                listener.answer(i, "4")
        return [Thought("4", "2+2=4", Usage(10, 5, 4, 1)) for _ in questions]


class _InstantRaw:
    def solve_batch(self, prompts, budget=None, listener=None):
        return [Completion("4\n", [1, 2], "stop", 3, stop_reason="\n") for _ in prompts]


app = create_app(lambda key: _InstantRaw() if isinstance(key, RawKey) else _Instant(), ChatFormat(), len, ServeConfig(request_timeout=30),
                 max_positions=1024, check_text=check_text)
# A real loopback server (the answers come from the engine thread, as in production);
# it starts at import because the schema is read when the tests are collected.
_running = live_server(app)
URL = _running.__enter__()
schema = schemathesis.openapi.from_url(URL + "/openapi.json")


@pytest.fixture(scope="module", autouse=True)
def _stop_server():
    yield
    _running.__exit__(None, None, None)


@schema.hook
def map_body(ctx, body):
    """Name the served model, so requests get past the 404 and into the deeper checks."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = "ponder-tiny"
    return body


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]  # OpenAI-shaped, whatever went wrong
