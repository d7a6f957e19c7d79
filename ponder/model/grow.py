"""Grow a trained model wider or deeper without changing what it computes, so a larger model starts from a
smaller one.

Every hidden unit is copied the same number of times (so RMSNorm sees the same mean square), attention
heads are copied whole (RoPE pairs stay inside a head), and MLP units are copied as many whole times as
fit, then distinct ones at random to fill the rest of the width. A weight that reads copied units splits
its old weight among the copies. The split is uneven by a little noise, and still sums to the old weight
(so the outputs are unchanged), because copies with equal weights get equal gradients and would never
become different units. With tied embeddings the final norm is divided by the copy count, since the
output head reads the copied embedding.

Deeper: each layer is followed by copies of itself whose output projections (attention's and the MLP's) are
zero, so each new block adds nothing to the residual stream until training moves it; the weights that read
the stream are copied with a little multiplicative noise, so the copies answer the first gradient
differently. Width asks the model to compute more at once, depth to compose more lookups in a row.

    python -m ponder.model.grow built-in ponder-h512-l4-a8-f1600 runs/ponder-4x-grown/init
    python -m ponder.model.grow built-in ponder-h256-l16-a4-f768 runs/ponder-4x-deep/init
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from ponder import PonderError
from ponder.model.configs import model_sizes
from ponder.model.loading import load_model
from ponder.train.checkpoint import save_model_atomic


def copies(old: int, new: int, gen: torch.Generator) -> torch.Tensor:
    """For each new unit, the old unit it copies: every old unit as many whole times as fit, then the rest of
    the width from distinct old units drawn at random."""
    rest = new % old
    return torch.cat([tiled(old, new - rest), torch.randperm(old, generator=gen)[:rest]])


def tiled(old: int, new: int) -> torch.Tensor:
    """Each old unit the same number of times (whole heads stay whole when `old` is a multiple of the head size)."""
    return torch.arange(new) % old


def grow_linear(old: nn.Linear, rows: torch.Tensor, cols: torch.Tensor, noise: float,
                gen: torch.Generator) -> nn.Linear:
    """A linear layer whose outputs copy `rows` of `old` and whose inputs are copies `cols` of old inputs."""
    count = torch.bincount(cols, minlength=old.in_features).to(old.weight.dtype)
    z = noise * torch.randn(len(rows), len(cols), generator=gen, dtype=old.weight.dtype)
    mean = torch.zeros(len(rows), old.in_features, dtype=z.dtype).index_add_(1, cols, z) / count
    share = 1.0 / count[cols] + (z - mean[:, cols])  # per row, the copies of one old input share exactly 1
    lin = nn.Linear(len(cols), len(rows), bias=old.bias is not None, dtype=old.weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(old.weight[rows][:, cols] * share)
        if old.bias is not None:
            lin.bias.copy_(old.bias[rows])
    return lin


def widen(model: LlamaForCausalLM, hidden: int, heads: int, intermediate: int, noise: float = 0.05,
          seed: int = 0) -> LlamaForCausalLM:
    """A wider copy of `model` (a Llama) that gives the same logits; `hidden` a multiple of the old width,
    with the old head size."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if hidden % c.hidden_size:
        raise PonderError(f"hidden size {hidden} must be a multiple of the model's {c.hidden_size}")
    if hidden // heads != head_dim:
        raise PonderError(f"{heads} heads of hidden size {hidden} are {hidden // heads} wide; the model's are {head_dim}")
    if intermediate < c.intermediate_size:
        raise PonderError(f"intermediate size {intermediate} is below the model's {c.intermediate_size}")
    k = hidden // c.hidden_size
    kv_heads = c.num_key_value_heads * k
    new_cfg = LlamaConfig(**{**c.to_dict(), "hidden_size": hidden, "num_attention_heads": heads,
                             "num_key_value_heads": kv_heads, "intermediate_size": intermediate,
                             "head_dim": head_dim})
    gen = torch.Generator().manual_seed(seed)
    h = tiled(c.hidden_size, hidden)
    q = tiled(c.num_attention_heads * head_dim, heads * head_dim)
    kv = tiled(c.num_key_value_heads * head_dim, kv_heads * head_dim)
    big = LlamaForCausalLM(new_cfg).to(model.dtype)
    old_m, new_m = model.model, big.model
    with torch.no_grad():
        new_m.embed_tokens.weight.copy_(old_m.embed_tokens.weight[:, h])
        for old, new in zip(old_m.layers, new_m.layers):
            new.input_layernorm.weight.copy_(old.input_layernorm.weight[h])
            new.post_attention_layernorm.weight.copy_(old.post_attention_layernorm.weight[h])
            a, b = old.self_attn, new.self_attn
            b.q_proj = grow_linear(a.q_proj, q, h, noise, gen)
            b.k_proj = grow_linear(a.k_proj, kv, h, noise, gen)
            b.v_proj = grow_linear(a.v_proj, kv, h, noise, gen)
            b.o_proj = grow_linear(a.o_proj, h, q, noise, gen)
            m = copies(c.intermediate_size, intermediate, gen)
            b_mlp, a_mlp = new.mlp, old.mlp
            b_mlp.gate_proj = grow_linear(a_mlp.gate_proj, m, h, noise, gen)
            b_mlp.up_proj = grow_linear(a_mlp.up_proj, m, h, noise, gen)
            b_mlp.down_proj = grow_linear(a_mlp.down_proj, h, m, noise, gen)
        tied = c.tie_word_embeddings
        new_m.norm.weight.copy_(old_m.norm.weight[h] / (k if tied else 1))
        if tied:
            big.tie_weights()
        else:
            big.lm_head = grow_linear(model.lm_head, torch.arange(c.vocab_size), h, noise, gen)
    return big.eval()


def deepen(model: LlamaForCausalLM, layers: int, noise: float = 0.05, seed: int = 0) -> LlamaForCausalLM:
    """A deeper copy of `model` that gives the same logits: each layer followed by `layers / old - 1` copies
    that write nothing to the residual stream yet."""
    c = model.config
    if layers % c.num_hidden_layers:
        raise PonderError(f"{layers} layers must be a multiple of the model's {c.num_hidden_layers}")
    k = layers // c.num_hidden_layers
    gen = torch.Generator().manual_seed(seed)
    deep = LlamaForCausalLM(LlamaConfig(**{**c.to_dict(), "num_hidden_layers": layers})).to(model.dtype)
    state = {n: p for n, p in model.state_dict().items() if ".layers." not in n}
    for i, old in enumerate(model.model.layers):
        for j in range(k):
            for name, p in old.state_dict().items():
                p = p.clone()
                if j and name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.zero_()  # the copy adds nothing until it learns something
                elif j and p.dim() == 2:
                    p *= 1 + noise * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                state[f"model.layers.{i * k + j}.{name}"] = p
    deep.load_state_dict(state, strict=not c.tie_word_embeddings)
    if c.tie_word_embeddings:
        deep.tie_weights()
    return deep.eval()


def grow(source: str, size: str, noise: float = 0.05, seed: int = 0):
    """`(grown model, tokenizer, source model)` for a model and a sized config name: deeper (quick, and it
    checks the depth), then wider."""
    if noise < 0:
        raise PonderError(f"noise must be >= 0, not {noise}")
    hidden, layers, heads, intermediate = model_sizes(size)
    model, tok, _ = load_model(source)
    big = model
    if layers != model.config.num_hidden_layers:
        big = deepen(big, layers, noise, seed)
    if (hidden, heads, intermediate) != (model.config.hidden_size, model.config.num_attention_heads,
                                         model.config.intermediate_size):
        big = widen(big, hidden, heads, intermediate, noise, seed)
    return big, tok, model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="the trained model (a directory or built-in)")
    ap.add_argument("size", help="the new size as ponder-h<hidden>-l<layers>-a<heads>-f<intermediate>")
    ap.add_argument("out", type=Path)
    ap.add_argument("--noise", type=float, default=0.05, help="how unevenly copies split a weight")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        big, tok, model = grow(args.source, args.size, args.noise, args.seed)
    except PonderError as e:
        raise SystemExit(f"error: {e}") from None
    save_model_atomic(args.out, big, tok)
    n = sum(p.numel() for p in big.parameters())
    print(f"{args.out}: {n / 1e6:.2f}M parameters ({n / sum(p.numel() for p in model.parameters()):.2f}x)")


if __name__ == "__main__":
    main()
