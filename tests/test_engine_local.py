"""LocalEngine: the batched KV-cache sampler, checked against Hugging Face on a tiny random model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import LlamaForCausalLM

from ponder import PonderError
from ponder.engine.base import Capabilities, SamplingParams
from ponder.engine.local import LocalEngine
from ponder.model.configs import model_config
from ponder.model.tokenizer import build_char_tokenizer

PROMPTS = [
    "<|user|>What is 2 + 3?<|assistant|><think>",
    "hi",
    "<|user|>abc<|assistant|><think>12\n",  # ends inside the thinking: prefix continuation
    "<|system|>Be brief.<|user|>What is 17 * 23 - 4?<|assistant|><think>17 * 23 = 391\n",
]


def _model(kv_heads: int | None = None, max_positions: int = 1024) -> LlamaForCausalLM:
    tok = build_char_tokenizer()
    cfg = model_config("ponder-micro", len(tok), max_positions=max_positions)
    cfg.initializer_range = 0.3  # a random model whose greedy text varies (not one repeated token)
    if kv_heads is not None:
        cfg.num_key_value_heads = kv_heads
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def engine(model, tok):
    return LocalEngine(model, tok)


def _hf_greedy(model, tok, prompt: str, max_new: int) -> list[int]:
    """Reference: model.generate on the prompt alone (no padding), cut after the first eos."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
    gen = out[0, ids.shape[1]:].tolist()
    return gen[: gen.index(tok.eos_token_id) + 1] if tok.eos_token_id in gen else gen


def _texts(out):
    return [[c.text for c in cs] for cs in out]


@pytest.mark.parametrize("fast_path", [True, False])
def test_greedy_equals_hf_generate_with_left_padding(model, tok, fast_path):
    eng = LocalEngine(model, tok, fast_path=fast_path)
    assert (eng._fast is not None) == fast_path
    out = eng.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24))
    for prompt, cs in zip(PROMPTS, out):
        ref = _hf_greedy(model, tok, prompt, 24)
        assert cs[0].token_ids == ref, prompt
        assert cs[0].finish_reason == ("eos" if ref[-1] == tok.eos_token_id else "length")


def test_greedy_equals_hf_generate_with_grouped_kv_heads(tok):
    model = _model(kv_heads=1)  # 2 query heads share one key/value head
    out = LocalEngine(model, tok).generate(PROMPTS, SamplingParams(temperature=0, max_tokens=16))
    for prompt, cs in zip(PROMPTS, out):
        assert cs[0].token_ids == _hf_greedy(model, tok, prompt, 16)


@pytest.mark.parametrize("fast_path", [True, False])
def test_each_distinct_prompt_is_prefilled_once(model, tok, fast_path):
    eng = LocalEngine(model, tok, max_batch=4, fast_path=fast_path)
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: calls.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        # 3 distinct prompts (one repeated), n=5, at most 4 rows at a time: samples of one prompt
        # span several decode batches, yet every prompt goes through the model once.
        prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[3]]
        out = eng.generate(prompts, SamplingParams(n=5, temperature=1.0, max_tokens=6, seed=0))
    finally:
        hook.remove()
    prefill = [s for s in calls if s[1] > 1]
    assert sum(b for b, _ in prefill) == 3
    assert all(s[1] == 1 for s in calls if s not in prefill)  # decode steps feed one token per row
    assert [len(cs) for cs in out] == [5, 5, 5, 5]


def test_sampled_rows_share_prompt_but_differ(engine):
    out = engine.generate([PROMPTS[0]], SamplingParams(n=8, temperature=1.0, max_tokens=12, seed=3))
    assert len({c.text for c in out[0]}) > 1


def test_seed_reproducible_and_different_seeds_differ(engine):
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_tokens=20, seed=7)
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    c = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, top_p=0.9, max_tokens=20, seed=8))
    assert [[x.token_ids for x in cs] for cs in a] == [[x.token_ids for x in cs] for cs in b]
    assert _texts(a) != _texts(c)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_prompts_samples_do_not_depend_on_its_batch_mates_or_on_chunking(model, tok, fast_path):
    """In the server a batch holds other users' requests; in an eval, other questions. With a seed, a
    prompt's samples are its own: the same alone, beside other prompts, and cut into chunks of any size,
    and its first k of n samples are its samples at n = k."""
    params = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_tokens=24, seed=11, stop=("e",))
    alone = LocalEngine(model, tok, fast_path=fast_path).generate([PROMPTS[1]], params)[0]
    for max_batch in (64, 3, 1):
        eng = LocalEngine(model, tok, max_batch=max_batch, fast_path=fast_path)
        beside = eng.generate([PROMPTS[2], PROMPTS[0], PROMPTS[1], PROMPTS[3]], params)[2]
        assert [c.token_ids for c in beside] == [c.token_ids for c in alone], max_batch
    fewer = LocalEngine(model, tok, fast_path=fast_path).generate([PROMPTS[1]], replace(params, n=2))[0]
    assert [c.token_ids for c in fewer] == [c.token_ids for c in alone[:2]]
    # a later call from first_sample = 1 goes on with the samples after the first, as adaptive's waves do
    rest = LocalEngine(model, tok, fast_path=fast_path).generate([PROMPTS[1]], replace(params, n=3, first_sample=1))[0]
    assert [c.token_ids for c in rest] == [c.token_ids for c in alone[1:]]


def test_a_prompt_sent_twice_in_a_call_draws_two_different_sets(engine):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=4)
    first, second = engine.generate([PROMPTS[0], PROMPTS[0]], params)
    assert [c.token_ids for c in first] != [c.token_ids for c in second]
    assert [c.token_ids for c in engine.generate([PROMPTS[0]], params)[0]] == [c.token_ids for c in first]


def test_sampled_tokens_follow_the_temperature_scaled_distribution(model, tok):
    eng = LocalEngine(model, tok)
    prompt, temperature, n = PROMPTS[2], 0.7, 6000
    draws = eng.generate([prompt], SamplingParams(n=n, temperature=temperature, max_tokens=1, seed=0))[0]
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        want = torch.softmax(model(input_ids=ids).logits[0, -1].float() / temperature, -1)
    got = torch.bincount(torch.tensor([c.token_ids[0] for c in draws]), minlength=want.numel()).float() / n
    # every token's frequency within 4.5 standard errors of its probability
    assert bool(((got - want).abs() <= 4.5 * (want * (1 - want) / n).sqrt() + 1e-3).all())


def test_temperature_zero_ignores_seed(engine):
    a = engine.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=15, seed=1))
    b = engine.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=15, seed=2))
    assert _texts(a) == _texts(b)
    assert all(cs[0].text == cs[1].text for cs in a)


def test_tiny_top_p_is_greedy(engine):
    greedy = engine.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=20))
    nucleus = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_p=1e-6, max_tokens=20, seed=5))
    for g, cs in zip(greedy, nucleus):
        assert all(c.token_ids == g[0].token_ids for c in cs)


@pytest.mark.parametrize("fast_path", [True, False])
def test_stop_strings_cut_at_first_occurrence(model, tok, fast_path):
    eng = LocalEngine(model, tok, max_batch=3, fast_path=fast_path, eos_token_ids=())
    free = eng.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=30))
    texts = [cs[0].text for cs in free]
    # per prompt a multi-character stop string taken from the middle of its greedy text, so that
    # rows stop at different steps (the batch is compacted under the ones still running)
    stops = tuple(t[5 + i : 8 + i] for i, t in enumerate(texts))
    out = eng.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=30, stop=stops))
    for f, cs in zip(free, out):
        text, ids, c = f[0].text, f[0].token_ids, cs[0]
        end, first = min((text.find(s) + len(s), s) for s in stops if s in text)
        assert (c.text, c.finish_reason, c.stop_reason) == (text[:end], "stop", first)
        # it stopped at the token that completed the stop string (which may end inside a token)
        assert c.token_ids == ids[: len(c.token_ids)]
        assert tok.decode(c.token_ids).startswith(c.text)
        assert not any(s in tok.decode(c.token_ids[:-1]) for s in stops)


def test_stop_string_spanning_special_and_plain_tokens(model, tok):
    eng = LocalEngine(model, tok, eos_token_ids=())
    free = eng.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=30))[0][0]
    stop = free.text[2:6]  # four one-character tokens
    c = eng.generate([PROMPTS[0]], SamplingParams(temperature=0, max_tokens=30, stop=(stop, "never-seen")))[0][0]
    assert (c.text, c.finish_reason, c.stop_reason) == (free.text[:6], "stop", stop)
    assert c.token_ids == free.token_ids[:6]


def test_max_tokens_exact_and_length(model, tok):
    eng = LocalEngine(model, tok, eos_token_ids=())
    out = eng.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=17, seed=0, stop=("never",)))
    for cs in out:
        for c in cs:
            assert c.num_tokens == 17 and c.finish_reason == "length" and c.stop_reason is None
    empty = eng.generate(PROMPTS, SamplingParams(n=2, max_tokens=0))
    assert all(c.text == "" and c.token_ids == [] and c.finish_reason == "length" for cs in empty for c in cs)


def test_eos_ends_sequence_and_is_included(model, tok):
    eng = LocalEngine(model, tok)
    assert eng.eos_token_ids == [tok.eos_token_id] == [tok.convert_tokens_to_ids("<|end|>")]
    free = LocalEngine(model, tok, eos_token_ids=()).generate([PROMPTS[1]], SamplingParams(temperature=0,
                                                                                           max_tokens=20))
    ids = free[0][0].token_ids
    end_at = 7
    eng = LocalEngine(model, tok, eos_token_ids=[ids[end_at]])  # pretend this token ends a turn
    c = eng.generate([PROMPTS[1]], SamplingParams(temperature=0, max_tokens=20))[0][0]
    first = ids.index(ids[end_at])
    assert c.finish_reason == "eos" and c.stop_reason is None
    assert c.token_ids == ids[: first + 1]
    assert c.text == tok.decode(ids[: first + 1])


def test_token_counts_match_text(engine, tok):
    out = engine.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=25, seed=11, stop=("\n",)))
    for prompt, cs in zip(PROMPTS, out):
        for c in cs:
            assert c.prompt_tokens == engine.count_tokens(prompt) == len(tok(prompt).input_ids)
            assert c.num_tokens == len(c.token_ids) == engine.count_tokens(c.text)
            if c.finish_reason == "stop":
                assert c.text.endswith("\n") and c.text.count("\n") == 1


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_match_full_forward(model, tok, engine, temperature, top_p):
    params = SamplingParams(n=2, temperature=temperature, top_p=top_p, max_tokens=12, seed=4, logprobs=True)
    out = engine.generate(PROMPTS[:3], params)
    for prompt, cs in zip(PROMPTS[:3], out):
        p_ids = tok(prompt, add_special_tokens=False).input_ids
        for c in cs:
            assert len(c.logprobs) == c.num_tokens and all(lp <= 0 for lp in c.logprobs)
            ids = torch.tensor([p_ids + c.token_ids])
            with torch.inference_mode():
                logits = model(ids).logits[0, len(p_ids) - 1 : -1].float()
            scaled = logits / (temperature or 1.0)  # greedy reports the unscaled distribution
            ref = torch.log_softmax(scaled, -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), ref, atol=1e-4)


def test_no_logprobs_unless_asked(engine):
    c = engine.generate(["hi"], SamplingParams(max_tokens=3, seed=0))[0][0]
    assert c.logprobs is None


def test_too_long_prompt_is_a_clear_error(tok):
    eng = LocalEngine(_model(max_positions=64), tok)
    with pytest.raises(PonderError, match=r"60 tokens.*max_tokens=10.*64"):
        eng.generate(["x" * 60], SamplingParams(max_tokens=10))
    assert eng.generate(["x" * 54], SamplingParams(max_tokens=10, temperature=0))[0][0].num_tokens <= 10


@pytest.mark.parametrize("max_batch", [2, 4])
def test_small_max_batch_keeps_prompt_order(model, tok, max_batch):
    params = SamplingParams(n=3, temperature=0, max_tokens=10)
    big = LocalEngine(model, tok, max_batch=64).generate(PROMPTS, params)
    small = LocalEngine(model, tok, max_batch=max_batch).generate(PROMPTS, params)
    assert _texts(small) == _texts(big)
    for prompt, cs in zip(PROMPTS, small):
        assert len(cs) == 3 and all(c.prompt_tokens == len(tok(prompt).input_ids) for c in cs)


def test_fast_path_samples_like_the_models_own_forward(model, tok):
    """Same seed, same draws: the fused decode step and the plain HF forward agree token for token,
    also when rows of one prompt finish at different steps and the batch is compacted."""
    params = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_tokens=30, seed=2, stop=("a", "e", "\n"),
                            logprobs=True)
    fast = LocalEngine(model, tok, max_batch=5).generate(PROMPTS, params)
    plain = LocalEngine(model, tok, max_batch=5, fast_path=False).generate(PROMPTS, params)
    assert [[c.token_ids for c in cs] for cs in fast] == [[c.token_ids for c in cs] for cs in plain]
    assert len({c.num_tokens for cs in fast for c in cs}) > 3  # rows did end at different steps
    for cs, ps in zip(fast, plain):
        for a, b in zip(cs, ps):
            assert (a.finish_reason, a.stop_reason) == (b.finish_reason, b.stop_reason)
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_capabilities_and_stats(model, tok):
    eng = LocalEngine(model, tok)
    assert eng.capabilities == Capabilities(n=True, stop_strings=True, logprobs=True, prefix_continuation=True,
                                                streaming=True)
    out = eng.generate(PROMPTS[:2], SamplingParams(n=2, max_tokens=5, seed=0))
    generated = sum(c.num_tokens for cs in out for c in cs)
    assert eng.stats.calls == 1
    assert eng.stats.prompt_tokens == sum(eng.count_tokens(p) for p in PROMPTS[:2])
    assert eng.stats.generated_tokens == generated and eng.stats.per_call == [generated]
    assert eng.generate([], SamplingParams()) == []
    assert eng.stats.prefilled_tokens == eng.stats.prompt_tokens  # a fresh engine prefills what it is sent


def test_a_prompt_repeated_in_one_call_counts_as_sent_twice_and_prefilled_once(model, tok):
    eng = LocalEngine(model, tok, prefix_cache_mb=0)
    a, b = eng.count_tokens(PROMPTS[0]), eng.count_tokens(PROMPTS[1])
    eng.generate([PROMPTS[0], PROMPTS[1], PROMPTS[0]], SamplingParams(max_tokens=2))
    assert (eng.stats.prompt_tokens, eng.stats.prefilled_tokens) == (2 * a + b, a + b)


def test_training_mode_is_restored(model, tok):
    model.train()
    try:
        LocalEngine(model, tok).generate(["hi"], SamplingParams(max_tokens=2, seed=0))
        assert model.training
    finally:
        model.eval()


def test_bad_input_is_a_clear_error(engine):
    with pytest.raises(PonderError):
        engine.generate("hi", SamplingParams())
    with pytest.raises(PonderError):
        engine.generate([""], SamplingParams())


def _other_model(kind: str, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, eos_token_id=6, pad_token_id=0,
                  initializer_range=0.3)
    if kind == "gpt2":  # not Llama-shaped: decodes through the model's own forward
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                          eos_token_id=6, bos_token_id=6, pad_token_id=0, initializer_range=0.3))
    if kind == "qwen2":  # biases on q/k/v, grouped kv heads
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return MistralForCausalLM(MistralConfig(**common, sliding_window=8))  # sliding window: the model's own cache


@pytest.mark.parametrize("kind", ["gpt2", "qwen2", "mistral-sliding-window"])
def test_other_architectures_match_hf_greedy(tok, kind):
    model = _other_model(kind, len(tok)).eval()
    out = LocalEngine(model, tok, max_batch=3).generate(PROMPTS, SamplingParams(n=2, temperature=0, max_tokens=16))
    for prompt, cs in zip(PROMPTS, out):
        ref = _hf_greedy(model, tok, prompt, 16)
        assert all(c.token_ids == ref for c in cs), prompt


@pytest.mark.parametrize("fast_path", [True, False])
def test_on_step_streams_exactly_the_completion_text(model, tok, fast_path):
    """A server streams what the listener hears; joined, it must be the completion, token for token."""
    eng = LocalEngine(model, tok, max_batch=3, fast_path=fast_path)
    heard: dict[tuple[int, int], list[str]] = {}

    def on_step(rows, deltas):
        assert len(rows) == len(deltas) == len(set(rows))
        for row, text in zip(rows, deltas):
            heard.setdefault(row, []).append(text)

    params = SamplingParams(n=2, max_tokens=12, seed=3, stop=("\n",))
    out = eng.generate(PROMPTS[:3], params, on_step=on_step)
    plain = LocalEngine(model, tok, max_batch=3, fast_path=fast_path).generate(PROMPTS[:3], params)
    for i, group in enumerate(out):
        for j, c in enumerate(group):
            assert "".join(heard[(i, j)]) == c.text == plain[i][j].text
            assert len(heard[(i, j)]) == c.num_tokens


def test_on_step_aborts_only_the_prompts_it_names(model, tok):
    eng = LocalEngine(model, tok)
    steps = {"n": 0}

    def on_step(rows, deltas):
        steps["n"] += 1
        return [1] if steps["n"] >= 3 else None

    out = eng.generate(PROMPTS[:2], SamplingParams(n=2, max_tokens=20, temperature=0), on_step=on_step)
    assert [c.finish_reason for c in out[1]] == ["abort", "abort"]
    assert all(c.num_tokens == 3 for c in out[1])
    full = eng.generate(PROMPTS[:1], SamplingParams(n=1, max_tokens=20, temperature=0))[0][0]
    assert out[0][0].text == full.text and out[0][0].finish_reason == full.finish_reason
