"""GRPO scores completions with each prompt computed once, in pieces, skipping rows without gradient:
all three must leave the loss and its gradient exactly what whole rows in whole micro-batches give."""

import pytest
import torch

import ponder.train.grpo as grpo
from ponder.engine.base import Completion
from ponder.model.loading import load_model
from ponder.tasks import Problem
from ponder.train.grpo import GRPOConfig, Group, micro_batches
from ponder.train.rewards import Score
from ponder.train.rl_loss import group_advantages, policy_loss
from ponder.train.shared_prompt import PromptSharingLM, build_batch, completion_logprobs, split_by_padding

pytestmark = pytest.mark.usefixtures("one_thread")
QUESTIONS = ["What is 6 + 0?", "What is 3 + 5 + 6 + 1 mod 7?"]
TEXTS = [["6</think>6<|end|>", "1+1=2\n2</think>2<|end|>", "7", "6\n6\n6</think>6<|end|>"],
         ["1", "3+5=8\n8+6=14\n14+1=15\n15 mod 7=1</think>1<|end|>", "2</think>2<|end|>", "0</think>0<|end|>"]]


def _groups(tok, chat, rewards: list[list[float]]) -> list[Group]:
    groups = []
    for q, texts, rs in zip(QUESTIONS, TEXTS, rewards):
        comps = [Completion(t, tok(t, add_special_tokens=False)["input_ids"], "eos", 0) for t in texts]
        ids = tok(chat.prompt(q), add_special_tokens=False)["input_ids"]
        groups.append(Group("add", 1, Problem("add", 1, q, "6"), ids, comps, [Score(r, r > 0, True, False) for r in rs]))
    return groups


def _grads(model, pieces: list[dict], cfg: GRPOConfig, num_items: int, micro: int) -> dict[str, torch.Tensor]:
    """The step's gradient from these pieces (ratio 1; a reference a fixed 0.3 nats below the policy)."""
    lm = PromptSharingLM(model)
    model.zero_grad(set_to_none=True)
    for mb in pieces:
        logp, _ = completion_logprobs(lm, mb, cfg.temperature, False)
        loss, _ = policy_loss(logp, logp.detach(), logp.detach() - 0.3, mb["adv"], mb["mask"], beta=cfg.beta,
                              epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type,
                              max_completion_length=cfg.max_completion_length, num_items=num_items,
                              accumulation=micro, batch_rows=mb["batch_rows"], batch_tokens=mb["batch_tokens"])
        loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_completion_logprobs_and_gradients_equal_those_of_whole_rows(micro_dir):
    model, tok, chat = load_model(micro_dir)
    prompts = [tok(chat.prompt(q), add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    assert len(prompts[0]) != len(prompts[1])  # the shorter prompt is padded
    comps = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS[1][:2] + TEXTS[0][:2]]
    prompt_of = [1, 1, 0, 0]
    mb = build_batch(prompts, comps, prompt_of, [True] * 4, 0, "cpu")
    logp, _ = completion_logprobs(PromptSharingLM(model), mb, 0.7, False)
    logp[mb["mask"] > 0].sum().backward()
    shared = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    total = 0.0
    for r, (c, p) in enumerate(zip(comps, prompt_of)):
        seq = torch.tensor([prompts[p] + c])
        whole = torch.log_softmax(model(input_ids=seq).logits[0, :-1] / 0.7, -1)[len(prompts[p]) - 1:]
        row = whole.gather(-1, seq[0, len(prompts[p]):, None]).squeeze(-1)
        torch.testing.assert_close(logp[r, : len(c)], row, atol=1e-5, rtol=0)
        total = total + row.sum()
    total.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(shared[n], p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_pieces_add_up_to_the_micro_batch_loss(micro_dir, monkeypatch, loss_type):
    model, tok, chat = load_model(micro_dir)
    cfg = GRPOConfig(num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=2, beta=0.1,
                     loss_type=loss_type)
    groups = _groups(tok, chat, [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.2, 0.3]])
    monkeypatch.setattr(grpo, "split_by_padding", lambda lengths: [list(range(len(lengths)))] if lengths else [])
    whole, n, micro = micro_batches(cfg, groups, 0, "cpu")
    monkeypatch.setattr(grpo, "split_by_padding", lambda lengths: [[i] for i in range(len(lengths))])
    rows, n2, micro2 = micro_batches(cfg, groups, 0, "cpu")
    assert (len(whole), len(rows), n, micro) == (2, 8, n2, micro2)
    expected = _grads(model, whole, cfg, n, micro)
    for name, g in _grads(model, rows, cfg, n, micro).items():
        torch.testing.assert_close(g, expected[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_rows_without_advantage_are_skipped_at_beta_0_without_changing_the_gradient(micro_dir, loss_type):
    model, tok, chat = load_model(micro_dir)
    cfg = GRPOConfig(num_generations=4, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                     loss_type=loss_type)
    groups = _groups(tok, chat, [[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.2, 0.3]])  # the first group has no signal
    pieces, n, micro = micro_batches(cfg, groups, 0, "cpu")
    assert sum(p["ids"].shape[0] for p in pieces) == 4 and micro == 1
    everything = build_batch([g.prompt_ids for g in groups], [c.token_ids for g in groups for c in g.completions],
                             [0] * 4 + [1] * 4, [True] * 8, 0, "cpu")
    adv, _ = group_advantages(torch.tensor([s.reward for g in groups for s in g.scores]), 4, cfg.scale_rewards)
    everything.update(adv=adv, batch_rows=8, batch_tokens=float(everything["mask"].sum()))
    expected = _grads(model, [everything], cfg, n, 1)
    for name, g in _grads(model, pieces, cfg, n, micro).items():
        torch.testing.assert_close(g, expected[name], atol=1e-6, rtol=1e-5)


def test_pieces_are_cut_where_padding_would_cost_more_than_a_pass():
    assert split_by_padding([]) == []
    assert split_by_padding([10, 12, 13], piece_cost=8) == [[0, 1, 2]]
    assert split_by_padding([10, 12, 60, 61], piece_cost=8) == [[0, 1], [2, 3]]  # 2 rows * 48 pads > 8
    assert split_by_padding([5, 5, 5, 5]) == [[0, 1, 2, 3]]
