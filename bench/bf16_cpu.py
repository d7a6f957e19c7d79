"""One training micro-batch in float32 and under bf16 autocast, side by side, on this CPU.

    python bench/bf16_cpu.py --models ponder-tiny ponder-h512-l4-a8-f1600 --out bench/results/bf16_cpu.json

Forward and backward of a fresh model on random tokens, float32 and bf16 alternating, one thread. It
also prints whether torch reports native bf16 here, which is what `ponder.train.precision.use_bf16`
decides by: where it does not, a config's `bf16: true` trains in float32.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch


def seconds(model, ids: torch.Tensor, bf16: bool) -> float:
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits
    logits.float().logsumexp(-1).mean().backward()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["ponder-tiny"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import LlamaForCausalLM

    from ponder.model.configs import model_config
    from ponder.model.tokenizer import build_char_tokenizer
    from ponder.train.precision import native_bf16

    vocab = len(build_char_tokenizer())
    report = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16("cpu"),
              "batch": args.batch, "length": args.length, "threads": args.threads, "models": {}}
    print(json.dumps({k: v for k, v in report.items() if k != "models"}), flush=True)
    for name in args.models:
        torch.manual_seed(0)
        model = LlamaForCausalLM(model_config(name, vocab, max(1024, args.length))).train()
        ids = torch.randint(5, vocab, (args.batch, args.length))
        seconds(model, ids, False)  # warm-up
        times = {"float32": [], "bf16": []}
        for _ in range(args.repeats):
            for key, bf16 in (("float32", False), ("bf16", True)):
                times[key].append(seconds(model, ids, bf16))
        row = {k: round(min(v), 3) for k, v in times.items()}
        row["bf16_over_float32"] = round(row["bf16"] / row["float32"], 2)
        row["parameters"] = sum(p.numel() for p in model.parameters())
        report["models"][name] = row
        print(json.dumps({"model": name, **row}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
