"""`ponder serve`: the OpenAI chat-completions API in front of any ponder strategy and engine.

o1 semantics: `reasoning_effort` picks how much to think, `max_completion_tokens`
caps every generated token (hidden ones included), and usage reports the
reasoning tokens spent. The reasoning itself stays on the server unless it was
started with `expose_reasoning` and the request sets `include_reasoning`.
The server never knows which strategy answers: `strategy_for(key)` decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ponder.model.chat import ChatFormat, Message
from ponder.engine.base import SamplingParams
from ponder.serve.batcher import Batcher, Job, QueueFull
from ponder.serve.completions import CompletionRequest, RawKey
from ponder.serve.completions import response as raw_response
from ponder.serve.metrics import CONTENT_TYPE, ServerMetrics
from ponder.serve.protocol import APIError, ChatRequest, validation_message
from ponder.think.base import Strategy, Thought, Usage
from ponder.think.stream import MarkerCut

log = logging.getLogger("ponder.serve")


@dataclass
class ServeConfig:
    model_name: str = "ponder-tiny"
    api_keys: tuple[str, ...] = ()
    expose_reasoning: bool = False
    max_batch: int = 32  # choices solved together in one engine call
    max_queue: int = 256  # choices waiting before new requests get 429
    request_timeout: float = 600.0  # seconds from arrival to the last token
    keepalive_s: float = 1.0  # SSE comment interval while the model thinks


@dataclass(frozen=True)
class StrategyKey:
    """What a batch must agree on: requests with equal keys share engine calls."""

    effort: str
    temperature: float | None
    top_p: float
    seed: int | None


def create_app(strategy_for: Callable[[StrategyKey], Strategy], chat: ChatFormat,
               count_tokens: Callable[[str], int], cfg: ServeConfig, max_positions: int | None = None,
               check_text: Callable[[str], None] | None = None, count_in_thread: bool = False) -> FastAPI:
    """A server around `strategy_for`. `count_tokens` runs on the event loop's thread, or in worker
    threads with `count_in_thread` (for a slow, thread-safe counter such as a remote one)."""
    app = FastAPI(title="ponder", version="0.1.0")
    batcher = Batcher(strategy_for, max_batch=cfg.max_batch, max_queue=cfg.max_queue)
    metrics = ServerMetrics(lambda: batcher.depth, lambda: batcher.busy, lambda: batcher.batches)
    app.state.batcher, app.state.metrics = batcher, metrics
    app.router.add_event_handler("shutdown", batcher.close)

    def fail(e: APIError, started: float) -> JSONResponse:
        metrics.record(e.status, time.monotonic() - started, e.type)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return fail(APIError(400, message, param=param), time.monotonic())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(APIError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return fail(exc, time.monotonic())

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed: %s", type(exc).__name__)  # no message: it could quote hidden text
        return fail(APIError(500, "internal error; see the server log", type="server_error"), time.monotonic())

    def authorize(request: Request) -> None:
        if not cfg.api_keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        # compare against every key, so timing says nothing about which (or whether one) matched
        ok = False
        for key in cfg.api_keys:
            ok |= secrets.compare_digest(token.encode(), key.encode())
        if not ok:
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                           type="authentication_error", code="invalid_api_key")

    async def count(text: str) -> int:
        # a remote engine counts over HTTP: off the event loop, so other requests go on meanwhile
        return await asyncio.to_thread(count_tokens, text) if count_in_thread else count_tokens(text)

    def check_model(name: str) -> None:
        if name != cfg.model_name:
            raise APIError(404, f"model {name!r} not found; this server serves {cfg.model_name!r}",
                           param="model", code="model_not_found")

    def submit(job: Job) -> None:
        try:
            batcher.submit(job)
        except QueueFull:
            raise APIError(429, "the server is busy: its queue is full; retry shortly", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": cfg.model_name, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [_model_card(cfg.model_name)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        check_model(model_id)
        return _model_card(cfg.model_name)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
        started = time.monotonic()
        authorize(request)
        check_model(req.model)
        conversation = _conversation(req, check_text)
        try:
            prompt_tokens = await count(chat.render(conversation))
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        if max_positions is not None and prompt_tokens >= max_positions:
            raise APIError(413, f"the prompt has {prompt_tokens} tokens; the model's context holds {max_positions}",
                           param="messages", code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        key = StrategyKey(req.reasoning_effort, req.temperature, req.top_p, req.seed)
        job = Job(conversation, req.n, key, req.budget, loop, asyncio.Queue(),
                  deadline=started + cfg.request_timeout, seeded=req.seed is not None)
        submit(job)
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        show = cfg.expose_reasoning and req.include_reasoning
        if req.stream:
            return StreamingResponse(_stream(job, req, request, rid, show, started), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            thoughts = await _wait(job, request)
        except APIError as e:
            return fail(e, started)
        body = _response(rid, req, thoughts, show)
        _account(body["usage"], started, 200)
        return JSONResponse(body)

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest, request: Request) -> JSONResponse:
        started = time.monotonic()
        authorize(request)
        check_model(req.model)
        if req.stream or req.echo:
            raise APIError(400, "stream and echo are not supported on /v1/completions",
                           param="stream" if req.stream else "echo")
        if check_text is not None:
            try:
                check_text(req.prompt)
            except ValueError as e:
                raise APIError(400, f"prompt: {e}", param="prompt") from None
        n_prompt = await count(req.prompt)
        if max_positions is not None and n_prompt + req.max_tokens > max_positions:
            raise APIError(413, f"the prompt has {n_prompt} tokens; with max_tokens={req.max_tokens} it exceeds "
                                f"the model's context of {max_positions}", param="prompt",
                           code="context_length_exceeded")
        params = SamplingParams(n=1, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens,
                                stop=tuple(req.stop or ()), seed=req.seed, logprobs=bool(req.logprobs))
        job = Job(req.prompt, req.n, RawKey(params), None, asyncio.get_running_loop(), asyncio.Queue(),
                  deadline=started + cfg.request_timeout, seeded=req.seed is not None)
        submit(job)
        try:
            results = await _wait(job, request)
        except APIError as e:
            return fail(e, started)
        body = raw_response(f"cmpl-{uuid.uuid4().hex[:24]}", req.model, results, req.stop or [])
        metrics.count_tokens(body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"], 0)
        metrics.record(200, time.monotonic() - started)
        return JSONResponse(body)

    def _account(usage: dict[str, Any], started: float, status: int) -> None:
        metrics.count_tokens(usage["prompt_tokens"], usage["completion_tokens"],
                             usage["completion_tokens_details"]["reasoning_tokens"])
        metrics.record(status, time.monotonic() - started)
        log.info("chat completion: %d prompt, %d completion (%d reasoning) tokens, %.2fs",
                 usage["prompt_tokens"], usage["completion_tokens"],
                 usage["completion_tokens_details"]["reasoning_tokens"], time.monotonic() - started)

    async def _wait(job: Job, request: Request) -> list[Thought]:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise APIError(499, "client closed the request", code="client_closed") from None
                    if job.deadline is not None and time.monotonic() > job.deadline:
                        raise _timeout(cfg.request_timeout) from None
                    continue
                if event[0] == "done":
                    if job.expired():  # its chains were cut short at the deadline: not an answer
                        raise _timeout(cfg.request_timeout)
                    return event[1]
                if event[0] == "error":
                    raise _engine_error(event[1], cfg.request_timeout)
        finally:
            job.cancelled = True  # a no-op when done; otherwise the engine drops its rows

    async def _stream(job: Job, req: ChatRequest, request: Request, rid: str, show: bool,
                      started: float) -> AsyncIterator[str]:
        created = int(time.time())
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                "system_fingerprint": None}

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

        stoppers = [_AnswerStop(req.stops) for _ in range(req.n)]
        streamed_answer = [False] * req.n
        streamed_reasoning = [False] * req.n
        try:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for i in range(req.n)])
            while True:
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout=cfg.keepalive_s)
                except asyncio.TimeoutError:
                    if job.deadline is not None and time.monotonic() > job.deadline:
                        e = _timeout(cfg.request_timeout)
                        metrics.record(e.status, time.monotonic() - started, e.type)
                        yield f"data: {json.dumps(e.body())}\n\ndata: [DONE]\n\n"
                        return
                    if await request.is_disconnected():
                        return
                    yield ": thinking\n\n"  # keep-alive: an SSE comment clients ignore
                    continue
                kind = event[0]
                if kind == "reasoning":
                    if show:
                        streamed_reasoning[event[1]] = True
                        yield chunk([_delta(event[1], reasoning_content=event[2])])
                elif kind == "answer":
                    i = event[1]
                    text = stoppers[i].feed(event[2])
                    streamed_answer[i] = True
                    if text:
                        yield chunk([_delta(i, content=text)])
                elif kind == "error" or job.expired():  # an error, or chains cut short at the deadline
                    e = _engine_error(event[1] if kind == "error" else "cancelled", cfg.request_timeout)
                    metrics.record(e.status, time.monotonic() - started, e.type)
                    yield f"data: {json.dumps(e.body())}\n\ndata: [DONE]\n\n"
                    return
                else:
                    thoughts: list[Thought] = event[1]
                    finals = []
                    for i, th in enumerate(thoughts):
                        if show and not streamed_reasoning[i] and th.reasoning:
                            yield chunk([_delta(i, reasoning_content=th.reasoning)])
                        content, finish = _final_answer(th, req.stops)
                        rest = stoppers[i].flush() if streamed_answer[i] else content
                        if rest:
                            yield chunk([_delta(i, content=rest)])
                        finals.append({"index": i, "delta": {}, "logprobs": None, "finish_reason": finish})
                    yield chunk(finals)
                    usage = _usage(thoughts)
                    if req.include_usage:
                        yield chunk([], usage=usage)
                    yield "data: [DONE]\n\n"
                    _account(usage, started, 200)
                    return
        finally:
            job.cancelled = True  # the client left (or we are done): stop spending compute on it

    return app


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ponder"}


def _conversation(req: ChatRequest, check_text: Callable[[str], None] | None) -> list[Message]:
    turns = []
    for i, m in enumerate(req.messages):
        text = m.text()
        if check_text is not None and text:
            try:
                check_text(text)
            except ValueError as e:
                raise APIError(400, f"messages[{i}]: {e}", param=f"messages.{i}.content") from None
        role = "system" if m.role == "developer" else m.role
        turns.append(Message(role, text))
    if turns[-1].role != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    if not turns[-1].content.strip():
        raise APIError(400, "the last user message is empty", param="messages")
    return turns


def _delta(index: int, **delta: str) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


def _timeout(limit: float) -> APIError:
    return APIError(504, f"the request took longer than the server's {limit:g}s limit", type="timeout",
                    code="timeout")


def _engine_error(err: object, limit: float) -> APIError:
    if err == "cancelled":
        return _timeout(limit)
    if isinstance(err, ValueError):  # PonderError: bad input the checks above did not catch
        return APIError(400, str(err).splitlines()[0])
    return APIError(500, "the engine failed on this request; see the server log", type="server_error")


def _final_answer(thought: Thought, stops: list[str]) -> tuple[str, str]:
    """(content, finish_reason): the answer cut at the first stop sequence."""
    content, finish = thought.answer, "length" if thought.finish_reason == "length" else "stop"
    for s in stops:
        if s in content:
            content = content.split(s, 1)[0]
    return content, finish


def _usage(thoughts: list[Thought]) -> dict[str, Any]:
    total = Usage()
    for th in thoughts:
        total.add(th.usage)
    prompt = thoughts[0].usage.prompt_tokens if thoughts else 0  # one prompt, however many choices
    return {"prompt_tokens": prompt, "completion_tokens": total.completion_tokens,
            "total_tokens": prompt + total.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": total.reasoning_tokens,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            "prompt_tokens_details": {"cached_tokens": 0}}


def _response(rid: str, req: ChatRequest, thoughts: list[Thought], show: bool) -> dict[str, Any]:
    choices = []
    for i, th in enumerate(thoughts):
        content, finish = _final_answer(th, req.stops)
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if show:
            message["reasoning_content"] = th.reasoning
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": req.model,
            "choices": choices, "usage": _usage(thoughts), "system_fingerprint": None}


class _AnswerStop:
    """Streams a choice's answer up to the first stop sequence, without the leading space the
    final answer does not have either."""

    def __init__(self, stops: list[str]) -> None:
        self.cut, self.started = MarkerCut(stops), False

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return self.cut.feed(text)[0]

    def flush(self) -> str:
        """What was held back at the end: it did not become a stop sequence."""
        return self.cut.flush()
