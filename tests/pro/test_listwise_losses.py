"""The listwise losses against independent computations: plain loops over Python floats, one example at a time."""

from __future__ import annotations

import math

import pytest
import torch

from trl_ranking.losses import (
    dpo_pairs_loss,
    lipo_lambda_loss,
    listmle_loss,
    normalize_labels,
    ranking_labels,
    rrhf_loss,
    slic_loss,
    top1_accuracy,
)


# Three examples of n = 3, 5 and 2 (mixed n), candidates best first; the second has tied rewards
SCORES = [[0.3, -1.2, 0.9], [2.0, 0.5, 0.5, -0.7, 1.1], [-0.4, 0.6]]
REWARDS = [[2.0, 1.0, -1.0], [3.0, 1.5, 1.5, 1.5, 0.0], [0.5, -0.5]]
SUMS = [[-12.0, -20.5, -9.25], [-30.0, -31.0, -18.0, -44.0, -25.5], [-7.0, -6.5]]
COUNTS = [[6, 10, 4], [12, 14, 9, 20, 11], [3, 3]]


def padded(rows, fill=0.0):
    n_max = max(len(r) for r in rows)
    return torch.tensor([list(r) + [fill] * (n_max - len(r)) for r in rows], dtype=torch.float64)


NUM = torch.tensor([len(r) for r in SCORES])


def labels_of(rewards, n):
    return list(rewards) if rewards is not None else [float(n - 1 - i) for i in range(n)]


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def naive_listmle(s):
    total = 0.0
    for k in range(len(s) - 1):
        total += math.log(sum(math.exp(v) for v in s[k:])) - s[k]
    return total


def naive_lipo(s, psi):
    n = len(s)
    order = sorted(range(n), key=lambda i: (-s[i], i))
    tau = {i: rank + 1 for rank, i in enumerate(order)}
    total = 0.0
    for i in range(n):
        for j in range(n):
            if psi[i] > psi[j]:
                delta = abs((2 ** psi[i] - 1) - (2 ** psi[j] - 1)) * abs(
                    1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j])
                )
                total += -delta * log_sigmoid(s[i] - s[j])
    return total


def naive_minmax(psi):
    low, high = min(psi), max(psi)
    return [(p - low) / (high - low) if high > low else 0.0 for p in psi]


@pytest.mark.parametrize("with_rewards", [False, True])
def test_listmle_matches_loops(with_rewards):
    got = listmle_loss(padded(SCORES), NUM)
    assert got.tolist() == pytest.approx([naive_listmle(s) for s in SCORES], rel=1e-12)


def test_listmle_with_two_candidates_is_dpo_sigmoid_loss():
    s = torch.tensor([[1.3, -0.2], [-2.0, 0.7]], dtype=torch.float64)
    expected = [-log_sigmoid(1.3 + 0.2), -log_sigmoid(-2.0 - 0.7)]
    assert listmle_loss(s, torch.tensor([2, 2])).tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("normalization", ["minmax", "none"])
def test_lipo_lambda_matches_loops(with_rewards, normalization):
    rewards = padded(REWARDS) if with_rewards else None
    labels = normalize_labels(ranking_labels(rewards, NUM, 5), NUM, normalization)
    got, pairs, _ = lipo_lambda_loss(padded(SCORES), labels, NUM)
    expected = []
    for b, s in enumerate(SCORES):
        psi = labels_of(REWARDS[b] if with_rewards else None, len(s))
        if normalization == "minmax":
            psi = naive_minmax(psi)
        expected.append(naive_lipo(s, psi))
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # Ties form no pair: the second example has 10 pairs without rewards, 10 - 3 tied ones with rewards
    assert pairs[1].sum().item() == (7 if with_rewards else 10)


def test_lipo_lambda_ranks_ties_by_index_and_weights_carry_no_gradient():
    scores = torch.tensor([[0.5, 0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    loss, _, delta = lipo_lambda_loss(scores, labels, torch.tensor([3]))
    # tau = (1, 2, 3): candidate 0 wins the tie by index
    assert delta[0, 0, 1].item() == pytest.approx((2**1 - 2**0.5) * (1 / math.log2(2) - 1 / math.log2(3)))
    assert loss.item() == pytest.approx(naive_lipo([0.5, 0.5, 0.1], [1.0, 0.5, 0.0]), rel=1e-12)
    loss.backward()
    # d/ds of sum Delta * -log sigmoid(s_i - s_j) with Delta held fixed
    d = delta[0].detach()
    s = scores.detach()[0]
    expected = torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            if labels[0, i] > labels[0, j]:
                g = d[i, j] * -torch.sigmoid(-(s[i] - s[j]))
                expected[i] += g
                expected[j] -= g
    torch.testing.assert_close(scores.grad[0], expected)


def naive_rrhf(sums, counts, psi, weight, penalty):
    p = [s / c**penalty for s, c in zip(sums, counts, strict=True)]
    ranking = sum(max(0.0, p[j] - p[i]) for i in range(len(p)) for j in range(len(p)) if psi[i] > psi[j])
    return weight * ranking + (-sums[0] / counts[0]), ranking


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("weight,penalty", [(1.0, 1.0), (100.0, 0.5)])
def test_rrhf_matches_loops(with_rewards, weight, penalty):
    rewards = padded(REWARDS) if with_rewards else None
    labels = ranking_labels(rewards, NUM, 5)
    total, ranking, sft = rrhf_loss(padded(SUMS), padded(COUNTS), labels, NUM, weight, penalty)
    expected = [
        naive_rrhf(s, c, labels_of(REWARDS[b] if with_rewards else None, len(s)), weight, penalty)
        for b, (s, c) in enumerate(zip(SUMS, COUNTS, strict=True))
    ]
    assert total.tolist() == pytest.approx([e[0] for e in expected], rel=1e-12)
    assert ranking.tolist() == pytest.approx([e[1] for e in expected], rel=1e-12, abs=1e-12)
    assert sft.tolist() == pytest.approx([-s[0] / c[0] for s, c in zip(SUMS, COUNTS, strict=True)])
    assert max(e[1] for e in expected) > 0  # the data has misordered pairs: the hinge is exercised


@pytest.mark.parametrize("with_rewards", [False, True])
def test_slic_matches_loops(with_rewards):
    rewards = padded(REWARDS) if with_rewards else None
    labels = ranking_labels(rewards, NUM, 5)
    total, calibration, regularization = slic_loss(padded(SUMS), labels, NUM, delta=2.0, regularization_weight=0.3)
    for b, s in enumerate(SUMS):
        psi = labels_of(REWARDS[b] if with_rewards else None, len(s))
        cal = sum(max(0.0, 2.0 - s[i] + s[j]) for i in range(len(s)) for j in range(len(s)) if psi[i] > psi[j])
        assert calibration[b].item() == pytest.approx(cal, rel=1e-12)
        assert regularization[b].item() == pytest.approx(-s[0])
        assert total[b].item() == pytest.approx(cal + 0.3 * -s[0], rel=1e-12)


def naive_pairs(n, psi, selection):
    if selection == "best_worst":
        candidates = [(0, n - 1)]
    elif selection == "best_rest":
        candidates = [(0, j) for j in range(1, n)]
    elif selection == "adjacent":
        candidates = [(k, k + 1) for k in range(n - 1)]
    else:
        candidates = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return [(i, j) for i, j in candidates if psi[i] > psi[j]]


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("selection", ["best_worst", "best_rest", "adjacent", "all"])
def test_dpo_pairs_matches_loops(with_rewards, selection):
    rewards = padded(REWARDS) if with_rewards else None
    labels = ranking_labels(rewards, NUM, 5)
    got, pairs = dpo_pairs_loss(padded(SCORES), labels, NUM, selection)
    for b, s in enumerate(SCORES):
        psi = labels_of(REWARDS[b] if with_rewards else None, len(s))
        chosen = naive_pairs(len(s), psi, selection)
        assert pairs[b].sum().item() == len(chosen)
        expected = sum(-log_sigmoid(s[i] - s[j]) for i, j in chosen) / len(chosen)
        assert got[b].item() == pytest.approx(expected, rel=1e-12)


def test_dpo_pairs_all_tied_example_contributes_zero():
    labels = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    got, pairs = dpo_pairs_loss(torch.tensor([[0.2, 0.1, 0.3], [0.2, 0.1, 0.3]]), labels, torch.tensor([3, 3]))
    assert pairs[0].sum().item() == 0 and got[0].item() == 0.0
    assert got[1].item() == pytest.approx(-log_sigmoid(0.2 - 0.3))


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, lab, num: listmle_loss(s, num),
        lambda s, lab, num: lipo_lambda_loss(s, lab, num)[0],
        lambda s, lab, num: dpo_pairs_loss(s, lab, num, "all")[0],
        lambda s, lab, num: slic_loss(s, lab, num)[0],
        lambda s, lab, num: rrhf_loss(s, torch.ones_like(s) * 3, lab, num)[0],
    ],
)
def test_padded_columns_change_nothing(loss):
    # Whatever sits in the padded columns, the losses and gradients of the real candidates are the same
    values = []
    for fill in (0.0, 123.0):
        scores = padded(SCORES, fill=fill).requires_grad_(True)
        labels = ranking_labels(padded(REWARDS, fill=fill), NUM, 5)
        out = loss(scores, labels, NUM)
        out.sum().backward()
        values.append((out.detach(), scores.grad.clone()))
    torch.testing.assert_close(values[0][0], values[1][0])
    torch.testing.assert_close(values[0][1], values[1][1])
    mask = torch.arange(5).unsqueeze(0) >= NUM.unsqueeze(1)
    assert (values[0][1][mask] == 0).all()


def test_top1_accuracy_and_rank_labels():
    labels = ranking_labels(None, NUM, 5)
    assert labels[0, :3].tolist() == [2.0, 1.0, 0.0] and labels[2, :2].tolist() == [1.0, 0.0]
    # The highest scores: candidate 2 (of 3), 0 (of 5), 1 (of 2)
    assert top1_accuracy(padded(SCORES), labels, NUM).tolist() == [False, True, False]
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    assert top1_accuracy(torch.tensor([[0.0, 0.5, 0.1]]), tied, torch.tensor([3])).tolist() == [True]
