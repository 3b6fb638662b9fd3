"""PRO's loss against an independent, loop-by-loop computation of the paper's equations."""

from __future__ import annotations

import math

import pytest
import torch

from trl_ranking.losses import kendall_tau, pro_ranking_loss, pro_sft_loss, ranking_accuracy


def reference_stage_losses(scores, rewards=None, dynamic=True, first_only=False, eps=1e-10):
    """Eq. 8 with Eqs. 9-11, one example, in plain Python: the list of its stage losses."""
    n = len(scores)
    losses = []
    for k in range(n - 1 if not first_only else 1):
        if rewards is not None and dynamic:
            negative_weights = [rewards[k] - rewards[i] for i in range(k + 1, n)]
            positive_weight = max(negative_weights)
        else:
            negative_weights = [1.0] * (n - k - 1)
            positive_weight = 1.0
        denominator = eps + math.exp(scores[k] * positive_weight)
        denominator += sum(math.exp(scores[i] * w) for i, w in zip(range(k + 1, n), negative_weights))
        losses.append(math.log(denominator) - scores[k] * positive_weight)
    return losses


def pad_batch(rows, fill=0.0):
    n_max = max(len(r) for r in rows)
    return torch.tensor([list(r) + [fill] * (n_max - len(r)) for r in rows], dtype=torch.float64)


# Mean token log-probs of the size a 7B model gives HH-RLHF responses, and reward-model scores
REAL_SCORES = [
    [-1.21, -1.47, -0.98, -2.30],
    [-0.75, -0.81, -1.92, -1.10],
    [-2.05, -1.33, -1.64, -1.70],
]
REAL_REWARDS = [[2.31, 0.87, -0.12, -1.45], [1.02, 0.99, 0.15, -0.60], [0.44, -0.38, -0.38, -2.7]]


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("with_rewards", [False, True])
def test_uniform_n_matches_stage_mean_then_sum(n, with_rewards):
    # The official reduction: each stage averaged over the batch, then the stages summed
    scores = [row[:n] for row in REAL_SCORES]
    rewards = [row[:n] for row in REAL_REWARDS] if with_rewards else None
    per_example_stages = [
        reference_stage_losses(s, r) for s, r in zip(scores, rewards or [None] * len(scores), strict=True)
    ]
    expected = sum(sum(stages[k] for stages in per_example_stages) / len(scores) for k in range(n - 1))
    loss, per_stage, stage_mask = pro_ranking_loss(
        pad_batch(scores), torch.tensor([n] * 3), pad_batch(rewards) if with_rewards else None
    )
    assert loss.mean().item() == pytest.approx(expected, rel=1e-12)
    assert stage_mask.sum().item() == 3 * (n - 1)
    assert per_stage[0, 0].item() == pytest.approx(per_example_stages[0][0], rel=1e-12)


@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("first_only", [True, False])
def test_mixed_n_each_example_uses_its_own_n(dynamic, first_only):
    scores = [REAL_SCORES[0][:2], REAL_SCORES[1][:4], REAL_SCORES[2][:3]]
    rewards = [REAL_REWARDS[0][:2], REAL_REWARDS[1][:4], REAL_REWARDS[2][:3]]
    counts = torch.tensor([2, 4, 3])
    # Padding values must not matter: fill with something extreme
    padded_scores, padded_rewards = pad_batch(scores, fill=50.0), pad_batch(rewards, fill=-99.0)
    loss, _, _ = pro_ranking_loss(padded_scores, counts, padded_rewards, dynamic, first_only)
    for i, (s, r) in enumerate(zip(scores, rewards, strict=True)):
        expected = sum(reference_stage_losses(s, r, dynamic, first_only))
        assert loss[i].item() == pytest.approx(expected, rel=1e-12)


def test_without_rewards_every_weight_is_one():
    scores = [REAL_SCORES[0]]
    loss, _, _ = pro_ranking_loss(pad_batch(scores), torch.tensor([4]))
    # Stage k is the softmax cross-entropy of candidate k against candidates k..n-1
    expected = sum(-torch.log_softmax(torch.tensor(scores[0][k:], dtype=torch.float64), 0)[0].item() for k in range(3))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_ties_contribute_a_constant_and_an_all_tied_stage_has_no_gradient():
    # Rewards: stage 2 (0-based 1) has both negatives tied with the positive
    rewards = pad_batch([[3.0, 1.0, 1.0, 1.0]])
    scores = pad_batch([[-1.0, -1.5, -0.5, -2.0]]).requires_grad_(True)
    loss, per_stage, _ = pro_ranking_loss(scores, torch.tensor([4]), rewards)
    assert per_stage[0, 1].item() == pytest.approx(math.log(3 + 1e-10), rel=1e-12)
    assert per_stage[0, 2].item() == pytest.approx(math.log(2 + 1e-10), rel=1e-12)
    per_stage[0, 1:].sum().backward()
    assert torch.count_nonzero(scores.grad) == 0
    expected = reference_stage_losses([-1.0, -1.5, -0.5, -2.0], [3.0, 1.0, 1.0, 1.0])
    assert loss.item() == pytest.approx(sum(expected), rel=1e-12)


def test_eps_changes_nothing_measurable():
    scores, counts, rewards = pad_batch(REAL_SCORES), torch.tensor([4, 4, 4]), pad_batch(REAL_REWARDS)
    with_eps, _, _ = pro_ranking_loss(scores, counts, rewards, eps=1e-10)
    without_eps, _, _ = pro_ranking_loss(scores, counts, rewards, eps=0.0)
    torch.testing.assert_close(with_eps, without_eps, rtol=1e-8, atol=0)


def test_float32_and_bfloat16_scores_are_computed_in_float32():
    scores = pad_batch(REAL_SCORES).to(torch.bfloat16)
    loss, _, _ = pro_ranking_loss(scores, torch.tensor([4, 4, 4]), pad_batch(REAL_REWARDS))
    assert loss.dtype == torch.float32
    expected = [sum(reference_stage_losses([float(x) for x in row], r)) for row, r in zip(scores, REAL_REWARDS)]
    assert loss.tolist() == pytest.approx(expected, rel=1e-5)


def test_sft_term_uses_each_examples_n():
    top_nll = torch.tensor([12.5, 30.0, 7.25])
    counts = torch.tensor([2, 4, 3])
    term = pro_sft_loss(top_nll, counts, sft_weight=0.05)
    assert term.tolist() == pytest.approx([0.05 * 1 * 12.5, 0.05 * 9 * 30.0, 0.05 * 4 * 7.25])


def test_ranking_accuracy_and_kendall_tau():
    scores = pad_batch([[-1.0, -2.0, -1.5], [-1.0, -0.5]])
    counts = torch.tensor([3, 2])
    correct, total = ranking_accuracy(scores, counts)
    # adjacent pairs: (0,1) correct, (1,2) wrong; (0,1) of the second wrong
    assert (correct.item(), total.item()) == (1, 3)
    tau, valid = kendall_tau(scores, counts)
    # example 1: pairs (0,1)+, (0,2)+, (1,2)- -> (2-1)/3; example 2: one discordant pair -> -1
    assert tau.tolist() == pytest.approx([1 / 3, -1.0])
    assert valid.tolist() == [True, True]
    # With rewards, a tied pair states no order and is left out
    rewards = pad_batch([[2.0, 1.0, 1.0], [1.0, 1.0]])
    correct, total = ranking_accuracy(scores, counts, rewards)
    assert (correct.item(), total.item()) == (1, 1)
    tau, valid = kendall_tau(scores, counts, rewards)
    assert tau[0].item() == pytest.approx(1.0)
    assert valid.tolist() == [True, False]


def test_a_single_candidate_is_rejected():
    with pytest.raises(ValueError, match="at least 2 candidates"):
        pro_ranking_loss(torch.zeros(2, 1), torch.tensor([1, 1]))
