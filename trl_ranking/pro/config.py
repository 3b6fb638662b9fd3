from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig


@dataclass
class PROConfig(DPOConfig):
    r"""
    Configuration class for the [`PROTrainer`]: Preference Ranking Optimization (Song et al., 2023,
    [arXiv 2306.17492](https://huggingface.co/papers/2306.17492)).

    Everything [`~trl.DPOConfig`] has is accepted and means what it means there. The DPO loss options
    (`loss_type`, `ld_alpha`, `f_divergence_type`, `use_weighting`, `label_smoothing`) have no PRO meaning and are
    rejected when set. `beta` is used only with `reference_normalized=True`.

    Parameters:
        > Parameters that control the PRO loss

        sft_weight (`float`, *optional*, defaults to `0.05`):
            Weight of the SFT term: the loss adds `sft_weight * (n - 1)^2 * NLL(top candidate)` (token-summed NLL,
            each example's own `n`), the paper's `beta = 0.05 * (l - 1)^2`. `0.0` is the paper's "-L_SFT" ablation.
        dynamic_temperature (`bool`, *optional*, defaults to `True`):
            Use the reward-derived dynamic temperature of Eqs. 9-11 when the dataset has `rewards` (or DPO's
            `score_chosen`/`score_rejected`). `False` is the paper's "-T" ablation. Without rewards it has no effect.
        first_stage_only (`bool`, *optional*, defaults to `False`):
            Keep only the first stage of the ranking loss (the top candidate against all others), the paper's
            "-L^{k>1}" ablation.
        ranking_eps (`float`, *optional*, defaults to `1e-10`):
            Constant added inside the log of each stage's denominator, as in the official code.
        reference_normalized (`bool`, *optional*, defaults to `False`):
            Score each candidate by `beta * (mean log-prob - mean reference log-prob)` (the Plackett-Luce / listwise
            DPO reading) instead of the paper's reference-free mean log-prob. Uses TRL's reference machinery: an
            explicit `ref_model`, the PEFT adapter switched off (or the "ref" adapter copy), a copy of the initial
            model, or `precompute_ref_log_probs`. When `False` (the default) no reference model is loaded, held or run.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            If set, prompts longer than this are truncated from the left (keeping their end, next to the
            completions), as the paper's recipe does (block size 512, prompt left-truncated to 512 - 128 tokens).
            Truncated prompts are counted in the log.

    > [!NOTE]
    > Defaults that differ from [`~trl.DPOConfig`]: `learning_rate` is `5e-6` (the paper's recipe) instead of `1e-6`.
    """

    learning_rate: float = field(
        default=5e-6,
        metadata={"help": "The initial learning rate for AdamW (the PRO paper uses 5e-6)."},
    )
    sft_weight: float = field(
        default=0.05,
        metadata={
            "help": "Weight of the SFT term `sft_weight * (n - 1)^2 * NLL(top candidate)`. 0 is the '-L_SFT' ablation."
        },
    )
    dynamic_temperature: bool = field(
        default=True,
        metadata={
            "help": "Use the reward-derived dynamic temperature (Eqs. 9-11) when rewards are given. False is the "
            "paper's '-T' ablation."
        },
    )
    first_stage_only: bool = field(
        default=False,
        metadata={"help": "Keep only the first ranking stage, the paper's '-L^{k>1}' ablation."},
    )
    ranking_eps: float = field(
        default=1e-10,
        metadata={"help": "Constant added inside the log of each stage's denominator (the official code's eps)."},
    )
    reference_normalized: bool = field(
        default=False,
        metadata={
            "help": "Score candidates by `beta * (mean logp - mean reference logp)` instead of the reference-free mean "
            "logp. Off by default: no reference model is loaded, held or run."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "If set, prompts longer than this many tokens are truncated from the left."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.sft_weight < 0:
            raise ValueError(f"`sft_weight` must be >= 0, got {self.sft_weight}.")
        if self.ranking_eps < 0:
            raise ValueError(f"`ranking_eps` must be >= 0, got {self.ranking_eps}.")
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            raise ValueError(f"`max_prompt_length` must be a positive integer, got {self.max_prompt_length}.")
        if (
            self.max_prompt_length is not None
            and self.max_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            raise ValueError(
                f"`max_prompt_length` ({self.max_prompt_length}) must be smaller than `max_length` ({self.max_length}) "
                "so that every candidate keeps at least one token."
            )
        unsupported = {
            "loss_type": (self.loss_type, ["sigmoid"]),
            "loss_weights": (self.loss_weights, None),
            "ld_alpha": (self.ld_alpha, None),
            "f_divergence_type": (self.f_divergence_type, "reverse_kl"),
            "use_weighting": (self.use_weighting, False),
            "label_smoothing": (self.label_smoothing, 0.0),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"`{name}={value!r}` is a DPO loss option with no meaning for PRO, whose loss is the ranking loss "
                    "of the paper; leave it at its default. The PRO options are `sft_weight`, `dynamic_temperature`, "
                    "`first_stage_only` and `reference_normalized`."
                )
        if self.truncation_mode != "keep_start":
            raise ValueError(
                "PROTrainer supports only `truncation_mode='keep_start'`; to keep the end of long prompts, set "
                "`max_prompt_length` (the prompt is then left-truncated, as in the PRO paper's recipe)."
            )
        if not self.reference_normalized:
            if self.precompute_ref_log_probs:
                raise ValueError(
                    "`precompute_ref_log_probs=True` needs `reference_normalized=True`: the default PRO score is "
                    "reference-free and uses no reference log-probs."
                )
            if self.sync_ref_model:
                raise ValueError("`sync_ref_model=True` needs `reference_normalized=True`.")
