"""Load the built-in model or any Hugging Face causal LM directory the same way."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # keep stderr for ponder's own one-line messages

from ponder import PonderError
from ponder.model.chat import ChatFormat

BUILTIN = "built-in"
BUILTIN_NAME = "ponder-tiny"


def builtin_path() -> Path:
    return Path(str(resources.files("ponder.builtin"))) / BUILTIN_NAME


def resolve(path: str | Path) -> Path:
    """The model directory for a user-given path; a clear error if it is not one."""
    p = builtin_path() if str(path) in (BUILTIN, BUILTIN_NAME) else Path(path).expanduser()
    if not p.exists():
        if str(path) in (BUILTIN, BUILTIN_NAME):
            raise PonderError(f"the built-in model is missing from {p}; reinstall ponder")
        raise PonderError(f"model path does not exist: {p}")
    if p.is_dir() and not (p / "config.json").exists() and not list(p.glob("*.gguf")):
        raise PonderError(f"not a model directory (no config.json): {p}")
    return p


def _gguf(p: Path) -> tuple[Path, str | None]:
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    ggufs = sorted(p.glob("*.gguf")) if not (p / "config.json").exists() else []
    return (p, ggufs[0].name) if ggufs else (p, None)


def load_tokenizer(path: str | Path = BUILTIN) -> PreTrainedTokenizerBase:
    folder, gguf = _gguf(resolve(path))
    kwargs = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(folder, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path: str | Path = BUILTIN, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Return `(model, tokenizer, chat_format)` for a model directory, a .gguf file or the built-in model."""
    folder, gguf = _gguf(resolve(path))
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        raise PonderError(f"cannot load a causal LM from {folder}: {str(e).splitlines()[0]}") from e
    tok = load_tokenizer(folder / gguf if gguf else folder)
    model.to(device).eval()
    return model, tok, ChatFormat.for_tokenizer(tok)
