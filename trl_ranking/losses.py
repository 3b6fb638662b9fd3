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
