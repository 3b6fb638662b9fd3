"""The DOVE paper's D_S: one response per instruction, chosen at random, each instruction once."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset

from .joint_pairs import _PROMPT_COLUMNS, _as_rows, _check_text, _key, _pick_column


logger = logging.getLogger(__name__)

# Columns holding a row's responses, tried in this order when `response_columns` is not given
_RESPONSE_COLUMN_CANDIDATES = (
    ("chosen", "rejected"),
    ("completion",),
    ("response",),
    ("completions",),
    ("responses",),
)


def select_single_responses(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    seed: int = 0,
    prompt_column: str | None = None,
    response_columns: list[str] | None = None,
) -> Dataset:
    """Build D_S (the DOVE paper, Section 4.1): one response per instruction, chosen at random, no repeated instruction.

    The responses of an instruction are all the responses of all its rows (a conditional pair `chosen`/`rejected`
    gives two, a prompt-completion row one, a `completions` list each of its items); rows that repeat an instruction
    (same text, surrounding whitespace ignored; same messages) are merged, so each instruction appears once, at the
    position of its first row. One of its responses is drawn uniformly at random with `random.Random(seed)`, so the
    result depends only on `seed` and the input. The result feeds `build_joint_pairs`. The counts (rows read,
    instructions kept, repeated rows merged) are logged at INFO level.

    Args:
        dataset (`Dataset` or iterable of dicts): Rows with a prompt (`prompt` or `instruction`) and responses, standard
            or conversational.
        seed (`int`, defaults to `0`): Seed of the draw.
        prompt_column (`str`, *optional*): The prompt column; by default `prompt`, else `instruction`.
        response_columns (`list[str]`, *optional*): The columns holding responses (a column may hold a list of
            responses); by default the first present of `chosen` + `rejected`, `completion`, `response`,
            `completions`, `responses`.

    Returns:
        `Dataset` with the columns `prompt` and `completion`, one row per distinct instruction.

    Raises:
        ValueError: a missing column, an empty prompt or response, or a row without any response, naming the row and
            the field.

    Example:

    ```python
    >>> from trl_ranking.data import select_single_responses

    >>> rows = [
    ...     {"prompt": "Name a color.", "chosen": "Blue.", "rejected": "No."},
    ...     {"prompt": "Add 2+2.", "chosen": "4.", "rejected": "5."},
    ...     {"prompt": "Name a color.", "chosen": "Red.", "rejected": "Dunno."},
    ... ]
    >>> single = select_single_responses(rows, seed=0)
    >>> single["prompt"]
    ['Name a color.', 'Add 2+2.']
    ```
    """
    columns, rows = _as_rows(dataset)
    if not rows:
        raise ValueError("the dataset is empty: there is no instruction to select a response for")
    prompt_column = _pick_column(columns, prompt_column, _PROMPT_COLUMNS, "prompt")
    if response_columns is None:
        response_columns = next((list(c) for c in _RESPONSE_COLUMN_CANDIDATES if all(n in columns for n in c)), None)
        if response_columns is None:
            raise ValueError(
                "the dataset has no response column: expected 'chosen' and 'rejected', 'completion', 'response', "
                f"'completions' or 'responses', or pass response_columns (columns: {columns})"
            )
    for name in response_columns:
        if name not in columns:
            raise ValueError(f"the dataset has no '{name}' column for the responses (columns: {columns})")

    prompts: dict[str, Any] = {}
    responses: dict[str, list[Any]] = {}
    for index, row in enumerate(rows):
        prompt = _check_text(row.get(prompt_column), index, prompt_column)
        found = []
        for name in response_columns:
            value = row.get(name)
            is_list_of_responses = isinstance(value, list) and value and not isinstance(value[0], Mapping)
            items = value if is_list_of_responses else [value]
            for position, item in enumerate(items):
                field = f"{name}[{position}]" if is_list_of_responses else name
                found.append(_check_text(item, index, field))
        key = _key(prompt)
        if key not in prompts:
            prompts[key] = prompt
            responses[key] = []
        responses[key].extend(found)

    rng = random.Random(seed)
    out: dict[str, list[Any]] = {"prompt": [], "completion": []}
    for key, prompt in prompts.items():
        out["prompt"].append(prompt)
        out["completion"].append(rng.choice(responses[key]))
    logger.info(
        "select_single_responses: %d rows, %d instructions kept with one response each, %d repeated rows merged",
        len(rows),
        len(prompts),
        len(rows) - len(prompts),
    )
    return Dataset.from_dict(out)
