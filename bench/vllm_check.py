"""On a GPU machine with vLLM installed: does the vLLM engine keep the engine contract, and how fast is it?

    pip install '.[vllm]' && python bench/vllm_check.py --out bench/results/vllm_check.json

1. Greedy chains of the same questions from the local sampler and from vLLM must have the same text,
   finish reasons and token counts (bf16 kernels may flip a near-tie: the share that agrees is reported).
2. A followed policy: after an optimizer step on the local copy, vLLM's greedy chains must match the
   local sampler's on the new weights.
3. Tokens per second of both engines on `--samples` sampled chains per question, side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from ponder.engine.base import SamplingParams
from ponder.engine.local import LocalEngine
from ponder.engine.vllm import VLLMEngine
from ponder.evaluate import heldout_problems
from ponder.model.loading import load_model, resolve


def agreement(a, b) -> float:
    pairs = [(x[0], y[0]) for x, y in zip(a, b)]
    return sum((x.text, x.finish_reason, x.num_tokens) == (y.text, y.finish_reason, y.num_tokens)
               for x, y in pairs) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="built-in")
    ap.add_argument("--task", default="add")
    ap.add_argument("--level", type=int, default=6)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--out", default="bench/results/vllm_check.json")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, chat = load_model(args.model, device=device)
    local = LocalEngine(model, tok, max_batch=256)
    served = VLLMEngine(resolve(args.model), tok, gpu_memory_utilization=0.4, dtype="float32").follow(model)
    prompts = [chat.prompt(p.question) for p in heldout_problems(args.task, args.level, args.n)]
    greedy = SamplingParams(temperature=0, max_tokens=400)
    report = {"date": str(date.today()), "machine": platform.platform(), "device": device,
              "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
              "greedy_agreement": agreement(local.generate(prompts, greedy), served.generate(prompts, greedy))}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.tensor([tok(prompts[0], add_special_tokens=False)["input_ids"]], device=device)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    model.eval()
    report["greedy_agreement_after_a_step"] = agreement(local.generate(prompts, greedy),
                                                        served.generate(prompts, greedy))
    sampled = SamplingParams(n=args.samples, temperature=0.8, max_tokens=400, seed=0)
    for name, engine in (("local", local), ("vllm", served)):
        engine.generate(prompts[:4], sampled)  # warm up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = engine.generate(prompts, sampled)
        seconds = time.perf_counter() - t0
        tokens = sum(c.num_tokens for cs in out for c in cs)
        report[f"{name}_tokens_per_s"] = round(tokens / seconds, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
