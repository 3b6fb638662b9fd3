from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from ..config_utils import PackedLayoutConfigMixin, check_beta_and_loss_weights, check_max_prompt_length
from ..loss_table import LOSSES, reference_losses
from ..losses import LIPO_LAMBDA_REDUCTIONS, LISTMLE_TIES, PAIR_SELECTIONS, SFT_POOLINGS, SLIC_REGULARIZATIONS
from ..precision import resolve_config_bf16
from ..validation import check_finite_floats


# Views of the loss table (`trl_ranking.loss_table.LOSSES`), kept importable: the `loss_type` names, and the losses
# that score candidates against a reference model. Validation reads the table itself (a loss registered later counts).
LOSS_TYPES = tuple(LOSSES)
REFERENCE_LOSSES = reference_losses()


def _loss_type_help() -> str:
    return (
        f"Loss, or losses summed with `loss_weights`: {', '.join(repr(name) for name in LOSSES)}. "
        f"{', '.join(repr(name) for name in reference_losses())} use a reference model (see docs/listwise.md)."
    )


@dataclass
class PROConfig(PackedLayoutConfigMixin, DPOConfig):
    r"""
    Configuration class for the `PROTrainer`: Preference Ranking Optimization (Song et al., 2024,
    [arXiv 2306.17492](https://huggingface.co/papers/2306.17492)).

    Everything `trl.DPOConfig` has is accepted and means what it means there. `loss_type` and `loss_weights`
    follow DPO's convention but name the losses of the listwise family (see `docs/listwise.md`); the other DPO loss
    options (`ld_alpha`, `f_divergence_type`, `use_weighting`, `label_smoothing`) have no meaning here and are
    rejected when set. `beta` scales the reference-based scores `s_i = beta * (logp_i - ref_i)` of `"listmle"`,
    `"lipo_lambda"` and `"dpo_pairs"`, and PRO's score with `reference_normalized=True`; it must be > 0 (checked
    for every loss: DPO's default 0.1 passes, and a hand-set `beta <= 0` is a mistake even where it is unused).
    `loss_weights` must not all be 0 (nothing would train).
    An unset `bf16` on a CPU run (`use_cpu=True`, or no accelerator) is bf16 only where the CPU computes it
    natively (AMX or AVX512-BF16), float32 elsewhere, logged; TRL's rule (`not fp16`) is kept on accelerators
    (`trl_ranking.precision.resolve_config_bf16`, docs/performance.md "bf16 on CPU").

    Parameters:
        > Parameters that choose the loss (the listwise family, each a pure function in `trl_ranking.losses`)

        loss_type (`str` or `list[str]`, *optional*, defaults to `["pro"]`):
            The loss, or several losses summed with `loss_weights` (DPO's convention), by its name in the loss table
            (`trl_ranking.loss_table.LOSSES`, listed with formulas and papers in `docs/listwise.md`): `"pro"` (PRO,
            Song et al. 2024; the options below), `"listmle"` (Plackett-Luce DPO), `"lipo_lambda"`, `"lipo_softmax"`
            and `"hinge"` (LiPO), `"neural_ndcg"` and `"approx_ndcg"` (OPO), `"rrhf"`, `"slic"` (SLiC-HF),
            `"best_of_n_sft"` (RAFT), `"dpo_pairs"` (DPO on pairs of the ranking), `"simpo_listmle"` and
            `"simpo_pairs"` (reference-free, SimPO's margin on mean log-probs). The reference-based losses
            (`REFERENCE_LOSSES`: `"listmle"`, `"lipo_lambda"`, `"lipo_softmax"`, `"hinge"`, `"neural_ndcg"`,
            `"approx_ndcg"`, `"dpo_pairs"`) score a candidate by `beta * (summed logp - summed reference logp)` and use
            TRL's reference machinery (an explicit `ref_model`, the PEFT adapter switched off, a copy of the initial
            model, or `precompute_ref_log_probs`); the others are reference-free and load no reference.
        loss_weights (`list[float]` or `None`, *optional*, defaults to `None`):
            One weight per `loss_type`; `None` weighs each loss 1.0.
        pair_selection (`str`, *optional*, defaults to `"best_worst"`):
            Pairs `"dpo_pairs"` and `"simpo_pairs"` draw from each ranking: `"best_worst"`, `"best_rest"` (the best
            against each other), `"adjacent"` (each candidate against the next), `"all"` (every ordered pair:
            LlamaFactory's "List DPO"), `"sweet_spot"` (the best against the answer whose label is nearest
            `mean - 2 std` of the list's labels, Xiao et al. 2025) or `"threshold"` (every answer above
            `pair_threshold` against every answer below it). Tied pairs are dropped.
        pair_threshold (`float` or `None`, *optional*, defaults to `None`):
            The label that splits a ranking into top and bottom groups for `pair_selection="threshold"`; `None`
            splits each ranking at its mean label.
        lipo_label_normalization (`str`, *optional*, defaults to `"minmax"`):
            How the gain-based losses (`"lipo_lambda"`, `"lipo_softmax"`, `"neural_ndcg"`, `"approx_ndcg"`) normalise
            their labels (the rewards, or the ranks `n - i` without rewards) before using them: `"minmax"` maps each
            example's labels to [0, 1], the range of LiPO's labels; `"none"` uses them as given.
        lipo_lambda_idcg (`bool`, *optional*, defaults to `False`):
            Divide LiPO-lambda's gains by each example's ideal DCG (NDCG weights, as TF-Ranking and allRank do).
            `False` is the paper's DCG weights.
        lipo_lambda_reduction (`str`, *optional*, defaults to `"sum"`):
            `"sum"` over the ordered pairs (the paper; at `n = 2` with rank labels 0.369x DPO's loss) or `"mean"`
            over them (TF-Ranking's reduction), which keeps the loss of order 1 whatever `n`.
        listmle_top_k (`int` or `None`, *optional*, defaults to `None`):
            Train only the first `k` positions of the Plackett-Luce ranking (`"listmle"`, `"simpo_listmle"`; DPO
            paper App. A.3). `None`: the whole list. `1` is one positive against all the others at once, "DPO with K
            rejected" (S-DPO).
        listmle_ties (`str`, *optional*, defaults to `"shuffle"`):
            What `"listmle"` and `"simpo_listmle"` do with tied rewards, which Plackett-Luce cannot express:
            `"shuffle"` draws a random order within each run of tied answers at every step (TF-Ranking's
            `ListMLELoss`; reproducible, seeded by `seed` and the step), `"drop"` drops the rankings whose labels
            all tie (other ties keep the given order), `"keep"` trains the order in which they were given.
        simpo_gamma (`float`, *optional*, defaults to `0.5`):
            Target reward margin `gamma` of `"simpo_pairs"` and `"simpo_listmle"`, whose score is
            `beta * mean logp` (TRL's `CPOConfig.simpo_gamma`; SimPO uses `beta` 2.0-2.5, set `beta` accordingly).
        neural_ndcg_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of NeuralSort's relaxed permutation in `"neural_ndcg"` (OPO's and allRank's default 1).
        approx_ndcg_alpha (`float`, *optional*, defaults to `1.0`):
            Sharpness `alpha` of the sigmoid ranks of `"approx_ndcg"` (allRank's default 1).
        rrhf_weight (`float`, *optional*, defaults to `1.0`):
            Weight of RRHF's ranking term against its SFT term (the official code's `rrhf_weight`; 1 in its `train.sh`).
        rrhf_length_penalty (`float`, *optional*, defaults to `1.0`):
            RRHF's score is `summed logp / length^rrhf_length_penalty` (the official code's `length_penalty`).
        slic_delta (`float`, *optional*, defaults to `1.0`):
            Margin `delta` of SLiC-HF's calibration hinge `max(0, delta - logp_i + logp_j)` on summed log-probs.
        slic_regularization_weight (`float`, *optional*, defaults to `0.5`):
            Weight `lambda` of SLiC-HF's regulariser, the token-summed NLL of the best candidate (our default).
        slic_regularization (`str`, *optional*, defaults to `"per_pair"`):
            `"per_pair"` adds the regulariser once per ordered pair, as the paper's loss (defined per pair) does;
            `"per_list"` adds it once per ranking (`n(n-1)/2` times weaker for a ranking of `n` distinct labels).
        best_of_n_sft_pooling (`str`, *optional*, defaults to `"answer"`):
            `"best_of_n_sft"`'s mean NLL: `"answer"` averages each best answer's tokens, then the answers;
            `"token"` pools the batch's tokens, as TRL's `DPOTrainer(loss_type="sft")` and `SFTTrainer` do.

        > Parameters that control the PRO loss (`loss_type="pro"`)

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
            Score each candidate by `beta * (mean log-prob - mean reference log-prob)` instead of the paper's
            reference-free mean log-prob (a mean log-ratio: not the Plackett-Luce / listwise DPO score, whose
            log-ratio is summed over the tokens). Uses TRL's reference machinery: an explicit `ref_model`, the PEFT
            adapter switched off (or the "ref" adapter copy), a copy of the initial model, or
            `precompute_ref_log_probs`. When `False` (the default) no reference model is loaded, held or run.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            If set, prompts longer than this are truncated from the left (keeping their end, next to the
            completions), as the paper's recipe does (block size 512, prompt left-truncated to 512 - 128 tokens).
            Truncated prompts are counted in the log.

        > Parameters that control the layout of a batch (speed and memory; the loss and gradients are the same)

        prefix_sharing (`bool` or `None`, *optional*, defaults to `None`):
            Process each prompt once: each ranking becomes one row `[prompt][candidate 1]...[candidate n]`, position
            ids restarting at the prompt's end for every candidate and an attention mask in which a candidate sees
            the prompt and its own earlier tokens only (see `trl_ranking.packing`). Exact with eager, SDPA and flex
            attention. `None` (the default) turns it on wherever it is exact and off otherwise (flash attention,
            prompt-learning PEFT, models with recurrent or linear-attention layers or without `position_ids`, MoE
            models with the router auxiliary loss); `True` asks for it and falls back to the
            padded layout with a warning where it is not exact; `False` keeps TRL's padded layout.
        padding_free (`bool`, *optional*, defaults to `False`):
            Pack all the rankings of a batch into one row with no padding (a block-diagonal attention mask between
            rankings; with prefix sharing, each prompt once too). Exact with eager, SDPA and flex attention, and with
            flash attention without prefix sharing. Fastest with flex attention, whose kernels skip the masked blocks;
            eager and SDPA attend over the whole packed row, so their attention cost grows with the square of the
            batch's total length.

            Both layout fields are options of the default collator. With a `data_collator` passed to the trainer the
            batches keep the layout that collator gives them (padded, or packed if it packs them), the trainer's
            `prefix_sharing`/`padding_free` attributes report that collator's flags, and setting either field here
            only warns. `DOVEConfig` behaves the same.

        > Parameters that control self-bootstrapping (the paper's Algorithm 1; needs `PROTrainer(reward_model=...)`)

        self_bootstrap (`bool`, *optional*, defaults to `False`):
            Split the training rows, in order, into `bootstrap_chunks` chunks; before training on a chunk, sample
            `bootstrap_num_samples` responses per prompt from the current policy, add them to the candidates, score
            every candidate with the reward model and re-rank, the original top candidate staying first (footnote 6).
            One training run: optimizer, schedule, logs and checkpoints continue across chunks. See
            `trl_ranking.pro.bootstrap` for the exact rules.
        bootstrap_chunks (`int`, *optional*, defaults to `4`):
            K, the number of chunks. The paper gives no value; 4 is our choice.
        bootstrap_passes_per_chunk (`int`, *optional*, defaults to `1`):
            Passes over each chunk (reshuffled) before the next chunk is sampled: the epochs of the paper's
            `PRO(pi, D_i)`. For Algorithm 1's exact schedule (every pass over chunk i before chunk i + 1 is sampled)
            set this to the number of epochs and `num_train_epochs=1`.
        bootstrap_resample_each_epoch (`bool`, *optional*, defaults to `False`):
            With `num_train_epochs > 1`: `False` (Algorithm 1, each chunk sampled once) samples every chunk in the
            first epoch only and trains the later epochs on the same augmented rankings; `True` samples every chunk
            again in each epoch, from the then-current policy.
        bootstrap_num_samples (`int`, *optional*, defaults to `1`):
            Responses sampled per prompt (the paper adds one).
        bootstrap_max_new_tokens (`int`, *optional*, defaults to `128`):
            Maximum new tokens per sampled response (the paper's recipe leaves 512 - 384 = 128 tokens to the response).
        bootstrap_temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature.
        bootstrap_top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling threshold (`1.0`: plain sampling from the policy).
        bootstrap_top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling threshold; `0` turns top-k off, so that `bootstrap_top_p=1.0` is plain sampling from the
            policy (`generate` would otherwise apply the model's default `top_k`, usually 50).
        bootstrap_rerank (`str`, *optional*, defaults to `"raise_top"`):
            The reading of footnote 6 (the sampled response never ranks first) that sets the rewards. `"raise_top"`:
            each candidate keeps its reward-model score, the top's raised to the best other score when lower
            (`r_1 = max(r_1, r_2)`). `"sort_rewards"`: the reward values are sorted and reassigned by position (the
            top gets the highest value, the second the next, ...). The order of the candidates is the same.
        bootstrap_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Prompts per `generate` call and pairs per reward-model forward, per process. `None`:
            `per_device_eval_batch_size`.

        > Parameters that control what happens on a non-finite step

        skip_nonfinite_steps (`bool`, *optional*, defaults to `False`):
            What to do when a training step's loss or gradient norm is NaN or infinite. `False` (the default) stops
            training with a `FloatingPointError` naming the step, so that NaN weights are never saved. `True` skips
            the optimizer update of such a step (its gradients are dropped), logs a warning naming it and counts the
            skipped steps in the `nonfinite_steps` metric.

    > [!NOTE]
    > Defaults that differ from `trl.DPOConfig`: `learning_rate` is `5e-6` (the paper's recipe) instead of `1e-6`.
    """

    learning_rate: float = field(
        default=5e-6,
        metadata={"help": "The initial learning rate for AdamW (the PRO paper uses 5e-6)."},
    )
    loss_type: list[str] = field(
        default_factory=lambda: ["pro"],
        metadata={"help": _loss_type_help()},
    )
    pair_selection: str = field(
        default="best_worst",
        metadata={"help": f"Pairs of 'dpo_pairs' and 'simpo_pairs': {', '.join(map(repr, PAIR_SELECTIONS))}."},
    )
    pair_threshold: float | None = field(
        default=None,
        metadata={"help": "Label splitting top from bottom answers for pair_selection='threshold' (None: the mean)."},
    )
    lipo_label_normalization: str = field(
        default="minmax",
        metadata={"help": "Labels of the gain-based losses: 'minmax' (each example's mapped to [0, 1]) or 'none'."},
    )
    lipo_lambda_idcg: bool = field(
        default=False, metadata={"help": "Divide LiPO-lambda's gains by the ideal DCG (NDCG weights)."}
    )
    lipo_lambda_reduction: str = field(
        default="sum", metadata={"help": "LiPO-lambda over its pairs: 'sum' (the paper) or 'mean'."}
    )
    listmle_top_k: int | None = field(
        default=None, metadata={"help": "Train the first k positions of the Plackett-Luce ranking (None: all)."}
    )
    listmle_ties: str = field(
        default="shuffle",
        metadata={"help": "ListMLE's tied rewards: 'shuffle' (each step), 'drop' (all-tied rankings) or 'keep'."},
    )
    simpo_gamma: float = field(default=0.5, metadata={"help": "Target margin of 'simpo_pairs' and 'simpo_listmle'."})
    neural_ndcg_temperature: float = field(default=1.0, metadata={"help": "NeuralNDCG's NeuralSort temperature."})
    approx_ndcg_alpha: float = field(default=1.0, metadata={"help": "ApproxNDCG's sigmoid sharpness."})
    rrhf_weight: float = field(default=1.0, metadata={"help": "Weight of RRHF's ranking term (its SFT term has 1)."})
    rrhf_length_penalty: float = field(
        default=1.0, metadata={"help": "RRHF's score: summed logp / length^rrhf_length_penalty."}
    )
    slic_delta: float = field(default=1.0, metadata={"help": "Margin of SLiC-HF's calibration hinge."})
    slic_regularization_weight: float = field(
        default=0.5, metadata={"help": "Weight of SLiC-HF's regulariser, the summed NLL of the best candidate."}
    )
    slic_regularization: str = field(
        default="per_pair",
        metadata={"help": "SLiC-HF's regulariser once per pair ('per_pair', the paper) or per ranking ('per_list')."},
    )
    best_of_n_sft_pooling: str = field(
        default="answer",
        metadata={"help": "best_of_n_sft: mean over answers of their mean NLL ('answer') or pooled tokens ('token')."},
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
    self_bootstrap: bool = field(
        default=False,
        metadata={
            "help": "Self-bootstrapping (Algorithm 1): before training on each of `bootstrap_chunks` chunks, add "
            "responses sampled from the current policy to its rankings and re-rank them with the trainer's "
            "`reward_model`, the original top candidate staying first."
        },
    )
    bootstrap_chunks: int = field(
        default=4,
        metadata={"help": "K, the number of chunks the training rows are split into, in order (our default)."},
    )
    bootstrap_passes_per_chunk: int = field(
        default=1,
        metadata={"help": "Passes over each chunk before the next chunk is sampled (the epochs of PRO(pi, D_i))."},
    )
    bootstrap_num_samples: int = field(
        default=1, metadata={"help": "Responses sampled from the policy per prompt and chunk."}
    )
    bootstrap_max_new_tokens: int = field(default=128, metadata={"help": "Maximum new tokens per sampled response."})
    bootstrap_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    bootstrap_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    bootstrap_top_k: int = field(
        default=0, metadata={"help": "Top-k sampling threshold; 0 (default) turns top-k off: plain sampling."}
    )
    bootstrap_resample_each_epoch: bool = field(
        default=False,
        metadata={
            "help": "With num_train_epochs > 1, sample every chunk again in each epoch. False (Algorithm 1): each "
            "chunk is sampled once, in the first epoch, and later epochs reuse its augmented rankings."
        },
    )
    bootstrap_rerank: str = field(
        default="raise_top",
        metadata={
            "help": "Footnote 6's reading: 'raise_top' (keep the scores, raise the top's to the best other) or "
            "'sort_rewards' (sort the reward values and reassign them by position).",
            "choices": ["raise_top", "sort_rewards"],
        },
    )
    bootstrap_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per generate call and pairs per reward-model forward, per process. None: "
            "per_device_eval_batch_size."
        },
    )
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={
            "help": "On a NaN or infinite loss or gradient norm: False (default) stops with an error naming the step "
            "(no NaN weights are saved); True skips that optimizer update, with a warning and a `nonfinite_steps` "
            "count in the logs."
        },
    )

    def __post_init__(self):
        # `bf16=None` on a CPU run: bf16 where the CPU has it natively, else float32 (TRL: bf16 whatever the CPU)
        resolve_config_bf16(self, "PROConfig")
        super().__post_init__()
        check_finite_floats(self)  # a NaN or infinite option would train NaN weights silently
        if self.sft_weight < 0:
            raise ValueError(f"`sft_weight` must be >= 0, got {self.sft_weight}.")
        if self.ranking_eps < 0:
            raise ValueError(f"`ranking_eps` must be >= 0, got {self.ranking_eps}.")
        check_max_prompt_length(self.max_prompt_length, self.max_length)
        self._check_losses()
        unsupported = {
            "ld_alpha": (self.ld_alpha, None),
            "f_divergence_type": (self.f_divergence_type, "reverse_kl"),
            "use_weighting": (self.use_weighting, False),
            "label_smoothing": (self.label_smoothing, 0.0),
        }
        for name, (value, default) in unsupported.items():
            if value != default:
                raise ValueError(
                    f"`{name}={value!r}` is a DPO loss option with no meaning for PRO and the listwise family; leave "
                    "it at its default. Choose the loss with `loss_type` (and `loss_weights`)."
                )
        if self.truncation_mode != "keep_start":
            raise ValueError(
                "PROTrainer supports only `truncation_mode='keep_start'`; to keep the end of long prompts, set "
                "`max_prompt_length` (the prompt is then left-truncated, as in the PRO paper's recipe)."
            )
        if not self.uses_reference:
            if self.precompute_ref_log_probs:
                raise ValueError(
                    "`precompute_ref_log_probs=True` needs `reference_normalized=True` or a reference-based "
                    f"`loss_type` ({', '.join(reference_losses())}): `loss_type={self.loss_type}` is reference-free and "
                    "uses no reference log-probs."
                )
            if self.sync_ref_model:
                raise ValueError(
                    "`sync_ref_model=True` needs `reference_normalized=True` or a reference-based `loss_type` "
                    f"({', '.join(reference_losses())})."
                )
        for name in (
            "bootstrap_chunks",
            "bootstrap_passes_per_chunk",
            "bootstrap_num_samples",
            "bootstrap_max_new_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.bootstrap_batch_size is not None and self.bootstrap_batch_size < 1:
            raise ValueError(
                f"`bootstrap_batch_size` must be a positive integer or None, got {self.bootstrap_batch_size}."
            )
        if not self.bootstrap_temperature > 0:
            raise ValueError(f"`bootstrap_temperature` must be > 0, got {self.bootstrap_temperature}.")
        if not 0 < self.bootstrap_top_p <= 1:
            raise ValueError(f"`bootstrap_top_p` must be in (0, 1], got {self.bootstrap_top_p}.")
        if (
            isinstance(self.bootstrap_top_k, bool)
            or not isinstance(self.bootstrap_top_k, int)
            or self.bootstrap_top_k < 0
        ):
            raise ValueError(f"`bootstrap_top_k` must be a non-negative integer, got {self.bootstrap_top_k!r}.")
        if self.bootstrap_rerank not in ("raise_top", "sort_rewards"):
            raise ValueError(
                f"`bootstrap_rerank` must be 'raise_top' or 'sort_rewards', got {self.bootstrap_rerank!r}."
            )
        if self.self_bootstrap and self.precompute_ref_log_probs:
            raise ValueError(
                "`self_bootstrap=True` cannot be combined with `precompute_ref_log_probs=True`: the sampled candidates "
                "have no precomputed reference log-probs. Leave `precompute_ref_log_probs=False` (the reference, if "
                "any, is then run on the fly)."
            )

    @property
    def uses_reference(self) -> bool:
        """Whether training scores candidates against a reference model (a reference-based loss, or PRO's
        `reference_normalized`)."""
        return self.reference_normalized or any(LOSSES[name].needs_reference for name in self.loss_type)

    def _check_losses(self) -> None:
        # `DPOConfig.__post_init__` has made `loss_type` a list and checked the length of `loss_weights`
        unknown = [name for name in self.loss_type if name not in LOSSES]
        if unknown:
            raise ValueError(
                f"`loss_type` has unknown losses {unknown}: PROTrainer's losses are {list(LOSSES)} (DPO's pairwise "
                "losses are `DPOTrainer`'s; `'dpo_pairs'` is DPO's sigmoid loss on pairs of the ranking)."
            )
        if not self.loss_type:
            raise ValueError("`loss_type` is empty: name at least one loss.")
        if len(set(self.loss_type)) != len(self.loss_type):
            raise ValueError(f"`loss_type={self.loss_type}` names a loss twice; give it one weight in `loss_weights`.")
        check_beta_and_loss_weights(self.beta, self.loss_weights)
        if self.pair_selection not in PAIR_SELECTIONS:
            raise ValueError(f"`pair_selection` must be one of {list(PAIR_SELECTIONS)}, got {self.pair_selection!r}.")
        if self.lipo_label_normalization not in ("minmax", "none"):
            raise ValueError(
                f"`lipo_label_normalization` must be 'minmax' or 'none', got {self.lipo_label_normalization!r}."
            )
        choices = {
            "lipo_lambda_reduction": LIPO_LAMBDA_REDUCTIONS,
            "listmle_ties": LISTMLE_TIES,
            "slic_regularization": SLIC_REGULARIZATIONS,
            "best_of_n_sft_pooling": SFT_POOLINGS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        top_k = self.listmle_top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"`listmle_top_k` must be a positive integer or None, got {top_k!r}.")
        for name in ("neural_ndcg_temperature", "approx_ndcg_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        # A negative length penalty would favour long answers in RRHF's score, the opposite of a penalty
        for name in ("rrhf_weight", "rrhf_length_penalty", "slic_delta", "slic_regularization_weight", "simpo_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.reference_normalized and "pro" not in self.loss_type:
            raise ValueError(
                "`reference_normalized=True` changes the score of the `'pro'` loss only, which `loss_type="
                f"{self.loss_type}` does not use. The reference-based losses ({', '.join(reference_losses())}) always "
                "use the reference."
            )
