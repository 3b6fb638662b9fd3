"""The DOVE paper's evaluation: win rate against the gold response, ties 1/2, at several sampling temperatures."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..generation import generate_responses
from .metrics import Judge, pairwise_win_rate
from .pro_table import write_results_json


logger = logging.getLogger(__name__)

DOVE_TEMPERATURES: tuple[float, ...] = (0.001, 0.5, 1.0)
"""The sampling temperatures of the DOVE paper's tables (`dove/inference.py --temp`)."""


def format_dove_table(results: Mapping[str, Any]) -> str:
    """Render the result of `evaluate_dove_win_rates` as a Markdown table, one line per temperature."""
    lines = [
        "| temperature | judged | failed | win | tie | lose | win rate (ties 1/2) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["temperatures"]:
        lines.append(
            f"| {row['temperature']:g} | {row['num_judged']} | {row['failed']} | {100 * row['win']:.2f} | "
            f"{100 * row['tie']:.2f} | {100 * row['lose']:.2f} | {row['win_rate']:.2f} |"
        )
    return "\n".join(lines)


def evaluate_dove_win_rates(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    gold_responses: Sequence[Any],
    judge: Judge,
    output_path: str | Path | None = None,
    *,
    temperatures: Sequence[float] = DOVE_TEMPERATURES,
    max_new_tokens: int = 400,
    batch_size: int = 8,
    max_prompt_length: int | None = None,
    seed: int = 0,
    judge_batch_size: int = 32,
    save_predictions: bool = False,
    print_table: bool = True,
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> dict[str, Any]:
    """Produce a model's row of the DOVE paper's tables: win rate against the gold response at each temperature.

    As the official scripts do (`dove/inference.py`, `dove/auto_eval.py`), for each temperature the model samples one
    response per prompt (`do_sample=True`, `temperature=t`, at most 400 new tokens, no stop string; seeded with
    `torch.manual_seed(seed)` before each temperature), and the judge compares it with the gold response in both
    orders (`pairwise_win_rate` with `rule="dove"`): the model wins when preferred in both orders, loses when the
    gold is, and a flip is a tie. The win rate is `100 * (win + tie / 2)` over the judged prompts; a prompt on which
    the judge gave no verdict (`None`) is skipped and counted in `failed`, as the official script skips it.

    The prompts are given to the model and to the judge as they are: the official evaluation formats each
    instruction with the training template (`"### Instructions: {instruction}\\n\\n### Response:"`, or the TL;DR one)
    and shows the judge that formatted prompt. Sampling uses `generate`'s defaults otherwise (the official script
    keeps transformers' default `top_k=50`), overridable with `generation_kwargs`.

    Args:
        model (`PreTrainedModel`): The causal LM under evaluation.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        prompts (`list`): The formatted prompts (500 test instructions in the paper).
        gold_responses (`list`): The gold response of each prompt (`gold_response` of the DOVE test files).
        judge (`Callable[[tuple, tuple], int | None]`): The judge, e.g. an
            `trl_ranking.judges.OpenAIChatJudge` (the paper: GPT-3.5-turbo) or a
            `trl_ranking.judges.RewardModelJudge`.
        output_path (`str` or `Path`, *optional*): Where to save the results as JSON.
        temperatures (`list[float]`, defaults to `(0.001, 0.5, 1.0)`): The sampling temperatures.
        max_new_tokens (`int`, defaults to `400`): Maximum new tokens per response (the official value).
        batch_size (`int`, defaults to `8`): Prompts per `generate` call.
        max_prompt_length (`int`, *optional*): Left-truncate prompts to this many tokens.
        seed (`int`, defaults to `0`): Seed set before sampling at each temperature.
        judge_batch_size (`int`, defaults to `32`): Prompts per `judge_batch` call.
        save_predictions (`bool`, defaults to `False`): Keep the responses of each temperature in the results.
        print_table (`bool`, defaults to `True`): Print the table (`format_dove_table`).
        progress_bar (`bool`, defaults to `True`): Show progress bars.
        **generation_kwargs: Passed to `model.generate` (e.g. `top_k=0`).

    Returns:
        `dict`: `{"temperatures": [{"temperature", "win_rate", "win", "tie", "lose", "num_judged", "failed"}, ...],
        "settings": {...}}`, with `"predictions"` per temperature when `save_predictions=True`.

    Raises:
        ValueError: empty or mismatched prompts and gold responses, or a temperature that is not positive.
    """
    prompts, gold_responses = list(prompts), list(gold_responses)
    if not prompts:
        raise ValueError("prompts is empty: there is nothing to evaluate")
    if len(prompts) != len(gold_responses):
        raise ValueError(f"{len(prompts)} prompts but {len(gold_responses)} gold responses; they must match")
    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be a non-empty list of positive numbers, got {temperatures}")
    generation_kwargs.setdefault("do_sample", True)
    rows, predictions = [], {}
    for temperature in temperatures:
        torch.manual_seed(seed)
        responses = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_prompt_length=max_prompt_length,
            stop_strings=None,
            progress_bar=progress_bar,
            temperature=temperature,
            **generation_kwargs,
        )
        rates = pairwise_win_rate(
            judge, prompts, responses, gold_responses, rule="dove", batch_size=judge_batch_size, progress_bar=False
        )
        rows.append({"temperature": temperature, **rates, "win_rate": 100.0 * rates["win_rate"]})
        predictions[str(temperature)] = responses
        logger.info("DOVE evaluation at temperature %g: win rate %.2f", temperature, 100.0 * rates["win_rate"])
    results: dict[str, Any] = {
        "temperatures": rows,
        "settings": {
            "win_rate": "100 * (win + tie / 2) against the gold response, judged in both orders (a flip is a tie)",
            "num_prompts": len(prompts),
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "generation_kwargs": {key: repr(value) for key, value in generation_kwargs.items()},
        },
    }
    if save_predictions:
        results["predictions"] = predictions
    if output_path is not None:
        write_results_json(results, output_path)
    if print_table:
        print(format_dove_table(results))
    return results
