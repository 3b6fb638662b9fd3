"""Checks shared by the PRO and DOVE configs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def check_max_prompt_length(max_prompt_length: int | None, max_length: int | None) -> None:
    """`max_prompt_length` must be positive and leave every completion at least one token under `max_length`."""
    if max_prompt_length is None:
        return
    if max_prompt_length < 1:
        raise ValueError(f"`max_prompt_length` must be a positive integer, got {max_prompt_length}.")
    if max_length is not None and max_prompt_length >= max_length:
        raise ValueError(
            f"`max_prompt_length` ({max_prompt_length}) must be smaller than `max_length` ({max_length}) so that "
            "every completion keeps at least one token."
        )


def check_beta_and_loss_weights(beta: float, loss_weights: list[float] | None) -> None:
    """`beta` must be > 0 and `loss_weights` >= 0 with one of them > 0.

    A negative `beta` flips the sign of every reference log-ratio, so it trains the inverted preference; 0 trains
    nothing. Checked always, whether or not the loss uses `beta`: DPO's default 0.1 passes, so only a value set by
    hand can fail, and such a value is a mistake even where the current loss ignores it. Weights that are all 0 train
    nothing and save the unchanged model.
    """
    if not beta > 0:
        raise ValueError(
            f"`beta` must be > 0, got {beta}: a negative beta trains the inverted preference, 0 trains nothing."
        )
    if loss_weights is None:
        return
    if any(not math.isfinite(w) or w < 0 for w in loss_weights):
        raise ValueError(f"`loss_weights` must be finite and >= 0, got {loss_weights}.")
    if not any(w > 0 for w in loss_weights):
        raise ValueError(
            f"`loss_weights={loss_weights}` are all 0: the loss would be 0, nothing would train and the unchanged "
            "model would be saved. Give at least one loss a positive weight."
        )


@dataclass
class PackedLayoutConfigMixin:
    """The batch-layout fields of `PROConfig` and `DOVEConfig` (see `trl_ranking.packing` and `docs/performance.md`).

    Both apply to the trainer's default collator. With a `data_collator` passed to the trainer, the batches keep the
    layout that collator gives them, and setting either field warns that it does not apply.
    """

    prefix_sharing: bool | None = field(
        default=None,
        metadata={
            "help": "Process each shared prompt once (a ranking's prompt, or the common start of a pair's two rows), "
            "with a tree attention mask. None (default): on wherever exact (eager, SDPA, flex attention), else off. "
            "True: on, falling back to the padded layout with a warning where not exact. False: TRL's padded layout. "
            "An option of the default collator: a `data_collator` passed in keeps its own layout."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Pack all sequences of a batch into one row with no padding (block-diagonal mask). Exact with "
            "eager, SDPA and flex attention (fastest: it skips masked blocks), and with flash attention without "
            "prefix sharing. An option of the default collator: a `data_collator` passed in keeps its own layout."
        },
    )
