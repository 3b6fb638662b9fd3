"""The sparse-feedback ratings (Hritikbansal/sparse_feedback) as multi-candidate ranking rows.

The data: `sample_generation.json` lists instructions (with an optional `input`), each with several Alpaca-7B
responses; `feedback_ratings_sample_generation.csv` rates responses 1-7 (GPT-3.5 feedback, written by the upstream
`scripts/llm_feedback_ratings.py`), one CSV record `instruction, input, response, rating` per rated response, with no
header row. A rating the API failed to return is simply missing, so some instructions lack a rating for a response.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset

from .pro_format import PathLike


logger = logging.getLogger(__name__)

ALPACA_PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "
)
"""The Alpaca prompt with an input, as the sparse-feedback reward models read it (`src/ratings/utils.py`)."""

ALPACA_PROMPT_NO_INPUT_TEMPLATE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response: "
)
"""The Alpaca prompt for an instruction without input."""

RATING_RANGE = (1, 7)


def _format_prompt(
    instruction: str, input_text: str, prompt_format: Literal["alpaca", "plain"] | Callable[[str, str], Any]
) -> Any:
    if callable(prompt_format):
        return prompt_format(instruction, input_text)
    if prompt_format == "alpaca":
        if input_text:
            return ALPACA_PROMPT_TEMPLATE.format(instruction=instruction, input=input_text)
        return ALPACA_PROMPT_NO_INPUT_TEMPLATE.format(instruction=instruction)
    if prompt_format == "plain":  # how the rating prompt shows the instruction to the rater
        return f"{instruction}\n\nInput:\n{input_text}" if input_text else instruction
    raise ValueError(f"prompt_format must be 'alpaca', 'plain' or a callable, got {prompt_format!r}")


def _read_ratings(path: Path) -> dict[tuple[str, str, str], list[float]]:
    """`(instruction, input, response) -> [ratings in file order]`; malformed records raise `ValueError`."""
    ratings: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        start_line = 1
        for record_index, record in enumerate(reader):
            line_number = start_line
            start_line = reader.line_num + 1
            if not record:
                continue
            if record_index == 0 and [field.strip().lower() for field in record[:3]] == [
                "instruction",
                "input",
                "response",
            ]:
                continue  # a header row
            if len(record) != 4:
                raise ValueError(
                    f"{path}, line {line_number}: expected 4 fields (instruction, input, response, rating), "
                    f"got {len(record)}"
                )
            try:
                rating = float(record[3])
            except ValueError as error:
                raise ValueError(
                    f"{path}, line {line_number}: field 'rating' is not a number: {record[3]!r}"
                ) from error
            if not (math.isfinite(rating) and RATING_RANGE[0] <= rating <= RATING_RANGE[1]):
                raise ValueError(
                    f"{path}, line {line_number}: field 'rating' is {record[3]!r}, outside {RATING_RANGE[0]}-"
                    f"{RATING_RANGE[1]}"
                )
            ratings[(record[0], record[1], record[2])].append(rating)
    return ratings


def _read_responses(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        try:
            entries = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from error
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of instructions, got {type(entries).__name__}")
    for index, entry in enumerate(entries):
        where = f"{path}, entry {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        for field in ("instruction", "input"):
            if not isinstance(entry.get(field), str):
                raise ValueError(f"{where}: field '{field}' is missing or not a string")
        responses = entry.get("responses")
        if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{where}: field 'responses' must be a non-empty list of strings")
    return entries


def load_sparse_feedback_rankings(
    directory: PathLike,
    responses_file: str = "sample_generation.json",
    ratings_file: str = "feedback_ratings_sample_generation.csv",
    prompt_format: Literal["alpaca", "plain"] | Callable[[str, str], Any] = "alpaca",
    deduplicate: bool = True,
) -> Dataset:
    """Load the sparse-feedback ratings as ranking rows: `prompt`, `completions` best first, `rewards` (mean rating).

    Each instruction's responses are matched to their ratings by `(instruction, input, response)` text; a response
    text that occurs k times takes the first k ratings recorded for it, in file order. An instruction with any
    response left without a rating is skipped, and the skipped instructions are counted in the log. With
    `deduplicate=True` (the default) identical responses of one instruction are merged into one completion whose
    reward is the mean of their ratings (a ranking of a text against itself teaches nothing); otherwise each
    occurrence stays a completion with its own rating. Completions are sorted by descending reward (stable, ties
    keep the file's order). Instructions left with fewer than two distinct completions are skipped too.

    On the shipped sample (20 instructions x 5 responses, 99 ratings): one instruction misses a rating and is
    skipped, two have a repeated response, so 19 rows come back, 17 with 5 completions and 2 with 4.

    Args:
        directory (`str` or `Path`): The folder holding both files.
        responses_file (`str`, defaults to `"sample_generation.json"`): The instructions and their responses.
        ratings_file (`str`, defaults to `"feedback_ratings_sample_generation.csv"`): The ratings.
        prompt_format (`"alpaca"`, `"plain"` or a callable, defaults to `"alpaca"`): How a prompt is built from the
            instruction and its input: the Alpaca template (how the responses were generated and the reward models
            read them), `"plain"` (`"{instruction}\\n\\nInput:\\n{input}"`, how the raters saw them), or
            `prompt_format(instruction, input)`.
        deduplicate (`bool`, defaults to `True`): Merge identical responses of an instruction.

    Returns:
        `datasets.Dataset` with columns `prompt`, `completions`, `rewards`, `instruction`, `input`.

    Raises:
        ValueError: a malformed ratings record (file, line and field named) or responses entry (file, entry, field).

    Example:

    ```python
    >>> from trl_ranking.data import load_sparse_feedback_rankings

    >>> rankings = load_sparse_feedback_rankings("data/alpaca_generation")
    >>> len(rankings), rankings[0]["rewards"]
    (19, [6.0, 6.0, 5.0, 5.0, 4.0])
    ```
    """
    directory = Path(directory)
    entries = _read_responses(directory / responses_file)
    ratings = _read_ratings(directory / ratings_file)
    used: dict[tuple[str, str, str], int] = defaultdict(int)
    rows: dict[str, list[Any]] = {"prompt": [], "completions": [], "rewards": [], "instruction": [], "input": []}
    skipped_unrated = skipped_short = 0
    for entry in entries:
        instruction, input_text = entry["instruction"], entry["input"]
        texts: list[str] = []
        scores: list[list[float]] = []
        complete = True
        taken: dict[tuple[str, str, str], int] = defaultdict(int)
        for response in entry["responses"]:
            key = (instruction, input_text, response)
            position = used[key] + taken[key]
            if position >= len(ratings.get(key, ())):
                complete = False
                break
            taken[key] += 1
            rating = ratings[key][position]
            if deduplicate and response in texts:
                scores[texts.index(response)].append(rating)
            else:
                texts.append(response)
                scores.append([rating])
        if not complete:
            skipped_unrated += 1
            continue
        for key, count in taken.items():
            used[key] += count
        if len(texts) < 2:
            skipped_short += 1
            continue
        rewards = [sum(values) / len(values) for values in scores]
        order = sorted(range(len(texts)), key=lambda i, rewards=rewards: -rewards[i])
        rows["prompt"].append(_format_prompt(instruction, input_text, prompt_format))
        rows["completions"].append([texts[i] for i in order])
        rows["rewards"].append([rewards[i] for i in order])
        rows["instruction"].append(instruction)
        rows["input"].append(input_text)
    if skipped_unrated:
        logger.warning(
            "load_sparse_feedback_rankings: skipped %d of %d instructions with a response that has no rating",
            skipped_unrated,
            len(entries),
        )
    if skipped_short:
        logger.warning(
            "load_sparse_feedback_rankings: skipped %d instructions with fewer than two distinct responses",
            skipped_short,
        )
    unused = sum(len(values) for values in ratings.values()) - sum(used.values())
    if unused:
        logger.info("load_sparse_feedback_rankings: %d ratings matched no kept response", unused)
    return Dataset.from_dict(rows)
