"""Benchmark: `ponder serve` under load, sequential against concurrent, same request mix.

    .venv/bin/python bench/serve_load.py [--requests 500] [--concurrency 32] [--sequential 60]
                                         [--threads N] [--seed S] [--out bench/results/serve_load.json]

Starts `ponder serve` (built-in model) in a subprocess on a free loopback port
and drives it with the official async openai client. The request mix is fixed
by a seed: held-out questions from add, mul, s5 and modadd at low levels;
every 4th request streams (with usage), every 5th asks for n=2, every 6th uses
reasoning_effort=medium, the rest low; `--seed` sends that seed with every request. The first `--sequential` requests of
the mix run one at a time; then all `--requests` run with `--concurrency`
in flight. Reported: errors, requests/s, p50/p99 latency (to the last byte),
completion tokens/s, and the concurrent/sequential throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import openai

from ponder.evaluate import heldout_problems

FAMILIES = [("add", 3), ("mul", 2), ("s5", 2), ("modadd", 2)]


def request_mix(count: int, seed: int | None = None) -> list[dict]:
    per = count // len(FAMILIES) + 1
    pools = [heldout_problems(name, level, per, seed=7) for name, level in FAMILIES]
    mix = []
    for k in range(count):
        p = pools[k % len(pools)][k // len(pools)]
        req = {"messages": [{"role": "user", "content": p.question}], "reasoning_effort": "low"}
        if seed is not None:
            req["seed"] = seed
        if k % 6 == 5:
            req["reasoning_effort"] = "medium"
        if k % 5 == 4:
            req["n"] = 2
        if k % 4 == 3:
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        mix.append(req)
    return mix


async def one(client: openai.AsyncOpenAI, req: dict) -> tuple[float, int, str | None]:
    """(latency s, completion tokens, error)"""
    t0 = time.perf_counter()
    try:
        if req.get("stream"):
            tokens = 0
            async for chunk in await client.chat.completions.create(model="ponder-tiny", **req):
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
        else:
            r = await client.chat.completions.create(model="ponder-tiny", **req)
            tokens = r.usage.completion_tokens
    except Exception as e:  # count it, keep going
        return time.perf_counter() - t0, 0, f"{type(e).__name__}: {e}"[:200]
    return time.perf_counter() - t0, tokens, None


async def run(url: str, mix: list[dict], concurrency: int) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    sem = asyncio.Semaphore(concurrency)

    async def guarded(req):
        async with sem:
            return await one(client, req)

    t0 = time.perf_counter()
    results = await asyncio.gather(*[guarded(r) for r in mix])
    wall = time.perf_counter() - t0
    await client.close()
    lat = sorted(r[0] for r in results)
    errors = [r[2] for r in results if r[2]]
    return {"requests": len(mix), "concurrency": concurrency, "errors": len(errors), "error_samples": errors[:3],
            "seconds": round(wall, 2), "requests_per_s": round(len(mix) / wall, 3),
            "completion_tokens_per_s": round(sum(r[1] for r in results) / wall, 1),
            "p50_s": round(statistics.median(lat), 3), "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    ap.add_argument("--seed", type=int, help="a seed in every request")
    ap.add_argument("--out", default="bench/results/serve_load.json")
    args = ap.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    server = subprocess.Popen([sys.executable, "-m", "ponder", "serve", "--port", str(port), "--max-queue", "4096"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        mix = request_mix(args.requests, args.seed)
        asyncio.run(run(url, mix[:8], 1))  # warm-up
        sequential = asyncio.run(run(url, mix[: args.sequential], 1))
        print("sequential:", json.dumps(sequential))
        concurrent = asyncio.run(run(url, mix, args.concurrency))
        print("concurrent:", json.dumps(concurrent))
    finally:
        server.terminate()
        server.wait(timeout=30)
    ratio = concurrent["requests_per_s"] / sequential["requests_per_s"]
    out = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "command": " ".join(["python", "bench/serve_load.py", *sys.argv[1:]]),
           "sequential": sequential, "concurrent": concurrent, "throughput_ratio": round(ratio, 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"throughput at concurrency {args.concurrency}: {ratio:.2f}x sequential; "
          f"{concurrent['errors']} errors in {concurrent['requests']} requests")


if __name__ == "__main__":
    main()
