"""The GRPO trainer end to end on ponder-micro: runs, logs, resumes, masks, and learns in the right direction."""

import json

import pytest
import torch
from safetensors.torch import load_file

import ponder.train.grpo as grpo
from ponder import PonderError
from ponder.cli import main
from ponder.config import load_config
from ponder.engine.base import Completion, SamplingParams
from ponder.engine.local import LocalEngine
from ponder.model.loading import load_model
from ponder.tasks import Problem
from ponder.train.grpo import GRPOConfig, Group, advantages, micro_batches, optimizer_step, split_generation, train_grpo
from ponder.train.rl_loss import group_advantages
from ponder.train.rewards import Score
from ponder.train.shared_prompt import PromptSharingLM, build_batch, completion_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")
MIX = [{"task": "add", "levels": [1]}, {"task": "modadd", "levels": [1]}]
TIMING = {"seconds", "step_seconds", "gen_seconds", "tokens_per_s"}


def tiny(out, model, **kw) -> dict:
    # A random micro model ends about a third of its completions within 48 tokens, so a length penalty
    # makes the rewards of most groups differ (by length, truncated lowest): the steps have gradients.
    base = dict(output_dir=str(out), model=str(model), mixture=MIX, num_generations=4,
                per_device_train_batch_size=4, gradient_accumulation_steps=2, max_completion_length=48,
                learning_rate=1e-2, length_penalty=0.5, max_steps=4, save_steps=2, bf16=False, torch_threads=1)
    return base | kw


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_run_from_the_cli_and_log_every_field(tmp_path, micro_dir):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(json.dumps(tiny(tmp_path / "run", micro_dir, beta=0.1, num_iterations=2, max_steps=3)))
    assert main(["train", "grpo", "--config", str(cfg), "--set", "loss_type=dr_grpo"]) == 0
    records = _records(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3]
    for field in ("reward", "reward_std", "accuracy", "format_rate", "completion_length", "zero_signal_frac",
                  "kl", "clip_ratio", "entropy", "tokens_per_s", "seconds", "loss", "grad_norm", "truncated_frac"):
        assert all(isinstance(r[field], (int, float)) for r in records), field
    assert records[0]["reward"] == records[1]["reward"]  # num_iterations=2: steps 1 and 2 share a batch
    assert records[1]["kl"] > 0  # after one update the policy has moved from the reference
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert "override: loss_type='dr_grpo'" in (tmp_path / "run" / "config.yaml").read_text()


def test_beta_zero_loads_no_reference_model(tmp_path, micro_dir, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a reference model was loaded with beta=0")
    monkeypatch.setattr(grpo, "load_reference", refuse)
    train_grpo(GRPOConfig(**tiny(tmp_path / "run", micro_dir, max_steps=1)))
    assert "kl" not in _records(tmp_path / "run")[0]


def test_runs_that_differ_in_their_seed_are_evaluated_on_the_same_questions(tmp_path, micro_dir, monkeypatch):
    import ponder.evaluate as evaluate
    asked: dict[int, list[str]] = {}
    real = evaluate.heldout_problems

    def recording(task, level, n, seed=0):
        problems = real(task, level, n, seed)
        asked.setdefault(run_seed, []).extend(p.question for p in problems)
        return problems
    monkeypatch.setattr(evaluate, "heldout_problems", recording)
    for run_seed in (0, 5):
        train_grpo(GRPOConfig(**tiny(tmp_path / f"run{run_seed}", micro_dir, max_steps=1, eval_steps=1,
                                     eval_samples=3, eval_max_tokens=8, seed=run_seed)))
    assert asked[0] and asked[0] == asked[5]


def test_an_interrupted_run_resumes_at_its_checkpoint_with_the_same_data(tmp_path, micro_dir, monkeypatch):
    train_grpo(GRPOConfig(**tiny(tmp_path / "straight", micro_dir)))
    real, calls = grpo.optimizer_step, []

    def crash_at_step_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed after step 3 was logged, before its batch was saved
        return real(*a, **k)
    monkeypatch.setattr(grpo, "optimizer_step", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_grpo(GRPOConfig(**tiny(tmp_path / "killed", micro_dir)))
    monkeypatch.setattr(grpo, "optimizer_step", real)
    assert [r["step"] for r in _records(tmp_path / "killed")] == [1, 2, 3]
    with pytest.raises(PonderError, match="--resume"):
        train_grpo(GRPOConfig(**tiny(tmp_path / "killed", micro_dir)))
    train_grpo(GRPOConfig(**tiny(tmp_path / "killed", micro_dir)), resume=True)
    a, b = _records(tmp_path / "straight"), _records(tmp_path / "killed")
    assert all(r["grad_norm"] > 0 for r in a)  # every step moved the weights: their equality means something
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # step 3 redone, not logged twice
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}
    wa = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def _group(tok, chat, texts: list[str], rewards: list[float], finish: str = "eos") -> Group:
    comps = [Completion(t, tok(t, add_special_tokens=False)["input_ids"], finish, 0) for t in texts]
    scores = [Score(r, r > 0, True, finish == "length") for r in rewards]
    prompt_ids = tok(chat.prompt("What is 6 + 0?"), add_special_tokens=False)["input_ids"]
    return Group("add", 1, Problem("add", 1, "What is 6 + 0?", "6"), prompt_ids, comps, scores)


def test_a_generated_batch_is_cut_into_steps_of_whole_groups_with_the_batch_advantages(micro_dir):
    _, tok, chat = load_model(micro_dir)
    cfg = GRPOConfig(num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                     steps_per_generation=3, scale_rewards="batch")
    rewards = [[1.0, 0.0], [0.5, 0.0], [1.0, 0.9]]
    groups = [_group(tok, chat, ["6", "7"], r) for r in rewards]
    whole = group_advantages(torch.tensor(sum(rewards, [])), 2, "batch")[0]
    parts = split_generation(cfg, groups, step=0)
    assert [len(p) for p, _ in parts] == [1, 1, 1]
    assert sorted(id(g) for p, _ in parts for g in p) == sorted(id(g) for g in groups)
    for (part,), adv in parts:  # each step's advantages are its rows' share of the whole batch's
        i = groups.index(part)
        torch.testing.assert_close(adv, whole[2 * i : 2 * i + 2])
    assert split_generation(cfg, groups, step=0)[0][0] == parts[0][0]  # a resumed run cuts the same way


@pytest.mark.parametrize("weight, expected", [(1.0, [0.75, -0.25, -0.25, -0.25]), (0.2, [0.75, -0.05, -0.05, -0.05]),
                                               (0.0, [0.75, 0.0, 0.0, 0.0])])
def test_negative_advantages_are_scaled_by_their_weight(micro_dir, weight, expected):
    _, tok, chat = load_model(micro_dir)
    cfg = GRPOConfig(num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                     scale_rewards="none", negative_advantage_weight=weight)
    group = _group(tok, chat, ["6", "7", "8", "9"], [1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(advantages(cfg, [group]), torch.tensor(expected))
    pieces, _, _ = micro_batches(cfg, [group], 0, "cpu")
    assert sum(len(p["adv"]) for p in pieces) == (1 if weight == 0 else 4)  # at 0 the wrong ones cost no pass


def test_steps_per_generation_takes_several_steps_on_one_batch_against_the_sampling_policy(tmp_path, micro_dir,
                                                                                           monkeypatch):
    real, counts = grpo.sample_groups, []

    def counting(cfg, mixture, curriculum, engine, chat, tokenizer, step, round_, count, rank=0):
        counts.append((step, count))
        return real(cfg, mixture, curriculum, engine, chat, tokenizer, step, round_, count, rank)
    monkeypatch.setattr(grpo, "sample_groups", counting)
    train_grpo(GRPOConfig(**tiny(tmp_path / "run", micro_dir, steps_per_generation=4, learning_rate=3e-2)))
    records = _records(tmp_path / "run")
    assert counts == [(0, 4), (2, 4)]  # 2 batches of 4 prompts (2 steps of 2 prompts each) for 4 steps
    assert records[0]["completion_length"] == records[1]["completion_length"] != records[2]["completion_length"]
    # the second step of a batch is scored against the weights that sampled it, which the first step moved
    assert records[1]["clip_ratio"] > 0 and records[3]["clip_ratio"] > 0
    assert records[0]["clip_ratio"] == 0 and records[2]["clip_ratio"] == 0


@pytest.mark.parametrize("masked", [True, False])
def test_truncated_completions_are_masked_out_of_the_loss_when_configured(micro_dir, masked):
    _, tok, chat = load_model(micro_dir)
    cfg = GRPOConfig(num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                     mask_truncated_completions=masked, beta=0.1)  # beta: no row is left out for want of advantage
    groups = [_group(tok, chat, ["1+1", "22"], [0.0, 0.0], finish="length"),
              _group(tok, chat, ["6</think>6<|end|>", "7</think>7<|end|>"], [1.0, 0.0])]
    (mb,), num_items, micro = micro_batches(cfg, groups, 0, "cpu")
    assert micro == 1
    per_row = mb["mask"].sum(1).tolist()  # rows sorted by length: "22", "1+1", then the two finished ones
    assert per_row == ([0, 0, 4, 4] if masked else [2, 3, 4, 4])
    assert num_items == 2 + 3 + 4 + 4  # the DAPO normaliser counts them either way


def test_a_positive_advantage_completion_becomes_more_likely(micro_dir):
    model, tok, chat = load_model(micro_dir)
    model.train()
    cfg = GRPOConfig(num_generations=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                     loss_type="grpo", bf16=False, temperature=0.7)
    (mb,), n, micro = micro_batches(cfg, [_group(tok, chat, ["6</think>6<|end|>", "7</think>7<|end|>"], [1.0, 0.0])],
                             0, "cpu")
    good = mb["adv"] > 0

    def seq_logp() -> torch.Tensor:
        with torch.no_grad():
            return (completion_logprobs(PromptSharingLM(model), mb, 0.7, False)[0] * mb["mask"]).sum(1)

    before = seq_logp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer_step(PromptSharingLM(model), opt, [mb], cfg, n, accumulation=micro)
    after = seq_logp()
    assert after[good] > before[good] and after[~good] < before[~good]


def test_rollouts_use_the_weights_of_the_latest_step(micro_dir):
    """The engine's sampling log-probs equal the trainer's after an optimizer step (no stale fused weights)."""
    model, tok, chat = load_model(micro_dir)
    engine = LocalEngine(model, tok)
    prompt = chat.prompt("What is 6 + 0?")
    params = SamplingParams(n=2, temperature=0.7, max_tokens=12, seed=0, logprobs=True)
    engine.generate([prompt], params)  # fuse the starting weights
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    c = engine.generate([prompt], params)[0][0]
    with torch.no_grad():
        lp, _ = completion_logprobs(PromptSharingLM(model), build_batch([ids[0].tolist()], [c.token_ids], [0], [True], 0,
                                                                        "cpu"), 0.7, False)
    torch.testing.assert_close(lp[0], torch.tensor(c.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("text, field", [
    ("num_generations: 1", "num_generations"),
    ("loss_type: foo", "loss_type"),
    ("scale_rewards: yes_please", "scale_rewards"),
    ("num_generations: 3\nper_device_train_batch_size: 4\ngradient_accumulation_steps: 1", "num_generations"),
    ("temperature: 0", "temperature"),
    ("epsilon: -0.1", "epsilon"),
    ("step_error_penalty: -1", "step_error_penalty"),
    ("dynamic_sampling: always", "dynamic_sampling"),
    ("mixture: [{task: countdown, levels: [9]}]", "levels"),
    ("num_iteration: 2", "num_iteration"),
    ("gradient_accumulation_steps: 2\nsteps_per_generation: 3", "steps_per_generation"),
    ("negative_advantage_weight: -0.5", "negative_advantage_weight"),
    ("mixture: [{task: isq, levels: [1], options: {modulus: 59}}]", "options"),
])
def test_bad_config_is_refused_naming_the_field(tmp_path, text, field):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(PonderError, match=field):
        load_config(GRPOConfig, p)


def test_the_example_config_loads():
    cfg = load_config(GRPOConfig, "configs/grpo-countdown.yaml")
    assert cfg.prompts_per_step == 4 and cfg.epsilon_high == 0.28
