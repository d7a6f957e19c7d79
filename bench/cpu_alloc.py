"""Training steps on a CPU with glibc's default allocator and with `ponder.train.cpu.keep_freed_memory`, side by
side: each run a fresh process, the two alternating.

    python bench/cpu_alloc.py --model ponder-tiny --model ponder-h256-l16-a4-f768 --steps 5 --repeats 2 \
        --out bench/results/cpu_alloc.json

Each run builds the model fresh (the weights do not change the speed), takes one untimed step, then times
`--steps` optimizer steps of the built-in model's stage-1 mixture (configs/ponder-tiny.yaml: the same
batches every run) on `--threads` threads, and reports seconds per step and the share of CPU time spent in
the kernel, where page faults land.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path


def one_run(model_name: str, keep: bool, steps: int, threads: int) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from ponder.config import load_config
    from ponder.model.chat import ChatFormat
    from ponder.model.configs import model_config
    from ponder.model.loading import load_tokenizer
    from ponder.train.cpu import keep_freed_memory
    from ponder.train.data import SFTData, parse_mixture
    from ponder.train.sft import SFTConfig, step_loss

    torch.set_num_threads(threads)
    if keep:
        keep_freed_memory()
    cfg = load_config(SFTConfig, "configs/ponder-tiny.yaml")
    tok = load_tokenizer("built-in")
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config(model_name, len(tok))).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = SFTData(parse_mixture(cfg.mixture), tok, ChatFormat.for_tokenizer(tok), 0, cfg.cot, cfg.max_length)

    def step(i: int) -> None:
        step_loss(model, data.step_batches(i, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps),
                  cfg.bf16)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {"model": model_name, "keep": keep, "s_per_step": round(wall / steps, 3),
            "kernel_share": round(system / max(1e-9, user + system), 3), "page_faults": r1.ru_minflt - r0.ru_minflt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="a config name, e.g. ponder-tiny")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "KEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], args.one[1] == "1", args.steps, args.threads)))
        return
    runs = []
    for name in args.model:
        for _ in range(args.repeats):
            for keep in (False, True):
                out = subprocess.run([sys.executable, __file__, "--model", name, "--one", name, str(int(keep)),
                                      "--steps", str(args.steps), "--threads", str(args.threads)],
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.splitlines()[-1]))
                print(json.dumps(runs[-1]), flush=True)
    print("\n| model | allocator | s per step | kernel share of CPU time | page faults per step |\n|---|---|---:|---:|---:|")
    for name in args.model:
        for keep in (False, True):
            mine = [r for r in runs if r["model"] == name and r["keep"] == keep]
            mean = lambda k: sum(r[k] for r in mine) / len(mine)  # noqa: E731
            print(f"| {name} | {'keeps freed memory' if keep else 'glibc default'} | {mean('s_per_step'):.2f} | "
                  f"{mean('kernel_share'):.0%} | {mean('page_faults') / args.steps:,.0f} |")
    if args.out:
        args.out.write_text(json.dumps({"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                                        "threads": args.threads, "steps": args.steps, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
