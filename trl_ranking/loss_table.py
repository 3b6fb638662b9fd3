"""The listwise family in one table: every loss of `PROConfig.loss_type`, registered once.

Each entry (`LossSpec`) names the pure function of `trl_ranking.losses` it runs (on `[batch, n]` tensors), the score
it ranks by (`SCORES`: mean log-prob, summed log-prob, `beta` times the summed log-ratio to the reference, ...),
hence whether it needs a reference model, its paper and citation, the metrics it logs, the `PROConfig` fields it
reads and what it trains on a ranking whose labels all tie. Everything else reads this table: `PROConfig`'s
validation (`LOSS_TYPES` and `REFERENCE_LOSSES` are views of it), `PROTrainer`'s dispatch, its model card (method
name, papers, tags) and warnings, and the list of losses in `docs/listwise.md` (rendered by `loss_table_markdown`,
checked by `tests/pro/test_loss_table.py`).

Adding a loss is one pure function plus one `register_loss(LossSpec(...))` call: see `docs/contributing.md`.
`python -m trl_ranking.loss_table` prints the docs' table.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .losses import (
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
    pro_ranking_loss,
    pro_sft_loss,
    ranking_labels,
    rrhf_loss,
    slic_loss,
    tied_permutation,
)


# ----------------------------------------------------------------------------------------------------------------------
# Papers
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Paper:
    """A paper as the model card and the docs cite it: `short` ("Liu et al. 2024"), title, arXiv id and BibTeX."""

    short: str
    title: str
    arxiv: str
    citation: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/papers/{self.arxiv}"

    def as_card(self) -> dict[str, str]:
        """The `_paper` dict TRL's `create_model_card` reads."""
        return {"title": self.title, "id": self.arxiv, "citation": self.citation}


def _bibtex(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# docstyle-ignore
PRO_PAPER = Paper(
    "Song et al. 2024",
    "Preference Ranking Optimization for Human Alignment",
    "2306.17492",
    _bibtex("""
        @inproceedings{song2024preference,
            title        = {{Preference Ranking Optimization for Human Alignment}},
            author       = {Feifan Song and Bowen Yu and Minghao Li and Haiyang Yu and Fei Huang and Yongbin Li and Houfeng Wang},
            year         = 2024,
            booktitle    = {Thirty-Eighth AAAI Conference on Artificial Intelligence, AAAI 2024},
            pages        = {18990--18998},
            doi          = {10.1609/AAAI.V38I17.29865},
        }"""),
)
# docstyle-ignore
DPO_PAPER = Paper(
    "Rafailov et al. 2023",
    "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
    "2305.18290",
    _bibtex("""
        @inproceedings{rafailov2023direct,
            title        = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
            author       = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and Chelsea Finn},
            year         = 2023,
            booktitle    = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
        }"""),
)
# docstyle-ignore
LIPO_PAPER = Paper(
    "Liu et al. 2024",
    "LiPO: Listwise Preference Optimization through Learning-to-Rank",
    "2402.01878",
    _bibtex("""
        @article{liu2024lipo,
            title        = {{LiPO: Listwise Preference Optimization through Learning-to-Rank}},
            author       = {Tianqi Liu and Zhen Qin and Junru Wu and Jiaming Shen and Misha Khalman and Rishabh Joshi and Yao Zhao and Mohammad Saleh and Simon Baumgartner and Jialu Liu and Peter J. Liu and Xuanhui Wang},
            year         = 2024,
            journal      = {arXiv preprint arXiv:2402.01878},
        }"""),
)
# docstyle-ignore
RRHF_PAPER = Paper(
    "Yuan et al. 2023",
    "RRHF: Rank Responses to Align Language Models with Human Feedback without tears",
    "2304.05302",
    _bibtex("""
        @inproceedings{yuan2023rrhf,
            title        = {{RRHF: Rank Responses to Align Language Models with Human Feedback}},
            author       = {Zheng Yuan and Hongyi Yuan and Chuanqi Tan and Wei Wang and Songfang Huang and Fei Huang},
            year         = 2023,
            booktitle    = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
        }"""),
)
# docstyle-ignore
SLIC_PAPER = Paper(
    "Zhao et al. 2023",
    "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
    "2305.10425",
    _bibtex("""
        @article{zhao2023slic,
            title        = {{SLiC-HF: Sequence Likelihood Calibration with Human Feedback}},
            author       = {Yao Zhao and Rishabh Joshi and Tianqi Liu and Misha Khalman and Mohammad Saleh and Peter J. Liu},
            year         = 2023,
            journal      = {arXiv preprint arXiv:2305.10425},
        }"""),
)
# docstyle-ignore
RAFT_PAPER = Paper(
    "Dong et al. 2023",
    "RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment",
    "2304.06767",
    _bibtex("""
        @article{dong2023raft,
            title        = {{RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment}},
            author       = {Hanze Dong and Wei Xiong and Deepanshu Goyal and Yihan Zhang and Winnie Chow and Rui Pan and Shizhe Diao and Jipeng Zhang and Kashun Shum and Tong Zhang},
            year         = 2023,
            journal      = {Transactions on Machine Learning Research},
        }"""),
)
# docstyle-ignore
OPO_PAPER = Paper(
    "Zhao et al. 2024",
    "Ordinal Preference Optimization: Aligning Human Preferences via NDCG",
    "2410.04346",
    _bibtex("""
        @article{zhao2024ordinal,
            title        = {{Ordinal Preference Optimization: Aligning Human Preferences via NDCG}},
            author       = {Yang Zhao and Yixin Wang and Mingzhang Yin},
            year         = 2024,
            journal      = {arXiv preprint arXiv:2410.04346},
        }"""),
)
# docstyle-ignore
SIMPO_PAPER = Paper(
    "Meng et al. 2024",
    "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    "2405.14734",
    _bibtex("""
        @inproceedings{meng2024simpo,
            title        = {{SimPO: Simple Preference Optimization with a Reference-Free Reward}},
            author       = {Yu Meng and Mengzhou Xia and Danqi Chen},
            year         = 2024,
            booktitle    = {Advances in Neural Information Processing Systems 38 (NeurIPS 2024)},
        }"""),
)


# ----------------------------------------------------------------------------------------------------------------------
# What a loss sees: the batch's `[batch, n]` tensors, and the scores a loss ranks by
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class LossBatch:
    """The `[batch, n_max]` tensors of one batch that the losses read (candidates best first).

    `sum_logps`/`token_counts`: the policy's summed log-probs and token counts per candidate; `ref_sum_logps`: the
    reference's (only when a loss in use needs it); `rewards`: the dataset's rewards or `None`; `beta`: the
    trainer's `beta`; `step`: the global step (seeds `listmle_ties="shuffle"`, so a step draws the same order in
    every layout and on a rerun).
    """

    sum_logps: torch.Tensor
    token_counts: torch.Tensor
    num_candidates: torch.Tensor
    ref_sum_logps: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    beta: float = 0.1
    step: int = 0

    @property
    def labels(self) -> torch.Tensor:
        """The rewards, or the rank labels `n - 1 - i` (`trl_ranking.losses.ranking_labels`)."""
        return ranking_labels(self.rewards, self.num_candidates, self.sum_logps.shape[1])

    @property
    def mean_logps(self) -> torch.Tensor:
        return self.sum_logps / self.token_counts.clamp(min=1)

    def gain_labels(self, args: Any) -> torch.Tensor:
        """The labels of the gain-based losses, normalised by `args.lipo_label_normalization`."""
        return normalize_labels(self.labels, self.num_candidates, args.lipo_label_normalization)


@dataclass(frozen=True)
class Score:
    """A score a loss ranks candidates by: its formula (docs), whether it needs a reference, and how to compute it."""

    formula: str
    needs_reference: bool
    compute: Callable[[LossBatch, Any], torch.Tensor]


def _ref(batch: LossBatch) -> torch.Tensor:
    if batch.ref_sum_logps is None:
        raise ValueError("this score needs the reference log-probs, which the batch does not have")
    return batch.ref_sum_logps.to(batch.sum_logps.dtype)


def _pro_score(batch: LossBatch, args: Any) -> torch.Tensor:
    if getattr(args, "reference_normalized", False):
        return batch.beta * (batch.mean_logps - _ref(batch) / batch.token_counts.clamp(min=1))
    return batch.mean_logps


SCORES: dict[str, Score] = {
    "mean_logp": Score("`logp_i / abs(y_i)` (mean log-prob)", False, lambda b, a: b.mean_logps),
    "sum_logp": Score("`logp_i` (summed log-prob)", False, lambda b, a: b.sum_logps),
    "beta_logratio": Score(
        "`beta * (logp_i - ref_i)` (summed log-ratio)", True, lambda b, a: b.beta * (b.sum_logps - _ref(b))
    ),
    "beta_mean_logp": Score("`beta * logp_i / abs(y_i)` (SimPO's reward)", False, lambda b, a: b.beta * b.mean_logps),
    "length_penalized_logp": Score(
        "`logp_i / abs(y_i)^rrhf_length_penalty`",
        False,
        lambda b, a: b.sum_logps / b.token_counts.clamp(min=1) ** a.rrhf_length_penalty,
    ),
    "pro": Score(
        "`logp_i / abs(y_i)`; `beta * (logp_i - ref_i) / abs(y_i)` with `reference_normalized=True`", False, _pro_score
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------------
LossOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class LossSpec:
    """One loss of the family, registered once with `register_loss`.

    Args:
        name (`str`): The `loss_type` name.
        method (`str`): The method's name, for the model card and the docs ("LiPO-lambda").
        function (`Callable`): The pure loss of `trl_ranking.losses` (on `[batch, n]` tensors).
        score (`str`): The key in `SCORES` of the score it ranks by; decides whether it needs a reference.
        paper (`Paper`): Its paper, cited in the model card and the docs.
        formula (`str`): The per-prompt loss, for the docs' table (markdown).
        compute (`Callable`, *optional*): `compute(scores, batch, args) -> (per_example [batch], {metric: [batch]})`,
            the adapter from the batch and the config to `function`. `None`: `function(scores, batch.labels,
            batch.num_candidates, **{keyword: getattr(args, field) for keyword, field in options.items()})`, which
            returns the per-example losses, logged as `loss/<name>`.
        options (`Mapping[str, str]`, *optional*): The `PROConfig` fields it reads (keyword of `function` -> field).
        metrics (`tuple[str, ...]`, *optional*): The metrics it logs, each per example and averaged over the batch;
            `()` means `("loss/<name>",)`. The parts of a loss are logged as they are added to it (weighted), so
            that they sum to the loss.
        tag (`str`, *optional*): Its model-card tag (defaults to `name`).
        tied (`str` or `Callable`, *optional*): What it trains on a ranking whose labels all tie (a string, or a
            function of the config returning one); the degenerate-ranking warning quotes it.
        uses_gains (`bool`, *optional*): Whether it reads the label values through `lipo_label_normalization`
            (gain-based losses: the size of the rewards matters).
        source (`str`, *optional*): What it follows (paper, code), for the docs' table.
    """

    name: str
    method: str
    function: Callable[..., Any]
    score: str
    paper: Paper
    formula: str
    compute: Callable[[torch.Tensor, LossBatch, Any], LossOutput] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    tag: str = ""
    tied: str | Callable[[Any], str] = "no pair: contributes 0, no gradient"
    uses_gains: bool = False
    source: str = ""

    @property
    def needs_reference(self) -> bool:
        """Whether it always scores against a reference model (PRO's `reference_normalized` is the config's)."""
        return SCORES[self.score].needs_reference

    @property
    def logged(self) -> tuple[str, ...]:
        return self.metrics or (f"loss/{self.name}",)

    @property
    def model_card_tag(self) -> str:
        return self.tag or self.name

    def tied_behaviour(self, args: Any) -> str:
        return self.tied(args) if callable(self.tied) else self.tied

    def __call__(self, batch: LossBatch, args: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """`(per_example [batch], metric parts {name: [batch]}, the scores it ranks by)`."""
        scores = SCORES[self.score].compute(batch, args)
        if self.compute is not None:
            per_example, parts = self.compute(scores, batch, args)
        else:
            options = {keyword: getattr(args, name) for keyword, name in self.options.items()}
            per_example = self.function(scores, batch.labels, batch.num_candidates, **options)
            parts = {f"loss/{self.name}": per_example}
        return per_example, parts, scores


LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add `spec` to the table (`LOSSES`); `PROConfig(loss_type=spec.name)` then trains it. Returns `spec`."""
    if spec.name in LOSSES:
        raise ValueError(f"A loss named {spec.name!r} is already registered.")
    if spec.score not in SCORES:
        raise ValueError(f"Loss {spec.name!r}: unknown score {spec.score!r}, expected one of {list(SCORES)}.")
    LOSSES[spec.name] = spec
    return spec


def reference_losses() -> tuple[str, ...]:
    """The registered losses that score against a reference model."""
    return tuple(name for name, spec in LOSSES.items() if spec.needs_reference)


# ----------------------------------------------------------------------------------------------------------------------
# The adapters of the built-in losses (config options -> pure functions), and their registrations
# ----------------------------------------------------------------------------------------------------------------------
def _pro(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    ranking, _, _ = pro_ranking_loss(
        scores,
        batch.num_candidates,
        rewards=batch.rewards,
        dynamic_temperature=args.dynamic_temperature,
        first_stage_only=args.first_stage_only,
        eps=args.ranking_eps,
    )
    sft = pro_sft_loss(-batch.sum_logps[:, 0], batch.num_candidates, args.sft_weight)
    return ranking + sft, {"loss/ranking": ranking, "loss/sft": sft}


def _pro_tied(args: Any) -> str:
    if args.dynamic_temperature:
        return (
            "with the dynamic temperature (the default, with rewards) every weight is 0: constant ranking loss, no "
            "ranking gradient, only the SFT term (on the first given answer); with `dynamic_temperature=False` it "
            "trains the order in which the tied answers were given"
        )
    return "trains the order in which the tied answers were given (`dynamic_temperature=False`), plus the SFT term"


def _listmle_like(name: str, margin_field: str | None) -> Callable[[torch.Tensor, LossBatch, Any], LossOutput]:
    def compute(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
        labels, num_candidates = batch.labels, batch.num_candidates
        if args.listmle_ties == "shuffle" and batch.rewards is not None:
            generator = torch.Generator().manual_seed(int(args.seed) * 1_000_003 + int(batch.step))
            scores = scores.gather(1, tied_permutation(labels, num_candidates, generator).to(scores.device))
        margin = getattr(args, margin_field) if margin_field else 0.0
        per_example = listmle_loss(scores, num_candidates, top_k=args.listmle_top_k, margin=margin)
        if args.listmle_ties == "drop":
            per_example = per_example.masked_fill(all_tied(labels, num_candidates), 0.0)
        return per_example, {f"loss/{name}": per_example}

    return compute


def _listmle_tied(args: Any) -> str:
    return {
        "shuffle": "the tied answers are shuffled at each step (`listmle_ties='shuffle'`): it trains a random order, "
        "no order on average",
        "drop": "dropped (`listmle_ties='drop'`): contributes 0, no gradient",
        "keep": "trains the order in which the tied answers were given (`listmle_ties='keep'`): at equal scores "
        "the gradient is not 0 (e.g. [-0.667, -0.167, +0.833] at n = 3)",
    }[args.listmle_ties]


def _lipo_lambda(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    per_example, pairs, delta = lipo_lambda_loss(
        scores,
        batch.gain_labels(args),
        batch.num_candidates,
        idcg=args.lipo_lambda_idcg,
        reduction=args.lipo_lambda_reduction,
    )
    mean_delta = (delta * pairs).sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
    return per_example, {"loss/lipo_lambda": per_example, "lipo_lambda/mean_delta": mean_delta}


def _gain_loss(name: str, function: Callable[..., torch.Tensor], **options: str):
    def compute(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
        kwargs = {keyword: getattr(args, field_name) for keyword, field_name in options.items()}
        per_example = function(scores, batch.gain_labels(args), batch.num_candidates, **kwargs)
        return per_example, {f"loss/{name}": per_example}

    return compute


def _hinge(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    per_example, _ = pairwise_hinge_loss(scores, batch.labels, batch.num_candidates)
    return per_example, {"loss/hinge": per_example}


def _rrhf(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    per_example, ranking, sft = rrhf_loss(
        batch.sum_logps,
        batch.token_counts,
        batch.labels,
        batch.num_candidates,
        args.rrhf_weight,
        args.rrhf_length_penalty,
    )
    return per_example, {"loss/rrhf/ranking": args.rrhf_weight * ranking, "loss/rrhf/sft": sft}


def _slic(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    per_example, calibration, _ = slic_loss(
        batch.sum_logps,
        batch.labels,
        batch.num_candidates,
        args.slic_delta,
        args.slic_regularization_weight,
        args.slic_regularization,
    )
    parts = {"loss/slic/calibration": calibration, "loss/slic/regularization": per_example - calibration}
    return per_example, parts


def _slic_tied(args: Any) -> str:
    if args.slic_regularization == "per_pair":
        return "no pair and so no regulariser (`slic_regularization='per_pair'`): contributes 0, no gradient"
    return "no pair: only the regulariser, the NLL of the first given answer (`slic_regularization='per_list'`)"


def _best_of_n_sft(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
    per_example = best_of_n_sft_loss(batch.sum_logps, batch.token_counts, args.best_of_n_sft_pooling)
    return per_example, {"loss/best_of_n_sft": per_example}


def _pairs(name: str, margin_field: str | None) -> Callable[[torch.Tensor, LossBatch, Any], LossOutput]:
    def compute(scores: torch.Tensor, batch: LossBatch, args: Any) -> LossOutput:
        margin = getattr(args, margin_field) if margin_field else 0.0
        per_example, pairs = dpo_pairs_loss(
            scores,
            batch.labels,
            batch.num_candidates,
            args.pair_selection,
            margin=margin,
            threshold=args.pair_threshold,
        )
        margins = scores.unsqueeze(2) - scores.unsqueeze(1)
        num_pairs = pairs.sum(dim=(1, 2)).clamp(min=1)
        return per_example, {
            f"loss/{name}": per_example,
            f"{name}/accuracy": ((margins > 0) & pairs).sum(dim=(1, 2)) / num_pairs,
            f"{name}/margin": (margins * pairs).sum(dim=(1, 2)) / num_pairs,
        }

    return compute


_PAIRS = "`pair_selection`: `best_worst`, `best_rest`, `adjacent`, `all`, `sweet_spot` or `threshold`"

register_loss(
    LossSpec(
        "pro",
        "PRO",
        pro_ranking_loss,
        "pro",
        PRO_PAPER,
        "`sum_k [log(eps + sum_{i>=k} exp(w_ki m_i)) - w_kk m_k] + sft_weight (n-1)^2 NLL_sum(y_1)`, `m_i` the score, "
        "`w` from rewards",
        compute=_pro,
        options={
            "sft_weight": "sft_weight",
            "dynamic_temperature": "dynamic_temperature",
            "first_stage_only": "first_stage_only",
            "eps": "ranking_eps",
            "reference_normalized": "reference_normalized",
        },
        metrics=("loss/ranking", "loss/sft"),
        tied=_pro_tied,
        source="official code",
    )
)
register_loss(
    LossSpec(
        "listmle",
        "Plackett-Luce DPO (ListMLE)",
        listmle_loss,
        "beta_logratio",
        DPO_PAPER,
        "`sum_{k=1}^{min(K, n-1)} [logsumexp_{i>=k} s_i - s_k]` (Plackett-Luce), `K = listmle_top_k`",
        compute=_listmle_like("listmle", None),
        options={"top_k": "listmle_top_k", "ties": "listmle_ties"},
        tag="listmle",
        tied=_listmle_tied,
        source="App. A.3; LiPO's DPO_PL; `listmle_top_k=1`: S-DPO / DPO with K rejected",
    )
)
register_loss(
    LossSpec(
        "lipo_lambda",
        "LiPO-lambda",
        lipo_lambda_loss,
        "beta_logratio",
        LIPO_PAPER,
        "`sum_{psi_i > psi_j} Delta_ij * -log sigmoid(s_i - s_j)`, `Delta_ij = abs(G_i - G_j) abs(1/D_i - 1/D_j)`, "
        "`G = 2^psi - 1` (`/ IDCG` with `lipo_lambda_idcg`), `D_i = log2(1 + tau_i)`, `tau_i` the rank of `i` by `s`",
        compute=_lipo_lambda,
        options={
            "idcg": "lipo_lambda_idcg",
            "reduction": "lipo_lambda_reduction",
            "normalization": "lipo_label_normalization",
        },
        metrics=("loss/lipo_lambda", "lipo_lambda/mean_delta"),
        tag="lipo",
        uses_gains=True,
        source="the paper's equation (no public code)",
    )
)
register_loss(
    LossSpec(
        "lipo_softmax",
        "LiPO softmax",
        lipo_softmax_loss,
        "beta_logratio",
        LIPO_PAPER,
        "`-sum_i softmax(psi)_i log softmax(s)_i` (listwise softmax cross-entropy)",
        compute=_gain_loss("lipo_softmax", lipo_softmax_loss),
        options={"normalization": "lipo_label_normalization"},
        tag="lipo",
        tied="uniform target: pulls the scores together (no gradient while they are equal, as at step 0)",
        uses_gains=True,
        source="LiPO's Softmax objective",
    )
)
register_loss(
    LossSpec(
        "hinge",
        "pairwise hinge (LiPO's SLiC baseline)",
        pairwise_hinge_loss,
        "beta_logratio",
        LIPO_PAPER,
        '`sum_{psi_i > psi_j} max(0, 1 - (s_i - s_j))`; at n = 2 TRL\'s `DPOTrainer(loss_type="hinge")`',
        compute=_hinge,
        tag="hinge",
        source="LiPO's reference-normalised SLiC",
    )
)
register_loss(
    LossSpec(
        "neural_ndcg",
        "NeuralNDCG (OPO)",
        neural_ndcg_loss,
        "beta_logratio",
        OPO_PAPER,
        "`-NDCG` with NeuralSort's relaxed, Sinkhorn-scaled permutation `P`: "
        "`-sum_r [sum_j P_rj (2^psi_j - 1)] / log2(2 + r) / IDCG`, temperature `neural_ndcg_temperature`",
        compute=_gain_loss("neural_ndcg", neural_ndcg_loss, temperature="neural_ndcg_temperature"),
        options={"temperature": "neural_ndcg_temperature", "normalization": "lipo_label_normalization"},
        tag="opo",
        tied="every gain 0 after min-max normalisation (IDCG 0): contributes 0, no gradient",
        uses_gains=True,
        source="OPO's code (after allRank)",
    )
)
register_loss(
    LossSpec(
        "approx_ndcg",
        "ApproxNDCG (OPO)",
        approx_ndcg_loss,
        "beta_logratio",
        OPO_PAPER,
        "`-sum_i [(2^psi_i - 1) / IDCG] / log2(1 + pi_i)`, `pi_i = 1 + sum_{j != i} sigmoid(alpha (s_j - s_i))`, "
        "`alpha = approx_ndcg_alpha`",
        compute=_gain_loss("approx_ndcg", approx_ndcg_loss, alpha="approx_ndcg_alpha"),
        options={"alpha": "approx_ndcg_alpha", "normalization": "lipo_label_normalization"},
        tag="opo",
        tied="every gain 0 after min-max normalisation (IDCG 0): contributes 0, no gradient",
        uses_gains=True,
        source="OPO's code (after allRank)",
    )
)
register_loss(
    LossSpec(
        "rrhf",
        "RRHF",
        rrhf_loss,
        "length_penalized_logp",
        RRHF_PAPER,
        "`rrhf_weight * sum_{psi_i > psi_j} max(0, p_j - p_i) + NLL_mean(y_1)`, `p_i` the score",
        compute=_rrhf,
        options={"rank_weight": "rrhf_weight", "length_penalty": "rrhf_length_penalty"},
        metrics=("loss/rrhf/ranking", "loss/rrhf/sft"),
        tied="no pair: only the SFT term, on the first given answer",
        source="the paper (the released code ranks by summed log-prob: RRHF #37, #38)",
    )
)
register_loss(
    LossSpec(
        "slic",
        "SLiC-HF",
        slic_loss,
        "sum_logp",
        SLIC_PAPER,
        "`sum_{psi_i > psi_j} max(0, slic_delta - logp_i + logp_j) + c slic_regularization_weight NLL_sum(y_1)`, "
        "`c` the number of pairs (`slic_regularization='per_pair'`) or 1",
        compute=_slic,
        options={
            "delta": "slic_delta",
            "regularization_weight": "slic_regularization_weight",
            "regularization": "slic_regularization",
        },
        metrics=("loss/slic/calibration", "loss/slic/regularization"),
        tied=_slic_tied,
        source="the paper's equation (no public code)",
    )
)
register_loss(
    LossSpec(
        "best_of_n_sft",
        "best-of-n SFT (RAFT)",
        best_of_n_sft_loss,
        "mean_logp",
        RAFT_PAPER,
        "`NLL(y_1)`: SFT on the best answer only, its mean token NLL (`best_of_n_sft_pooling='answer'`) or the batch's "
        "tokens pooled (`'token'`, TRL's `sft`)",
        compute=_best_of_n_sft,
        options={"pooling": "best_of_n_sft_pooling"},
        tag="raft",
        tied="trains the first given answer (it uses no order)",
    )
)
register_loss(
    LossSpec(
        "dpo_pairs",
        "DPO on pairs of the ranking",
        dpo_pairs_loss,
        "beta_logratio",
        DPO_PAPER,
        f"mean over the selected pairs of `-log sigmoid(s_i - s_j)` (TRL's sigmoid DPO loss); {_PAIRS}",
        compute=_pairs("dpo_pairs", None),
        options={"pair_selection": "pair_selection", "threshold": "pair_threshold"},
        metrics=("loss/dpo_pairs", "dpo_pairs/accuracy", "dpo_pairs/margin"),
        tag="dpo",
        source="Eq. 7; `sweet_spot`: Xiao et al. 2025 (2502.16825); `all`: LlamaFactory's List DPO",
    )
)
register_loss(
    LossSpec(
        "simpo_listmle",
        "SimPO-style ListMLE (reference-free)",
        listmle_loss,
        "beta_mean_logp",
        SIMPO_PAPER,
        "`sum_{k=1}^{min(K, n-1)} [log(exp(s_k - gamma) + sum_{i>k} exp(s_i)) - (s_k - gamma)]`, "
        "`gamma = simpo_gamma`; at n = 2 SimPO's loss",
        compute=_listmle_like("simpo_listmle", "simpo_gamma"),
        options={"top_k": "listmle_top_k", "ties": "listmle_ties", "margin": "simpo_gamma"},
        tag="simpo",
        tied=_listmle_tied,
        source="SimPO's margin on Plackett-Luce (our generalisation)",
    )
)
register_loss(
    LossSpec(
        "simpo_pairs",
        "SimPO on pairs of the ranking (reference-free)",
        dpo_pairs_loss,
        "beta_mean_logp",
        SIMPO_PAPER,
        f"mean over the selected pairs of `-log sigmoid(s_i - s_j - simpo_gamma)`; {_PAIRS}",
        compute=_pairs("simpo_pairs", "simpo_gamma"),
        options={"pair_selection": "pair_selection", "threshold": "pair_threshold", "margin": "simpo_gamma"},
        metrics=("loss/simpo_pairs", "simpo_pairs/accuracy", "simpo_pairs/margin"),
        tag="simpo",
        source="at n = 2 TRL's `trl.experimental.cpo.CPOTrainer` with `loss_type='simpo'`, `cpo_alpha=0`",
    )
)


# ----------------------------------------------------------------------------------------------------------------------
# Views: the model card and the docs
# ----------------------------------------------------------------------------------------------------------------------
def model_card_info(loss_types: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """The model card's method name, paper (first loss's, with every used loss's citation) and tags."""
    specs = [LOSSES[name] for name in loss_types]
    citations = list(dict.fromkeys(spec.paper.citation for spec in specs))
    paper = dict(specs[0].paper.as_card(), citation="\n\n".join(citations))
    tags = ["trl", "trl-ranking", *dict.fromkeys(spec.model_card_tag for spec in specs)]
    return " + ".join(spec.method for spec in specs), paper, tags


DOCS_TABLE_START = (
    "<!-- loss-table:start (generated from trl_ranking/loss_table.py: python -m trl_ranking.loss_table) -->"
)
DOCS_TABLE_END = "<!-- loss-table:end -->"


def loss_table_markdown() -> str:
    """The docs' table of the losses (`docs/listwise.md`), rendered from `LOSSES`."""
    lines = [
        "| `loss_type` | per-prompt loss | score | needs | options | source |",
        "|---|---|---|---|---|---|",
    ]
    for spec in LOSSES.values():
        needs = "reference" if spec.needs_reference else "policy only"
        if spec.name == "pro":
            needs = "policy only (reference with `reference_normalized=True`)"
        options = ", ".join(f"`{name}`" for name in dict.fromkeys(spec.options.values())) or "-"
        source = f"{spec.method}: {spec.paper.short} ([{spec.paper.arxiv}]({spec.paper.url}))"
        if spec.source:
            source += f", {spec.source}"
        lines.append(
            f'| `"{spec.name}"` | {spec.formula} | {SCORES[spec.score].formula} | {needs} | {options} | {source} |'
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(DOCS_TABLE_START)
    print(loss_table_markdown())
    print(DOCS_TABLE_END)
