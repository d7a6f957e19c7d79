"""Named configs of the built-in architecture: plain `LlamaForCausalLM`s.

Besides the fixed names, `ponder-h{hidden}-l{layers}-a{heads}-f{ffn}` names a
model of any size (e.g. `ponder-h128-l2-a4-f512`), so an experiment that sweeps
depth or width still names its model with one string in a config.
"""

from __future__ import annotations

import re

from transformers import LlamaConfig

from ponder import PonderError

_SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "ponder-micro": (64, 2, 2, 192),
    "ponder-tiny": (256, 4, 4, 768),
    "ponder-small": (512, 8, 8, 1536),
}
_SIZED = re.compile(r"ponder-h(\d+)-l(\d+)-a(\d+)-f(\d+)")


def sized_name(hidden: int, layers: int, heads: int, intermediate: int) -> str:
    """The config name of a model with these dimensions; checked now, not at build time."""
    _check_sizes(hidden, layers, heads, intermediate)
    return f"ponder-h{hidden}-l{layers}-a{heads}-f{intermediate}"


def _check_sizes(hidden: int, layers: int, heads: int, intermediate: int) -> None:
    for what, v in (("hidden size", hidden), ("layers", layers), ("heads", heads), ("intermediate size", intermediate)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PonderError(f"model {what} must be a whole number >= 1, not {v!r}")
    if hidden % heads or (hidden // heads) % 2:
        raise PonderError(f"hidden size {hidden} must split into {heads} heads of an even size")


def model_sizes(name: str) -> tuple[int, int, int, int]:
    if name in _SIZES:
        return _SIZES[name]
    m = _SIZED.fullmatch(name)
    if m is None:
        raise PonderError(f"unknown model config {name!r}; choose one of {', '.join(_SIZES)} "
                          f"or ponder-h<hidden>-l<layers>-a<heads>-f<intermediate>")
    sizes = tuple(int(g) for g in m.groups())
    _check_sizes(*sizes)
    return sizes  # type: ignore[return-value]


def model_config(name: str, vocab_size: int, max_positions: int = 1024) -> LlamaConfig:
    hidden, layers, heads, inter = model_sizes(name)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=6,
        bos_token_id=None,
    )


def config_names() -> list[str]:
    return list(_SIZES)


def is_config_name(name: str) -> bool:
    """True for a name this module builds from scratch (a fixed name or a sized one)."""
    return name in _SIZES or _SIZED.fullmatch(name) is not None
