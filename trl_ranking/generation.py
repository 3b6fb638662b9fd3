"""Batched response generation (sampling answers from a model): used by the evaluation, by `add_completions` to grow
rankings with sampled candidates, and by PRO's self-bootstrapping. A neutral module, so that neither the data tools
nor the evaluation import each other for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from trl.trainer.utils import pad

from trl_ranking.tokenization import is_conversational_value, leading_special_ids, left_truncate_prompt


HH_STOP_STRINGS: tuple[str, ...] = ("\n\nHuman:",)
"""Where an HH-RLHF response ends: the next human turn of the transcript."""

PRO_STOP_STRINGS: tuple[str, ...] = ("Human:", "human:", "Assistant:", "assistant:")
"""The PRO paper's official evaluation cuts a response at the first of these, anywhere in it (`infer_func_now.py`)."""


def is_hh_prompt(prompt: Any) -> bool:
    """Whether `prompt` is an HH-RLHF-style transcript (`"\\n\\nHuman: ... \\n\\nAssistant:"`)."""
    return isinstance(prompt, str) and prompt.lstrip().startswith("Human:") and "Assistant:" in prompt


def truncate_at_stop_strings(text: str, stop_strings: Sequence[str] | None) -> str:
    """Cut `text` at the earliest occurrence of any of `stop_strings` (the stop string itself is removed).

    Example:

    ```python
    >>> truncate_at_stop_strings(" Sure.\\n\\nHuman: thanks", ["\\n\\nHuman:"])
    ' Sure.'
    ```
    """
    if not stop_strings:
        return text
    cut = len(text)
    for stop in stop_strings:
        index = text.find(stop)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def _eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    candidates = [getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id]
    for candidate in candidates:
        if candidate is None:
            continue
        ids.update(candidate if isinstance(candidate, (list, tuple)) else [candidate])
    return ids


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[list[dict[str, str]]],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    *,
    max_prompt_length: int | None = None,
    stop_strings: Sequence[str] | str | None = "auto",
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> list[str]:
    """Generate one response (or `num_return_sequences` responses) per prompt with a causal LM, in batches.

    Prompts are tokenized one by one, optionally left-truncated to `max_prompt_length` tokens (the PRO recipe keeps
    the last 512 - 128 = 384), sorted by length, left-padded into batches of `batch_size` and passed to
    `model.generate` under `torch.no_grad()` with the model in eval mode (its training mode is restored afterwards).
    Only the new tokens are decoded, without special tokens, and cut at the first EOS token and at the first stop
    string. The text is returned as generated (not stripped): after an HH prompt ending in `"Assistant:"` a response
    usually starts with a space, as HH-RLHF completions do.

    Standard prompts get the tokenizer's special tokens (e.g. a BOS token); conversational prompts (lists of
    `{"role", "content"}` messages) are rendered with the tokenizer's chat template and a generation prompt.

    Decoding is greedy (`do_sample=False`, as in the PRO paper's evaluation) unless `generation_kwargs` say
    otherwise; seed with `torch.manual_seed` for reproducible sampling.

    Args:
        model (`PreTrainedModel`): A causal LM (PEFT-wrapped models work too).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer. It is not modified; without a pad token, the EOS token
            pads.
        prompts (`list[str]` or `list[list[dict]]`): The prompts, all standard or all conversational.
        max_new_tokens (`int`, defaults to `128`): Maximum number of new tokens per response.
        batch_size (`int`, defaults to `8`): Prompts per `generate` call.
        max_prompt_length (`int`, *optional*): Keep only the last `max_prompt_length` tokens of each prompt (its
            leading special tokens, e.g. BOS, are kept in front: see `trl_ranking.tokenization.left_truncate_prompt`).
        stop_strings (`list[str]`, `"auto"` or `None`, defaults to `"auto"`):
            Strings that end a response: generation stops there (a `StopStringCriteria`, built once for all
            batches) and the text is cut before them. `"auto"` uses `HH_STOP_STRINGS` (`"\\n\\nHuman:"`, the next turn of
            the transcript) when the prompts are HH-RLHF transcripts and nothing otherwise; `"pro"` uses
            `PRO_STOP_STRINGS` (`"Human:"`, `"human:"`, `"Assistant:"`, `"assistant:"` anywhere, the PRO paper's
            official evaluation); `None` disables stop strings.
        progress_bar (`bool`, defaults to `True`): Show a `tqdm` progress bar over batches.
        **generation_kwargs: Passed to `model.generate` (e.g. `do_sample=True, temperature=0.7`). With
            `num_return_sequences=k` the result has `k` responses per prompt, grouped by prompt.

    Returns:
        `list[str]`: `len(prompts) * num_return_sequences` responses in prompt order.

    Raises:
        ValueError: empty `prompts`, a mix of standard and conversational prompts, conversational prompts with a
            tokenizer that has no chat template, or a tokenizer with neither a pad nor an EOS token.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from trl_ranking.generation import generate_responses

    >>> model = AutoModelForCausalLM.from_pretrained("path/to/policy")
    >>> tokenizer = AutoTokenizer.from_pretrained("path/to/policy")
    >>> generate_responses(model, tokenizer, ["\\n\\nHuman: Hi, who are you?\\n\\nAssistant:"], max_new_tokens=32)
    [' I am an AI assistant. How can I help you today?']
    ```
    """
    from tqdm.auto import tqdm

    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: there is nothing to generate from")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_prompt_length is not None and (not isinstance(max_prompt_length, int) or max_prompt_length < 1):
        raise ValueError(f"max_prompt_length must be a positive integer or None, got {max_prompt_length!r}")
    conversational = [is_conversational_value(prompt) for prompt in prompts]
    if any(conversational) and not all(conversational):
        raise ValueError("prompts mix standard text and conversational messages; use one kind")
    conversational = all(conversational)
    if not conversational:
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(
                    f"prompt {index}: expected a string or a list of {{'role', 'content'}} messages, "
                    f"got {type(prompt).__name__}"
                )
    elif getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("conversational prompts need a tokenizer with a chat template, and this one has none")

    if isinstance(stop_strings, str):
        if stop_strings not in ("auto", "pro"):
            raise ValueError(f"stop_strings must be a list of strings, 'auto', 'pro' or None, got {stop_strings!r}")
        if stop_strings == "pro":
            stop_strings = PRO_STOP_STRINGS
        else:
            stop_strings = HH_STOP_STRINGS if not conversational and any(map(is_hh_prompt, prompts)) else None
    stop_strings = list(stop_strings) if stop_strings else None

    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; set one")
    eos_ids = _eos_token_ids(model, tokenizer)
    num_return_sequences = int(generation_kwargs.get("num_return_sequences", 1))
    generation_kwargs.setdefault("do_sample", False)
    generation_kwargs.setdefault("pad_token_id", pad_token_id)
    if stop_strings:
        # `generate(stop_strings=...)` rebuilds its vocabulary table (~1 s for 50k tokens) on every call: build the
        # criterion once and reuse it for every batch
        from transformers import StoppingCriteriaList, StopStringCriteria

        criteria = StoppingCriteriaList(generation_kwargs.pop("stopping_criteria", None) or [])
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
        generation_kwargs["stopping_criteria"] = criteria

    special_ids = leading_special_ids(tokenizer)  # a left-truncated prompt keeps its leading BOS
    encoded: list[list[int]] = []
    for prompt in prompts:
        if conversational:
            text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            ids = left_truncate_prompt(ids, max_prompt_length, special_ids)
        if not ids:
            raise ValueError("a prompt encodes to no tokens; generation needs at least one")
        encoded.append(list(ids))

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    responses: list[list[str]] = [[] for _ in prompts]
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(
                range(0, len(order), batch_size), desc="Generating", disable=not progress_bar, unit="batch"
            ):
                batch = order[start : start + batch_size]
                rows = [torch.tensor(encoded[i], dtype=torch.long) for i in batch]
                input_ids = pad(rows, padding_value=pad_token_id, padding_side="left")
                attention_mask = pad([torch.ones_like(row) for row in rows], padding_side="left")
                width = input_ids.shape[1]
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    **generation_kwargs,
                )
                sequences = output.sequences if hasattr(output, "sequences") else output
                new_tokens = sequences[:, width:].cpu().tolist()
                for row, tokens in enumerate(new_tokens):
                    cut = next((position for position, token in enumerate(tokens) if token in eos_ids), len(tokens))
                    text = tokenizer.decode(tokens[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                    responses[batch[row // num_return_sequences]].append(truncate_at_stop_strings(text, stop_strings))
    finally:
        if was_training:
            model.train()
    return [response for prompt_responses in responses for response in prompt_responses]
