"""Losses as pure functions of `[batch, n]` score tensors, testable without a model.

A batch of rankings is stored padded: `scores[b, i]` is the score of candidate `i` of example `b` (best first), and
`num_candidates[b]` says how many of the `n_max` columns are real. Padded columns never reach a loss or a gradient.
"""

from __future__ import annotations

import math

import torch


def candidate_mask(num_candidates: torch.Tensor, n_max: int) -> torch.Tensor:
    """`[batch, n_max]` boolean mask of the real candidates of each example."""
    positions = torch.arange(n_max, device=num_candidates.device)
    return positions.unsqueeze(0) < num_candidates.unsqueeze(1)


def pro_inverse_temperatures(
    rewards: torch.Tensor | None, num_candidates: torch.Tensor, n_max: int, dynamic_temperature: bool = True
) -> torch.Tensor:
    """Inverse temperatures `w[b, k, i]` of PRO's Eqs. 9-11, shape `[batch, n_max - 1, n_max]`.

    For stage `k` (candidate `k` is the positive) and a negative `i > k`: `w_ki = r_k - r_i`; for the positive itself
    `w_kk = max_{i > k} w_ki`. Entries with `i < k`, or outside the example's own `n`, are 0 and are masked by the
    caller. Without rewards, or with `dynamic_temperature=False` (the paper's "-T" ablation), every `w` is 1.
    """
    batch = num_candidates.shape[0]
    device = num_candidates.device
    if rewards is None or not dynamic_temperature:
        dtype = rewards.dtype if rewards is not None else torch.float32
        return torch.ones(batch, n_max - 1, n_max, dtype=dtype, device=device)
    mask = candidate_mask(num_candidates, n_max)
    stages = torch.arange(n_max - 1, device=device)
    positions = torch.arange(n_max, device=device)
    # w[b, k, i] = r[b, k] - r[b, i]
    weights = rewards[:, : n_max - 1].unsqueeze(2) - rewards.unsqueeze(1)
    is_negative = (positions.unsqueeze(0) > stages.unsqueeze(1)).unsqueeze(0) & mask.unsqueeze(1)
    positive_weight = weights.masked_fill(~is_negative, float("-inf")).amax(dim=2)
    # A stage without negatives (past the example's own n) is masked by the caller: keep its weights finite
    positive_weight = torch.where(is_negative.any(dim=2), positive_weight, torch.zeros_like(positive_weight))
    weights = weights.masked_fill(~is_negative, 0.0)
    diagonal = positions.unsqueeze(0) == stages.unsqueeze(1)
    return torch.where(diagonal.unsqueeze(0), positive_weight.unsqueeze(2), weights)


def pro_ranking_loss(
    scores: torch.Tensor,
    num_candidates: torch.Tensor,
    rewards: torch.Tensor | None = None,
    dynamic_temperature: bool = True,
    first_stage_only: bool = False,
    eps: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PRO's ranking loss (Eq. 8, with the dynamic temperature of Eqs. 9-11 when `rewards` are given).

    For each example and each stage `k = 1..n-1` (0-based `k = 0..n-2` here):

        L_k = log(eps + sum_{i >= k} exp(s_i * w_ki)) - s_k * w_kk

    exactly as the official code computes it (`eps = 1e-10` inside the log). A tied negative has `w = 0` and adds a
    constant `exp(0) = 1` to the denominator; a stage whose negatives all tie with the positive has the constant loss
    `log(n - k)` (0-based `k`) and no gradient.

    Args:
        scores: `[batch, n_max]` candidate scores, best candidate first (padded columns are ignored).
        num_candidates: `[batch]` number of real candidates of each example (each >= 2).
        rewards: optional `[batch, n_max]` rewards, descending within each example.
        dynamic_temperature: use the reward-derived inverse temperatures (ignored without rewards).
        first_stage_only: keep only stage 1 (the paper's "-L^{k>1}" ablation).
        eps: the constant added inside the log.

    Returns:
        `(per_example, per_stage, stage_mask)`: the per-example sum of its stage losses `[batch]`, the stage losses
        `[batch, n_max - 1]` (0 where masked) and the mask of real stages `[batch, n_max - 1]`. The batch loss of the
        official code, each stage averaged over the batch and the stages summed, is `per_example.mean()` when every
        example has the same `n`; with mixed `n` it generalises to the mean of per-example sums (each example keeps
        its own number of stages).
    """
    batch, n_max = scores.shape
    if n_max < 2:
        raise ValueError(f"PRO needs at least 2 candidates per example, got a batch with n_max={n_max}")
    compute_dtype = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(compute_dtype)
    if rewards is not None:
        rewards = rewards.to(device=scores.device, dtype=compute_dtype)
    weights = pro_inverse_temperatures(rewards, num_candidates, n_max, dynamic_temperature).to(compute_dtype)

    mask = candidate_mask(num_candidates, n_max)
    stages = torch.arange(n_max - 1, device=scores.device)
    positions = torch.arange(n_max, device=scores.device)
    in_stage = (positions.unsqueeze(0) >= stages.unsqueeze(1)).unsqueeze(0) & mask.unsqueeze(1)  # [B, K, n]

    logits = scores.unsqueeze(1) * weights
    logits = logits.masked_fill(~in_stage, float("-inf"))
    # log(eps + sum exp(x)) == logaddexp(logsumexp(x), log(eps)), computed stably
    log_denominator = torch.logsumexp(logits, dim=2)
    if eps > 0:
        log_denominator = torch.logaddexp(log_denominator, torch.tensor(math.log(eps), dtype=compute_dtype))
    positive_logit = scores[:, : n_max - 1] * torch.diagonal(weights, dim1=1, dim2=2)
    stage_mask = stages.unsqueeze(0) < (num_candidates.unsqueeze(1) - 1)
    if first_stage_only:
        stage_mask = stage_mask & (stages.unsqueeze(0) == 0)
    per_stage = torch.where(stage_mask, log_denominator - positive_logit, torch.zeros_like(positive_logit))
    return per_stage.sum(dim=1), per_stage, stage_mask


def pro_sft_loss(top_nll: torch.Tensor, num_candidates: torch.Tensor, sft_weight: float) -> torch.Tensor:
    """PRO's SFT term per example (Eq. 7): `sft_weight * (n - 1)^2 * NLL(top candidate)`.

    `top_nll` is the token-SUMMED negative log-likelihood of each example's top candidate (not length-normalised), and
    `n` is each example's own number of candidates. Returns `[batch]`; the batch term is its mean.
    """
    return sft_weight * (num_candidates.to(top_nll.dtype) - 1) ** 2 * top_nll


def ranking_accuracy(
    scores: torch.Tensor, num_candidates: torch.Tensor, rewards: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjacent pairs ordered as the ranking says: `(correct, total)` counts over the batch.

    A pair `(i, i+1)` counts when both are real candidates and, with rewards, when `r_i > r_{i+1}` strictly (a tie
    states no order); it is correct when `s_i > s_{i+1}`.
    """
    n_max = scores.shape[1]
    mask = candidate_mask(num_candidates, n_max)
    pair_mask = mask[:, 1:] & mask[:, :-1]
    if rewards is not None:
        pair_mask = pair_mask & (rewards[:, :-1] > rewards[:, 1:])
    correct = (scores[:, :-1] > scores[:, 1:]) & pair_mask
    return correct.sum(), pair_mask.sum()


def kendall_tau(
    scores: torch.Tensor, num_candidates: torch.Tensor, rewards: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kendall tau between the policy scores and the given ranking, per example: `(tau [batch], valid [batch])`.

    Over the pairs `i < j` that the ranking orders strictly (all pairs without rewards; pairs with `r_i > r_j` with
    rewards): `tau = (concordant - discordant) / pairs`, concordant when `s_i > s_j`, discordant when `s_i < s_j`
    (tau-a on the strictly ordered pairs). `valid` is False for an example with no ordered pair.
    """
    n_max = scores.shape[1]
    mask = candidate_mask(num_candidates, n_max)
    upper = torch.triu(torch.ones(n_max, n_max, dtype=torch.bool, device=scores.device), diagonal=1)
    pair_mask = upper.unsqueeze(0) & mask.unsqueeze(2) & mask.unsqueeze(1)
    if rewards is not None:
        pair_mask = pair_mask & (rewards.unsqueeze(2) > rewards.unsqueeze(1))
    difference = scores.unsqueeze(2) - scores.unsqueeze(1)
    sign = torch.sign(difference) * pair_mask
    pairs = pair_mask.sum(dim=(1, 2))
    tau = sign.sum(dim=(1, 2)) / pairs.clamp(min=1)
    return tau, pairs > 0


# ----------------------------------------------------------------------------------------------------------------------
# The listwise family (`PROConfig.loss_type`). Every loss takes `[batch, n_max]` tensors, candidates best first, and
# returns per-example values `[batch]` (the batch loss is their mean), plus the parts it is made of, for the metrics.
# ----------------------------------------------------------------------------------------------------------------------


def ranking_labels(rewards: torch.Tensor | None, num_candidates: torch.Tensor, n_max: int) -> torch.Tensor:
    """Labels `psi[b, i]` of the candidates: the rewards when given, else `n - 1 - i` (0-based `i`, best first).

    The rank labels `n - 1 - i` are the `n - i` of 1-based ranks: they order every pair strictly. Rewards may tie, and
    a tied pair states no preference for the pairwise losses. Padded columns are 0 (callers mask them).
    """
    mask = candidate_mask(num_candidates, n_max)
    if rewards is not None:
        labels = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    else:
        positions = torch.arange(n_max, device=num_candidates.device)
        labels = (num_candidates.unsqueeze(1) - 1 - positions.unsqueeze(0)).float()
    return labels.masked_fill(~mask, 0.0)


def ordered_pairs(labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """`[batch, n_max, n_max]` mask of the pairs `(i, j)` of real candidates with `psi_i > psi_j` (i preferred)."""
    mask = candidate_mask(num_candidates, labels.shape[1])
    return (labels.unsqueeze(2) > labels.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)


def listmle_loss(scores: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    r"""Plackett-Luce DPO: the negative log-likelihood of the ranking under the Plackett-Luce model (ListMLE).

    DPO paper (Rafailov et al. 2023, arXiv 2305.18290), Appendix A.3 (the Plackett-Luce objective), with `s_i = beta * log(pi(y_i|x) /
    pi_ref(y_i|x))` (summed log-probs); LiPO (Liu et al. 2024, arXiv 2402.01878) calls it DPO_PL / ListMLE.
    Per example:

        L = sum_{k=1}^{n-1} [ logsumexp_{i >= k} s_i - s_k ]

    The `k = n` term of the paper's product is `log 1 = 0`. At `n = 2` it is DPO's sigmoid loss
    `-log sigmoid(s_1 - s_2)`. No official code; the paper's equation is followed. Plackett-Luce has no ties: tied
    rewards keep the order in which the candidates were given (the stable sort of the dataset preparation).

    Args:
        scores: `[batch, n_max]` candidate scores `s`, best first.
        num_candidates: `[batch]` real candidates of each example (>= 2).

    Returns:
        `[batch]` per-example losses.
    """
    n_max = scores.shape[1]
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    mask = candidate_mask(num_candidates, n_max)
    positions = torch.arange(n_max, device=scores.device)
    # in_stage[b, k, i]: candidate i competes at stage k (i >= k)
    in_stage = (positions.unsqueeze(0) >= positions.unsqueeze(1)).unsqueeze(0) & mask.unsqueeze(1)
    log_denominator = torch.logsumexp(scores.unsqueeze(1).masked_fill(~in_stage, float("-inf")), dim=2)
    stage_mask = positions.unsqueeze(0) < (num_candidates.unsqueeze(1) - 1)
    per_stage = torch.where(stage_mask, log_denominator - scores, torch.zeros_like(scores))
    return per_stage.sum(dim=1)


def normalize_labels(labels: torch.Tensor, num_candidates: torch.Tensor, normalization: str) -> torch.Tensor:
    """LiPO's labels: `"minmax"` maps each example's labels to `[0, 1]` (best 1, worst 0), `"none"` keeps them.

    LiPO's labels lie in [0, 1] (in the paper, win rates of each response against the others of its list, from a
    pairwise reward-ranking model). `"minmax"`, `(psi - min) / (max - min)` per example, keeps the order and the
    relative gaps of any rewards (or of the rank labels) and gives them that range; an example whose labels all tie
    gets all 0 (it has no ordered pair).
    """
    if normalization == "none":
        return labels
    if normalization != "minmax":
        raise ValueError(f"Unknown label normalization {normalization!r}: expected 'minmax' or 'none'.")
    mask = candidate_mask(num_candidates, labels.shape[1])
    low = labels.masked_fill(~mask, float("inf")).amin(dim=1, keepdim=True)
    high = labels.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    spread = (high - low).clamp(min=torch.finfo(labels.dtype).tiny)
    return ((labels - low) / spread).masked_fill(~mask, 0.0)


def lambda_weights(scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """LiPO-lambda's `Delta_ij = |G_i - G_j| * |1/D_i - 1/D_j|`, `[batch, n_max, n_max]`, computed without gradient.

    `G_i = 2^psi_i - 1` is the gain, `D_i = log2(1 + tau_i)` the discount, `tau_i` the 1-based rank of candidate `i`
    when the example's candidates are sorted by descending score (ties by candidate index).
    """
    with torch.no_grad():
        n_max = scores.shape[1]
        mask = candidate_mask(num_candidates, n_max)
        dtype = torch.promote_types(scores.dtype, torch.float32)
        masked = scores.detach().to(dtype).masked_fill(~mask, float("-inf"))
        positions = torch.arange(n_max, device=scores.device)
        # tau_i = 1 + #{j: s_j > s_i} + #{j < i: s_j == s_i}; padded columns (-inf) rank last and are masked anyway
        ahead = (masked.unsqueeze(1) > masked.unsqueeze(2)) | (
            (masked.unsqueeze(1) == masked.unsqueeze(2)) & (positions.unsqueeze(0) < positions.unsqueeze(1))
        )
        tau = 1 + ahead.sum(dim=2)
        inverse_discount = 1.0 / torch.log2(1.0 + tau.to(dtype))
        gain = torch.pow(2.0, labels.to(dtype)) - 1.0
        delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * (
            inverse_discount.unsqueeze(2) - inverse_discount.unsqueeze(1)
        ).abs()
        return delta * (mask.unsqueeze(2) & mask.unsqueeze(1))


def lipo_lambda_loss(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""LiPO-lambda (Liu et al. 2024, arXiv 2402.01878): the LambdaLoss on the policy's scores.

    Per example, over the pairs the labels order strictly:

        L = sum_{psi_i > psi_j} Delta_ij * -log sigmoid(s_i - s_j),
        Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|,  G_i = 2^psi_i - 1,  D(tau) = log2(1 + tau)

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs) and `tau_i` the rank of `y_i` by `s`
    (the Lambda weights are constants of the step: computed without gradient, as in LambdaLoss). The paper sums over
    pairs (no normalisation); no official code is public, so the equation is followed. Ties (equal labels) form no
    pair. Normalise the labels first with `normalize_labels` (the paper's labels lie in [0, 1]).

    Returns:
        `(per_example [batch], pair_mask [batch, n, n], delta [batch, n, n])`.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    pairs = ordered_pairs(labels, num_candidates)
    delta = lambda_weights(scores, labels, num_candidates).to(scores.dtype)
    pair_loss = -torch.nn.functional.logsigmoid(scores.unsqueeze(2) - scores.unsqueeze(1))
    per_example = torch.where(pairs, delta * pair_loss, torch.zeros_like(pair_loss)).sum(dim=(1, 2))
    return per_example, pairs, delta


def best_candidate_nll(sum_logps: torch.Tensor, token_counts: torch.Tensor, per_token: bool) -> torch.Tensor:
    """NLL of each example's best candidate (column 0), `[batch]`: token-summed, or averaged over its tokens."""
    nll = -sum_logps[:, 0].to(torch.promote_types(sum_logps.dtype, torch.float32))
    return nll / token_counts[:, 0].clamp(min=1).to(nll.dtype) if per_token else nll


def rrhf_loss(
    sum_logps: torch.Tensor,
    token_counts: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    rank_weight: float = 1.0,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""RRHF (Yuan et al. 2023, arXiv 2304.05302), as the official code computes it (GanjinZero/RRHF
    `train.py`, `RRHFTrainer.get_score/rrhf_loss/sft_loss`).

    Per example, with the length-normalised score `p_i = logp_i / |y_i|^length_penalty` (summed log-prob over the
    candidate's tokens, EOS included; the code's `length_penalty` defaults to 1, the paper's mean log-prob):

        L = rank_weight * sum_{psi_i > psi_j} max(0, p_j - p_i)  +  NLL_mean(best)

    Official code vs paper: the code multiplies the ranking term by `rrhf_weight` (default 100 in `TrainingArguments`,
    1 in `train.sh`, the paper's value); the paper writes the SFT term as a token-summed NLL while the code takes
    `-logit_label[best].mean()`, the best response's summed log-prob divided by the padded row length (prompt and
    padding included). That divisor depends on the padding, so no layout can reproduce it; this function divides by
    the best response's own token count (the code's `.mean()` without its padding), which keeps every layout equal.
    The best is the first candidate (the code's `argmax` of the rewards, first on ties); ties form no ranking pair.

    Returns:
        `(per_example, ranking_term, sft_term)`, each `[batch]` (`ranking_term` unweighted).
    """
    compute_dtype = torch.promote_types(sum_logps.dtype, torch.float32)
    scores = sum_logps.to(compute_dtype) / token_counts.clamp(min=1).to(compute_dtype) ** length_penalty
    pairs = ordered_pairs(labels, num_candidates)
    # pair (i, j), i preferred: the hinge is positive when the worse j scores above i
    hinge = torch.relu(scores.unsqueeze(1) - scores.unsqueeze(2))
    ranking = torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2))
    sft = best_candidate_nll(sum_logps, token_counts, per_token=True)
    return rank_weight * ranking + sft, ranking, sft


def slic_loss(
    sum_logps: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    delta: float = 1.0,
    regularization_weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""SLiC-HF (Zhao et al. 2023, arXiv 2305.10425): rank calibration plus cross-entropy regularisation.

    Per example, over the pairs the labels order strictly (the paper's `(y+, y-)`; a ranking gives every ordered pair):

        L = sum_{psi_i > psi_j} max(0, delta - logp_i + logp_j)  +  regularization_weight * NLL_sum(best)

    with `logp` the summed log-prob of a candidate (SLiC-HF is reference-free) and the regulariser the token-summed
    NLL of the best candidate (the paper's `y_ref`, its SFT target; here the ranking's top). No official code is
    public; the equation is followed. Ties form no pair.

    Returns:
        `(per_example, calibration_term, regularization_term)`, each `[batch]` (`regularization_term` unweighted).
    """
    compute_dtype = torch.promote_types(sum_logps.dtype, torch.float32)
    logps = sum_logps.to(compute_dtype)
    pairs = ordered_pairs(labels, num_candidates)
    hinge = torch.relu(delta - logps.unsqueeze(2) + logps.unsqueeze(1))
    calibration = torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2))
    regularization = best_candidate_nll(sum_logps, torch.ones_like(sum_logps), per_token=False)
    return calibration + regularization_weight * regularization, calibration, regularization


PAIR_SELECTIONS = ("best_worst", "best_rest", "adjacent", "all")


def selected_pairs(labels: torch.Tensor, num_candidates: torch.Tensor, pair_selection: str) -> torch.Tensor:
    """`[batch, n_max, n_max]` mask of the pairs `(i, j)` (i preferred) that `pair_selection` draws from a ranking.

    `"best_worst"`: (first, last); `"best_rest"`: (first, j) for every other j; `"adjacent"`: (k, k + 1); `"all"`: every
    `i < j`. Positions are those of the ranking (best first); a pair whose labels tie is dropped (no preference).
    """
    n_max = labels.shape[1]
    device = labels.device
    positions = torch.arange(n_max, device=device)
    i, j = positions.view(1, -1, 1), positions.view(1, 1, -1)
    last = (num_candidates - 1).view(-1, 1, 1)
    if pair_selection == "best_worst":
        chosen = (i == 0) & (j == last)
    elif pair_selection == "best_rest":
        chosen = (i == 0) & (j > 0)
    elif pair_selection == "adjacent":
        chosen = j == i + 1
    elif pair_selection == "all":
        chosen = j > i
    else:
        raise ValueError(f"Unknown pair_selection {pair_selection!r}: expected one of {list(PAIR_SELECTIONS)}.")
    return chosen & ordered_pairs(labels, num_candidates)


def dpo_pairs_loss(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor, pair_selection: str = "best_worst"
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""DPO's sigmoid loss (Rafailov et al. 2023, Eq. 7; TRL's `loss_type="sigmoid"`) on pairs drawn from a ranking.

    Per example, the mean over its selected pairs (see `selected_pairs`) of `-log sigmoid(s_i - s_j)`, with
    `s = beta * log(pi / pi_ref)` on summed log-probs; an example without a pair (all labels tied) contributes 0.
    The pairs of an example share its one forward. Averaging per example weighs every prompt equally whatever its
    number of pairs (a pair dataset given to `DPOTrainer` weighs every pair equally instead); with `"best_worst"` both
    are the same. The pair strategies are those compared in "Finding the Sweet Spot: Preference Data Construction
    for Scaling Preference Optimization" (Xiao et al. 2025).

    Returns:
        `(per_example [batch], pair_mask [batch, n, n])`.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    pairs = selected_pairs(labels, num_candidates, pair_selection)
    pair_loss = -torch.nn.functional.logsigmoid(scores.unsqueeze(2) - scores.unsqueeze(1))
    total = torch.where(pairs, pair_loss, torch.zeros_like(pair_loss)).sum(dim=(1, 2))
    return total / pairs.sum(dim=(1, 2)).clamp(min=1), pairs


def top1_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """`[batch]` booleans: the highest-scoring candidate has the best label (any of the tied best)."""
    mask = candidate_mask(num_candidates, scores.shape[1])
    top = scores.masked_fill(~mask, float("-inf")).argmax(dim=1)
    best = labels.masked_fill(~mask, float("-inf")).amax(dim=1)
    return labels.gather(1, top.unsqueeze(1)).squeeze(1) >= best
