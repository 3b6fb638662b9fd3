"""The DOVE paper's jsonl format (Hritikbansal/dove) to joint preference rows and back.

One JSON object a line, `{"i_chosen", "r_chosen", "i_reject", "r_reject"}`: the instruction and response of the
preferred pair and of the rejected pair. With `i_chosen == i_reject` the row is a conditional pair (ordinary DPO
data); otherwise a joint pair over two different instructions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..tokenization import is_conversational_value
from .jsonl import PathLike, as_files, iter_jsonl, open_text


logger = logging.getLogger(__name__)

DOVE_PROMPT_TEMPLATE = "### Instructions: {instruction}\n\n### Response:"
"""The prompt template of the official DOVE training code (`dove/utils.py`, `fmt_prompt`) for Anthropic-helpful."""

DOVE_TLDR_PROMPT_TEMPLATE = (
    "### Instructions: You are given a social media post, summarize it accordingly. \nPost: {instruction}\n\n"
    "### Response:"
)
"""The official template for the TL;DR summarisation data."""

_FIELDS = ("i_chosen", "r_chosen", "i_reject", "r_reject")


def _check_template(prompt_template: str | None) -> tuple[str, str] | None:
    if prompt_template is None:
        return None
    if prompt_template.count("{instruction}") != 1:
        raise ValueError(f"prompt_template must contain '{{instruction}}' exactly once, got {prompt_template!r}")
    head, tail = prompt_template.split("{instruction}")
    return head, tail


def load_dove_jsonl(
    data_files: PathLike | list[PathLike],
    prompt_template: str | None = None,
    conversational: bool = False,
) -> Dataset:
    """Load DOVE-format jsonl (gzipped or not) as joint preference rows.

    Each line gives one row `chosen_prompt`, `chosen`, `rejected_prompt`, `rejected` (the DOVE trainer's joint
    format; a `DPOTrainer`-style row with one shared `prompt` is the conditional special case).

    Args:
        data_files (`str`, `Path` or list of them): The jsonl file(s).
        prompt_template (`str`, *optional*): Format the instructions with it, e.g. `DOVE_PROMPT_TEMPLATE` (the
            official `"### Instructions: {instruction}\\n\\n### Response:"`) to train on the text the paper trained
            on. By default the instruction is kept as it is (for a tokenizer's chat template to format).
        conversational (`bool`, defaults to `False`): Return TRL messages: each prompt a user message, each
            response an assistant message. Cannot be combined with `prompt_template`.

    Raises:
        ValueError: a malformed record, naming the file, the row (from 0) and the field.

    Example:

    ```python
    >>> from trl_ranking.data import DOVE_PROMPT_TEMPLATE, load_dove_jsonl

    >>> dataset = load_dove_jsonl("anthropic_helpful/val_conditional_pref.jsonl", prompt_template=DOVE_PROMPT_TEMPLATE)
    >>> dataset[0]["chosen_prompt"]
    "### Instructions: I'm going to a party and need to bring chips and dip. What are some popular dip ideas?\\n\\n### Response:"
    ```
    """
    if conversational and prompt_template is not None:
        raise ValueError("prompt_template formats text prompts; it cannot be combined with conversational=True")
    _check_template(prompt_template)
    rows: dict[str, list[Any]] = {"chosen_prompt": [], "chosen": [], "rejected_prompt": [], "rejected": []}
    for file in as_files(data_files):
        for row, line, record in iter_jsonl(file):
            for field in _FIELDS:
                if not isinstance(record.get(field), str):
                    raise ValueError(f"{file}, row {row} (line {line}): field '{field}' is missing or not a string")
            pairs = (
                ("chosen", record["i_chosen"], record["r_chosen"]),
                ("rejected", record["i_reject"], record["r_reject"]),
            )
            for side, instruction, response in pairs:
                if conversational:
                    rows[f"{side}_prompt"].append([{"role": "user", "content": instruction}])
                    rows[side].append([{"role": "assistant", "content": response}])
                else:
                    prompt = prompt_template.format(instruction=instruction) if prompt_template else instruction
                    rows[f"{side}_prompt"].append(prompt)
                    rows[side].append(response)
    return Dataset.from_dict(rows)


def _instruction(value: Any, template: tuple[str, str] | None, where: str) -> str:
    if is_conversational_value(value):
        if len(value) != 1 or value[0].get("role") != "user":
            raise ValueError(f"{where}: a conversational prompt must be a single user message for the DOVE format")
        value = str(value[0].get("content", ""))
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string or messages, got {type(value).__name__}")
    if template is not None:
        head, tail = template
        if not (value.startswith(head) and value.endswith(tail) and len(value) >= len(head) + len(tail)):
            raise ValueError(
                f"{where}: the prompt does not match prompt_template, so its instruction cannot be recovered"
            )
        value = value[len(head) : len(value) - len(tail)]
    return value


def _response(value: Any, where: str) -> str:
    if is_conversational_value(value):
        if len(value) != 1 or value[0].get("role") != "assistant":
            raise ValueError(f"{where}: a conversational response must be a single assistant message")
        return str(value[0].get("content", ""))
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string or messages, got {type(value).__name__}")
    return value


def save_dove_jsonl(dataset: Dataset, path: PathLike, prompt_template: str | None = None) -> None:
    """Write joint preference rows as DOVE-format jsonl, gzipped if `path` ends in `.gz`; the inverse of `load_dove_jsonl`.

    Rows are joint (`chosen_prompt`, `chosen`, `rejected_prompt`, `rejected`) or conditional (one `prompt` for both,
    as in `DPOTrainer` datasets), standard or conversational (a single user message and a single assistant message).
    Pass the `prompt_template` the rows were loaded with to write the bare instructions back.

    Raises:
        ValueError: a row without the needed columns, or a prompt that does not match `prompt_template`, naming the
            row and the field.
    """
    template = _check_template(prompt_template)
    columns = set(dataset.column_names)
    if {"chosen_prompt", "rejected_prompt"} <= columns:
        prompt_fields = ("chosen_prompt", "rejected_prompt")
    elif "prompt" in columns:
        prompt_fields = ("prompt", "prompt")
    else:
        raise ValueError("expected joint rows (chosen_prompt/rejected_prompt) or conditional rows (prompt)")
    if not {"chosen", "rejected"} <= columns:
        raise ValueError("expected 'chosen' and 'rejected' columns")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_text(path, "w") as handle:
        for index, example in enumerate(dataset):
            record = {
                "i_chosen": _instruction(
                    example[prompt_fields[0]], template, f"row {index}, field '{prompt_fields[0]}'"
                ),
                "r_chosen": _response(example["chosen"], f"row {index}, field 'chosen'"),
                "i_reject": _instruction(
                    example[prompt_fields[1]], template, f"row {index}, field '{prompt_fields[1]}'"
                ),
                "r_reject": _response(example["rejected"], f"row {index}, field 'rejected'"),
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("save_dove_jsonl: wrote %d rows to %s", len(dataset), path)
