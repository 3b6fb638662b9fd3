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


# The largest reward the loss can hold: rewards and their differences must stay finite in `REWARD_DTYPE`
REWARD_LIMIT = torch.finfo(REWARD_DTYPE).max


def check_reward(value: Any, where: str) -> float:
    """One reward as a float: a real number (not a string or a bool), finite, and finite in `REWARD_DTYPE`.

    The one check every reward passes, whether it comes from a dataset, a data file or a scorer. Raises a `ValueError`
    that starts with `where` (e.g. `"Row 3, field 'rewards[1]'"`).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: a reward must be a number, got {type(value).__name__} ({value!r:.40}).")
    reward = float(value)
    if not math.isfinite(reward):
        raise ValueError(f"{where}: the reward is not finite ({reward}).")
    if abs(reward) > REWARD_LIMIT:
        raise ValueError(
            f"{where}: the reward {reward:g} overflows {REWARD_DTYPE}, the dtype the loss uses (largest finite value "
            f"{REWARD_LIMIT:g}). Rescale the rewards."
        )
    return reward


def check_rewards(values: Any, where: str, field: str) -> list[float]:
    """A row's rewards as floats: each passes `check_reward`, and their differences are finite in `REWARD_DTYPE` too
    (the dynamic temperature uses `r_i - r_j`)."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}, field '{field}': expected a list of numbers, got {type(values).__name__}.")
    rewards = [check_reward(value, f"{where}, field '{field}[{i}]'") for i, value in enumerate(values)]
    if rewards and max(rewards) - min(rewards) > REWARD_LIMIT:
        raise ValueError(
            f"{where}, field '{field}': the rewards span {max(rewards) - min(rewards):g}, whose differences overflow "
            f"{REWARD_DTYPE} (largest finite value {REWARD_LIMIT:g}). Rescale the rewards."
        )
    return rewards


def scorer_output(scores: Any, expected: int, where: str) -> list[float]:
    """A scorer's output (a list, tensor or array) as floats, exactly one per (prompt, completion) pair.

    Only the count is checked here; each score then goes through `check_reward` where its row is known.
    """
    if hasattr(scores, "tolist"):  # torch tensors and numpy arrays
        scores = scores.tolist()
    scores = list(scores)
    if len(scores) != expected:
        raise ValueError(
            f"{where}: the scorer returned {len(scores)} scores for {expected} (prompt, completion) pairs; it must "
            "return exactly one score per pair."
        )
    return scores


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
