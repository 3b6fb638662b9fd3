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


def listmle_loss(
    scores: torch.Tensor, num_candidates: torch.Tensor, top_k: int | None = None, margin: float = 0.0
) -> torch.Tensor:
    r"""Plackett-Luce DPO: the negative log-likelihood of the ranking under the Plackett-Luce model (ListMLE).

    DPO paper (Rafailov et al. 2023, arXiv 2305.18290), Appendix A.3 (the Plackett-Luce objective), with
    `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs); LiPO (Liu et al. 2024, arXiv 2402.01878) calls it
    DPO_PL / ListMLE. Per example:

        L = sum_{k=1}^{min(K, n-1)} [ log(exp(s_k - gamma) + sum_{i > k} exp(s_i)) - (s_k - gamma) ]

    with `K = top_k` (`None`: the whole list) and `gamma = margin` (0: the paper's objective). The `k = n` term of the
    paper's product is `log 1 = 0`. At `n = 2` it is DPO's sigmoid loss `-log sigmoid(s_1 - s_2 - gamma)`.

    `top_k` truncates the Plackett-Luce product to the first `K` positions (the top-K ranking model of the DPO paper's
    Appendix A.3): only the order of the top `K` is trained, the rest of the list serves as competitors. `top_k=1`
    is one positive against all the others at once, `-log softmax(s)_1`: "DPO with K rejected" (S-DPO, Chen et al.
    2024, arXiv 2406.09215). `margin` is the target reward margin `gamma` of SimPO (Meng et al. 2024, arXiv
    2405.14734), used by the reference-free `"simpo_listmle"`. No official code; the paper's equation is followed.
    Plackett-Luce has no ties: tied candidates compete in the order given (see `tied_permutation`).

    Args:
        scores: `[batch, n_max]` candidate scores `s`, best first.
        num_candidates: `[batch]` real candidates of each example (>= 2).
        top_k: number of leading positions whose order is trained (`None`: all `n - 1`).
        margin: the margin `gamma` the positive of each stage must win by.

    Returns:
        `[batch]` per-example losses.
    """
    n_max = scores.shape[1]
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    mask = candidate_mask(num_candidates, n_max)
    positions = torch.arange(n_max, device=scores.device)
    # in_stage[b, k, i]: candidate i competes at stage k (i >= k)
    in_stage = (positions.unsqueeze(0) >= positions.unsqueeze(1)).unsqueeze(0) & mask.unsqueeze(1)
    positive = scores - margin
    diagonal = torch.eye(n_max, dtype=torch.bool, device=scores.device)
    logits = torch.where(diagonal, positive.unsqueeze(1), scores.unsqueeze(1))  # logits[b, k, i]
    log_denominator = torch.logsumexp(logits.masked_fill(~in_stage, float("-inf")), dim=2)
    stage_mask = positions.unsqueeze(0) < (num_candidates.unsqueeze(1) - 1)
    if top_k is not None:
        stage_mask = stage_mask & (positions.unsqueeze(0) < top_k)
    per_stage = torch.where(stage_mask, log_denominator - positive, torch.zeros_like(scores))
    return per_stage.sum(dim=1)


LISTMLE_TIES = ("shuffle", "drop", "keep")


def all_tied(labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """`[batch]` booleans: every real candidate of the example has the same label (the ranking states no order)."""
    return ordered_pairs(labels, num_candidates).sum(dim=(1, 2)) == 0


def tied_permutation(
    labels: torch.Tensor, num_candidates: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`[batch, n_max]` column order that shuffles each run of tied labels at random and keeps everything else.

    Candidates are best first, so a run of equal labels is contiguous; the permutation sorts by `(-label, u)` with
    `u` uniform noise, which orders the runs as before and draws a uniform order within each run (TF-Ranking's
    `ListMLELoss` shuffles ties the same way). Padded columns stay last. `generator` (a CPU generator) makes the draw
    reproducible.
    """
    n_max = labels.shape[1]
    mask = candidate_mask(num_candidates, n_max)
    noise = torch.rand(labels.shape, generator=generator, dtype=torch.float64).to(labels.device)
    key = labels.to(torch.float64).masked_fill(~mask, float("-inf"))
    # lexicographic (label descending, noise ascending): sort by noise, then stably by label
    by_noise = noise.argsort(dim=1)
    by_label = key.gather(1, by_noise).argsort(dim=1, descending=True, stable=True)
    return by_noise.gather(1, by_label)


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


def ideal_dcg(labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """`[batch]` ideal DCG `sum_r (2^psi_(r) - 1) / log2(1 + r)` of each example's labels sorted descending."""
    n_max = labels.shape[1]
    mask = candidate_mask(num_candidates, n_max)
    gains = (torch.pow(2.0, labels) - 1.0).masked_fill(~mask, 0.0)
    ideal = gains.sort(dim=1, descending=True).values
    discounts = torch.log2(2.0 + torch.arange(n_max, device=labels.device, dtype=ideal.dtype))
    return (ideal / discounts).sum(dim=1)


def lambda_weights(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor, idcg: bool = False
) -> torch.Tensor:
    """LiPO-lambda's `Delta_ij = |G_i - G_j| * |1/D_i - 1/D_j|`, `[batch, n_max, n_max]`, computed without gradient.

    `G_i = 2^psi_i - 1` is the gain, `D_i = log2(1 + tau_i)` the discount, `tau_i` the 1-based rank of candidate `i`
    when the example's candidates are sorted by descending score (ties by candidate index). With `idcg=True` the
    gains are divided by the example's ideal DCG (`ideal_dcg`): the weights of LambdaLoss's NDCG metric
    (Wang et al. 2018) as TF-Ranking and allRank compute them, rather than of DCG.
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
        if idcg:
            gain = gain / ideal_dcg(labels.to(dtype), num_candidates).clamp(min=torch.finfo(dtype).tiny).unsqueeze(1)
        delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * (
            inverse_discount.unsqueeze(2) - inverse_discount.unsqueeze(1)
        ).abs()
        return delta * (mask.unsqueeze(2) & mask.unsqueeze(1))


LIPO_LAMBDA_REDUCTIONS = ("sum", "mean")


def lipo_lambda_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    idcg: bool = False,
    reduction: str = "sum",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""LiPO-lambda (Liu et al. 2024, arXiv 2402.01878): the LambdaLoss on the policy's scores.

    Per example, over the pairs the labels order strictly:

        L = sum_{psi_i > psi_j} Delta_ij * -log sigmoid(s_i - s_j),
        Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|,  G_i = 2^psi_i - 1,  D(tau) = log2(1 + tau)

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs) and `tau_i` the rank of `y_i` by `s`
    (the Lambda weights are constants of the step: computed without gradient, as in LambdaLoss). No official code is
    public, so the equation is followed. Ties (equal labels) form no pair. Normalise the labels first with
    `normalize_labels` (the paper's labels lie in [0, 1]).

    Scale: the paper's form (the defaults, `idcg=False`, `reduction="sum"`) sums over pairs without normalisation. At
    `n = 2` with labels `[1, 0]` the one weight is `1 - 1/log2(3) = 0.369`: the loss is 0.369x DPO's sigmoid loss.
    `idcg=True` divides the gains by the ideal DCG (NDCG weights, as TF-Ranking and allRank do) and
    `reduction="mean"` averages over the example's ordered pairs instead of summing (TF-Ranking's
    `SUM_BY_NONZERO_WEIGHTS`); at `n = 2` with labels `[1, 0]` both leave the 0.369 factor unchanged (IDCG = 1, one
    pair), at larger `n` they keep the loss of order 1 whatever `n` and the label scale.

    Args:
        scores: `[batch, n_max]` scores `s`, best first.
        labels: `[batch, n_max]` labels `psi`.
        num_candidates: `[batch]` real candidates of each example.
        idcg: divide the gains by each example's ideal DCG.
        reduction: `"sum"` (the paper) or `"mean"` over the example's ordered pairs.

    Returns:
        `(per_example [batch], pair_mask [batch, n, n], delta [batch, n, n])`.
    """
    if reduction not in LIPO_LAMBDA_REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}: expected one of {list(LIPO_LAMBDA_REDUCTIONS)}.")
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    pairs = ordered_pairs(labels, num_candidates)
    delta = lambda_weights(scores, labels, num_candidates, idcg=idcg).to(scores.dtype)
    pair_loss = -torch.nn.functional.logsigmoid(scores.unsqueeze(2) - scores.unsqueeze(1))
    per_example = torch.where(pairs, delta * pair_loss, torch.zeros_like(pair_loss)).sum(dim=(1, 2))
    if reduction == "mean":
        per_example = per_example / pairs.sum(dim=(1, 2)).clamp(min=1)
    return per_example, pairs, delta


def lipo_softmax_loss(scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    r"""LiPO's listwise softmax cross-entropy (Liu et al. 2024, arXiv 2402.01878, the "Softmax" objective).

    Per example, the cross-entropy between the softmax-normalised labels and the softmax of the scores:

        L = - sum_i softmax(psi)_i * log softmax(s)_i

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs) and the labels normalised first
    (`normalize_labels`, as for LiPO-lambda). At `n = 2` with labels `[1, 0]` it is DPO's sigmoid loss with soft
    labels `(0.731, 0.269)`. All-tied labels give the uniform target: the loss then pulls the scores together (no
    gradient when they are equal, as at step 0).

    Returns:
        `[batch]` per-example losses.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    mask = candidate_mask(num_candidates, scores.shape[1])
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    target = torch.softmax(labels.to(scores.dtype).masked_fill(~mask, float("-inf")), dim=1)
    return -torch.where(mask, target * log_p, torch.zeros_like(log_p)).sum(dim=1)


def pairwise_hinge_loss(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor, margin: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The reference-normalised pairwise hinge: LiPO's SLiC baseline (Liu et al. 2024, arXiv 2402.01878).

    Per example, summed over the pairs the labels order strictly:

        L = sum_{psi_i > psi_j} max(0, margin - (s_i - s_j))

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs). At `n = 2` (one pair) it is TRL's
    `DPOTrainer(loss_type="hinge")`, `relu(1 - beta * (chosen log-ratio - rejected log-ratio))` (tested against TRL).
    Ties form no pair.

    Returns:
        `(per_example [batch], pair_mask [batch, n, n])`.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    pairs = ordered_pairs(labels, num_candidates)
    hinge = torch.relu(margin - (scores.unsqueeze(2) - scores.unsqueeze(1)))
    return torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2)), pairs


def _gains(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (torch.pow(2.0, labels) - 1.0).masked_fill(~mask, 0.0)


def approx_ndcg_loss(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor, alpha: float = 1.0
) -> torch.Tensor:
    r"""ApproxNDCG (Qin et al. 2010) on the policy's scores, as OPO uses it (Zhao et al. 2024, arXiv 2410.04346).

    Per example, minus a smooth NDCG in which each candidate's rank is replaced by a sigmoid count:

        pi_i = 1 + sum_{j != i} sigmoid(alpha * (s_j - s_i)),
        L = - sum_i [(2^psi_i - 1) / IDCG] / log2(1 + pi_i)

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs), as OPO's code computes it (after allRank's
    `approxNDCGLoss`; `alpha` its temperature, 1 by default). An example with IDCG 0 (every gain 0) contributes 0.
    Its minimum is -1 (a perfect ranking with large margins).

    Returns:
        `[batch]` per-example losses.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    mask = candidate_mask(num_candidates, scores.shape[1])
    labels = labels.to(scores.dtype)
    idcg = ideal_dcg(labels, num_candidates)
    pair = mask.unsqueeze(1) & mask.unsqueeze(2) & ~torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    beaten = torch.sigmoid(alpha * (scores.unsqueeze(1) - scores.unsqueeze(2)))  # [b, i, j]: s_j above s_i
    approx_rank = 1.0 + torch.where(pair, beaten, torch.zeros_like(beaten)).sum(dim=2)
    dcg = (_gains(labels, mask) / torch.log2(1.0 + approx_rank)).sum(dim=1)
    return torch.where(idcg > 0, -dcg / idcg.clamp(min=torch.finfo(scores.dtype).tiny), torch.zeros_like(dcg))


def neural_sort(scores: torch.Tensor, num_candidates: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """NeuralSort's relaxed permutation matrix (Grover et al. 2019), `[batch, n_max, n_max]`, Sinkhorn-scaled.

    Row `r` (0-based rank) is `softmax_j(((n + 1 - 2(r + 1)) s_j - sum_k |s_j - s_k|) / temperature)` over the real
    candidates `j` of the example (its own `n`); the matrix is then made doubly stochastic by Sinkhorn scaling (50
    iterations or a tolerance of 1e-6), as NeuralNDCG does (allRank's `neuralNDCG`). Padded rows and columns are 0.
    """
    n_max = scores.shape[1]
    mask = candidate_mask(num_candidates, n_max)
    both = mask.unsqueeze(1) & mask.unsqueeze(2)
    spread = torch.where(
        both, (scores.unsqueeze(2) - scores.unsqueeze(1)).abs(), torch.zeros_like(both, dtype=scores.dtype)
    )
    b = spread.sum(dim=2)  # [batch, j]: sum_k |s_j - s_k|
    ranks = torch.arange(1, n_max + 1, device=scores.device, dtype=scores.dtype)
    scaling = num_candidates.to(scores.dtype).unsqueeze(1) + 1 - 2 * ranks.unsqueeze(0)  # [batch, r]
    logits = (scaling.unsqueeze(2) * scores.unsqueeze(1) - b.unsqueeze(1)) / temperature  # [batch, r, j]
    # a large finite fill, not -inf: the rows of padded ranks would be all -inf, whose softmax (NaN) poisons gradients
    p_hat = torch.softmax(logits.masked_fill(~both, -1e30), dim=2)
    p_hat = torch.where(both, p_hat, torch.zeros_like(p_hat))
    for _ in range(50):
        p_hat = p_hat / p_hat.sum(dim=1, keepdim=True).clamp(min=1e-10)
        p_hat = p_hat / p_hat.sum(dim=2, keepdim=True).clamp(min=1e-10)
        rows, cols = p_hat.sum(dim=2), p_hat.sum(dim=1)
        if ((rows - 1).abs().masked_fill(~mask, 0).max() < 1e-6) and (
            (cols - 1).abs().masked_fill(~mask, 0).max() < 1e-6
        ):
            break
    return p_hat


def neural_ndcg_loss(
    scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    r"""NeuralNDCG (Pobrotyn & Bialobrzeski 2021, arXiv 2102.07831) on the policy's scores: OPO's objective
    (Zhao et al. 2024, "Ordinal Preference Optimization", arXiv 2410.04346).

    Per example, minus NDCG computed with NeuralSort's relaxed permutation `P` (`neural_sort`) in place of the sort:

        L = - sum_r [sum_j P_rj (2^psi_j - 1)] / log2(2 + r) / IDCG        (r = 0..n-1)

    with `s_i = beta * log(pi(y_i|x) / pi_ref(y_i|x))` (summed log-probs), as OPO's code computes it (after allRank's
    deterministic `neuralNDCG`, `temperature` 1 by default). An example with IDCG 0 contributes 0. Its minimum is -1.

    Returns:
        `[batch]` per-example losses.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    mask = candidate_mask(num_candidates, scores.shape[1])
    labels = labels.to(scores.dtype)
    p_hat = neural_sort(scores, num_candidates, temperature)
    sorted_gains = torch.bmm(p_hat, _gains(labels, mask).unsqueeze(2)).squeeze(2)  # [batch, r]
    discounts = torch.log2(2.0 + torch.arange(scores.shape[1], device=scores.device, dtype=scores.dtype))
    dcg = (sorted_gains / discounts).sum(dim=1)
    idcg = ideal_dcg(labels, num_candidates)
    return torch.where(idcg > 0, -dcg / idcg.clamp(min=torch.finfo(scores.dtype).tiny), torch.zeros_like(dcg))


def best_candidate_nll(sum_logps: torch.Tensor, token_counts: torch.Tensor, per_token: bool) -> torch.Tensor:
    """NLL of each example's best candidate (column 0), `[batch]`: token-summed, or averaged over its tokens."""
    nll = -sum_logps[:, 0].to(torch.promote_types(sum_logps.dtype, torch.float32))
    return nll / token_counts[:, 0].clamp(min=1).to(nll.dtype) if per_token else nll


SFT_POOLINGS = ("answer", "token")


def best_of_n_sft_loss(sum_logps: torch.Tensor, token_counts: torch.Tensor, pooling: str = "answer") -> torch.Tensor:
    r"""Best-of-n SFT (RAFT, Dong et al. 2023, arXiv 2304.06767): the NLL of each example's best candidate.

    `pooling="answer"` (default): per example the best answer's mean token NLL, `NLL_sum(y_1) / |y_1|`, so the batch
    loss (the mean over examples) weighs every answer equally. `pooling="token"`: the batch's tokens are pooled, the
    batch loss being `sum_b NLL_sum(y_1^b) / sum_b |y_1^b|` as TRL's `DPOTrainer(loss_type="sft")` and `SFTTrainer`
    compute it (per micro-batch); each example's value is then `NLL_sum(y_1) * batch / sum_b |y_1^b|`, whose mean is
    that ratio. Both are mean token NLLs (a scale of a few nats); they differ when the answers' lengths differ, the
    token pooling weighing long answers more.

    Returns:
        `[batch]` per-example losses.
    """
    if pooling not in SFT_POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}: expected one of {list(SFT_POOLINGS)}.")
    if pooling == "answer":
        return best_candidate_nll(sum_logps, token_counts, per_token=True)
    nll = best_candidate_nll(sum_logps, token_counts, per_token=False)
    tokens = token_counts[:, 0].to(nll.dtype).sum().clamp(min=1)
    return nll * nll.shape[0] / tokens


def rrhf_loss(
    sum_logps: torch.Tensor,
    token_counts: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    rank_weight: float = 1.0,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""RRHF (Yuan et al. 2023, arXiv 2304.05302), following the paper and what its authors said the code intends.

    Per example, with the length-normalised score `p_i = logp_i / |y_i|^length_penalty` (summed log-prob over the
    candidate's tokens, EOS included; `length_penalty=1`, the default, is the paper's mean log-prob):

        L = rank_weight * sum_{psi_i > psi_j} max(0, p_j - p_i)  +  NLL_mean(best)

    The released code (GanjinZero/RRHF `train.py`) does not compute this: it overwrites its labels in place, so that
    every candidate's summed log-prob is divided by the padded row length (the same divisor for every candidate of
    the batch), i.e. it ranks by summed log-prob (RRHF issue #37). The maintainers answered that the paper's
    length-normalised score is the intended one (issue #38); this function follows the paper. The code's other
    choices are kept as options: `rank_weight` (the code's `rrhf_weight`: 100 in its `TrainingArguments`, 1 in
    `train.sh`, the paper's value) and `length_penalty`. The SFT term is the best answer's mean token NLL (the paper
    writes a token sum; the code's `.mean()` divides by the padded row length, which no layout-independent loss can
    reproduce). The best is the first candidate; ties form no ranking pair.

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


SLIC_REGULARIZATIONS = ("per_pair", "per_list")


def slic_loss(
    sum_logps: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    delta: float = 1.0,
    regularization_weight: float = 0.5,
    regularization: str = "per_pair",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""SLiC-HF (Zhao et al. 2023, arXiv 2305.10425): rank calibration plus cross-entropy regularisation.

    The paper's loss is per pair `(x, y+, y-)`: `max(0, delta - logp(y+) + logp(y-)) - lambda * logp(y_ref)`. A ranking
    gives every ordered pair; per example, with `P` the number of pairs the labels order strictly:

        L = sum_{psi_i > psi_j} max(0, delta - logp_i + logp_j)  +  c * regularization_weight * NLL_sum(best)

    with `c = P` for `regularization="per_pair"` (the default: each pair brings its regulariser, as the paper's sum
    over pairs does, so a ranking weighs the same as its pairs given one by one) and `c = 1` for `"per_list"` (one
    regulariser per ranking: at `n = 8`, 28 pairs, 28x weaker). `logp` is the summed log-prob of a candidate (SLiC-HF
    is reference-free) and the regulariser the token-summed NLL of the best candidate (the paper's `y_ref`, its SFT
    target; here the ranking's top). No official code is public. Ties form no pair; with `"per_pair"` an example
    whose labels all tie has no pair and contributes 0.

    Returns:
        `(per_example, calibration_term, regularization_term)`, each `[batch]`; `regularization_term` is the NLL of the
        best candidate, unweighted (the term added is `per_example - calibration_term`).
    """
    if regularization not in SLIC_REGULARIZATIONS:
        raise ValueError(f"Unknown regularization {regularization!r}: expected one of {list(SLIC_REGULARIZATIONS)}.")
    compute_dtype = torch.promote_types(sum_logps.dtype, torch.float32)
    logps = sum_logps.to(compute_dtype)
    pairs = ordered_pairs(labels, num_candidates)
    hinge = torch.relu(delta - logps.unsqueeze(2) + logps.unsqueeze(1))
    calibration = torch.where(pairs, hinge, torch.zeros_like(hinge)).sum(dim=(1, 2))
    nll = best_candidate_nll(sum_logps, torch.ones_like(sum_logps), per_token=False)
    count = pairs.sum(dim=(1, 2)).to(compute_dtype) if regularization == "per_pair" else torch.ones_like(nll)
    return calibration + regularization_weight * count * nll, calibration, nll


PAIR_SELECTIONS = ("best_worst", "best_rest", "adjacent", "all", "sweet_spot", "threshold")


def sweet_spot_rejected(labels: torch.Tensor, num_candidates: torch.Tensor, num_sigmas: float = 2.0) -> torch.Tensor:
    """`[batch]` index of the candidate whose label is nearest `mean - num_sigmas * std` of the example's labels.

    The mean and the (population) standard deviation are over the example's real candidates; on equal distances the
    first such candidate in ranking order is taken.
    """
    mask = candidate_mask(num_candidates, labels.shape[1])
    labels = labels.to(torch.promote_types(labels.dtype, torch.float32))
    count = num_candidates.to(labels.dtype)
    mean = torch.where(mask, labels, torch.zeros_like(labels)).sum(dim=1) / count
    variance = torch.where(mask, (labels - mean.unsqueeze(1)) ** 2, torch.zeros_like(labels)).sum(dim=1) / count
    target = mean - num_sigmas * variance.sqrt()
    distance = (labels - target.unsqueeze(1)).abs().masked_fill(~mask, float("inf"))
    return distance.argmin(dim=1)


def selected_pairs(
    labels: torch.Tensor, num_candidates: torch.Tensor, pair_selection: str, threshold: float | None = None
) -> torch.Tensor:
    """`[batch, n_max, n_max]` mask of the pairs `(i, j)` (i preferred) that `pair_selection` draws from a ranking.

    Positions are those of the ranking (best first); a pair whose labels tie is dropped (no preference).

    - `"best_worst"`: (first, last), the usual "chosen = best, rejected = worst".
    - `"best_rest"`: (first, j) for every other j.
    - `"adjacent"`: (k, k + 1).
    - `"all"`: every `i < j`; with `dpo_pairs` this is LlamaFactory's "List DPO" (hiyouga/LlamaFactory #10299).
    - `"sweet_spot"`: (first, the candidate whose label is nearest `mean - 2 std` of the example's labels), the
      construction that "Finding the Sweet Spot: Preference Data Construction for Scaling Preference Optimization"
      (Xiao et al. 2025, arXiv 2502.16825) found best among the reward positions it compares (max, mean +- sigma,
      mean +- 2 sigma, min): rejecting at `mean - 2 sigma` beats rejecting the minimum (`"best_worst"`).
    - `"threshold"`: every (top group, bottom group) pair, the top group the candidates whose label is above
      `threshold` and the bottom group those below it (the second construction asked about in
      hiyouga/LlamaFactory #6509); `threshold=None` splits at each example's mean label.
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
    elif pair_selection == "sweet_spot":
        chosen = (i == 0) & (j == sweet_spot_rejected(labels, num_candidates).view(-1, 1, 1))
    elif pair_selection == "threshold":
        mask = candidate_mask(num_candidates, n_max)
        values = labels.to(torch.promote_types(labels.dtype, torch.float32))
        if threshold is None:
            cut = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1) / num_candidates.to(values.dtype)
        else:
            cut = torch.full((labels.shape[0],), float(threshold), dtype=values.dtype, device=device)
        top = values > cut.unsqueeze(1)
        bottom = values < cut.unsqueeze(1)
        chosen = top.unsqueeze(2) & bottom.unsqueeze(1)
    else:
        raise ValueError(f"Unknown pair_selection {pair_selection!r}: expected one of {list(PAIR_SELECTIONS)}.")
    return chosen & ordered_pairs(labels, num_candidates)


def dpo_pairs_loss(
    scores: torch.Tensor,
    labels: torch.Tensor,
    num_candidates: torch.Tensor,
    pair_selection: str = "best_worst",
    margin: float = 0.0,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""DPO's sigmoid loss (Rafailov et al. 2023, Eq. 7; TRL's `loss_type="sigmoid"`) on pairs drawn from a ranking.

    Per example, the mean over its selected pairs (see `selected_pairs`) of `-log sigmoid(s_i - s_j - margin)`, with
    `s = beta * log(pi / pi_ref)` on summed log-probs for `"dpo_pairs"` (`margin=0`), or SimPO's reference-free
    `s = beta * mean logp` and target margin `gamma` for `"simpo_pairs"` (Meng et al. 2024, arXiv 2405.14734; TRL's
    `CPOTrainer(loss_type="simpo")` at `n = 2`, without its `cpo_alpha` SFT term). An example without a pair (all
    labels tied) contributes 0. The pairs of an example share its one forward. Averaging per example weighs every
    prompt equally whatever its number of pairs (a pair dataset given to `DPOTrainer` weighs every pair equally
    instead); with `"best_worst"` both are the same.

    Returns:
        `(per_example [batch], pair_mask [batch, n, n])`.
    """
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    pairs = selected_pairs(labels, num_candidates, pair_selection, threshold)
    pair_loss = -torch.nn.functional.logsigmoid(scores.unsqueeze(2) - scores.unsqueeze(1) - margin)
    total = torch.where(pairs, pair_loss, torch.zeros_like(pair_loss)).sum(dim=(1, 2))
    return total / pairs.sum(dim=(1, 2)).clamp(min=1), pairs


def top1_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_candidates: torch.Tensor) -> torch.Tensor:
    """`[batch]` top-1 hits in [0, 1]: the highest-scoring candidate has a best label (any of the tied best).

    A tie at the top of the scores is not a hit: among `k` candidates tied at the highest score, `m` of them
    best-labelled, the example counts `m / k` (the chance that a random tie-break picks a best one). At step 0 of a
    reference-based loss every score is 0 and the example counts 1/n (without tied best labels), not 1.
    """
    mask = candidate_mask(num_candidates, scores.shape[1])
    masked = scores.masked_fill(~mask, float("-inf"))
    at_top = (masked == masked.amax(dim=1, keepdim=True)) & mask
    best = labels.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    hits = (at_top & (labels >= best)).sum(dim=1)
    return hits.to(torch.promote_types(scores.dtype, torch.float32)) / at_top.sum(dim=1).clamp(min=1)
