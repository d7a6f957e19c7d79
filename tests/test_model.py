import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from ponder import PonderError
from ponder.model import ChatFormat, Message, check_text, load_model
from ponder.model.tokenizer import CHARS, SPECIAL_TOKENS, build_char_tokenizer

printable = st.text(alphabet=st.sampled_from(CHARS), max_size=60)


@settings(max_examples=100, deadline=None)
@given(printable)
def test_char_tokenizer_is_one_token_per_character_and_round_trips(text):
    assume(not any(s in text for s in SPECIAL_TOKENS))  # markers are one token each, tested below
    tok = build_char_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


def test_special_tokens_are_single_ids_and_survive_save_and_load(tmp_path):
    tok = build_char_tokenizer()
    text = "<|user|>What is 1 + 2?<|assistant|><think>1+2+0=\n=3</think>3<|end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for special in ("<|user|>", "<|assistant|>", "<think>", "</think>", "<|end|>"):
        assert ids.count(tok.convert_tokens_to_ids(special)) == 1
    assert len(tok) == len(SPECIAL_TOKENS) + len(CHARS)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.eos_token == "<|end|>" and again.pad_token_id == 0


WORDS = ["12345", "21345", "47", "59"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(WORDS + ["1", "4", "7", "9", "5", " ", "+", "\n", "a", "^"]), max_size=30))
def test_whole_words_are_one_token_only_where_they_stand_alone(parts):
    tok = build_char_tokenizer(WORDS)
    text = "".join(parts)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = [tok.decode([i]) for i in ids]
    for piece in pieces:
        assert len(piece) == 1 or piece in WORDS
    # a run of letters and digits is one word token exactly when it is a whole word
    runs = [r for r in "".join(c if c.isalnum() else " " for c in text).split()]
    assert sum(len(p) > 1 for p in pieces) == sum(r in WORDS for r in runs)


def test_whole_words_survive_save_and_load_and_bad_ones_are_refused(tmp_path):
    tok = build_char_tokenizer(WORDS)
    assert len(tok) == len(SPECIAL_TOKENS) + len(CHARS) + len(WORDS)
    text = "<|user|>Compose: 12345 21345<|assistant|><think>47^2 mod 59=26</think>123456<|end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids].count("21345") == 1 and "123456" not in tok.get_vocab()
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text, add_special_tokens=False)["input_ids"] == ids
    for bad in ("", "1 2", "é1"):
        with pytest.raises(PonderError, match="word token"):
            build_char_tokenizer([bad])


def test_unknown_characters_are_named():
    check_text("What is 2 + 2?")
    with pytest.raises(PonderError, match="'é'.*'€'|'€'.*'é'"):
        check_text("Qué es 2 € + 2?")


def test_chat_format_renders_turns_without_earlier_reasoning_and_parses_back():
    chat = ChatFormat()
    prompt = chat.render([Message("system", "be brief"), Message("user", "hi"),
                          Message("assistant", "hello"), Message("user", "What is 1 + 2?")])
    assert prompt == ("<|system|>be brief<|user|>hi<|assistant|><think></think>hello<|end|>"
                      "<|user|>What is 1 + 2?<|assistant|><think>")
    parsed = chat.parse("1+2+0=\n=3</think>3<|end|>")
    assert (parsed.reasoning, parsed.answer, parsed.finished) == ("1+2+0=\n=3", "3", True)
    cut = chat.parse("1+2+0=\n=")
    assert cut.answer == "" and not cut.finished
    assert chat.completion(["a", "b"], "7") == "a\nb</think>7<|end|>"
    with pytest.raises(PonderError):
        chat.render([Message("assistant", "x")])


def test_load_model_reads_any_hf_directory_and_names_bad_paths(micro_dir, tmp_path):
    model, tok, chat = load_model(micro_dir)
    assert model.config.model_type == "llama" and tok.eos_token == "<|end|>"
    assert chat.prompt("x").endswith("<think>")
    with pytest.raises(PonderError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(PonderError, match="no config.json"):
        load_model(tmp_path)
