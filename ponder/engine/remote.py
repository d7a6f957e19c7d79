"""An engine that samples from a model served elsewhere, over HTTP.

ponder's strategies, budgets and hidden-reasoning semantics only need an engine,
so they can front any model an OpenAI-compatible server hosts (vLLM, the
llama.cpp server, Ollama, another ponder). `RemoteEngine` uses the legacy text
completions endpoint, `POST {base_url}/completions`: a raw prompt in, text out,
so a prompt may end anywhere, inside the think block included.

The OpenAI API strips a matched stop string from the text; ponder's contract
keeps it at the end, so it is put back where the server says which one matched
(vLLM's `stop_reason`, llama.cpp's `stopping_word`). Where the server does not
say, its "stop" is reported as "eos": no stop string is known to have matched.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from ponder import PonderError
from ponder.engine.base import Capabilities, Completion, EngineStats, FinishReason, SamplingParams, StepListener, cut_at_stop

__all__ = ["RemoteCompletion", "RemoteEngine"]

MAX_API_STOPS = 4  # the OpenAI API takes at most 4 stop strings


@dataclasses.dataclass
class RemoteCompletion(Completion):
    """A completion whose token count is the server's, not `len(token_ids)` (`token_ids`
    is empty without a tokenizer, the tokenizer's re-encoding of `text` with one)."""

    generated_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.generated_tokens


class RemoteEngine:
    """Sampling from an OpenAI-compatible server's `POST {base_url}/completions`.

    `base_url` includes the API prefix (`http://localhost:8000/v1`). One request
    per prompt, up to `max_concurrency` at once. Token counts are the server's
    where they are exact (`usage` for one sample, the length of the logprobs);
    for `n > 1` without logprobs the server reports only a total, split over the
    samples in proportion to their text (tokenizer counts, else bytes) so the sum
    stays exact. More than 4 stop strings are not sent (the API's limit): the text
    is cut locally at the earliest. Greedy `n > 1` asks for one sample and copies
    it; a server that returns fewer samples than asked is asked again for the rest.
    `stats.generated_tokens` counts what the server generated.
    """

    capabilities = Capabilities(n=True, stop_strings=True, logprobs=True, prefix_continuation=True, streaming=False)

    def __init__(self, base_url: str, model: str, api_key: str | None = None, tokenizer=None,
                 timeout: float = 600.0, max_concurrency: int = 8, max_positions: int | None = None) -> None:
        parts = urlsplit(base_url if isinstance(base_url, str) else "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PonderError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if max_concurrency < 1:
            raise PonderError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout <= 0:
            raise PonderError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.model, self.tokenizer, self.max_positions = model, tokenizer, max_positions
        self.timeout, self.max_concurrency = timeout, max_concurrency
        self.stats = EngineStats()
        root = self.base_url.removesuffix("/v1")
        self._tokenize_url: str | None = root + "/tokenize"  # None once it failed
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers,
                                    limits=httpx.Limits(max_connections=max_concurrency))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`: the tokenizer's count if one was given, else the server's
        `POST /tokenize` (vLLM, llama.cpp) while it answers, else an ESTIMATE of one
        token per 4 bytes of UTF-8."""
        if self.tokenizer is None and self._tokenize_url is not None:
            n = self._server_count(text)
            if n is not None:
                return n
        return self._local_count(text)

    def generate(self, prompts: list[str], params: SamplingParams,
                 on_step: StepListener | None = None) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order."""
        if on_step is not None:
            raise PonderError("RemoteEngine does not stream: capabilities.streaming is False")
        prompts = list(prompts) if not isinstance(prompts, str) else None
        if prompts is None or not all(isinstance(p, str) for p in prompts):
            raise PonderError("generate takes a list of prompt strings")
        if not prompts:
            return []
        if params.max_tokens == 0:
            results = [([RemoteCompletion("", [], "length", k, logprobs=[] if params.logprobs else None)
                         for _ in range(params.n)], k, 0) for k in map(self.count_tokens, prompts)]
        else:
            workers = min(self.max_concurrency, len(prompts))
            if workers == 1:
                results = [self._request(p, params) for p in prompts]
            else:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="ponder-remote")
                try:
                    results = list(pool.map(lambda p: self._request(p, params), prompts))
                finally:
                    pool.shutdown(wait=False, cancel_futures=True)
        self.stats.calls += 1
        self.stats.prompt_tokens += sum(r[1] for r in results)
        self.stats.prefilled_tokens += sum(r[1] for r in results)
        generated = sum(r[2] for r in results)
        self.stats.generated_tokens += generated
        self.stats.per_call.append(generated)
        return [r[0] for r in results]

    # -- pieces ----------------------------------------------------------------

    def _request(self, prompt: str, params: SamplingParams) -> tuple[list[Completion], int, int]:
        """(completions, prompt tokens, tokens the server generated) for one prompt."""
        url, stops = self.base_url + "/completions", tuple(s for s in params.stop if s)
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "temperature": params.temperature,
                                "top_p": params.top_p, "max_tokens": params.max_tokens}
        if stops and len(stops) <= MAX_API_STOPS:
            body["stop"] = list(stops)
        if params.logprobs:
            body["logprobs"] = 1
        want = 1 if params.temperature == 0 else params.n
        out: list[Completion] = []
        n_prompt, spent = None, 0
        while len(out) < want:
            body["n"] = want - len(out)
            if params.seed is not None:
                # a repeated request, or one that goes on from `first_sample`, must not repeat earlier samples
                body["seed"] = params.seed + len(out) + 7919 * params.first_sample
            data = self._post(url, body)
            choices = data.get("choices")
            if not isinstance(choices, list) or not 0 < len(choices) <= body["n"] \
                    or not all(isinstance(c, dict) for c in choices):
                got = len(choices) if isinstance(choices, list) else "no"
                raise PonderError(f"{url} returned {got} choices, expected {body['n']}")
            choices = sorted(choices, key=lambda c: c.get("index") or 0)
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            if n_prompt is None:
                n_prompt = usage.get("prompt_tokens")
                n_prompt = n_prompt if isinstance(n_prompt, int) else self.count_tokens(prompt)
            total = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
            texts = [c.get("text") if isinstance(c.get("text"), str) else "" for c in choices]
            got = [self._completion(c, t, s, n_prompt, stops, params.logprobs)
                   for c, t, s in zip(choices, texts, self._split(total, texts))]
            spent += total if total is not None else sum(c.num_tokens for c in got)
            out += got
        out += [dataclasses.replace(out[0], token_ids=list(out[0].token_ids),  # greedy: all samples alike
                                    logprobs=None if out[0].logprobs is None else list(out[0].logprobs))
                for _ in range(params.n - len(out))]
        return out, n_prompt, spent

    def _completion(self, choice: dict, raw: str, share: int | None, n_prompt: int,
                    stops: tuple[str, ...], want_logprobs: bool) -> RemoteCompletion:
        text, stop = cut_at_stop(raw, stops)  # stops the server was not sent, or did not strip
        finish: FinishReason = "stop"
        if stop is None and choice.get("finish_reason") in ("length", "abort"):
            finish = choice["finish_reason"]
        elif stop is None:
            said = next((v for v in (choice.get("stop_reason"), choice.get("stopping_word"))
                         if isinstance(v, str) and v in stops), None)
            if choice.get("finish_reason") == "stop" and said is not None:
                text, stop = raw + said, said
            else:
                finish = "eos"
        logprobs = _logprobs(choice, len(text) if len(text) < len(raw) else None) if want_logprobs else None
        if isinstance(choice.get("num_tokens"), int) and len(text) == len(raw) + len(stop or ""):
            n = choice["num_tokens"]  # the server said (ponder does, per choice)
        elif logprobs:
            n = len(logprobs)
        elif share is None:
            n = self.count_tokens(text)
        elif len(text) < len(raw):  # cut locally: the kept part's share of the server's count
            n = min(share, round(share * self._local_count(text) / max(1, self._local_count(raw))))
        else:
            n = share
        ids = self._encode(text) if self.tokenizer is not None else []
        return RemoteCompletion(text, ids, finish, n_prompt, stop, logprobs, generated_tokens=n)

    def _split(self, total: int | None, texts: list[str]) -> list[int | None]:
        """The server's total completion tokens split over samples by their local counts, exactly."""
        if total is None or len(texts) == 1:
            return [total] * len(texts)
        weights = [self._local_count(t) for t in texts]
        weights = weights if sum(weights) else [1] * len(texts)
        raw = [total * w / sum(weights) for w in weights]
        shares = [int(x) for x in raw]
        for i in sorted(range(len(raw)), key=lambda i: shares[i] - raw[i])[: total - sum(shares)]:
            shares[i] += 1
        return shares

    def _post(self, url: str, body: dict, timeout: float | None = None) -> dict:
        timeout = timeout or self.timeout
        try:
            r = self._client.post(url, json=body, timeout=timeout)
        except httpx.TimeoutException:
            raise PonderError(f"{url}: no answer within {timeout:g} s") from None
        except httpx.HTTPError as e:
            why = " ".join(str(e).split()) or type(e).__name__
            raise PonderError(f"{url}: cannot reach the server ({why})") from None
        if not r.is_success:
            raise PonderError(f"{url} returned HTTP {r.status_code}: {_error_message(r)}")
        data = _json(r)
        if not isinstance(data, dict):
            raise PonderError(f"{url} returned HTTP {r.status_code} without a JSON object")
        return data

    def _server_count(self, text: str) -> int | None:
        try:  # vLLM reads `prompt`, llama.cpp reads `content`
            data = self._post(self._tokenize_url, {"model": self.model, "prompt": text, "content": text,
                                                   "add_special_tokens": False}, timeout=min(self.timeout, 30.0))
        except PonderError:
            data = {}
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or (text and not tokens):
            self._tokenize_url = None  # no usable /tokenize: estimate from now on
            return None
        return len(tokens)

    def _local_count(self, text: str) -> int:
        return len(self._encode(text)) if self.tokenizer is not None else (len(text.encode()) + 3) // 4

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _logprobs(choice: dict, keep_chars: int | None) -> list[float] | None:
    """`choices[i].logprobs.token_logprobs`, only the tokens that start in the first `keep_chars`."""
    lp = choice.get("logprobs")
    values = lp.get("token_logprobs") if isinstance(lp, dict) else None
    if not isinstance(values, list):
        return None
    offsets = lp.get("text_offset")
    if keep_chars is not None and isinstance(offsets, list) and len(offsets) == len(values) and offsets:
        values = [v for v, o in zip(values, offsets) if o - offsets[0] < keep_chars]
    return [float(v) for v in values if isinstance(v, (int, float))]


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def _error_message(r: httpx.Response) -> str:
    """The server's own error message (OpenAI `{"error": {"message": ...}}` and kin), on one line."""
    data, msg = _json(r), None
    if isinstance(data, dict):
        err = data.get("error")
        msg = (err.get("message") if isinstance(err, dict) else err) or data.get("detail") or data.get("message")
    return " ".join(str(r.text[:300] if msg is None else msg).split()) or r.reason_phrase or "no message"
