"""Fuzzing the server from its own OpenAPI schema: whatever a client sends, never a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from ponder.model.chat import ChatFormat
from ponder.model.tokenizer import check_text
from ponder.serve import ServeConfig, create_app
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


app = create_app(lambda key: _Instant(), ChatFormat(), len, ServeConfig(request_timeout=30),
                 max_positions=1024, check_text=check_text)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


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
