from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from ..config_utils import PackedLayoutConfigMixin, check_beta_and_loss_weights, check_max_prompt_length
from ..precision import resolve_config_bf16
from ..validation import check_finite_floats


@dataclass
class DOVEConfig(PackedLayoutConfigMixin, DPOConfig):
    r"""
    Configuration class for the `DOVETrainer`: joint preference optimization over instruction-response pairs (Bansal
    et al., 2024, "Comparing Bad Apples to Good Oranges", [arXiv 2404.00530](https://huggingface.co/papers/2404.00530)).

    Everything `trl.DPOConfig` has is accepted and means what it means there: DOVE is DPO's loss computed on joint
    log-probabilities `log p(I, R)` (every token of the templated instruction and of the response, EOS included, except
    the first token of the row) instead of `log p(R | I)`. Every DPO `loss_type` that works on chosen/rejected
    log-ratios applies unchanged; the options that count tokens (`ld_alpha`, `use_weighting`, `"ipo"`,
    `"sigmoid_norm"`, `"sft"`) count the instruction tokens too when `joint=True`. `beta` must be > 0 (a negative
    beta trains the inverted preference) and `loss_weights`, when given, >= 0 and not all 0 (nothing would train).
    An unset `bf16` on a CPU run (`use_cpu=True`, or no accelerator) is bf16 only where the CPU computes it
    natively (AMX or AVX512-BF16), float32 elsewhere, logged; TRL's rule (`not fp16`) is kept on accelerators
    (`trl_ranking.precision.resolve_config_bf16`, docs/performance.md "bf16 on CPU").

    Parameters:
        > Parameters that control the DOVE loss

        joint (`bool`, *optional*, defaults to `True`):
            Score each side by its joint log-probability `log p(I, R)`, the DOVE objective (Eq. 2). `False` scores the
            response only, `log p(R | I)`: the conditional ablation, identical to DPO on each side's own instruction.
        prepend_bos (`bool`, *optional*, defaults to `True`):
            With `joint=True`, put the tokenizer's BOS token in front of every standard-text instruction that does
            not already start with it, so that the first instruction token is scored too, as in the official code
            (which prepends BOS to every row). It matters for tokenizers that do not add a BOS token themselves
            (GPT-2); Llama- and Mistral-style tokenizers already add one, and a tokenizer without a BOS token (Qwen)
            is left as it is, with a warning. Conversational rows start with the chat template's own tokens and are
            not changed. `False` scores from the second instruction token on.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            If set, each side's instruction longer than this many tokens is truncated from the left (keeping its end,
            next to the response). Truncated instructions are counted in the log. Without it, a side whose instruction
            leaves no response token under `max_length` raises a `ValueError` (DPO drops such rows silently). With
            DPO's deprecated `truncation_mode="keep_end"`, rows are cut from the start instead, instruction first.

        > Parameters that control the batch layout (see `trl_ranking.packing`)

        prefix_sharing (`bool` or `None`, *optional*, defaults to `None`):
            Process the common start of a pair's two rows once (the shared prompt of a conditional pair): one row
            holding it once, then each side's remainder, position ids restarting where it ends and an attention mask
            in which each side sees the shared part and its own tokens only. A joint pair whose rows share at most one
            token is laid out as two sequences. The policy and the reference forward use the same layout, and the
            log-probabilities are put back in the padded layout's places, so DPO's loss (every `loss_type`) and
            metrics see exactly what they see with padded rows: `logps/*` still include a shared instruction once
            per side. Exact with eager, SDPA and flex attention. `None` (the default) turns it on wherever it is
            exact and off otherwise (flash attention, prompt-learning PEFT, models with recurrent or linear-attention
            layers or without `position_ids`, MoE models with the router auxiliary loss);
            `True` asks for it and falls back to the padded layout with a warning where it is not exact; `False`
            keeps TRL's padded layout.
        padding_free (`bool`, *optional*, defaults to `False`):
            Pack all the sequences of a batch into one row with no padding (a block-diagonal attention mask; with
            prefix sharing, each shared prompt once too). DPO's own flag, which `DPOTrainer` currently disables:
            implemented here. Exact with eager, SDPA and flex attention, and with flash attention without prefix
            sharing. Fastest with flex attention, whose kernels skip the masked blocks; eager and SDPA attend over the
            whole packed row, so their attention cost grows with the square of the batch's total length.

            Both layout fields are options of the default collator. With a `data_collator` passed to the trainer the
            batches keep the layout that collator gives them (padded, or packed if it packs them), the trainer's
            `prefix_sharing`/`padding_free` attributes report that collator's flags, and setting either field here
            only warns. `PROConfig` behaves the same.

        > Parameters that control what happens on a non-finite step

        skip_nonfinite_steps (`bool`, *optional*, defaults to `False`):
            What to do when a training step's loss or gradient norm is NaN or infinite. `False` (the default) stops
            training with a `FloatingPointError` naming the step, so that NaN weights are never saved. `True` skips
            the optimizer update of such a step (its gradients are dropped), logs a warning naming it and counts the
            skipped steps in the `nonfinite_steps` metric.

    > [!NOTE]
    > The paper's recipe (Mistral-7B in 4 bits with LoRA r=8, alpha=16, dropout 0.05) uses `beta=0.1` (the default),
    > `learning_rate=5e-5` with a cosine schedule and 100 warmup steps; those are LoRA settings, so the defaults here stay
    > DPO's (`learning_rate=1e-6`), which suit full fine-tuning.
    """

    joint: bool = field(
        default=True,
        metadata={
            "help": "Score each side by its joint log-probability log p(I, R) (DOVE). False scores log p(R | I) only "
            "(the conditional ablation, i.e. DPO on each side's own instruction)."
        },
    )
    prepend_bos: bool = field(
        default=True,
        metadata={
            "help": "With joint=True, prepend the BOS token to standard-text instructions that do not start with it, "
            "so the first instruction token is scored (the official code prepends BOS)."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "If set, instructions longer than this many tokens are truncated from the left."},
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
        resolve_config_bf16(self, "DOVEConfig")
        super().__post_init__()
        check_finite_floats(self)  # a NaN or infinite option would train NaN weights silently
        check_max_prompt_length(self.max_prompt_length, self.max_length)
        check_beta_and_loss_weights(self.beta, self.loss_weights)  # beta <= 0 trains the inverted preference
