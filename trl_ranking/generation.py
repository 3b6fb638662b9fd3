"""Batched response generation (sampling answers from a model): used by the evaluation, by `add_completions` to grow
rankings with sampled candidates, and by PRO's self-bootstrapping. A neutral module, so that neither the data tools
nor the evaluation import each other for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from copy import deepcopy
from typing import Any

import torch
from trl.trainer.utils import pad

from trl_ranking.decoding import SUPPORTED_GENERATION_KWARGS, DecodeSettings, slot_decode, supports_slot_decoding
from trl_ranking.precision import bf16_is_fast
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
    engine: str = "auto",
    dtype: torch.dtype | str | None = None,
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
        progress_bar (`bool`, defaults to `True`): Show a `tqdm` progress bar (over answers with the slot decoder,
            over batches with `model.generate`).
        engine (`str`, defaults to `"auto"`): `"slots"` decodes with `trl_ranking.decoding.SlotDecoder`:
            `batch_size` rows decode together and a finished row's slot is refilled with the next prompt at once, in
            one preallocated cache (4-8x `model.generate`'s tokens/s on a CPU, `benchmarks/bench_generation.py`).
            `"generate"` calls `model.generate` per batch of `batch_size` prompts. `"auto"` takes `"slots"` where the
            model and every generation argument allow it (a decoder-only model with full attention; `do_sample`,
            `temperature`, `top_k`, `top_p`, `num_return_sequences`, `min_new_tokens`), else `"generate"`. Greedy
            answers are the same either way up to near ties of the logits (token-identical in float32 in the tests;
            in bfloat16 a different summation order can break a near tie differently). Sampled answers follow the
            same distribution, not the same random stream.
        dtype (`torch.dtype`, `"auto"` or `None`, defaults to `None`): Generate with the model in this precision: a
            converted copy is used (a PEFT adapter merged into it) and the model itself is left as it is. `"auto"`
            takes bfloat16 where it is fast (a GPU with bf16, or a CPU with AMX or AVX512-BF16:
            `trl_ranking.precision`) and the model's own dtype elsewhere; `None` keeps the model's dtype.
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

    if engine not in ("auto", "slots", "generate"):
        raise ValueError(f"engine must be 'auto', 'slots' or 'generate', got {engine!r}")
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; set one")
    eos_ids = _eos_token_ids(model, tokenizer)
    num_return_sequences = int(generation_kwargs.get("num_return_sequences", 1))
    generation_kwargs.setdefault("do_sample", False)
    generation_kwargs.setdefault("pad_token_id", pad_token_id)

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

    with _generation_model(model, dtype) as model:
        # A user's own `stopping_criteria` (or any argument the decoder does not implement) goes to `model.generate`
        unsupported = sorted(set(generation_kwargs) - SUPPORTED_GENERATION_KWARGS)
        if engine == "slots" and not supports_slot_decoding(model):
            raise ValueError(
                f"engine='slots' needs a decoder-only model with full attention whose forward takes `logits_to_keep`; "
                f"{type(model).__name__} is not one: use engine='generate'"
            )
        if engine == "slots" and unsupported:
            raise ValueError(f"engine='slots' does not implement {unsupported}: use engine='generate'")
        use_slots = engine == "slots" or (engine == "auto" and not unsupported and supports_slot_decoding(model))
        was_training = model.training
        model.eval()  # the training mode is restored afterwards
        try:
            if use_slots:
                return _slot_responses(
                    model, tokenizer, encoded, max_new_tokens, batch_size, stop_strings, eos_ids, generation_kwargs,
                    progress_bar,
                )
            return _generate_responses(
                model, tokenizer, encoded, max_new_tokens, batch_size, stop_strings, eos_ids, progress_bar,
                num_return_sequences, generation_kwargs,
            )
        finally:
            if was_training:
                model.train()


def _slot_responses(
    model: Any,
    tokenizer: Any,
    encoded: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    stop_strings: list[str] | None,
    eos_ids: set[int],
    generation_kwargs: dict[str, Any],
    progress_bar: bool = False,
) -> list[str]:
    """`generate_responses` through the slot decoder."""
    stop = None
    if stop_strings:
        # A stop string is found in the decoded tail of the answer: every token decodes to at least one character,
        # except special tokens, so the last (longest stop string + 2) tokens hold any stop string just completed
        tail = max(len(text) for text in stop_strings) + 2

        def stop(tokens: list[int]) -> bool:
            text = tokenizer.decode(tokens[-tail:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            return any(stop_string in text for stop_string in stop_strings)

    settings = DecodeSettings(
        max_new_tokens=max_new_tokens,
        eos_token_ids=frozenset(eos_ids),
        pad_token_id=int(generation_kwargs.get("pad_token_id")),
        do_sample=bool(generation_kwargs.get("do_sample", False)),
        temperature=float(generation_kwargs.get("temperature") or 1.0),
        top_k=generation_kwargs.get("top_k"),
        top_p=generation_kwargs.get("top_p"),
        min_new_tokens=int(generation_kwargs.get("min_new_tokens") or 0),
        stop=stop,
    )
    num_return_sequences = int(generation_kwargs.get("num_return_sequences", 1))
    outputs, _ = slot_decode(
        model, encoded, settings, slots=batch_size, num_return_sequences=num_return_sequences,
        progress_bar=progress_bar,
    )
    return [_decode_answer(tokenizer, tokens, eos_ids, stop_strings) for tokens in outputs]


def _decode_answer(tokenizer: Any, tokens: list[int], eos_ids: set[int], stop_strings: list[str] | None) -> str:
    """An answer's text: its tokens up to the first EOS, decoded without special tokens, cut at the first stop string."""
    cut = next((position for position, token in enumerate(tokens) if token in eos_ids), len(tokens))
    text = tokenizer.decode(tokens[:cut], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return truncate_at_stop_strings(text, stop_strings)


@contextlib.contextmanager
def _generation_model(model: Any, dtype: torch.dtype | str | None) -> Iterator[Any]:
    """`model` itself, or a copy in `dtype` (its PEFT adapter merged) that is dropped afterwards."""
    if dtype == "auto":
        dtype = torch.bfloat16 if bf16_is_fast(_model_device(model)) else None
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError("dtype must be a torch dtype, its name, 'auto' or None")
    current = next(model.parameters()).dtype
    if dtype is None or dtype == current:
        yield model
        return
    copy = deepcopy(model)
    if hasattr(copy, "merge_and_unload"):
        copy = copy.merge_and_unload()
    copy.to(dtype)
    try:
        yield copy
    finally:
        del copy


def _generate_responses(
    model: Any,
    tokenizer: Any,
    encoded: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    stop_strings: list[str] | None,
    eos_ids: set[int],
    progress_bar: bool,
    num_return_sequences: int,
    generation_kwargs: dict[str, Any],
) -> list[str]:
    """`generate_responses` through `model.generate`, a batch of prompts at a time."""
    from tqdm.auto import tqdm

    if stop_strings:
        # `generate(stop_strings=...)` rebuilds its vocabulary table (~1 s for 50k tokens) on every call: build the
        # criterion once and reuse it for every batch
        from transformers import StoppingCriteriaList, StopStringCriteria

        criteria = StoppingCriteriaList(generation_kwargs.pop("stopping_criteria", None) or [])
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
        generation_kwargs["stopping_criteria"] = criteria
    pad_token_id = generation_kwargs["pad_token_id"]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    responses: list[list[str]] = [[] for _ in encoded]
    device = _model_device(model)
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
                answer = _decode_answer(tokenizer, tokens, eos_ids, stop_strings)
                responses[batch[row // num_return_sequences]].append(answer)
    return [response for prompt_responses in responses for response in prompt_responses]
