"""Benchmark: ponder's LocalEngine against `model.generate`, side by side, same sampling.

    .venv/bin/python bench/sampler.py [--batch 64] [--prompts 8] [--new-tokens 256]
                                      [--repeats 3] [--threads N] [--out bench/results/sampler.json]

Both samplers generate `--batch` sequences (`--prompts` prompts x n = batch/prompts
samples each) with the same settings (do_sample, temperature, top_p, top_k off,
max_new_tokens) from a randomly initialised model, with end-of-sequence disabled
so that every sequence runs to the full length. Runs alternate (engine, HF,
engine, HF, ...) after a warm-up of each; the median of the repeats is reported.

Compute efficiency: this machine's fp32 matmul peak is measured with a large
square matmul (best of a few, 2*N^3 FLOPs each), and the sampler's achieved
rate is estimated with

    FLOPs per generated token = 2 * P_matmul + 4 * n_layers * d_attn * ctx_mean

where P_matmul = parameters of the decoder layers' linear maps plus the LM head
(embedding lookups and norms excluded; the head counts even when tied),
d_attn = n_heads * head_dim, and ctx_mean = mean prompt length + (new_tokens + 1) / 2
is the mean context attended (QK^T and AV, 2 FLOPs per multiply-add each).
Prefill FLOPs are not counted, so the fraction is a slight underestimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from ponder.engine.base import SamplingParams
from ponder.engine.local import LocalEngine
from ponder.model.chat import ChatFormat
from ponder.model.configs import model_config
from ponder.model.tokenizer import build_char_tokenizer


def matmul_peak(size: int = 2048, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of a size x size matmul on this machine (current thread count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.inference_mode():
        a @ b  # warm-up
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def flops_per_token(model, ctx_mean: float) -> tuple[float, int]:
    cfg = model.config
    matmul_params = sum(
        m.weight.numel() for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and (".layers." in f".{name}" or name == "lm_head")
    )
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    return 2 * matmul_params + 4 * cfg.num_hidden_layers * d_attn * ctx_mean, matmul_params


def make_prompts(k: int) -> list[str]:
    chat = ChatFormat()
    out = []
    for i in range(k):
        a, b = 7 * 10 ** (i % 5) + 3 * i, 10 ** (i % 3) + i
        out.append(chat.prompt(f"What is {a} + {b}?"))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="ponder-tiny")
    ap.add_argument("--batch", type=int, default=64, help="sequences generated together")
    ap.add_argument("--prompts", type=int, default=8, help="distinct prompts (n = batch / prompts)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--out", default="bench/results/sampler.json")
    args = ap.parse_args(argv)
    if args.batch % args.prompts:
        ap.error("--batch must be a multiple of --prompts")
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.batch // args.prompts
    N = args.new_tokens

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    model = LlamaForCausalLM(model_config(args.config, len(tok), max_positions=max(1024, N + 128))).eval()
    model.generation_config.eos_token_id = None  # every sequence runs to max_new_tokens
    prompts = make_prompts(args.prompts)
    lens = [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]

    engine = LocalEngine(model, tok, max_batch=args.batch, eos_token_ids=())
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def run_engine(seed: int) -> int:
        params = SamplingParams(n=n, temperature=args.temperature, top_p=args.top_p, max_tokens=N, seed=seed)
        out = engine.generate(prompts, params)
        return sum(c.num_tokens for cs in out for c in cs)

    def run_hf(seed: int) -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0,
                                 max_new_tokens=N, num_return_sequences=n, pad_token_id=tok.pad_token_id)
        return out.shape[0] * (out.shape[1] - enc.input_ids.shape[1])

    peak = matmul_peak()
    runners = {"ponder LocalEngine": run_engine, "HF model.generate": run_hf}
    times: dict[str, list[float]] = {k: [] for k in runners}
    tokens: dict[str, int] = {}
    for name, fn in runners.items():  # warm-up
        fn(-1)
    for r in range(args.repeats):
        for name, fn in runners.items():
            t = time.perf_counter()
            tokens[name] = fn(r)
            times[name].append(time.perf_counter() - t)
            print(f"  rep {r + 1}/{args.repeats} {name}: {tokens[name] / times[name][-1]:.0f} tok/s", file=sys.stderr)
    peak_after = matmul_peak()

    ctx_mean = sum(lens) / len(lens) + (N + 1) / 2
    fpt, matmul_params = flops_per_token(model, ctx_mean)
    rows = {}
    for name in runners:
        med = statistics.median(times[name])
        tps = tokens[name] / med
        rows[name] = {
            "tokens": tokens[name], "median_s": med, "times_s": times[name], "tokens_per_s": tps,
            "gflops": tps * fpt / 1e9, "fraction_of_peak": tps * fpt / 1e9 / peak,
        }
    ratio = rows["ponder LocalEngine"]["tokens_per_s"] / rows["HF model.generate"]["tokens_per_s"]
    result = {
        "command": "python bench/sampler.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": args.config, "batch": args.batch, "prompts": args.prompts, "n": n, "new_tokens": N,
        "prompt_tokens": lens, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "temperature": args.temperature, "top_p": args.top_p,
        "matmul_peak_gflops": peak, "matmul_peak_gflops_after": peak_after,
        "matmul_params": matmul_params, "flops_per_token": fpt,
        "flops_formula": "2*P_matmul + 4*n_layers*d_attn*ctx_mean, ctx_mean = mean prompt + (new_tokens+1)/2",
        "results": rows, "speedup": ratio,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "device": "cpu"},
    }

    print(f"\n{args.config}, {args.batch} sequences ({args.prompts} prompts x n={n}), {N} new tokens each, "
          f"temperature {args.temperature}, top_p {args.top_p}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}\n")
    print("| sampler | generated tokens | median time (s) | tokens/s | GFLOP/s | fraction of fp32 peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['tokens']} | {r['median_s']:.2f} | {r['tokens_per_s']:.0f} | {r['gflops']:.2f} | "
              f"{100 * r['fraction_of_peak']:.1f}% |")
    print(f"\nspeedup (tokens/s ratio): {ratio:.2f}x")
    print(f"fp32 matmul peak (2048^3, best of 5): {peak:.1f} GFLOP/s before, {peak_after:.1f} after")
    print(f"FLOPs per generated token: {fpt / 1e6:.2f} M = 2*{matmul_params} + "
          f"4*{model.config.num_hidden_layers}*d_attn*{ctx_mean:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
