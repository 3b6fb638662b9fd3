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


def _starts_with(value: Any, start: Any) -> bool:
    if isinstance(value, str) and isinstance(start, str):
        return value.startswith(start)
    return isinstance(value, list) and isinstance(start, list) and value[: len(start)] == start


def check_implicit_prompt_sides(where: str, sides: list[tuple[str, Any]]) -> None:
    """Check that an implicit prompt, the common start of `sides` (`(field, completion)` pairs), can be split off.

    Raises a `ValueError` naming `where` and the field: all sides identical (nothing would be left of them), or one
    side that is the start of every other one (nothing of it would be left: for messages, it has no assistant turn
    of its own after the shared prompt). Without this the error would blame an empty completion or instruction.
    """
    values = [value for _, value in sides]
    names = list(dict.fromkeys(name.split("[")[0] for name, _ in sides))
    if all(value == values[0] for value in values[1:]):
        fields = f"fields '{names[0]}' and '{names[1]}'" if len(names) > 1 else f"field '{names[0]}'"
        raise ValueError(
            f"{where}, {fields}: identical, so there is no implicit prompt to split off (it is their common start) "
            "and nothing to prefer between them. Give an explicit 'prompt' column, or distinct completions."
        )
    for i, (name, value) in enumerate(sides):
        if all(_starts_with(other, value) for j, other in enumerate(values) if j != i):
            what = (
                "no message after the shared prompt: each side of an implicit prompt must go on with its own "
                "'assistant' message"
                if isinstance(value, list)
                else "nothing after the shared start of the completions, which is split off as the implicit prompt"
            )
            raise ValueError(f"{where}, field '{name}': {what}. Give an explicit 'prompt' column, or fix this side.")


def check_split_prompt(prompt: Any, where: str, fields: str) -> None:
    """An implicit prompt split off `fields` must not be an empty list of messages: the sides share no first
    message, so there is no prompt at all (and TRL's format checks would fail on it with a bare IndexError)."""
    if isinstance(prompt, list) and not prompt:
        raise ValueError(
            f"{where}: {fields} share no first message, so no implicit prompt can be split off. Give an explicit "
            "'prompt' column."
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


# Where a loss uses the rewards' size, not just their order. PRO's dynamic temperature multiplies each candidate's
# score by reward differences: the loss and its gradients grow with them, and the gradient norm squares them
# (1e30 squared overflows float32 at step 1). LiPO's gain 2^r - 1 overflows float32 from r = 128 on.
REWARD_SPAN_WARNING = 1e3
REWARD_SPAN_LIMIT = 1e15
LIPO_LABEL_WARNING = 20.0
LIPO_LABEL_LIMIT = 128.0


def reward_scale_issue(
    rewards: list[float], dynamic_temperature: bool, lipo_unnormalized: bool
) -> tuple[str, bool] | None:
    """What is wrong with the size of one ranking's rewards where the loss uses it, and whether it is fatal.

    `dynamic_temperature`: PRO's temperature applies (reward differences scale the scores). `lipo_unnormalized`:
    LiPO-lambda takes the rewards as labels unchanged (`lipo_label_normalization="none"`). Returns `None` when the
    rewards are fine, else `(message, fatal)`: fatal where the loss or its gradient norm would overflow float32, a
    warning where the rewards' size dominates the loss.
    """
    span = max(rewards) - min(rewards)
    if dynamic_temperature and span > REWARD_SPAN_WARNING:
        fatal = span > REWARD_SPAN_LIMIT
        effect = (
            "the gradient norm would overflow float32 at the first step ('infinite gradient norm')"
            if fatal
            else f"the loss and its gradients are up to {span:.0e} times what rewards in [0, 1] give"
        )
        return (
            f"the rewards span {span:g} (more than {REWARD_SPAN_LIMIT if fatal else REWARD_SPAN_WARNING:g}): PRO's "
            f"dynamic temperature multiplies each candidate's score by reward differences, so {effect}. Rescale "
            "the rewards (e.g. to [0, 1]) or set `dynamic_temperature=False`.",
            fatal,
        )
    top = max(rewards)
    if lipo_unnormalized and top > LIPO_LABEL_WARNING:
        fatal = top >= LIPO_LABEL_LIMIT
        effect = (
            f"2^{top:g} overflows float32 (largest finite value {REWARD_LIMIT:g}) and the loss is not finite"
            if fatal
            else f"gains of up to {2.0**top:.1e} dominate the loss"
        )
        return (
            f"the reward {top:g} (LiPO-lambda's gain is 2^r - 1 with `lipo_label_normalization='none'`, which "
            f"overflows from r = {LIPO_LABEL_LIMIT:g}): {effect}. Use `lipo_label_normalization='minmax'` or "
            "rescale the rewards.",
            fatal,
        )
    return None


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
