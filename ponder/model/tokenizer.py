"""A character-level tokenizer that is a real Hugging Face fast tokenizer.

Every printable ASCII character and the newline is one token; the chat markers
are special tokens. Optional whole words (`words=`, e.g. every permutation of
12345) are one token each wherever they stand alone, which is how the serial
experiment gives each input item one position. Being a `PreTrainedTokenizerFast`
means `save_pretrained`, `from_pretrained`, vLLM and TRL all work with the
built-in model unchanged.
"""

from __future__ import annotations

from typing import Callable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from ponder import PonderError

PAD, USER, ASSISTANT, SYSTEM = "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"
THINK, END_THINK, END, UNK = "<think>", "</think>", "<|end|>", "<|unk|>"
SPECIAL_TOKENS = [PAD, USER, ASSISTANT, SYSTEM, THINK, END_THINK, END, UNK]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]
_KNOWN = set(CHARS)


def build_char_tokenizer(words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    # BPE with no merges splits text into single characters; no pre-tokenizer, so
    # spaces and newlines are ordinary characters.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=END,
        unk_token=UNK,
        bos_token=None,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM, THINK, END_THINK],
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "left"
    if words:
        add_words(tok, words)
    return tok


def check_words(words: Sequence[str]) -> None:
    """Refuse a word the character vocabulary cannot spell as one token, naming it."""
    for w in words:
        if not isinstance(w, str) or not w or any(c not in _KNOWN or c.isspace() for c in w):
            raise PonderError(f"a word token must be printable characters without spaces, not {w!r}")


def add_words(tok: PreTrainedTokenizerFast, words: Sequence[str]) -> None:
    """Make each word one token where it is not part of a longer word (`12` in `12+3`, not in `123`)."""
    check_words(words)
    new = [w for w in dict.fromkeys(words) if len(w) > 1]  # a single character is a token already
    tok.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in new])


def text_checker(tokenizer) -> Callable[[str], None] | None:
    """`check_text` for ponder's character tokenizer; None for others (byte-level ones spell anything)."""
    return check_text if ASSISTANT in tokenizer.get_vocab() else None


def check_text(text: str, what: str = "question") -> None:
    """Refuse characters the character vocabulary cannot spell, naming them."""
    bad = sorted({c for c in text if c not in _KNOWN})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:10])
        raise PonderError(f"{what} has characters the built-in tokenizer does not know: {shown}")
