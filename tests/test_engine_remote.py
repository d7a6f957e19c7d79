"""RemoteEngine against a fake OpenAI-compatible server running in-process on a loopback port."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from live_server import live_server

from ponder import PonderError
from ponder.engine.base import Completion, SamplingParams
from ponder.engine.remote import RemoteEngine
from ponder.model.chat import ChatFormat
from ponder.think.sampling import ChainOfThought

STATE: dict = {}


def _reset() -> None:
    STATE.clear()
    STATE.update(last=None, requests=[], headers={}, fail=None, max_n=None, sleep=0.0, delays={}, vllm=True, tokenize=True,
                 usage=True, in_flight=0, max_in_flight=0)


def natural(prompt: str, j: int) -> str:
    """What the fake model would write for `prompt`, sample `j`, left alone: one char is one token."""
    m = re.search(r"What is (\d+) \+ (\d+)\?", prompt)
    answer = str(int(m[1]) + int(m[2])) if m else f"ans{j}"
    return f"[{prompt[-6:]}]{'#' * (j + 1)}\nstep two\n</think>{answer}"


def sample(full: str, max_tokens: int, stops: list[str]) -> tuple[str, str, int, str | None]:
    """(text, finish_reason, tokens, matched stop) like an OpenAI server: stop strings stripped."""
    for k in range(1, len(full) + 1):
        for s in stops:
            if full[:k].endswith(s):
                return full[: k - len(s)], "stop", k, s
        if k == max_tokens:
            return full[:k], "length", k, None
    return full, "stop", len(full), None


def fake_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        STATE["last"], STATE["headers"] = body, dict(request.headers)
        STATE["requests"].append(body)
        STATE["in_flight"] += 1
        STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            await asyncio.sleep(STATE["delays"].get(body["prompt"], STATE["sleep"]))
        finally:
            STATE["in_flight"] -= 1
        if STATE["fail"] is not None:
            status, payload = STATE["fail"]
            return JSONResponse(payload, status_code=status)
        choices, total = [], 0
        for j in range(min(body.get("n", 1), STATE["max_n"] or 10**9)):  # sample j, shifted by the seed
            full = natural(body["prompt"], j + body.get("seed", 0))
            text, finish, tokens, stop = sample(full, body["max_tokens"], body.get("stop", []))
            total += tokens
            choice = {"index": j, "text": text, "finish_reason": finish}
            if STATE["vllm"]:
                choice["stop_reason"] = stop
            if body.get("logprobs"):
                shown = len(text) + (len(stop) if stop else 0)
                choice["logprobs"] = {"token_logprobs": [-0.5] * shown, "text_offset": list(range(100, 100 + shown))}
            choices.append(choice)
        out = {"object": "text_completion", "model": body["model"], "choices": choices[::-1]}  # any order
        if STATE["usage"]:
            out["usage"] = {"prompt_tokens": len(body["prompt"]), "completion_tokens": total,
                            "total_tokens": len(body["prompt"]) + total}
        return out

    @app.post("/tokenize")
    async def tokenize(request: Request):
        if not STATE["tokenize"]:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = await request.json()
        return {"tokens": list(range(len(body["content"])))}

    return app


@pytest.fixture(scope="module")
def server():
    _reset()
    with live_server(fake_app()) as url:
        yield url


@pytest.fixture
def engine(server):
    _reset()
    with RemoteEngine(server + "/v1", "fake-model", api_key="sk-test") as eng:
        yield eng


def test_params_are_mapped_into_the_request(engine):
    engine.generate(["hi"], SamplingParams(n=2, temperature=0.7, top_p=0.9, max_tokens=50, stop=("\n", ""), seed=3,
                                           logprobs=True))
    assert STATE["last"] == {"model": "fake-model", "prompt": "hi", "n": 2, "temperature": 0.7, "top_p": 0.9,
                             "max_tokens": 50, "stop": ["\n"], "seed": 3, "logprobs": 1}
    assert STATE["headers"]["authorization"] == "Bearer sk-test"
    engine.generate(["hi"], SamplingParams(temperature=1.0, max_tokens=5))
    assert STATE["last"] == {"model": "fake-model", "prompt": "hi", "n": 1, "temperature": 1.0, "top_p": 1.0,
                             "max_tokens": 5}


def test_n_completions_per_prompt_in_order(engine):
    out = engine.generate(["a", "b"], SamplingParams(n=3, temperature=1.0, max_tokens=100))
    assert [[c.text for c in group] for group in out] == [[natural(p, j) for j in range(3)] for p in ["a", "b"]]
    assert all(isinstance(c, Completion) and c.finish_reason == "eos" and c.stop_reason is None
               for group in out for c in group)
    # the server reports only a total for n > 1: the split keeps it exact
    assert sum(c.num_tokens for c in out[0]) == sum(len(natural("a", j)) for j in range(3))
    assert all(c.prompt_tokens == 1 for group in out for c in group)


def test_greedy_n_asks_for_one_sample_and_copies_it(engine):
    out = engine.generate(["q"], SamplingParams(n=3, temperature=0.0, max_tokens=100))
    assert STATE["last"]["n"] == 1
    assert [c.text for c in out[0]] == [natural("q", 0)] * 3
    assert len({id(c) for c in out[0]}) == 3


def test_server_returning_fewer_samples_is_asked_for_the_rest(engine):
    STATE["max_n"] = 1  # like a server that ignores n
    out = engine.generate(["a"], SamplingParams(n=3, temperature=1.0, max_tokens=100, seed=5))
    assert [c.text for c in out[0]] == [natural("a", j) for j in (5, 6, 7)]
    assert [(r["n"], r["seed"]) for r in STATE["requests"]] == [(3, 5), (2, 6), (1, 7)]
    assert [c.num_tokens for c in out[0]] == [len(c.text) for c in out[0]]


def test_finish_reasons_length_stop_and_eos(engine):
    full = natural("hi", 0)
    (length,), = engine.generate(["hi"], SamplingParams(temperature=0, max_tokens=5))
    assert (length.text, length.finish_reason, length.stop_reason, length.num_tokens) == (full[:5], "length", None, 5)
    (stop,), = engine.generate(["hi"], SamplingParams(temperature=0, max_tokens=100, stop=("\n", "</think>")))
    # like the local engine: the matched stop string stays at the end of the text
    assert stop.text == full[: full.index("\n") + 1] and stop.text.endswith("\n")
    assert (stop.finish_reason, stop.stop_reason, stop.num_tokens) == ("stop", "\n", len(stop.text))
    (eos,), = engine.generate(["hi"], SamplingParams(temperature=0, max_tokens=100, stop=("never",)))
    assert (eos.text, eos.finish_reason, eos.stop_reason, eos.num_tokens) == (full, "eos", None, len(full))


def test_stop_hit_is_eos_when_the_server_does_not_say_which_stop(engine):
    STATE["vllm"] = False  # plain OpenAI shape: no stop_reason on the choice
    (c,), = engine.generate(["hi"], SamplingParams(temperature=0, max_tokens=100, stop=("\n",)))
    assert (c.text, c.finish_reason, c.stop_reason) == ("[hi]#", "eos", None)


def test_more_than_four_stops_are_cut_locally(engine):
    stops = ("zz", "yy", "</think>", "xx", "\n")
    (c,), = engine.generate(["hi"], SamplingParams(temperature=0, max_tokens=100, stop=stops, logprobs=True))
    assert "stop" not in STATE["last"]
    assert (c.text, c.finish_reason, c.stop_reason) == ("[hi]#\n", "stop", "\n")
    assert c.logprobs == [-0.5] * len(c.text) and c.num_tokens == len(c.text)


def test_logprobs_and_token_counts(engine):
    out = engine.generate(["ab", "c"], SamplingParams(n=2, temperature=1.0, max_tokens=100, logprobs=True))
    for p, group in zip(["ab", "c"], out):
        for j, c in enumerate(group):
            assert c.logprobs == [-0.5] * len(natural(p, j))
            assert c.num_tokens == len(natural(p, j)) and c.token_ids == []  # no tokenizer: no ids
    assert engine.stats.calls == 1 and engine.stats.prompt_tokens == 3
    assert engine.stats.generated_tokens == sum(c.num_tokens for g in out for c in g) == engine.stats.per_call[-1]


def test_without_usage_counts_come_from_tokenize(engine):
    STATE["usage"] = False
    (c,), = engine.generate(["hey"], SamplingParams(temperature=0, max_tokens=100))
    assert c.num_tokens == len(natural("hey", 0)) and c.prompt_tokens == 3


def test_zero_max_tokens_needs_no_request(engine):
    out = engine.generate(["abc"], SamplingParams(n=2, max_tokens=0))
    assert STATE["last"] is None
    assert [(c.text, c.finish_reason, c.num_tokens, c.prompt_tokens) for c in out[0]] == [("", "length", 0, 3)] * 2


def test_prompt_order_survives_concurrency(engine):
    prompts = [f"p{i}" for i in range(8)]
    STATE["delays"] = {p: 0.02 * (8 - i) for i, p in enumerate(prompts)}  # the first prompt answers last
    out = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=100))
    assert [g[0].text for g in out] == [natural(p, 0) for p in prompts]
    assert STATE["max_in_flight"] > 1


def test_count_tokens(server, engine):
    assert engine.count_tokens("hello") == 5  # the server's /tokenize
    STATE["tokenize"] = False
    with RemoteEngine(server + "/v1", "fake-model") as eng:
        assert eng.count_tokens("hello world!") == 3  # no /tokenize: about 4 bytes a token
        assert eng.count_tokens("") == 0


def test_with_a_tokenizer(server):
    from ponder.model.tokenizer import build_char_tokenizer

    _reset()
    tok = build_char_tokenizer()
    with RemoteEngine(server + "/v1", "fake-model", tokenizer=tok) as eng:
        assert eng.count_tokens("hello") == 5
        (c,), = eng.generate(["hi"], SamplingParams(temperature=0, max_tokens=6))
        assert c.token_ids == tok("[hi]#\n", add_special_tokens=False)["input_ids"] and c.num_tokens == 6


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_error_status_carries_the_servers_message(engine):
    STATE["fail"] = (500, {"error": {"message": "model exploded", "type": "server_error"}})
    with pytest.raises(PonderError) as e:
        engine.generate(["a", "b"], SamplingParams(max_tokens=5))
    msg = _one_line_error(e)
    assert "/v1/completions" in msg and "500" in msg and "model exploded" in msg
    STATE["fail"] = (401, {"error": {"message": "Incorrect API key\nprovided"}})
    with pytest.raises(PonderError) as e:
        engine.generate(["a"], SamplingParams(max_tokens=5))
    assert "401" in _one_line_error(e) and "Incorrect API key provided" in str(e.value)
    assert engine.stats.calls == 0


def test_unreachable_server_and_timeout(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens here
    with RemoteEngine(f"http://127.0.0.1:{port}/v1", "m") as eng, pytest.raises(PonderError) as e:
        eng.generate(["a"], SamplingParams(max_tokens=5))
    assert f"http://127.0.0.1:{port}/v1/completions" in _one_line_error(e)
    _reset()
    STATE["sleep"] = 1.0
    start = time.monotonic()
    with RemoteEngine(server + "/v1", "m", timeout=0.2) as eng, pytest.raises(PonderError) as e:
        eng.generate(["a"], SamplingParams(max_tokens=5))
    assert "no answer within 0.2 s" in _one_line_error(e) and time.monotonic() - start < 0.9


@pytest.mark.parametrize("url", ["ftp://host/v1", "localhost:8000/v1", "", "http://"])
def test_bad_base_url(url):
    with pytest.raises(PonderError, match="base_url"):
        RemoteEngine(url, "m")


def test_bad_input(engine):
    with pytest.raises(PonderError, match="list of prompt strings"):
        engine.generate("hi", SamplingParams())
    with pytest.raises(PonderError, match="stream"):
        engine.generate(["hi"], SamplingParams(), on_step=lambda rows, deltas: None)


def test_chain_of_thought_runs_unchanged_on_the_remote_engine(server):
    _reset()
    with RemoteEngine(server + "/v1", "fake-model", max_positions=2048) as eng:
        thought = ChainOfThought(eng, ChatFormat()).solve("What is 2 + 3?")
    text = natural(ChatFormat().prompt("What is 2 + 3?"), 0)
    assert thought.answer == "5"
    assert thought.reasoning == text.partition("</think>")[0]
    assert (thought.usage.completion_tokens, thought.usage.reasoning_tokens) == (len(text), len(text) - 1)
    assert STATE["last"]["max_tokens"] == 768 and STATE["last"]["temperature"] == 0.0
