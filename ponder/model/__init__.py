"""Tokenizer, model configs, loading and the chat format."""

from ponder.model.chat import ChatFormat, Message, ParsedCompletion
from ponder.model.loading import BUILTIN, load_model, load_tokenizer
from ponder.model.tokenizer import build_char_tokenizer, check_text

__all__ = [
    "BUILTIN",
    "ChatFormat",
    "Message",
    "ParsedCompletion",
    "build_char_tokenizer",
    "check_text",
    "load_model",
    "load_tokenizer",
]
