"""The listwise losses against independent computations: plain loops over Python floats, one example at a time."""

from __future__ import annotations

import math

import pytest
import torch

from trl_ranking.losses import (
    all_tied,
    approx_ndcg_loss,
    best_of_n_sft_loss,
    dpo_pairs_loss,
    lipo_lambda_loss,
    lipo_softmax_loss,
    listmle_loss,
    neural_ndcg_loss,
    normalize_labels,
    pairwise_hinge_loss,
    ranking_labels,
    rrhf_loss,
    selected_pairs,
    slic_loss,
    tied_permutation,
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
@pytest.mark.parametrize("regularization", ["per_pair", "per_list"])
def test_slic_matches_loops(with_rewards, regularization):
    rewards = padded(REWARDS) if with_rewards else None
    labels = ranking_labels(rewards, NUM, 5)
    total, calibration, nll = slic_loss(
        padded(SUMS), labels, NUM, delta=2.0, regularization_weight=0.3, regularization=regularization
    )
    for b, s in enumerate(SUMS):
        psi = labels_of(REWARDS[b] if with_rewards else None, len(s))
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if psi[i] > psi[j]]
        cal = sum(max(0.0, 2.0 - s[i] + s[j]) for i, j in pairs)
        assert calibration[b].item() == pytest.approx(cal, rel=1e-12)
        assert nll[b].item() == pytest.approx(-s[0])
        # The paper's loss is per pair: each pair (y+, y-) brings its own regulariser -lambda log P(y_ref)
        regularizers = len(pairs) if regularization == "per_pair" else 1
        assert total[b].item() == pytest.approx(cal + regularizers * 0.3 * -s[0], rel=1e-12)


def test_slic_regularizer_is_per_pair_by_default():
    """At n = 8 (28 pairs) the per-list regulariser was 28x weaker than the paper's sum over pairs."""
    sums = torch.linspace(-10.0, -30.0, 8, dtype=torch.float64).unsqueeze(0)
    labels = ranking_labels(None, torch.tensor([8]), 8)
    total, calibration, nll = slic_loss(sums, labels, torch.tensor([8]), delta=0.0, regularization_weight=0.5)
    assert calibration.item() == 0.0  # ordered with margins: only the regulariser is left
    assert total.item() == pytest.approx(28 * 0.5 * 10.0)


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


# ----------------------------------------------------------------------------------------------------------------------
# Issue 26: the fixes and the new members of the family, each against plain loops over Python floats
# ----------------------------------------------------------------------------------------------------------------------
def naive_topk_listmle(s, top_k=None, margin=0.0):
    stages = len(s) - 1 if top_k is None else min(top_k, len(s) - 1)
    total = 0.0
    for k in range(stages):
        positive = s[k] - margin
        total += math.log(math.exp(positive) + sum(math.exp(v) for v in s[k + 1 :])) - positive
    return total


def test_top1_accuracy_counts_a_tie_at_the_top_as_one_over_k():
    # At step 0 of a reference-based loss every score is 0: a 3-way tie is a 1/3 hit, not a hit
    labels = ranking_labels(None, torch.tensor([3, 2]), 3)
    zero = top1_accuracy(torch.zeros(2, 3), labels, torch.tensor([3, 2]))
    assert zero.tolist() == pytest.approx([1 / 3, 1 / 2])
    # Two candidates tied at the top, one of them best-labelled: 1/2; both best-labelled (tied labels): 1
    assert top1_accuracy(torch.tensor([[0.5, 0.5, 0.1]]), labels[:1], torch.tensor([3])).item() == 0.5
    tied_best = torch.tensor([[1.0, 1.0, 0.0]])
    assert top1_accuracy(torch.tensor([[0.5, 0.5, 0.1]]), tied_best, torch.tensor([3])).item() == 1.0


@pytest.mark.parametrize("top_k", [None, 1, 2, 3])
@pytest.mark.parametrize("margin", [0.0, 0.7])
def test_listmle_top_k_and_margin_match_loops(top_k, margin):
    got = listmle_loss(padded(SCORES), NUM, top_k=top_k, margin=margin)
    assert got.tolist() == pytest.approx([naive_topk_listmle(s, top_k, margin) for s in SCORES], rel=1e-12)


def test_listmle_top_1_is_one_positive_against_all_rejected():
    # S-DPO / "DPO with K rejected": -log softmax(s)_1
    for s in SCORES:
        expected = -(s[0] - math.log(sum(math.exp(v) for v in s)))
        got = listmle_loss(torch.tensor([s], dtype=torch.float64), torch.tensor([len(s)]), top_k=1)
        assert got.item() == pytest.approx(expected, rel=1e-12)


def test_simpo_margin_at_two_candidates_is_simpo_loss():
    s = torch.tensor([[1.3, -0.2], [-2.0, 0.7]], dtype=torch.float64)
    expected = [-log_sigmoid(1.3 + 0.2 - 0.5), -log_sigmoid(-2.0 - 0.7 - 0.5)]
    assert listmle_loss(s, torch.tensor([2, 2]), margin=0.5).tolist() == pytest.approx(expected, rel=1e-12)
    got, _ = dpo_pairs_loss(s, ranking_labels(None, torch.tensor([2, 2]), 2), torch.tensor([2, 2]), margin=0.5)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


def test_listmle_trains_the_given_order_of_tied_answers_and_the_shuffle_does_not():
    scores = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    listmle_loss(scores, torch.tensor([3])).backward()
    assert scores.grad[0].tolist() == pytest.approx([-2 / 3, -1 / 6, 5 / 6])
    # The shuffle draws every order of a tied run, keeps the runs in order, leaves padded columns last
    labels = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    num = torch.tensor([5])
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        perm = tied_permutation(labels, num, generator)[0].tolist()
        assert perm[0] == 0 and perm[4] == 4 and perm[5] == 5 and sorted(perm[1:4]) == [1, 2, 3]
        seen.add(tuple(perm))
    assert len(seen) == 6
    assert all_tied(torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]), torch.tensor([3, 3])).tolist() == [True, False]


def naive_ideal_dcg(psi):
    return sum((2**g - 1) / math.log2(2 + r) for r, g in enumerate(sorted(psi, reverse=True)))


def naive_lipo_variants(s, psi, idcg, reduction):
    n = len(s)
    order = sorted(range(n), key=lambda i: (-s[i], i))
    tau = {i: rank + 1 for rank, i in enumerate(order)}
    norm = naive_ideal_dcg(psi) if idcg else 1.0
    total, count = 0.0, 0
    for i in range(n):
        for j in range(n):
            if psi[i] > psi[j]:
                delta = abs((2 ** psi[i] - 1) - (2 ** psi[j] - 1)) / norm
                delta *= abs(1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j]))
                total += -delta * log_sigmoid(s[i] - s[j])
                count += 1
    return total / count if reduction == "mean" else total


@pytest.mark.parametrize("idcg", [False, True])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_lipo_lambda_normalisations_match_loops(idcg, reduction):
    labels = normalize_labels(ranking_labels(padded(REWARDS), NUM, 5), NUM, "minmax")
    got, _, _ = lipo_lambda_loss(padded(SCORES), labels, NUM, idcg=idcg, reduction=reduction)
    expected = [naive_lipo_variants(s, naive_minmax(r), idcg, reduction) for s, r in zip(SCORES, REWARDS, strict=True)]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_lipo_lambda_scale_at_two_candidates():
    s = torch.tensor([[0.4, -0.3]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ratio = 1 - 1 / math.log2(3)  # 0.369
    for idcg in (False, True):
        for reduction in ("sum", "mean"):
            got, _, _ = lipo_lambda_loss(s, labels, torch.tensor([2]), idcg=idcg, reduction=reduction)
            assert got.item() == pytest.approx(ratio * -log_sigmoid(0.7), rel=1e-12)


def naive_softmax_ce(s, psi):
    target = [math.exp(p) / sum(math.exp(q) for q in psi) for p in psi]
    log_z = math.log(sum(math.exp(v) for v in s))
    return -sum(t * (v - log_z) for t, v in zip(target, s, strict=True))


@pytest.mark.parametrize("with_rewards", [False, True])
def test_lipo_softmax_matches_loops(with_rewards):
    rewards = padded(REWARDS) if with_rewards else None
    labels = normalize_labels(ranking_labels(rewards, NUM, 5), NUM, "minmax")
    got = lipo_softmax_loss(padded(SCORES), labels, NUM)
    expected = [
        naive_softmax_ce(s, naive_minmax(labels_of(REWARDS[b] if with_rewards else None, len(s))))
        for b, s in enumerate(SCORES)
    ]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("with_rewards", [False, True])
def test_pairwise_hinge_matches_loops(with_rewards):
    rewards = padded(REWARDS) if with_rewards else None
    got, _ = pairwise_hinge_loss(padded(SCORES), ranking_labels(rewards, NUM, 5), NUM)
    for b, s in enumerate(SCORES):
        psi = labels_of(REWARDS[b] if with_rewards else None, len(s))
        expected = sum(max(0.0, 1 - (s[i] - s[j])) for i in range(len(s)) for j in range(len(s)) if psi[i] > psi[j])
        assert got[b].item() == pytest.approx(expected, rel=1e-12)


def naive_approx_ndcg(s, psi, alpha):
    n = len(s)
    dcg = 0.0
    for i in range(n):
        rank = 1 + sum(1 / (1 + math.exp(-alpha * (s[j] - s[i]))) for j in range(n) if j != i)
        dcg += (2 ** psi[i] - 1) / math.log2(1 + rank)
    ideal = naive_ideal_dcg(psi)
    return -dcg / ideal if ideal > 0 else 0.0


def naive_neural_ndcg(s, psi, temperature):
    n = len(s)
    p = []
    for r in range(n):  # NeuralSort row r (0-based): softmax_j(((n + 1 - 2(r + 1)) s_j - sum_k |s_j - s_k|) / T)
        logits = [
            ((n + 1 - 2 * (r + 1)) * s[j] - sum(abs(s[j] - s[k]) for k in range(n))) / temperature for j in range(n)
        ]
        top = max(logits)
        z = sum(math.exp(v - top) for v in logits)
        p.append([math.exp(v - top) / z for v in logits])
    for _ in range(50):  # Sinkhorn: columns, then rows
        cols = [sum(p[r][j] for r in range(n)) for j in range(n)]
        p = [[p[r][j] / cols[j] for j in range(n)] for r in range(n)]
        rows = [sum(p[r]) for r in range(n)]
        p = [[v / rows[r] for v in p[r]] for r in range(n)]
        if (
            max(abs(sum(row) - 1) for row in p) < 1e-6
            and max(abs(sum(p[r][j] for r in range(n)) - 1) for j in range(n)) < 1e-6
        ):
            break
    gains = [2**g - 1 for g in psi]
    dcg = sum(sum(p[r][j] * gains[j] for j in range(n)) / math.log2(2 + r) for r in range(n))
    ideal = naive_ideal_dcg(psi)
    return -dcg / ideal if ideal > 0 else 0.0


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_approx_ndcg_matches_loops(with_rewards, alpha):
    rewards = padded(REWARDS) if with_rewards else None
    labels = normalize_labels(ranking_labels(rewards, NUM, 5), NUM, "minmax")
    got = approx_ndcg_loss(padded(SCORES), labels, NUM, alpha=alpha)
    expected = [
        naive_approx_ndcg(s, naive_minmax(labels_of(REWARDS[b] if with_rewards else None, len(s))), alpha)
        for b, s in enumerate(SCORES)
    ]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_neural_ndcg_matches_loops(with_rewards, temperature):
    rewards = padded(REWARDS) if with_rewards else None
    labels = normalize_labels(ranking_labels(rewards, NUM, 5), NUM, "minmax")
    got = neural_ndcg_loss(padded(SCORES), labels, NUM, temperature=temperature)
    expected = [
        naive_neural_ndcg(s, naive_minmax(labels_of(REWARDS[b] if with_rewards else None, len(s))), temperature)
        for b, s in enumerate(SCORES)
    ]
    # The batched Sinkhorn stops when every example has converged (to 1e-6), the loop per example
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert all(-1.0 <= v <= 0.0 for v in got.tolist())


def test_sweet_spot_and_threshold_pairs_match_loops():
    rewards = [[5.0, 5.0, 5.0, 5.0, 4.0, 4.0, 3.0, 3.0, 2.0, 1.0, -4.0, -5.0], [2.0, 1.0, 0.0], [3.0, 3.0, 1.0, 0.0]]
    labels = padded(rewards)
    num = torch.tensor([len(r) for r in rewards])
    sweet = selected_pairs(labels, num, "sweet_spot")
    threshold = selected_pairs(labels, num, "threshold")
    fixed = selected_pairs(labels, num, "threshold", threshold=2.5)
    for b, r in enumerate(rewards):
        mean = sum(r) / len(r)
        sigma = math.sqrt(sum((v - mean) ** 2 for v in r) / len(r))
        rejected = min(range(len(r)), key=lambda i: (abs(r[i] - (mean - 2 * sigma)), i))
        assert sweet[b].nonzero().tolist() == [[0, rejected]]
        for cut, mask in ((mean, threshold), (2.5, fixed)):
            expected = [[i, j] for i in range(len(r)) for j in range(len(r)) if r[i] > cut > r[j]]
            assert mask[b].nonzero().tolist() == expected
    # mean - 2 sigma of the first list is -4.27: the rejected answer is the -4.0 one (index 10), not the minimum -5.0;
    # of [2, 1, 0] it is -0.63: the minimum (short lists mostly reject their minimum)
    assert sweet[0, 0, 10] and sweet[1, 0, 2]


def test_best_of_n_sft_token_pooling_is_trls_sft():
    sums, counts = padded(SUMS), padded(COUNTS)
    per_answer = best_of_n_sft_loss(sums, counts, "answer")
    assert per_answer.tolist() == pytest.approx([-s[0] / c[0] for s, c in zip(SUMS, COUNTS, strict=True)])
    pooled = best_of_n_sft_loss(sums, counts, "token").mean().item()
    assert pooled == pytest.approx(sum(-s[0] for s in SUMS) / sum(c[0] for c in COUNTS), rel=1e-12)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, lab, num: listmle_loss(s, num, top_k=2, margin=0.3),
        lambda s, lab, num: lipo_lambda_loss(s, lab, num, idcg=True, reduction="mean")[0],
        lambda s, lab, num: lipo_softmax_loss(s, lab, num),
        lambda s, lab, num: pairwise_hinge_loss(s, lab, num)[0],
        lambda s, lab, num: approx_ndcg_loss(s, normalize_labels(lab, num, "minmax"), num),
        lambda s, lab, num: neural_ndcg_loss(s, normalize_labels(lab, num, "minmax"), num),
        lambda s, lab, num: dpo_pairs_loss(s, lab, num, "sweet_spot")[0],
        lambda s, lab, num: dpo_pairs_loss(s, lab, num, "threshold", margin=0.5)[0],
    ],
)
def test_new_losses_ignore_padded_columns(loss):
    values = []
    for fill in (0.0, 123.0):
        scores = padded(SCORES, fill=fill).requires_grad_(True)
        labels = ranking_labels(padded(REWARDS, fill=fill), NUM, 5)
        out = loss(scores, labels, NUM)
        out.sum().backward()
        assert torch.isfinite(scores.grad).all()
        values.append((out.detach(), scores.grad.clone()))
    torch.testing.assert_close(values[0][0], values[1][0])
    torch.testing.assert_close(values[0][1], values[1][1])
