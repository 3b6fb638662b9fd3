"""Checks of user input shared by the trainers, their configs and the data tools: each error names what is wrong
and where (row, field, option), instead of failing deep in the stack or training on a silently wrong value."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch


# Chat roles a message may have (TRL's conversational format; `tool` for tool-calling traces)
PROMPT_ROLES = ("system", "user", "assistant", "tool")
COMPLETION_ROLES = ("assistant", "tool")
# The dtype the rewards are used in (the collators build float32 tensors)
REWARD_DTYPE = torch.float32


def check_text(value: Any, where: str, field: str, completion: bool) -> None:
    """Check that a prompt or completion is a string or a list of `{"role", "content"}` messages with known roles.

    A completion's messages must be the model's: its first message has the role `assistant` (later ones may be
    `tool` results). Raises a `ValueError` naming `where` (e.g. `"Row 3"`), the field, the message and the problem.
    """
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise ValueError(
            f"{where}, field '{field}': expected a string or a list of {{'role', 'content'}} messages, got "
            f"{type(value).__name__} ({value!r:.80})."
        )
    roles = COMPLETION_ROLES if completion else PROMPT_ROLES
    for i, message in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise ValueError(
                f"{where}, field '{name}': expected a {{'role', 'content'}} message, got {type(message).__name__}."
            )
        for key in ("role", "content"):
            if key not in message or message[key] is None:
                raise ValueError(f"{where}, field '{name}': the message has no '{key}'. Got keys {sorted(message)}.")
        if message["role"] not in roles:
            kind = "a completion's messages" if completion else "a message"
            raise ValueError(
                f"{where}, field '{name}': the role {message['role']!r} is not allowed for {kind}; expected one of "
                f"{list(roles)}."
            )
        if not isinstance(message["content"], str):
            raise ValueError(
                f"{where}, field '{name}': the content must be a string, got {type(message['content']).__name__}."
            )
    if completion and value and value[0]["role"] != "assistant":
        raise ValueError(
            f"{where}, field '{field}[0]': a completion must start with an 'assistant' message, got the role "
            f"{value[0]['role']!r}."
        )


def check_rewards(values: Any, where: str, field: str) -> list[float]:
    """Rewards as floats: real numbers (not strings or bools), finite, and finite in `REWARD_DTYPE` (float32), the
    dtype the loss uses, differences included (the dynamic temperature uses `r_i - r_j`)."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}, field '{field}': expected a list of numbers, got {type(values).__name__}.")
    rewards = []
    limit = torch.finfo(REWARD_DTYPE).max
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{where}, field '{field}[{i}]': a reward must be a number, got {type(value).__name__} ({value!r:.40})."
            )
        reward = float(value)
        if not math.isfinite(reward):
            raise ValueError(f"{where}, field '{field}[{i}]': the reward is not finite ({reward}).")
        if abs(reward) > limit:
            raise ValueError(
                f"{where}, field '{field}[{i}]': the reward {reward:g} overflows {REWARD_DTYPE}, the dtype the loss "
                f"uses (largest finite value {limit:g}). Rescale the rewards."
            )
        rewards.append(reward)
    if rewards and max(rewards) - min(rewards) > limit:
        raise ValueError(
            f"{where}, field '{field}': the rewards span {max(rewards) - min(rewards):g}, whose differences overflow "
            f"{REWARD_DTYPE} (largest finite value {limit:g}). Rescale the rewards."
        )
    return rewards


def check_finite_floats(config: Any) -> None:
    """Every float option of a config dataclass must be finite: NaN or infinity would train NaN weights silently."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"`{field.name}` must be a finite number, got {value!r}.")


def first_row(dataset: Any, dataset_name: str) -> dict[str, Any]:
    """The first row of a `Dataset` or `IterableDataset`; a named `ValueError` when the dataset is empty."""
    for example in dataset:
        return example
    raise ValueError(
        f"The {dataset_name} dataset is empty: it has no rows to train or evaluate on. Check the file or the split "
        "(and any filtering before it)."
    )
