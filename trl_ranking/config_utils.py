"""Checks shared by the PRO and DOVE configs."""

from __future__ import annotations


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
