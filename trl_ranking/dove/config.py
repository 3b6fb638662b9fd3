from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig


@dataclass
class DOVEConfig(DPOConfig):
    r"""
    Configuration class for the [`DOVETrainer`]: joint preference optimization over instruction-response pairs (Bansal
    et al., 2024, "Comparing Bad Apples to Good Oranges", [arXiv 2404.00530](https://huggingface.co/papers/2404.00530)).

    Everything [`~trl.DPOConfig`] has is accepted and means what it means there: DOVE is DPO's loss computed on joint
    log-probabilities `log p(I, R)` (every token of the templated instruction and of the response, EOS included, except
    the first token of the row) instead of `log p(R | I)`. Every DPO `loss_type` that works on chosen/rejected
    log-ratios applies unchanged; the options that count tokens (`ld_alpha`, `use_weighting`, `"ipo"`,
    `"sigmoid_norm"`, `"sft"`) count the instruction tokens too when `joint=True`.

    Parameters:
        > Parameters that control the DOVE loss

        joint (`bool`, *optional*, defaults to `True`):
            Score each side by its joint log-probability `log p(I, R)`, the DOVE objective (Eq. 2). `False` scores the
            response only, `log p(R | I)`: the conditional ablation, identical to DPO on each side's own instruction.
        max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            If set, each side's instruction longer than this many tokens is truncated from the left (keeping its end,
            next to the response). Truncated instructions are counted in the log. Without it, a side whose instruction
            leaves no response token under `max_length` raises a `ValueError` (DPO drops such rows silently). With
            DPO's deprecated `truncation_mode="keep_end"`, rows are cut from the start instead, instruction first.

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
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "If set, instructions longer than this many tokens are truncated from the left."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_prompt_length is not None and self.max_prompt_length < 1:
            raise ValueError(f"`max_prompt_length` must be a positive integer, got {self.max_prompt_length}.")
        if (
            self.max_prompt_length is not None
            and self.max_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            raise ValueError(
                f"`max_prompt_length` ({self.max_prompt_length}) must be smaller than `max_length` ({self.max_length}) "
                "so that every response keeps at least one token."
            )
