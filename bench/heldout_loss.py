"""Each model's loss on reference chains it never trained on: a training config's mixture, one family at a time.

    python bench/heldout_loss.py --config configs/ponder-tiny.yaml --model built-in \
        --model 4x-grown=runs/ponder-4x-grown/model --seed 99 --steps 4

Draws `--steps` optimizer steps of examples per family (the config's levels and options, a seed none of the
runs trained with) and prints the token-averaged cross entropy over the completions, as training computes it.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from ponder.config import load_config
from ponder.model.chat import ChatFormat
from ponder.model.loading import load_model
from ponder.train.data import SFTData, parse_mixture
from ponder.train.sft import SFTConfig


@torch.no_grad()
def loss(model, batches: list[dict[str, torch.Tensor]]) -> float:
    total, n = 0.0, 0
    for b in batches:
        logits = model(input_ids=b["input_ids"]).logits
        labels = b["labels"][:, 1:]
        total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1),
                                       ignore_index=-100, reduction="sum"))
        n += int((labels != -100).sum())
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH or PATH (built-in allowed)")
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(SFTConfig, args.config)
    models = {}
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        models[name or path] = load_model(path)
    families = list(dict.fromkeys(entry["task"] for entry in cfg.mixture))
    tok = next(iter(models.values()))[1]  # the examples are encoded once, so the models must share a tokenizer
    if any(t.get_vocab() != tok.get_vocab() for _, t, _ in models.values()):
        raise SystemExit("error: the models' tokenizers differ; compare models that share one")
    table = {}
    for family in families:
        mixture = parse_mixture([e for e in cfg.mixture if e["task"] == family])
        data = SFTData(mixture, tok, ChatFormat.for_tokenizer(tok), args.seed, cfg.cot, cfg.max_length)
        batches = [b for s in range(args.steps)
                   for b in data.step_batches(s, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps)]
        table[family] = {name: round(loss(m, batches), 5) for name, (m, _, _) in models.items()}
        print(json.dumps({"family": family, **table[family]}), flush=True)
    names = list(models)
    print("\n| family | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for family, row in table.items():
        print(f"| {family} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
