"""The GRPO objective against numbers worked out by hand, for every option."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import PonderError
from ponder.train.rl_loss import aggregate, clipped_surrogate, group_advantages, k3_kl, policy_loss

T = torch.tensor
REWARDS = T([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # two groups of 4
CENTERED = [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]  # minus each group's mean (0.25, 0.5)


def test_advantages_scaled_by_group_std():
    # group 1: squares of deviations 0.5625 + 3 * 0.0625 = 0.75, / (4 - 1) -> std 0.5
    # group 2: 4 * 0.25 = 1, / 3 -> std sqrt(1/3)
    adv, zero = group_advantages(REWARDS, 4, "group")
    s1, s2 = 0.5 + 1e-4, math.sqrt(1 / 3) + 1e-4
    expected = [0.75 / s1, -0.25 / s1, -0.25 / s1, -0.25 / s1, 0.5 / s2, 0.5 / s2, -0.5 / s2, -0.5 / s2]
    torch.testing.assert_close(adv, T(expected))
    assert not zero.any()


def test_advantages_scaled_by_batch_std_keep_the_group_mean():
    # batch mean 0.375: 3 deviations of 0.625, 5 of -0.375 -> 1.171875 + 0.703125 = 1.875, / 7
    adv, _ = group_advantages(REWARDS, 4, "batch")
    s = math.sqrt(1.875 / 7) + 1e-4
    torch.testing.assert_close(adv, T([c / s for c in CENTERED]))


def test_advantages_unscaled():
    adv, _ = group_advantages(REWARDS, 4, "none")
    torch.testing.assert_close(adv, T(CENTERED))


def test_a_group_with_equal_rewards_has_zero_advantage_and_is_flagged():
    adv, zero = group_advantages(T([1.0, 1.0, 0.0, 1.0]), 2, "group")
    torch.testing.assert_close(adv[:2], T([0.0, 0.0]))
    torch.testing.assert_close(adv[2:], T([-0.5 / (math.sqrt(0.5) + 1e-4), 0.5 / (math.sqrt(0.5) + 1e-4)]))
    assert zero.tolist() == [True, True, False, False]


def test_rewards_that_do_not_split_into_groups_are_refused():
    with pytest.raises(PonderError, match="groups of 3"):
        group_advantages(T([1.0, 0.0, 1.0, 0.0]), 3)


def test_clipped_surrogate_by_hand():
    # ratios 1.5, 0.5, 1.0 for a row with advantage +1 and a row with advantage -1
    logp = torch.log(T([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]]))
    old = torch.zeros(2, 3)
    loss, ratio = clipped_surrogate(logp, old, T([1.0, -1.0]), epsilon=0.2, epsilon_high=0.2)
    torch.testing.assert_close(ratio, T([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]]))
    # A>0: -min(1.5, 1.2) = -1.2, -min(0.5, 0.8) = -0.5, -1 ; A<0: -min(-1.5, -1.2) = 1.5, -min(-0.5, -0.8) = 0.8, 1
    torch.testing.assert_close(loss, T([[-1.2, -0.5, -1.0], [1.5, 0.8, 1.0]]))
    loss_hi, _ = clipped_surrogate(logp, old, T([1.0, -1.0]), epsilon=0.2, epsilon_high=0.28)
    torch.testing.assert_close(loss_hi, T([[-1.28, -0.5, -1.0], [1.5, 0.8, 1.0]]))


def test_k3_kl_by_hand():
    # logp = log 0.5, ref = log 0.25: d = log 0.5 -> 0.5 - log 0.5 - 1
    kl = k3_kl(torch.log(T([0.5, 0.3])), torch.log(T([0.25, 0.3])))
    torch.testing.assert_close(kl, T([0.5 + math.log(2) - 1, 0.0]))


PER_TOKEN = T([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])  # 100s are masked out
MASK = T([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", ((1 + 2 + 3) / 3 + 4 / 1) / 2 / 2),  # mean per sequence, mean over sequences, / accumulation 2
    ("bnpo", (1 + 2 + 3 + 4) / 4 / 2),  # mean over the micro-batch's tokens, / accumulation
    ("dr_grpo", (1 + 2 + 3 + 4) / (2 * 8) / 2),  # / (rows * max_completion_length 8), / accumulation
    ("dapo", (1 + 2 + 3 + 4) / 20),  # / the step's 20 completion tokens; accumulation already inside
])
def test_aggregation_by_hand(loss_type, expected):
    got = aggregate(PER_TOKEN, MASK, loss_type, max_completion_length=8, num_items=20, accumulation=2)
    assert got.item() == pytest.approx(expected)


def test_grpo_counts_a_fully_masked_row_in_the_mean_of_sequences():
    got = aggregate(T([[1.0, 2.0], [5.0, 5.0]]), T([[1.0, 1.0], [0.0, 0.0]]), "grpo", max_completion_length=2,
                    num_items=4, accumulation=1)
    assert got.item() == pytest.approx((1.5 + 0.0) / 2)


def test_unknown_loss_type_is_refused():
    with pytest.raises(PonderError, match="loss_type"):
        aggregate(PER_TOKEN, MASK, "foo", max_completion_length=8, num_items=20, accumulation=1)


def test_micro_batches_add_up_to_the_step_loss():
    """Split over 2 micro-batches, dapo is a token mean over the step and dr_grpo a sum over rows * L."""
    halves = [(PER_TOKEN, MASK), (T([[2.0, 2.0, 0.0, 0.0]]), T([[1.0, 1.0, 0.0, 0.0]]))]
    tokens = 6  # 4 + 2
    kw = dict(max_completion_length=4, num_items=tokens, accumulation=2)
    dapo = sum(aggregate(p, m, "dapo", **kw).item() for p, m in halves)
    assert dapo == pytest.approx((1 + 2 + 3 + 4 + 2 + 2) / 6)
    dr = sum(aggregate(p, m, "dr_grpo", **kw).item() for p, m in halves)
    assert dr == pytest.approx((1 + 2 + 3 + 4) / (2 * 4) / 2 + (2 + 2) / (1 * 4) / 2)


def test_policy_loss_adds_beta_times_kl_and_counts_clipping():
    logp = torch.log(T([[1.5, 0.5]]))
    old = torch.zeros(1, 2)
    ref = torch.log(T([[0.75, 0.5]]))  # d = log(0.5), 0: KL 0.5 + log 2 - 1, 0
    loss, stats = policy_loss(logp, old, ref, T([1.0]), T([[1.0, 1.0]]), beta=0.1, epsilon=0.2, epsilon_high=0.2,
                              loss_type="bnpo", max_completion_length=2, num_items=2, accumulation=1)
    kl = 0.5 + math.log(2) - 1
    assert loss.item() == pytest.approx((-1.2 + 0.1 * kl - 0.5) / 2)
    assert stats["kl_sum"] == pytest.approx(kl)
    assert stats["clip_high_sum"] == 1 and stats["clip_low_sum"] == 0 and stats["tokens"] == 2


def test_beta_without_reference_is_refused():
    with pytest.raises(PonderError, match="reference"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), None, T([1.0]), T([[1.0]]), beta=0.1, epsilon=0.2,
                    epsilon_high=0.2, loss_type="grpo", max_completion_length=1, num_items=1, accumulation=1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=6), st.integers(2, 5),
       st.sampled_from(["group", "batch", "none"]))
def test_equal_rewards_in_a_group_give_zero_advantage(values, g, scale):
    rewards = torch.tensor([v for v in values for _ in range(g)])  # each group: one value g times
    adv, zero = group_advantages(rewards, g, scale)
    assert torch.all(adv.abs() < 1e-6) and zero.all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 3), st.integers(1, 6)), min_size=1, max_size=6))
def test_at_ratio_one_and_beta_zero_the_loss_is_minus_the_mean_advantage(rows):
    """grpo: the mean over sequences; dapo/bnpo: weighted by length; dr_grpo: length over L."""
    adv = torch.tensor([a for a, _ in rows])
    width = max(n for _, n in rows)
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for _, n in rows])
    lengths = mask.sum(1)
    logp = torch.randn(len(rows), width)
    kw = dict(beta=0.0, epsilon=0.2, epsilon_high=0.2, max_completion_length=6, num_items=float(lengths.sum()),
              accumulation=1)
    got = {t: policy_loss(logp, logp.clone(), None, adv, mask, loss_type=t, **kw)[0].item()
           for t in ("grpo", "bnpo", "dr_grpo", "dapo")}
    assert got["grpo"] == pytest.approx(-adv.mean().item(), abs=1e-5)
    weighted = -(adv * lengths).sum().item()
    assert got["bnpo"] == pytest.approx(weighted / lengths.sum().item(), abs=1e-5)
    assert got["dapo"] == pytest.approx(weighted / lengths.sum().item(), abs=1e-5)
    assert got["dr_grpo"] == pytest.approx(weighted / (len(rows) * 6), abs=1e-5)


def test_the_gradient_pushes_up_positive_advantage_tokens():
    logp = torch.log(T([[0.5, 0.5], [0.5, 0.5]])).requires_grad_()
    loss, _ = policy_loss(logp, logp.detach(), None, T([1.0, -1.0]), torch.ones(2, 2), beta=0.0, epsilon=0.2,
                          epsilon_high=0.2, loss_type="grpo", max_completion_length=2, num_items=4, accumulation=1)
    loss.backward()
    # d/dlogp of -ratio * A / (2 tokens * 2 rows) at ratio 1 = -A / 4
    torch.testing.assert_close(logp.grad, T([[-0.25, -0.25], [0.25, 0.25]]))
