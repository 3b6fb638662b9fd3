"""Tokenizing a prompt with one or more completions, as `DPOTrainer` does for its chosen/rejected pair.

Shared by the PRO and DOVE trainers so that both see exactly the tokens TRL's DPO would: standard text gets the EOS
token appended to each completion, conversational rows go through the chat template, and the completion starts where
the tokenized prompt and the tokenized prompt+completion diverge (`trl.data_utils.common_prefix_length`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from trl.data_utils import _tokenize, common_prefix_length, is_conversational


logger = logging.getLogger(__name__)


def is_conversational_value(value: Any) -> bool:
    """Whether a prompt or completion is a list of chat messages: TRL's `is_conversational` on one value (the one
    check of the package; an empty list holds no message and is not conversational)."""
    return isinstance(value, list) and len(value) > 0 and is_conversational({"prompt": value})


def is_empty_text(value: Any) -> bool:
    """Whether a prompt or completion is empty: a blank string, no messages, or only messages with blank content."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or all(not str(message.get("content") or "").strip() for message in value)
    return value is None


def chat_template_kwargs_of(example: dict[str, Any]) -> dict[str, Any]:
    """The `tools` and `chat_template_kwargs` of a row, as `DPOTrainer` forwards them to the chat template."""
    tools = example.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {"tools": tools, **(example.get("chat_template_kwargs") or {})}


def tokenize_prompt_completions(
    processing_class,
    prompt: str | list[dict[str, Any]],
    completions: list[str | list[dict[str, Any]]],
    eos_token: str | None = None,
    **chat_template_kwargs,
) -> tuple[list[int], list[list[int]]]:
    """Tokenize `prompt` followed by each of `completions`.

    Returns `(prompt_ids, completion_ids)`, where `prompt_ids + completion_ids[i]` is the tokenized
    `prompt + completions[i]`. For standard (string) data, `eos_token` is appended to every completion that does not
    already end with it. The prompt is cut where it stops being a common prefix of every prompt+completion (chat
    templates may render the prompt alone differently, and BPE merges may cross the boundary): that rare case is
    logged once, as `DPOTrainer` does.
    """
    conversational = is_conversational({"prompt": prompt})
    if conversational:
        prompt_ids = _tokenize(processing_class, prompt, add_generation_prompt=True, **chat_template_kwargs)[
            "input_ids"
        ]
        full_ids = [
            _tokenize(processing_class, prompt + completion, **chat_template_kwargs)["input_ids"]
            for completion in completions
        ]
    else:
        if eos_token is not None:
            completions = [c if c.endswith(eos_token) else c + eos_token for c in completions]
        prompt_ids = _tokenize(processing_class, prompt)["input_ids"]
        full_ids = [_tokenize(processing_class, prompt + completion)["input_ids"] for completion in completions]
    prompt_len = min(common_prefix_length(prompt_ids, ids) for ids in full_ids)
    if prompt_len < len(prompt_ids):
        _warn_prefix_once(processing_class, prompt_ids[prompt_len:])
    return prompt_ids[:prompt_len], [ids[prompt_len:] for ids in full_ids]


_warned_prefix = False


def _warn_prefix_once(processing_class, tail: list[int]) -> None:
    global _warned_prefix
    if _warned_prefix:
        return
    _warned_prefix = True
    logger.warning(
        "The tokenized prompt is not a prefix of the tokenized prompt+completion (the chat template renders the "
        "prompt alone differently, or tokens merge across the boundary). The completion starts where they diverge, "
        "and this end of the prompt is left out of the training sequence: %r",
        processing_class.decode(tail),
    )


def left_truncate_prompt(
    prompt_ids: list[int], max_prompt_length: int, special_ids: set[int] | None = None
) -> list[int]:
    """Keep the last `max_prompt_length` tokens of `prompt_ids`, but keep its leading special tokens (e.g. BOS).

    A plain `prompt_ids[-max_prompt_length:]` cuts the BOS token that Llama- or Mistral-style tokenizers put first, and
    a model then reads a prompt that starts mid-text without its start token. The leading run of `special_ids` is kept
    in front of the last `max_prompt_length - len(run)` tokens, so the result has `max_prompt_length` tokens. When the
    run alone fills the budget, the plain cut is used.

    Example:

    ```python
    >>> left_truncate_prompt([1, 10, 11, 12, 13], 3, special_ids={1})
    [1, 12, 13]
    ```
    """
    if len(prompt_ids) <= max_prompt_length:
        return list(prompt_ids)
    lead = 0
    while special_ids and lead < len(prompt_ids) and prompt_ids[lead] in special_ids:
        lead += 1
    if lead == 0 or lead >= max_prompt_length:
        return list(prompt_ids[-max_prompt_length:])
    return list(prompt_ids[:lead]) + list(prompt_ids[len(prompt_ids) - (max_prompt_length - lead) :])


def leading_special_ids(processing_class) -> set[int]:
    """The token ids `left_truncate_prompt` keeps in front of a prompt: the tokenizer's special tokens."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    return set(getattr(tokenizer, "all_special_ids", None) or [])
