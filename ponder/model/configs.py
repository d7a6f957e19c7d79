"""Named configs of the built-in architecture: plain `LlamaForCausalLM`s."""

from __future__ import annotations

from transformers import LlamaConfig

from ponder import PonderError

_SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "ponder-micro": (64, 2, 2, 192),
    "ponder-tiny": (256, 4, 4, 768),
    "ponder-small": (512, 8, 8, 1536),
}


def model_config(name: str, vocab_size: int, max_positions: int = 1024) -> LlamaConfig:
    if name not in _SIZES:
        raise PonderError(f"unknown model config {name!r}; choose one of {', '.join(_SIZES)}")
    hidden, layers, heads, inter = _SIZES[name]
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
