"""The engine's cross-call prefix cache: a prompt that extends an earlier one prefills only its new tokens,
and what comes out is what a fresh prefill gives."""

from __future__ import annotations

import pytest
import torch

from ponder.engine.base import SamplingParams
from ponder.engine.local import LocalEngine
from test_engine_local import PROMPTS, _model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def tok():
    from ponder.model.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


def _prefill_tokens(model, run) -> int:
    """Tokens the model's own forward took in prefills (more than one position per row) during `run`."""
    seen = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: seen.append(tuple(kw["input_ids"].shape)),
                                           with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return sum(b * n for b, n in seen if n > 1)


@pytest.mark.parametrize("fast_path", [True, False])
def test_prompts_that_extend_earlier_ones_sample_as_if_prefilled_whole(model, tok, fast_path):
    """Step search's pattern: each call's prompts are the last call's plus what it wrote."""
    cached = LocalEngine(model, tok, fast_path=fast_path)
    fresh_each = lambda: LocalEngine(model, tok, fast_path=fast_path, prefix_cache_mb=0)  # noqa: E731
    prompts = PROMPTS[:]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=5, logprobs=True)
    for _ in range(3):
        got = cached.generate(prompts, params)
        want = fresh_each().generate(prompts, params)
        assert [[c.token_ids for c in cs] for cs in got] == [[c.token_ids for c in cs] for cs in want]
        for cs, ws in zip(got, want):
            for a, b in zip(cs, ws):
                assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        prompts = [p + cs[0].text for p, cs in zip(prompts, got)]
    assert cached.prefixes.extended == 2 * len(PROMPTS)


def test_only_new_tokens_are_prefilled_and_a_repeated_prompt_not_at_all(model, tok):
    eng = LocalEngine(model, tok)
    params = SamplingParams(max_tokens=3, temperature=0.0)
    whole = sum(eng.count_tokens(p) for p in PROMPTS)
    assert _prefill_tokens(model, lambda: eng.generate(PROMPTS, params)) >= whole
    assert _prefill_tokens(model, lambda: eng.generate(PROMPTS, params)) == 0
    longer = [p + "12" for p in PROMPTS]
    ran = _prefill_tokens(model, lambda: eng.generate(longer, params))
    assert ran == len(PROMPTS) * 2  # each row: its two new tokens (both prefixes end at the same column)
    # the engine's own count says what ran (what FLOPs accounting reads), not what was sent
    assert eng.stats.prefilled_tokens == whole + len(PROMPTS) * 2
    assert eng.stats.prompt_tokens == 3 * whole + len(PROMPTS) * 2


def test_a_weight_update_empties_the_cache(model, tok):
    eng = LocalEngine(model, tok)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    eng.generate(PROMPTS, params)
    weight = model.model.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(3.0)  # as an optimizer step would: in place
        got = eng.generate(PROMPTS, params)
        want = LocalEngine(model, tok, prefix_cache_mb=0).generate(PROMPTS, params)
        assert [c[0].token_ids for c in got] == [c[0].token_ids for c in want]
        assert eng.prefixes.hits == 0
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_the_cache_keeps_to_its_byte_budget_dropping_the_least_recently_used(model, tok):
    per_token = sum(2 * layer.self_attn.k_proj.out_features * 4 for layer in model.model.layers)
    eng = LocalEngine(model, tok, prefix_cache_mb=per_token * 60 / 2**20)  # room for 60 tokens of prompts
    params = SamplingParams(max_tokens=1, temperature=0.0)
    a, b, c = "x" * 25, "y" * 25, "z" * 25
    for prompts in ([a], [b], [a], [c]):  # a is used again after b, so b is the one dropped for c
        eng.generate(prompts, params)
    assert eng.prefixes._bytes <= per_token * 60
    assert eng.prefixes.longest(eng._encode([a])[0]) is not None and eng.prefixes.longest(eng._encode([c])[0])
    assert eng.prefixes.longest(eng._encode([b])[0]) is None
