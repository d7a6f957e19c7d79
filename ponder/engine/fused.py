"""A fused decode step for Llama-family models, with prompts' KV shared by their samples.

`LlamaDecoder` runs one token per row over the model's own weights (q/k/v and
gate/up fused; on CPU in fp32 through oneDNN with prepacked weights), and
`PrefixState` stores each distinct prompt's KV once so its `n` samples attend
to it together. See `ponder.engine.local` for how a call uses them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ponder.engine.base import weights_version
from ponder.engine.kvcache import Pool, SlabLayer, grow


FAST_TYPES = {"llama", "mistral", "qwen2"}  # pre-norm RMSNorm, RoPE (rotate_half), SwiGLU MLP


class LlamaDecoder:
    """A hand-fused decode step for Llama-family models (Llama, Mistral, Qwen2), one token per row.

    Runs the model's own weights (q/k/v and gate/up fused into one matmul each while
    the weights are small enough to copy, re-fused when they change), RoPE from a
    precomputed table of the model's rotary embedding, RMSNorm and attention over
    the slab cache with a padding bias. The prefill is always the model's own forward.
    """

    FUSE_LIMIT_BYTES = 256 * 2**20

    def __init__(self, model):
        self.model = model
        base = model.model
        self.base = base
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        attn0 = base.layers[0].self_attn
        self.head_dim = attn0.head_dim
        self.scaling = attn0.scaling
        self._plan_key: tuple | None = None
        self._plan: list[tuple] | None = None  # per layer: (qkv, o, gate_up, down) as (weight, bias, packed)
        self._lm: tuple | None = None
        self._rope_cache: tuple | None = None

    @staticmethod
    def supports(model) -> bool:
        cfg = getattr(model, "config", None)
        if getattr(cfg, "model_type", None) not in FAST_TYPES:
            return False
        if getattr(cfg, "pretraining_tp", 1) not in (None, 1) or getattr(cfg, "final_logit_softcapping", None):
            return False
        base = getattr(model, "model", None)
        try:
            rope_type = base.rotary_emb.rope_type
            layer = base.layers[0]
            a, m = layer.self_attn, layer.mlp
            needed = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, a.head_dim, a.scaling, m.gate_proj, m.up_proj,
                      m.down_proj, m.act_fn, layer.input_layernorm.variance_epsilon,
                      layer.post_attention_layernorm.variance_epsilon, base.norm.variance_epsilon,
                      base.embed_tokens, model.lm_head)
        except AttributeError:
            return False
        del needed
        if rope_type in ("dynamic", "longrope"):  # their frequencies depend on the length seen
            return False
        return all(not hasattr(layer.self_attn, n) for n in ("q_norm", "k_norm")
                   for layer in base.layers)

    def prepare(self, max_positions: int, device, dtype, rows: int) -> None:
        """Fuse (and on CPU pack) the weights if they changed since the last call; build the RoPE table."""
        layers = self.base.layers
        lm = self.model.lm_head
        mods = [m for l in layers for m in (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj,
                                            l.self_attn.o_proj, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj)]
        mods.append(lm)
        params = [t for m in mods for t in (m.weight, getattr(m, "bias", None)) if t is not None]
        nbytes = sum(p.numel() * p.element_size() for p in params)
        if nbytes > self.FUSE_LIMIT_BYTES:  # too big to keep a second copy: use the modules as they are
            self._plan, self._plan_key = None, None
        else:
            # a training step updates weights in place, which bumps their version counters
            key = weights_version(params) + (torch.device(device), dtype)
            if key != self._plan_key:
                pack = can_pack(torch.device(device).type, dtype)

                def prep(weights, biases):
                    w = torch.cat(weights) if len(weights) > 1 else weights[0]
                    b = None
                    if any(x is not None for x in biases):
                        b = torch.cat([x if x is not None else w.new_zeros(wt.shape[0])
                                       for x, wt in zip(biases, weights)])
                    if pack:
                        return torch.ops.mkldnn._reorder_linear_weight(w.detach(), rows), b, True
                    return w, b, False

                plan = []
                for l in layers:
                    a, m = l.self_attn, l.mlp
                    plan.append((
                        prep([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
                             [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
                        prep([a.o_proj.weight], [a.o_proj.bias]),
                        prep([m.gate_proj.weight, m.up_proj.weight], [m.gate_proj.bias, m.up_proj.bias]),
                        prep([m.down_proj.weight], [m.down_proj.bias]),
                    ))
                self._lm = prep([lm.weight], [getattr(lm, "bias", None)])
                self._plan, self._plan_key = plan, key
        rk = (torch.device(device), dtype, self.base.rotary_emb.inv_freq._version)
        if self._rope_cache is None or self._rope_cache[0] != rk or self._rope_cache[1].shape[0] < max_positions:
            pos = torch.arange(max_positions, device=device)[None]
            dummy = torch.zeros(1, dtype=dtype, device=device)
            cos, sin = self.base.rotary_emb(dummy, pos)
            cos, sin = cos[0], sin[0]
            half = self.head_dim // 2
            sin = torch.cat([-sin[:, :half], sin[:, half:]], -1)  # rotate_half's sign folded in
            self._rope_cache = (rk, cos.contiguous(), sin.contiguous())

    @staticmethod
    def _norm(x: torch.Tensor, mod) -> torch.Tensor:
        if x.dtype == torch.float32:
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), mod.weight, mod.variance_epsilon)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + mod.variance_epsilon)
        return mod.weight * h.to(x.dtype)

    def step(self, tok: torch.Tensor, pos: torch.Tensor, state: "PrefixState") -> torch.Tensor:
        """Logits [B, V] (float32) for one new token per row at positions `pos`."""
        F = torch.nn.functional
        B = tok.shape[0]
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        _, cos_t, sin_t = self._rope_cache
        cos = cos_t.index_select(0, pos)[:, None, :]
        sin = sin_t.index_select(0, pos)[:, None, :]
        state.advance()
        x = self.base.embed_tokens(tok)
        plan = self._plan
        for li, layer in enumerate(self.base.layers):
            a, m = layer.self_attn, layer.mlp
            h = self._norm(x, layer.input_layernorm)
            if plan is not None:
                qkv_w, o_w, gu_w, down_w = plan[li]
                qkv = _linear(h, qkv_w).view(B, H + 2 * Hkv, D)
                qk, v = qkv[:, : H + Hkv], qkv[:, H + Hkv :]
                qk = qk * cos + qk.roll(D // 2, -1) * sin
                q, k = qk[:, :H], qk[:, H:]
            else:
                q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(B, H, D)
                k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(B, Hkv, D)
                v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(B, Hkv, D)
                q = q * cos + q.roll(D // 2, -1) * sin
                k = k * cos + k.roll(D // 2, -1) * sin
            o = state.attend(li, q * self.scaling, k, v).view(B, H * D)
            if plan is not None:
                x = x + _linear(o, o_w)
                gate, up = _linear(self._norm(x, layer.post_attention_layernorm), gu_w).chunk(2, -1)
                x = x + _linear(m.act_fn(gate) * up, down_w)
            else:
                x = x + F.linear(o, a.o_proj.weight, a.o_proj.bias)
                h = self._norm(x, layer.post_attention_layernorm)
                gate = F.linear(h, m.gate_proj.weight, m.gate_proj.bias)
                up = F.linear(h, m.up_proj.weight, m.up_proj.bias)
                x = x + F.linear(m.act_fn(gate) * up, m.down_proj.weight, m.down_proj.bias)
        x = self._norm(x, self.base.norm)
        if plan is not None:
            return _linear(x, self._lm).float()
        lm = self.model.lm_head
        return F.linear(x, lm.weight, getattr(lm, "bias", None)).float()


@functools.lru_cache(maxsize=None)
def can_pack(device, dtype) -> bool:
    """Whether oneDNN linear with prepacked weights is available (CPU, fp32): ~2x MKL at small batch."""
    if torch.device(device).type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), 1)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), w, None, "none", [], "")
        return bool(torch.allclose(y, torch.full((1, 2), 2.0)))
    except (RuntimeError, AttributeError):
        return False


def _linear(x: torch.Tensor, wb: tuple) -> torch.Tensor:
    w, b, packed = wb
    if packed:
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return torch.nn.functional.linear(x, w, b)


class PrefixState:
    """Decode-time KV of the fast path: each distinct prompt once, each row's generated tokens apart.

    Rows of one prompt are contiguous (a "group"). Attention over the prompt part
    runs per group, `n` queries against one copy of the prompt's keys (one matmul
    per group and head, the prompt read once for all its samples); attention over
    the generated part runs per row on a contiguous slab that grows in place.
    Both parts go through one softmax.
    """

    def __init__(self, pool: Pool, prefixes: list["Prefix"], group_sizes: list[int], Lp: int, limit: int,
                 dtype: torch.dtype, device: torch.device):
        self.Lp = Lp
        P = len(prefixes)
        self.kp: list[torch.Tensor] = []
        self.vp: list[torch.Tensor] = []
        self.gen: list[SlabLayer] = []
        B = sum(group_sizes)
        for li in range(len(prefixes[0].keys)):
            hkv, _, d = prefixes[0].keys[li].shape
            for which, dst_list in (("keys", self.kp), ("values", self.vp)):
                flat = pool.get(("prompt", li, which), P * hkv * Lp * d, dtype, device)
                buf = flat[: P * hkv * Lp * d].view(P, hkv, Lp, d)
                for gi, pre in enumerate(prefixes):
                    if pre.length < Lp:
                        buf[gi, :, : Lp - pre.length].zero_()
                    buf[gi, :, Lp - pre.length :] = getattr(pre, which)[li]
                dst_list.append(buf)
            self.gen.append(SlabLayer(pool, ("gen", li), B, hkv, grow(0, 1, limit), d, 0, limit, dtype, device))
        self.hkv, self.head_dim = self.kp[0].shape[1], self.kp[0].shape[3]
        pmask = torch.zeros((P, Lp), dtype=dtype, device=device)
        for gi, pre in enumerate(prefixes):
            pmask[gi, : Lp - pre.length] = float("-inf")
        self.pmask = pmask
        self.gmask = torch.full((limit,), float("-inf"), dtype=dtype, device=device)
        self.row_group = [gi for gi, n in enumerate(group_sizes) for _ in range(n)]
        self._layout()

    def _layout(self) -> None:
        sizes = [0] * self.kp[0].shape[0]
        for gi in self.row_group:
            sizes[gi] += 1
        if 0 in sizes:  # a prompt with no rows left: drop it
            live = [gi for gi, n in enumerate(sizes) if n]
            sel = torch.tensor(live, device=self.pmask.device)
            self.kp = [t.index_select(0, sel) for t in self.kp]
            self.vp = [t.index_select(0, sel) for t in self.vp]
            self.pmask = self.pmask.index_select(0, sel)
            remap = {gi: j for j, gi in enumerate(live)}
            self.row_group = [remap[gi] for gi in self.row_group]
            sizes = [sizes[gi] for gi in live]
        self.P, self.nmax = len(sizes), max(sizes)
        if all(n == self.nmax for n in sizes):
            self.slot = None  # every group full: rows are already in group-major order
        else:
            seen = [0] * len(sizes)
            slot = []
            for gi in self.row_group:
                slot.append(gi * self.nmax + seen[gi])
                seen[gi] += 1
            self.slot = torch.tensor(slot, device=self.pmask.device)
        hkv = self.hkv
        self.pmask_b = self.pmask.repeat_interleave(hkv, 0)[:, None] if hkv > 1 else self.pmask[:, None]

    def batch_select_indices(self, keep: torch.Tensor) -> None:
        for layer in self.gen:
            layer.batch_select_indices(keep)
        self.row_group = [self.row_group[i] for i in keep.tolist()]
        self._layout()

    def advance(self) -> None:
        """Open the next generated position (every row writes it)."""
        self.gmask[self.gen[0].length] = 0.0

    def _to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, ...] rows -> [P * Hkv, nmax * g, ...] groups (zero rows where a group is short)."""
        B, H = x.shape[:2]
        rest = x.shape[2:]
        if self.slot is not None:
            pad = x.new_zeros((self.P * self.nmax, H, *rest))
            x = pad.index_copy_(0, self.slot, x)
        g = H // self.hkv
        x = x.view(self.P, self.nmax, self.hkv, g, *rest).transpose(1, 2)
        return x.reshape(self.P * self.hkv, self.nmax * g, *rest)

    def _to_rows(self, x: torch.Tensor, H: int) -> torch.Tensor:
        """Inverse of `_to_groups`: [P * Hkv, nmax * g, ...] -> [B, H, ...]."""
        rest = x.shape[2:]
        g = H // self.hkv
        x = x.view(self.P, self.hkv, self.nmax, g, *rest).transpose(1, 2).reshape(self.P * self.nmax, H, *rest)
        return x if self.slot is None else x.index_select(0, self.slot)

    def attend(self, li: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention output [B, H * D] for pre-scaled queries q [B, H, D]; k, v [B, Hkv, D] are appended."""
        gen = self.gen[li]
        gen.append(k, v)
        B, H, D = q.shape
        hkv, g, Lp = self.hkv, H // self.hkv, self.Lp
        kg, vg = gen.kbuf.view(B * hkv, -1, D), gen.vbuf.view(B * hkv, -1, D)
        kp = self.kp[li].view(-1, Lp, D)
        sp = torch.baddbmm(self.pmask_b, self._to_groups(q), kp.transpose(1, 2))
        sp = self._to_rows(sp, H).reshape(B * hkv, g, Lp)
        sg = torch.baddbmm(self.gmask[: kg.shape[1]], q.view(B * hkv, g, D), kg.transpose(1, 2))
        p = torch.softmax(torch.cat([sp, sg], -1), -1, dtype=torch.float32).to(q.dtype)
        op = torch.bmm(self._to_groups(p[:, :, :Lp].reshape(B, H, Lp)), self.vp[li].view(-1, Lp, D))
        op = self._to_rows(op, H).reshape(B * hkv, g, D)
        o = torch.baddbmm(op, p[:, :, Lp:], vg)
        return o.reshape(B, H * D)


@dataclass
class Prefix:
    """One prompt's prefilled state: a row of a prefill batch."""

    keys: list[torch.Tensor]  # per layer [heads, length, head_dim] (views into the batch)
    values: list[torch.Tensor]
    logits: torch.Tensor  # [vocab] at the last prompt position
    length: int
