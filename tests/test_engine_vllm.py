"""The vLLM engine keeps ponder's engine contract, and follows a trained policy's weights.

No GPU here: `tests/fake_vllm.py` stands in for the vllm package with vLLM's own output
semantics (end token left out of the text, stop strings dropped unless asked, "stop" for
both), sampling with the local engine underneath, so the adapter must give back exactly
what the local engine gives."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch

import fake_vllm
from ponder import PonderError
from ponder.engine.base import SamplingParams, sample_keys
from ponder.engine.local import LocalEngine
from ponder.model.loading import load_model, resolve

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.module())
    fake_vllm.LLM.built.clear()
    from ponder.engine.vllm import VLLMEngine

    return VLLMEngine


@pytest.fixture(scope="module")
def builtin():
    return load_model("built-in")


def _same(a, b) -> None:
    for x, y in zip(a, b, strict=True):
        for cx, cy in zip(x, y, strict=True):
            assert (cx.text, cx.token_ids, cx.finish_reason, cx.stop_reason, cx.prompt_tokens, cx.num_tokens) == \
                   (cy.text, cy.token_ids, cy.finish_reason, cy.stop_reason, cy.prompt_tokens, cy.num_tokens)
            if cy.logprobs is None:
                assert cx.logprobs is None
            else:
                assert cx.logprobs == pytest.approx(cy.logprobs, abs=1e-6)


@pytest.mark.parametrize("params, reason", [
    (SamplingParams(temperature=0, max_tokens=300), "eos"),
    (SamplingParams(temperature=0, max_tokens=300, stop=("</think>", "\n")), "stop"),
    (SamplingParams(temperature=0, max_tokens=7, stop=("</think>",)), "length"),
    (SamplingParams(n=3, temperature=0, max_tokens=40, stop=("\n",)), "stop"),  # greedy n > 1: vLLM refuses it
    (SamplingParams(n=4, temperature=0.9, top_p=0.95, max_tokens=60, seed=7, logprobs=True, stop=("</think>",)),
     None),
])
def test_completions_equal_the_local_engines(vllm, builtin, params, reason):
    model, tok, chat = builtin
    prompts = [chat.prompt(q) for q in ("What is 48 + 7?", "Which is larger: 9.11 or 9.8?", "What is 48 + 7?")]
    engine = vllm(resolve("built-in"), tok)
    got = engine.generate(prompts, params)
    local = LocalEngine(model, tok)
    if params.temperature == 0:
        want = local.generate(prompts, params)
    else:  # vLLM seeds per request: prompt i with the key of its first sample row
        keys = sample_keys(params.seed, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], 1)
        want = [local.generate([p], replace(params, seed=k[0] & (2**63 - 1)))[0] for p, k in zip(prompts, keys)]
    _same(got, want)
    if reason is not None:
        assert {c.finish_reason for cs in got for c in cs} == {reason}
    assert engine.stats.generated_tokens == sum(c.num_tokens for cs in got for c in cs)
    assert engine.count_tokens(prompts[0]) == got[0][0].prompt_tokens


def test_prompts_go_in_as_token_ids_without_added_special_tokens(vllm, builtin):
    _, tok, chat = builtin
    prompt = chat.prompt("What is 2 + 2?")
    engine = vllm(resolve("built-in"), tok)
    engine.generate([prompt], SamplingParams(temperature=0, max_tokens=3))
    sent, sp = fake_vllm.LLM.built[-1].calls[-1]
    assert sent == [{"prompt_token_ids": tok(prompt, add_special_tokens=False)["input_ids"]}]
    assert sp.include_stop_str_in_output and not sp.skip_special_tokens


def test_zero_max_tokens_and_bad_input(vllm, builtin):
    _, tok, chat = builtin
    engine = vllm(resolve("built-in"), tok)
    out = engine.generate([chat.prompt("What is 1 + 1?")], SamplingParams(n=2, max_tokens=0))
    assert [(c.text, c.finish_reason) for c in out[0]] == [("", "length")] * 2
    assert not fake_vllm.LLM.built[-1].calls  # nothing asked of vLLM
    with pytest.raises(PonderError, match="list of prompts"):
        engine.generate("What?", SamplingParams())
    with pytest.raises(PonderError, match="stream"):
        engine.generate(["x"], SamplingParams(), on_step=lambda rows, texts: None)
    with pytest.raises(PonderError, match="max_model_len of 1024"):
        engine.generate(["x" * 1000], SamplingParams(max_tokens=100))


def test_a_followed_policy_is_pushed_only_when_a_step_changed_it(vllm, micro_dir):
    model, tok, chat = load_model(micro_dir)
    engine = vllm(micro_dir, tok).follow(model)
    llm = fake_vllm.LLM.built[-1]
    served = dict(llm.runner.model.named_parameters())
    prompt = chat.prompt("What is 6 + 0?")
    params = SamplingParams(n=2, temperature=0.7, max_tokens=8, seed=0)
    engine.generate([prompt], params)
    engine.generate([prompt], params)
    assert llm.runner.loads == 1  # the starting weights, once
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert not torch.equal(served["model.norm.weight"], model.model.norm.weight)
    engine.generate([prompt], params)
    assert llm.runner.loads == 2 and llm.prefix_resets == 2
    for name, p in model.named_parameters():
        torch.testing.assert_close(served[name], p, rtol=0, atol=0)


def test_without_vllm_installed_the_error_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    from ponder.engine.vllm import import_vllm

    with pytest.raises(PonderError, match=r"^engine vllm is an optional extra[^\n]*$"):
        import_vllm()


def test_grpo_rolls_out_through_vllm_with_the_current_weights(vllm, micro_dir, tmp_path, monkeypatch):
    from test_grpo import tiny

    from ponder.train.grpo import GRPOConfig, train_grpo

    calls = []
    generate = vllm.generate

    def checked(self, prompts, params, on_step=None):
        out = generate(self, prompts, params, on_step)
        served = dict(fake_vllm.LLM.built[-1].runner.model.named_parameters())
        calls.append(all(torch.equal(served[n], p) for n, p in self._policy.named_parameters()))
        return out

    monkeypatch.setattr(vllm, "generate", checked)
    train_grpo(GRPOConfig(**tiny(tmp_path / "run", micro_dir, max_steps=3, engine="vllm",
                                 vllm_gpu_memory_utilization=0.5, eval_steps=0)))
    llm = fake_vllm.LLM.built[-1]
    assert len(calls) >= 3 and all(calls)  # every rollout sampled the weights of the latest step
    assert llm.runner.loads == 3  # the start, then after steps 1 and 2 (step 3's weights are never sampled)
    assert llm.kwargs["gpu_memory_utilization"] == 0.5 and llm.kwargs["logprobs_mode"] == "processed_logprobs"


def test_ask_with_engine_vllm_answers_as_the_local_engine(vllm, capsys):
    import json

    from ponder.cli import main

    for engine in ("local", "vllm"):
        assert main(["ask", "What is 482 * 37?", "--effort", "medium", "--json", "--engine", engine]) == 0
    local, served = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert served["answer"] == local["answer"] == "17834"
    assert served["usage"] == local["usage"]
