"""Benchmark: optillm's `bon` and `self_consistency` in front of `ponder serve`, beside ponder's own efforts.

    nice -n 19 .venv/bin/python bench/optillm_compare.py [--quick] [--tasks compare:3,modadd:4] [-n 25]
                                                         [--concurrency 16] [--threads N]
                                                         [--out bench/results/optillm.json]

optillm (an inference-optimizing proxy, a pip package) is never a dependency of
ponder and never enters `.venv`: on first use this script builds its own venv,
`bench/.venv-optillm` (CPU torch==2.13.0 first, then optillm pinned, with the
repository's constraints.txt so no CUDA torch is pulled).

It starts `ponder serve` (built-in model) on a free loopback port and one optillm
proxy per best-of-n size with `--base-url` pointing at it; optillm picks its
approach from the model-name prefix (`bon-ponder-tiny`, `self_consistency-ponder-tiny`,
`none-ponder-tiny` passes the request through). Every row answers the same held-out
questions; an answer is scored with the task's own `check`. Tokens are the
completion tokens ponder generated for the row, read from ponder's own `/metrics`
counter before and after (exact: hidden reasoning, every chain and every rating
call included); the usage optillm reports back is recorded beside it.

Rows: ponder low (one greedy chain), medium (majority of 5), high (majority of 16),
and one request shaped exactly like each of optillm's samples (an empty system
turn, the question as "User: QUESTION", temperature 1, no reasoning_effort), and
the same without the "User: " prefix, all asked directly; optillm `none`
(pass-through, reasoning_effort=low forwarded: the proxy itself as a control),
`bon` with n=5 and n=16, and `self_consistency` (optillm fixes it at 5 samples).
optillm's record of every upstream call (`--log-conversations`) is summarised:
the request shapes ponder received and how its answers to them ended.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import torch
from tqdm import tqdm

from ponder.evaluate import heldout_problems
from ponder.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
OPTILLM_VERSION = "0.4.0"
TORCH_PIN = "torch==2.13.0"
MODEL = "ponder-tiny"


# ---------------------------------------------------------------- the optillm venv

def ensure_optillm_venv(venv: Path) -> Path:
    """The `optillm` executable of a venv of its own, built on first use (minutes, ~3 GB)."""
    exe = venv / "bin" / "optillm"
    stamp = venv / f".installed-optillm-{OPTILLM_VERSION}"
    if exe.exists() and stamp.exists():
        return exe
    print(f"building {venv} for optillm {OPTILLM_VERSION} (first use only) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)  # not ponder's venv: a clean interpreter
    if not (venv / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)  # a current resolver: optillm has ~200 dependencies
    # the CPU torch first, so no dependency can pull a CUDA build; then optillm under the same pin
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), f"optillm=={OPTILLM_VERSION}"], check=True)
    stamp.touch()
    return exe


# ---------------------------------------------------------------- processes

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_healthy(url: str, proc: subprocess.Popen, what: str, limit_s: float = 300) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} was not ready after {limit_s:.0f}s")


def start_ponder(port: int, threads: int | None, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "ponder", "serve", "--port", str(port), "--max-queue", "4096"],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def start_optillm(exe: Path, port: int, upstream: str, best_of_n: int, log: Path, cwd: Path,
                  conversations: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTILLM_", "CEREBRAS_", "AZURE_", "OPENAI_", "HF_"))}
    # optillm builds an OpenAI client for --base-url when OPENAI_API_KEY is set (ponder runs open: any key)
    env.update(OPENAI_API_KEY="ponder-bench", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [str(exe), "--base-url", upstream, "--port", str(port), "--host", "127.0.0.1",
           "--best-of-n", str(best_of_n), "--log", "info",
           # optillm's own record of every upstream request and response: how its requests look to ponder
           "--log-conversations", "--conversation-log-dir", str(conversations)]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- measuring

_METRIC = re.compile(r'^(ponder_tokens_total\{kind="(\w+)"\}|ponder_requests_total\{status="(\d+)"\})\s+(\S+)$')


def ponder_counters(url: str) -> dict[str, float]:
    """ponder's own counters: tokens by kind and answered requests by status."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        m = _METRIC.match(line)
        if m:
            out[f"tokens_{m.group(2)}" if m.group(2) else f"requests_{m.group(3)}"] = float(m.group(4))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: int(after[k] - before.get(k, 0.0)) for k in sorted(after) if after[k] - before.get(k, 0.0)}


def ask(client: httpx.Client, url: str, body: dict) -> tuple[str | None, int | None, str | None]:
    """(answer content, completion tokens the responder reported, error)"""
    try:
        r = client.post(url + "/v1/chat/completions", json=body)
    except httpx.HTTPError as e:
        return None, None, f"{type(e).__name__}: {e}"[:300]
    try:
        data = r.json()
    except ValueError:
        return None, None, f"HTTP {r.status_code}: {r.text[:200]}"
    if r.status_code != 200:
        err = data.get("error") if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
        return None, None, f"HTTP {r.status_code}: {msg}"[:300]
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None, None, f"no choices in the response: {json.dumps(data)[:200]}"
    usage = data.get("usage") or {}
    return content, usage.get("completion_tokens"), None


def run_row(row: dict, problems: list, task_name: str, ponder_url: str, concurrency: int,
            bar: tqdm, timeout_s: float) -> dict:
    task = get_task(task_name)
    url = row["url"]
    before = ponder_counters(ponder_url)
    t0 = time.perf_counter()
    lock = threading.Lock()

    def one(p):
        messages = [{"role": "user", "content": row.get("user_prefix", "") + p.question}]
        if "system" in row:
            messages.insert(0, {"role": "system", "content": row["system"]})
        body = {"model": row["model"], "messages": messages, **row["extra"]}
        with httpx.Client(timeout=timeout_s) as client:
            content, reported, err = ask(client, url, body)
        ok = bool(content) and task.check(p, content)
        with lock:
            bar.update(1)
        return {"question": p.question, "expected": p.answer, "answer": content, "correct": ok,
                "reported_completion_tokens": reported, "error": err}

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        records = list(pool.map(one, problems))
    seconds = time.perf_counter() - t0
    time.sleep(0.2)  # the server counts a request's tokens just after it answers
    used = delta(ponder_counters(ponder_url), before)
    n = len(problems)
    correct = sum(r["correct"] for r in records)
    errors = [r["error"] for r in records if r["error"]]
    tokens = used.get("tokens_completion", 0)
    reported = [r["reported_completion_tokens"] for r in records if r["reported_completion_tokens"] is not None]
    upstream_requests = sum(v for k, v in used.items() if k.startswith("requests_"))
    return {
        "approach": row["name"], "n": row["n"], "task": task_name, "questions": n, "correct": correct,
        "accuracy": round(correct / n, 4),
        "completion_tokens": tokens, "tokens_per_question": round(tokens / n, 1),
        "correct_per_1k_tokens": round(1000 * correct / tokens, 4) if tokens else None,
        "reported_tokens_per_question": round(sum(reported) / len(reported), 1) if reported else None,
        "prompt_tokens_per_question": round(used.get("tokens_prompt", 0) / n, 1),
        "upstream_requests_per_question": round(upstream_requests / n, 2),
        "upstream_requests_by_status": {k[len("requests_"):]: v for k, v in used.items() if k.startswith("requests_")},
        "errors": len(errors), "error_samples": sorted(set(errors))[:3],
        "seconds": round(seconds, 1), "records": records,
    }


def _rating(choice: dict) -> float:
    """The score optillm's bon reads from a rating answer: 0 when cut at the length limit or not a number."""
    text = (choice.get("message") or {}).get("content")
    if choice.get("finish_reason") == "length" or text is None:
        return 0.0
    try:
        return float(text.strip())
    except ValueError:
        return 0.0


def upstream_calls(conversations: Path, cell_of: dict[str, str]) -> dict[str, dict]:
    """What optillm sent to ponder, per cell and approach: the request shapes (roles, n, temperature,
    max_tokens, reasoning_effort), how often each was sent, how ponder's answers to it ended, and for bon
    the ratings it got back and which candidate they made it pick."""
    out: dict[str, dict] = {}
    for f in sorted(conversations.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            entry = json.loads(line)
            question = entry["client_request"]["messages"][-1]["content"]
            key = f"{cell_of.get(question, '?')} {entry['approach']}"
            s = out.setdefault(key, {"client_requests": 0, "upstream_calls": 0, "shapes": {}, "errors": []})
            s["client_requests"] += 1
            if entry.get("error"):
                s["errors"].append(str(entry["error"])[:200])
            calls = entry.get("provider_calls") or []
            for call in calls:
                req, resp = call.get("request") or {}, call.get("response") or {}
                s["upstream_calls"] += 1
                roles = "+".join(m.get("role", "?") for m in req.get("messages", []))
                shape_key = (f"messages={roles} n={req.get('n', 1)} temperature={req.get('temperature')} "
                             f"max_tokens={req.get('max_tokens')} "
                             f"reasoning_effort={req.get('reasoning_effort', '(unset)')}")
                shape = s["shapes"].setdefault(shape_key, {"calls": 0, "finish_reasons": {}, "contents": {},
                                                           "example": req})
                shape["calls"] += 1
                for ch in (resp.get("choices") or []) if isinstance(resp, dict) else []:
                    fr = str(ch.get("finish_reason"))
                    shape["finish_reasons"][fr] = shape["finish_reasons"].get(fr, 0) + 1
                    text = (ch.get("message") or {}).get("content")
                    text = "(empty)" if not text else text[:20]
                    shape["contents"][text] = shape["contents"].get(text, 0) + 1
            if entry["approach"] == "bon" and len(calls) > 1:  # replay bon's choice: the first best rating
                ratings = [_rating(((c.get("response") or {}).get("choices") or [{}])[0]) for c in calls[1:]]
                s["ratings_nonzero"] = s.get("ratings_nonzero", 0) + sum(r != 0 for r in ratings)
                s["ratings"] = s.get("ratings", 0) + len(ratings)
                s["picked_other_than_first"] = s.get("picked_other_than_first", 0) + (
                    ratings.index(max(ratings)) != 0)
    for s in out.values():
        for shape in s["shapes"].values():  # the 8 most common answers are enough to see what came back
            shape["contents"] = dict(sorted(shape["contents"].items(), key=lambda kv: -kv[1])[:8])
    return out


# ---------------------------------------------------------------- report

def table(rows: list[dict]) -> str:
    header = ("| task | approach | n | accuracy | tokens/question | accuracy per 1k tokens | reported tokens/q "
              "| upstream requests/q | errors | s |")
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        c = r["correct_per_1k_tokens"]
        per_1k = "—" if c is None else f"{c:.2f}" if c >= 0.1 or c == 0 else f"{c:.3f}"
        rep = "—" if r["reported_tokens_per_question"] is None else f"{r['reported_tokens_per_question']:.0f}"
        lines.append(f"| {r['task']} | {r['approach']} | {r['n']} | {100 * r['accuracy']:.1f}% "
                     f"| {r['tokens_per_question']:.0f} | {per_1k} | {rep} | {r['upstream_requests_per_question']:.2f} "
                     f"| {r['errors']}/{r['questions']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="compare:3,modadd:4", help="comma-separated TASK:LEVEL cells")
    ap.add_argument("-n", type=int, default=25, help="held-out questions per cell")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out questions")
    ap.add_argument("--quick", action="store_true", help="a smoke run: the first cell, 4 questions, no n=16 rows")
    ap.add_argument("--concurrency", type=int, default=16, help="questions in flight per row")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the ponder server (1: on 2 cores shared with other work, 2 threads "
                         "wait on each other)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a client waits for one answer")
    ap.add_argument("--optillm-venv", default=str(ROOT / "bench" / ".venv-optillm"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "optillm.json"))
    args = ap.parse_args()

    cells = []
    for cell in args.tasks.split(","):
        name, _, level = cell.partition(":")
        get_task(name)  # a clear error for an unknown task
        cells.append((name, int(level or 1)))
    n_q = args.n
    if args.quick:
        cells, n_q = cells[:1], min(n_q, 4)
    bon_sizes = [5] if args.quick else [5, 16]

    exe = ensure_optillm_venv(Path(args.optillm_venv))
    t_start = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="optillm-bench-"))
    ponder_port = free_port()
    ponder_url = f"http://127.0.0.1:{ponder_port}"
    procs: list[subprocess.Popen] = []
    try:
        server = start_ponder(ponder_port, args.threads, logs / "ponder.log")
        procs.append(server)
        proxies: dict[int, str] = {}
        for k in bon_sizes:  # --best-of-n is a server-wide setting of optillm: one proxy per size
            port = free_port()
            procs.append(start_optillm(exe, port, ponder_url + "/v1", k, logs / f"optillm-{k}.log", logs,
                                       logs / f"conversations-{k}"))
            proxies[k] = f"http://127.0.0.1:{port}"
        wait_healthy(ponder_url, server, "ponder serve")
        for k, url in proxies.items():
            wait_healthy(url, procs[1 + bon_sizes.index(k)], f"optillm (--best-of-n {k}); log: {logs}")
        startup_s = time.perf_counter() - t_start
        print(f"servers up in {startup_s:.0f}s; logs in {logs}", flush=True)

        rows = [
            {"name": "ponder low", "n": 1, "url": ponder_url, "model": MODEL, "extra": {"reasoning_effort": "low"}},
            {"name": "ponder medium", "n": 5, "url": ponder_url, "model": MODEL,
             "extra": {"reasoning_effort": "medium"}},
            {"name": "ponder high", "n": 16, "url": ponder_url, "model": MODEL, "extra": {"reasoning_effort": "high"}},
            # one of the samples that optillm's bon and self_consistency ask for, sent directly: an empty system
            # turn, the question flattened into a "User: ..." transcript, temperature 1, max_tokens 4096 and no
            # reasoning_effort (so ponder's default, medium); and the same without the "User: " prefix
            {"name": "ponder, one sample as optillm sends it", "n": 1, "url": ponder_url, "model": MODEL,
             "system": "", "user_prefix": "User: ", "extra": {"temperature": 1, "max_tokens": 4096}},
            {"name": "ponder, the same without the prefix", "n": 1, "url": ponder_url, "model": MODEL,
             "system": "", "extra": {"temperature": 1, "max_tokens": 4096}},
            {"name": "optillm none (pass-through, low)", "n": 1, "url": proxies[5], "model": f"none-{MODEL}",
             "extra": {"reasoning_effort": "low"}},
            {"name": "optillm bon", "n": 5, "url": proxies[5], "model": f"bon-{MODEL}", "extra": {}},
            {"name": "optillm self_consistency", "n": 5, "url": proxies[5], "model": f"self_consistency-{MODEL}",
             "extra": {}},
        ]
        if 16 in proxies:
            rows.append({"name": "optillm bon", "n": 16, "url": proxies[16], "model": f"bon-{MODEL}", "extra": {}})
        else:
            rows = [r for r in rows if r["n"] != 16]

        cell_problems = [(name, level, heldout_problems(name, level, n_q, seed=args.seed)) for name, level in cells]
        total = sum(len(ps) for _, _, ps in cell_problems) * len(rows)
        results = []
        with tqdm(total=total, desc="questions", unit="q") as bar:
            for name, level, problems in cell_problems:
                for row in rows:
                    bar.set_postfix_str(f"{name}-{level} {row['name']} n={row['n']}")
                    res = run_row(row, problems, name, ponder_url, args.concurrency, bar, args.timeout)
                    res["task"] = f"{name}-{level}"
                    results.append(res)
        for p in procs:  # a server that died under the run is a finding, not a silent gap
            if p.poll() is not None:
                print(f"warning: {p.args[:3]} exited with code {p.returncode} during the run", file=sys.stderr)
        time.sleep(0.5)
        cell_of = {p.question: f"{name}-{level}" for name, level, ps in cell_problems for p in ps}
        upstream = {f"best-of-n {k}": upstream_calls(logs / f"conversations-{k}", cell_of) for k in bon_sizes}
        ponder_log = (logs / "ponder.log").read_text(errors="replace")
        server_5xx = len(re.findall(r'" 5\d\d ', ponder_log))
    finally:
        for p in reversed(procs):
            stop(p)

    wall = time.perf_counter() - t_start
    md = table(results)
    print()
    print(md)
    for proc_name, per_approach in upstream.items():
        for approach, u in per_approach.items():
            print(f"\noptillm ({proc_name}) {approach}: {u['client_requests']} requests became "
                  f"{u['upstream_calls']} upstream calls to ponder")
            for key, shape in u["shapes"].items():
                print(f"  {shape['calls']:>4} x {key}; finish {shape['finish_reasons']}; answers {shape['contents']}")
            if "ratings" in u:
                print(f"  ratings that were a number other than 0: {u['ratings_nonzero']} of {u['ratings']}; "
                      f"picked a candidate other than the first: {u['picked_other_than_first']} of "
                      f"{u['client_requests']}")
    print(f"\n{wall:.0f}s in all ({startup_s:.0f}s starting the servers); ponder answered {server_5xx} requests "
          f"with a 5xx")
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {'a GPU' if torch.cuda.is_available() else 'no GPU'}",
        "command": " ".join(["python", "bench/optillm_compare.py", *sys.argv[1:]]),
        "optillm": OPTILLM_VERSION, "questions_per_cell": n_q, "seed": args.seed, "concurrency": args.concurrency,
        "seconds": round(wall, 1), "startup_seconds": round(startup_s, 1), "ponder_5xx": server_5xx,
        "tokens": "completion tokens ponder generated for the row (its /metrics counter): hidden reasoning, "
                  "every chain of every upstream request, rating calls included",
        "rows": results,
        "optillm_upstream_calls": upstream,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
