"""`ponder serve` driven by the official openai client: o1 semantics, hidden reasoning, streaming, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import openai
import pytest

from live_server import live_server
from ponder import PonderError
from ponder.engine.base import SamplingParams
from ponder.engine.local import LocalEngine
from ponder.engine.remote import RemoteEngine
from ponder.evaluate import heldout_problems
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model
from ponder.serve import ServeConfig, build_app, create_app
from ponder.think.base import Strategy, Thought, Usage
from ponder.think.effort import strategy_for_effort
from ponder.think.sampling import ChainOfThought

KEY = "sk-test-key"
Q = "What is 48213 + 7395?"  # 55608; the tests compare with what the strategy answers on its own
MOD = "What is 3 + 5 + 6 + 1 mod 7?"


def _server(preset=None, **cfg):
    model, tok, chat = load_model("built-in")
    engine = LocalEngine(model, tok)
    app = build_app(engine, chat, ServeConfig(api_keys=(KEY,), **cfg), tokenizer=tok, preset=preset)
    return app, engine, chat


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def hidden():
    app, engine, chat = _server()
    with live_server(app) as url:
        yield url, engine, chat


@pytest.fixture(scope="module")
def direct():
    """What the low-effort strategy answers without a server in between."""
    model, tok, chat = load_model("built-in")
    thought = strategy_for_effort("low", LocalEngine(model, tok), chat).solve(Q)
    assert len(thought.answer) >= 4 and thought.finish_reason == "stop"
    return thought


@pytest.fixture(scope="module")
def exposed():
    app, engine, chat = _server(expose_reasoning=True)
    with live_server(app) as url:
        yield url, engine


def _client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kw.pop("api_key", KEY), max_retries=0, **kw)


def _ask(client, content=Q, **kw):
    return client.chat.completions.create(model="ponder-tiny", messages=[{"role": "user", "content": content}], **kw)


def test_answer_usage_and_hidden_reasoning(hidden, direct):
    url, engine, chat = hidden
    before = engine.stats.generated_tokens
    r = _ask(_client(url), reasoning_effort="low")
    generated = engine.stats.generated_tokens - before
    msg, u = r.choices[0].message, r.usage
    assert msg.content == direct.answer and r.choices[0].finish_reason == "stop"
    assert u.completion_tokens == generated == direct.usage.completion_tokens  # every token billed, no more
    assert u.completion_tokens_details.reasoning_tokens == generated - engine.count_tokens(direct.answer + "<|end|>")
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens == engine.count_tokens(chat.prompt(Q))
    assert getattr(msg, "reasoning_content", None) is None and "<think>" not in msg.content


def test_effort_buys_more_chains_and_n_gives_choices(hidden):
    url, engine, _ = hidden
    client = _client(url)
    low = _ask(client, MOD, reasoning_effort="low")
    before = engine.stats.generated_tokens
    high = _ask(client, MOD, reasoning_effort="high", n=2)
    assert [c.message.content for c in high.choices] == ["1", "1"]
    assert high.usage.completion_tokens == engine.stats.generated_tokens - before
    # 2 choices x 16 chains: far more reasoning, but the same visible answer per choice
    assert high.usage.completion_tokens_details.reasoning_tokens > 20 * low.usage.completion_tokens_details.reasoning_tokens


def test_effort_preset_adaptive_spends_high_on_disputed_questions_only():
    app, engine, _ = _server(preset="adaptive")
    with live_server(app) as url:
        client = _client(url)
        low = _ask(client, MOD, reasoning_effort="low")
        before = engine.stats.generated_tokens
        high = _ask(client, MOD, reasoning_effort="high")
        assert high.choices[0].message.content == low.choices[0].message.content == "1"
        assert high.usage.completion_tokens == engine.stats.generated_tokens - before
        # the 4 probe chains agreed, so high stopped there instead of voting over 16
        assert 3 * low.usage.completion_tokens < high.usage.completion_tokens < 6 * low.usage.completion_tokens
    with pytest.raises(PonderError, match="unknown effort preset 'fast'"):
        _server(preset="fast")


def test_max_completion_tokens_caps_all_chains(hidden):
    url, engine, _ = hidden
    client = _client(url)
    r = _ask(client, reasoning_effort="low", max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == ""
    assert r.usage.completion_tokens == 5 == r.usage.completion_tokens_details.reasoning_tokens
    before = engine.stats.generated_tokens
    r = _ask(client, reasoning_effort="medium", max_completion_tokens=20)
    assert r.usage.completion_tokens <= 20 and engine.stats.generated_tokens - before <= 20
    r = _ask(client, reasoning_effort="low", max_tokens=7)  # the deprecated alias
    assert r.usage.completion_tokens == 7 and r.choices[0].finish_reason == "length"


def test_stream_sends_answer_tokens_as_generated_with_usage(hidden, direct):
    url, _, _ = hidden
    client = _client(url)
    chunks = list(_ask(client, reasoning_effort="low", stream=True, stream_options={"include_usage": True}))
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content == list(direct.answer)  # one chunk per answer token, not the whole answer at the end
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens_details.reasoning_tokens > 5
    whole = _ask(client, reasoning_effort="low")
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_stream_of_a_vote_and_stop_sequences(hidden, direct):
    url, _, _ = hidden
    client = _client(url)
    chunks = list(_ask(client, MOD, reasoning_effort="medium", stream=True, n=2))
    for i in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
        assert text == "1"
    stop = direct.answer[2:4]  # cuts the answer after two characters
    r = _ask(client, reasoning_effort="low", stop=[stop])
    assert r.choices[0].message.content == direct.answer[:2] and r.choices[0].finish_reason == "stop"
    streamed = list(_ask(client, reasoning_effort="low", stop=[stop], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct.answer[:2]


def test_async_clients_are_batched_together(hidden):
    url, _, _ = hidden
    terms = [(3, 5, 6, 1), (1, 2, 2, 4), (6, 6, 6, 0), (0, 4, 1, 3), (5, 5, 1, 2), (2, 0, 3, 6)]
    questions = [f"What is {' + '.join(map(str, t))} mod 7?" for t in terms]

    async def main():
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        rs = await asyncio.gather(*[client.chat.completions.create(
            model="ponder-tiny", reasoning_effort="low", messages=[{"role": "user", "content": q}])
            for q in questions])
        await client.close()
        return rs

    batches = _engine_batches(url)
    rs = asyncio.run(main())
    assert [r.choices[0].message.content for r in rs] == [str(sum(t) % 7) for t in terms]
    assert _engine_batches(url) - batches < len(questions)  # some requests shared an engine call


def test_seeded_requests_share_batches_and_answer_as_they_would_alone(hidden):
    """An eval harness sends a seed with every request; batching them must not change what the seed fixes."""
    url, _, _ = hidden
    questions = [p.question for p in heldout_problems("cvp", 2, 4, 0)]  # sampled chains disagree here
    kw = dict(model="ponder-tiny", reasoning_effort="medium", seed=3)

    def seen(r):
        return r.choices[0].message.content, r.usage.completion_tokens_details.reasoning_tokens

    client = _client(url)
    alone = [seen(client.chat.completions.create(messages=[{"role": "user", "content": q}], **kw)) for q in questions]

    async def main():
        aclient = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        rs = await asyncio.gather(*[aclient.chat.completions.create(messages=[{"role": "user", "content": q}], **kw)
                                    for q in questions + questions[:1]])
        await aclient.close()
        return rs

    batches = _engine_batches(url)
    together = [seen(r) for r in asyncio.run(main())]
    assert together == alone + alone[:1]
    assert _engine_batches(url) - batches < len(questions)  # they shared engine calls


def _engine_batches(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("ponder_engine_batches ")))


def test_reasoning_never_leaks_in_hidden_mode(hidden, caplog):
    url, engine, chat = hidden
    reasoning = strategy_for_effort("low", engine, chat).solve(Q).reasoning
    steps = [s for s in chat.steps(reasoning) if len(s) > 6]
    assert steps
    caplog.set_level(logging.DEBUG)
    seen = []
    body = {"model": "ponder-tiny", "messages": [{"role": "user", "content": Q}], "include_reasoning": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    for extra in ({}, {"stream": True}, {"reasoning_effort": "high"}, {"max_completion_tokens": 30},
                  {"max_completion_tokens": 30, "stream": True}, {"n": 0}, {"model": "nope"}):
        seen.append(httpx.post(url + "/v1/chat/completions", json={**body, **extra}, headers=headers,
                               timeout=60).text)
    seen.append(caplog.text)
    for text in seen:
        assert "reasoning_content" not in text
        for s in steps:
            assert s not in text


def test_exposed_reasoning_only_when_asked(exposed):
    url, _ = exposed
    client = _client(url)
    plain = _ask(client, reasoning_effort="low")
    assert getattr(plain.choices[0].message, "reasoning_content", None) is None
    r = _ask(client, reasoning_effort="low", extra_body={"include_reasoning": True})
    reasoning = r.choices[0].message.reasoning_content
    assert reasoning.startswith("48213+7395+0=") and r.choices[0].message.content
    chunks = list(_ask(client, reasoning_effort="low", stream=True, extra_body={"include_reasoning": True}))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == reasoning


@pytest.mark.parametrize("kwargs, status", [
    ({"model": "gpt-4o"}, 404),
    ({"n": 0}, 400),
    ({"n": "two"}, 400),
    ({"max_completion_tokens": 0}, 400),
    ({"temperature": -1}, 400),
    ({"reasoning_effort": "max"}, 400),
    ({"messages": []}, 400),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400),
    ({"messages": [{"role": "user", "content": "   "}]}, 400),
    ({"messages": [{"role": "user", "content": "What is 3 × 4?"}]}, 400),
    ({"messages": [{"role": "user", "content": "What is 1 + 1? " * 120}]}, 413),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400),
])
def test_bad_requests_get_openai_errors(hidden, kwargs, status):
    url, _, _ = hidden
    body = {"model": "ponder-tiny", "messages": [{"role": "user", "content": Q}], **kwargs}
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and "\n" not in err["message"] and "Traceback" not in err["message"]
    if kwargs.get("messages") == [{"role": "user", "content": "What is 3 × 4?"}]:
        assert "'×'" in err["message"]


def test_bad_json_and_bad_keys(hidden):
    url, _, _ = hidden
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY}",
                                                                                 "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        _ask(_client(url, api_key="wrong"))
    with pytest.raises(openai.NotFoundError):
        _client(url).chat.completions.create(model="ponder-huge", messages=[{"role": "user", "content": Q}])
    assert [m.id for m in _client(url).models.list()] == ["ponder-tiny"]
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_one_ponder_fronts_another_through_v1_completions(hidden, direct):
    """RemoteEngine against ponder's own /v1/completions: the same text, stops and counts as local."""
    url, engine, chat = hidden
    remote = RemoteEngine(url + "/v1", "ponder-tiny", api_key=KEY)
    prompt = chat.prompt(Q)
    params = SamplingParams(max_tokens=40, temperature=0, stop=("\n",))
    got = remote.generate([prompt], params)[0][0]
    model, tok, _ = load_model("built-in")
    want = LocalEngine(model, tok).generate([prompt], params)[0][0]
    assert (got.text, got.finish_reason, got.stop_reason, got.num_tokens) == \
        (want.text, "stop", "\n", want.num_tokens)
    thought = ChainOfThought(remote, chat).solve(Q)
    assert thought.answer == direct.answer and thought.usage.completion_tokens == direct.usage.completion_tokens
    r = httpx.post(url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "ponder-tiny", "prompt": prompt, "max_tokens": 2000})
    assert r.status_code == 413 and "context" in r.json()["error"]["message"]
    front = build_app(remote, chat, ServeConfig(model_name="front"))  # `ponder serve --upstream`, no tokenizer
    with live_server(front) as front_url:
        r = _client(front_url).chat.completions.create(model="front", reasoning_effort="low",
                                                       messages=[{"role": "user", "content": Q}])
    assert r.choices[0].message.content == direct.answer
    assert r.usage.completion_tokens == direct.usage.completion_tokens


# --------------------------------------------------------------- queue, timeouts, turns, cancellation


class _Gate(Strategy):
    """A stand-in strategy that waits for the test, records what it was asked, and watches cancellation."""

    def __init__(self):
        self.release = threading.Event()
        self.questions: list = []
        self.cancel_seen = threading.Event()

    def solve_batch(self, questions, budget=None, listener=None):
        self.questions.extend(questions)
        while not self.release.wait(0.01):
            if listener is not None and all(listener.cancelled(i) for i in range(len(questions))):
                self.cancel_seen.set()
                return [Thought("", "", Usage(), "length") for _ in questions]
        return [Thought("ok", "secret steps", Usage(3, 4, 2, 1)) for _ in questions]


def _gated(**cfg):
    gate = _Gate()
    tok_count = len
    app = create_app(lambda key: gate, ChatFormat(), tok_count, ServeConfig(**cfg), max_positions=1024)
    return app, gate


def test_full_queue_answers_429_with_retry_after():
    app, gate = _gated(max_queue=1, max_batch=1)
    with live_server(app) as url:
        client = _client(url, api_key="x")
        body = {"model": "ponder-tiny", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30) as http:
            first = threading.Thread(target=lambda: http.post(url + "/v1/chat/completions", json=body))
            first.start()
            while not gate.questions:
                time.sleep(0.01)  # the first request is in the engine; the queue is empty
            second = threading.Thread(target=lambda: http.post(url + "/v1/chat/completions", json=body))
            second.start()
            while app.state.batcher.depth < 1:
                time.sleep(0.01)
            r = http.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "rate_limit_error"
            with pytest.raises(openai.RateLimitError):
                _ask(client, content="hi")
            gate.release.set()
            first.join()
            second.join()


def test_timeout_and_disconnect_cancel_the_work():
    app, gate = _gated(request_timeout=0.3)
    with live_server(app) as url:
        r = httpx.post(url + "/v1/chat/completions", timeout=30,
                       json={"model": "ponder-tiny", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        assert gate.cancel_seen.wait(5)  # the engine was told to stop
        text = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "ponder-tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).text
        assert '"type": "timeout"' in text and text.rstrip().endswith("data: [DONE]") and "secret" not in text
    app, gate = _gated()
    with live_server(app) as url:
        body = {"model": "ponder-tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()  # held: dropping the iterator would close the connection
            next(lines)  # the first chunk arrived
            while not gate.questions:
                time.sleep(0.01)  # the engine is working on it; now hang up
        assert gate.cancel_seen.wait(5)


def test_turns_are_kept_and_earlier_reasoning_is_not_fed_back():
    app, gate = _gated()
    gate.release.set()
    with live_server(app) as url:
        r = _client(url, api_key="x").chat.completions.create(model="ponder-tiny", messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": [{"type": "text", "text": "And 3 + 3?"}]}])
        assert r.choices[0].message.content == "ok"
        assert r.usage.completion_tokens == 4 and r.usage.completion_tokens_details.reasoning_tokens == 2
    turns = gate.questions[0]
    assert [(m.role, m.content) for m in turns] == [("system", "Be brief."), ("user", "What is 2 + 2?"),
                                                    ("assistant", "4"), ("user", "And 3 + 3?")]
    prompt = ChatFormat().render(turns)
    assert prompt.count("<|user|>") == 2 and "<think></think>4<|end|>" in prompt


def test_metrics_count_requests_and_tokens():
    app, gate = _gated()
    gate.release.set()
    with live_server(app) as url:
        for _ in range(3):
            _ask(_client(url, api_key="x"), content="hi")
        httpx.post(url + "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        text = httpx.get(url + "/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values['ponder_requests_total{status="200"}'] == 3
    assert values['ponder_requests_total{status="404"}'] == 1
    assert values['ponder_tokens_total{kind="completion"}'] == 12
    assert values['ponder_tokens_total{kind="reasoning"}'] == 6
    assert values["ponder_request_seconds_count"] == 4
    assert json.loads(json.dumps(values))  # plain numbers throughout
