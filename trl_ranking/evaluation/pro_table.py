"""The PRO paper's automatic evaluation: BLEU against the chosen response and mean sigmoid reward, per test subset."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..generation import generate_responses
from ..tokenization import is_conversational_value
from .metrics import bleu, compute_rewards, pro_bleu


logger = logging.getLogger(__name__)


def _reference_text(value: Any, subset: str, index: int) -> str:
    """A reference response as text: a string, or the content of the assistant message(s) of a conversational one."""
    if isinstance(value, str):
        return value.strip()
    if is_conversational_value(value):
        return "\n".join(str(message.get("content", "")) for message in value).strip()
    raise ValueError(
        f"{subset}, row {index}: the reference must be a string or a list of messages, got {type(value).__name__}"
    )


def _candidates(dataset: Any, subset: str) -> list[list[Any]]:
    """Each row's candidates (`chosen`/`rejected`, or `completions`), to pick the reward model's favourite."""
    columns = dataset.column_names
    if "completions" in columns:
        return [list(completions) for completions in dataset["completions"]]
    if "chosen" in columns and "rejected" in columns:
        return [[c, r] for c, r in zip(dataset["chosen"], dataset["rejected"])]
    raise ValueError(f"{subset}: re-ranking the references needs 'completions' or 'chosen' and 'rejected' columns")


def _reranked_references(dataset: Any, subset: str, scorer: Callable) -> list[str]:
    """The reference of each row: its candidate with the highest reward (the official harmless-base test file)."""
    prompts, candidates = list(dataset["prompt"]), _candidates(dataset, subset)
    flat_prompts = [prompt for prompt, row in zip(prompts, candidates) for _ in row]
    flat = compute_rewards(scorer, flat_prompts, [c for row in candidates for c in row], sigmoid=False)
    references, offset = [], 0
    for index, row in enumerate(candidates):
        scores = flat[offset : offset + len(row)]
        offset += len(row)
        best = max(range(len(row)), key=lambda i, scores=scores: scores[i])  # the first on ties
        references.append(_reference_text(row[best], subset, index))
    return references


def _references(dataset: Any, subset: str, reference_column: str | None) -> list[str]:
    columns = dataset.column_names
    if reference_column is not None:
        if reference_column not in columns:
            raise ValueError(f"{subset}: no column {reference_column!r} (columns: {columns})")
        values = dataset[reference_column]
    elif "chosen" in columns:
        values = dataset["chosen"]
    elif "completions" in columns:
        values = []
        for index, completions in enumerate(dataset["completions"]):
            if not completions:
                raise ValueError(f"{subset}, row {index}: field 'completions' is empty, there is no reference")
            values.append(completions[0])
    else:
        raise ValueError(
            f"{subset}: no reference column: expected 'chosen' (preference rows) or 'completions' (ranking rows, "
            "best first), or pass reference_column"
        )
    return [_reference_text(value, subset, index) for index, value in enumerate(values)]


def format_pro_table(results: Mapping[str, Any]) -> str:
    """Render the result of `evaluate_pro_table_row` as a Markdown table (one line per subset, then the total)."""
    lines = [
        "| subset | examples | BLEU (paper, NLTK) | sacreBLEU | reward (x100) |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = list(results["subsets"].items()) + [("total", results["total"])]
    for name, row in rows:
        lines.append(
            f"| {name} | {row['num_examples']} | {row['bleu']:.2f} | {row['sacrebleu']:.2f} | {row['reward']:.2f} |"
        )
    return "\n".join(lines)


def evaluate_pro_table_row(
    model: Any,
    tokenizer: Any,
    test_sets: Mapping[str, Any],
    scorer: Callable[[list[Any], list[Any]], Sequence[float]],
    output_path: str | Path | None = None,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    max_prompt_length: int | None = 384,
    reference_column: str | None = None,
    rerank_references: Sequence[str] = (),
    stop_strings: Sequence[str] | str | None = "pro",
    save_predictions: bool = False,
    print_table: bool = True,
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> dict[str, Any]:
    """Produce a model's row of the PRO paper's automatic-evaluation table: BLEU and reward on each test subset.

    For every subset the model answers each `prompt` (`generate_responses`: greedy, `max_new_tokens=128`, prompts
    left-truncated to 384 = 512 - 128 tokens, responses cut at the first `"Human:"`, `"human:"`, `"Assistant:"` or
    `"assistant:"`, as the official `infer_func_now.py` does); the responses are stripped and then

    - **BLEU** (`bleu`): the paper's number, `pro_bleu`: NLTK sentence BLEU on raw strings (character n-grams, no
      smoothing), averaged over examples, x100, against the reference response. `sacrebleu` holds the standard
      word-level corpus BLEU (`bleu`) beside it.
    - **reward** (`reward`): mean over examples of `sigmoid(scorer(prompt, response))` **x100**, the scale of the
      paper's table (the official `infer_and_eval_main_reward.py` stores `sigmoid` per example). The official
      reward model (OpenAssistant's `oasst-rm-2-pythia-6.9b-epoch-1`) reads
      `<|prompter|>...<|endoftext|><|assistant|>...<|endoftext|>` text: build the scorer with
      `RewardModelScorer(..., input_format="oasst")`.

    The reference is the official one: the first candidate of the test row (`chosen`, or `completions[0]` as the
    rows are given, so load PRO-format test files with `load_pro_jsonl(..., sort_by_reward=False)`: the official
    test files keep the human-chosen response first for the helpful subsets), or `reference_column`. The official
    harmless-base test file was re-ranked by the reward model, so its first candidate is the reward model's
    favourite: name such subsets in `rerank_references` to take the candidate the `scorer` rewards most.

    The `total` row pools all examples: BLEU and reward averaged over every example (so larger subsets weigh more,
    as the official "Global Eval" does), sacreBLEU over every prediction.

    Args:
        model (`PreTrainedModel`): The causal LM under evaluation.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        test_sets (`dict[str, datasets.Dataset]`): Test subsets by name (e.g. `{"harmless_base": ...,
            "helpful_base": ...}`), preference rows (`prompt`/`chosen`/`rejected`, as `trl_ranking.data.load_hh_rlhf`
            gives) or ranking rows (`prompt`/`completions`), standard or conversational.
        scorer (`Callable[[list, list], list[float]]`): The reward model, e.g. a
            `trl_ranking.rewards.RewardModelScorer`; it gets the prompts as in the dataset and the stripped
            responses as strings.
        output_path (`str` or `Path`, *optional*): Where to save the results as JSON.
        max_new_tokens (`int`, defaults to `128`): Maximum new tokens per response.
        batch_size (`int`, defaults to `8`): Prompts per `generate` call.
        max_prompt_length (`int` or `None`, defaults to `384`): Left-truncate prompts to this many tokens.
        reference_column (`str`, *optional*): Column holding the reference response.
        rerank_references (`list[str]`, defaults to `()`): Subsets whose reference is the candidate the `scorer`
            rewards most (the official harmless-base test file) instead of the first one.
        stop_strings (`list[str]`, `"pro"`, `"auto"` or `None`, defaults to `"pro"`): Passed to
            `generate_responses`; `"pro"` is the official evaluation's cut.
        save_predictions (`bool`, defaults to `False`): Also store the generated responses (per subset, under
            `"predictions"`) in the results and the JSON file.
        print_table (`bool`, defaults to `True`): Print the table (`format_pro_table`).
        progress_bar (`bool`, defaults to `True`): Show `tqdm` progress bars.
        **generation_kwargs: Passed to `model.generate`.

    Returns:
        `dict`: `{"subsets": {name: {"num_examples", "bleu", "sacrebleu", "reward"}}, "total": {...}, "settings":
        {...}}`, plus
        `"predictions"` with `save_predictions=True`.

    Raises:
        ValueError: no test set, an empty test set, or a test set without a `prompt` column or a reference.

    Example:

    ```python
    >>> from trl_ranking.data import load_hh_rlhf
    >>> from trl_ranking.evaluation import evaluate_pro_table_row
    >>> from trl_ranking.rewards import RewardModelScorer

    >>> test_sets = {"harmless_base": load_hh_rlhf("harmless-base/test.jsonl.gz")}
    >>> scorer = RewardModelScorer("OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1", batch_size=16, input_format="oasst")
    >>> results = evaluate_pro_table_row(
    ...     policy, tokenizer, test_sets, scorer, rerank_references=["harmless_base"], output_path="pro_table.json"
    ... )
    | subset | examples | BLEU (paper, NLTK) | sacreBLEU | reward (x100) |
    |---|---:|---:|---:|---:|
    | harmless_base | 2312 | ... | ... | ... |
    | total | 2312 | ... | ... | ... |
    ```
    """
    if not test_sets:
        raise ValueError("test_sets is empty: pass at least one named test subset")
    unknown = sorted(set(rerank_references) - set(test_sets))
    if unknown:
        raise ValueError(f"rerank_references names subsets that are not in test_sets: {unknown}")
    subsets: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[str]] = {}
    all_predictions: list[str] = []
    all_references: list[str] = []
    all_rewards: list[float] = []
    for name, dataset in test_sets.items():
        if len(dataset) == 0:
            raise ValueError(f"{name}: the test set is empty")
        if "prompt" not in dataset.column_names:
            raise ValueError(f"{name}: the test set needs a 'prompt' column (columns: {dataset.column_names})")
        prompts = list(dataset["prompt"])
        if name in rerank_references:
            references = _reranked_references(dataset, name, scorer)
        else:
            references = _references(dataset, name, reference_column)
        responses = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_prompt_length=max_prompt_length,
            stop_strings=stop_strings,
            progress_bar=progress_bar,
            **generation_kwargs,
        )
        responses = [response.strip() for response in responses]
        rewards = compute_rewards(scorer, prompts, responses, sigmoid=True)
        subsets[name] = {
            "num_examples": len(prompts),
            "bleu": pro_bleu(responses, references),
            "sacrebleu": bleu(responses, references),
            "reward": 100.0 * sum(rewards) / len(rewards),
        }
        predictions[name] = responses
        all_predictions.extend(responses)
        all_references.extend(references)
        all_rewards.extend(rewards)

    results: dict[str, Any] = {
        "subsets": subsets,
        "total": {
            "num_examples": len(all_predictions),
            "bleu": pro_bleu(all_predictions, all_references),
            "sacrebleu": bleu(all_predictions, all_references),
            "reward": 100.0 * sum(all_rewards) / len(all_rewards),
        },
        "settings": {
            "bleu": "the PRO paper's BLEU: mean NLTK sentence_bleu on raw strings (character n-grams), x100",
            "sacrebleu": "sacreBLEU corpus BLEU (0-100)",
            "reward": "mean sigmoid(reward model logit) x100",
            "rerank_references": list(rerank_references),
            "stop_strings": stop_strings
            if isinstance(stop_strings, str) or stop_strings is None
            else list(stop_strings),
            "max_new_tokens": max_new_tokens,
            "max_prompt_length": max_prompt_length,
            "generation_kwargs": {key: repr(value) for key, value in generation_kwargs.items()},
        },
    }
    if save_predictions:
        results["predictions"] = predictions
    if output_path is not None:
        write_results_json(results, output_path)
        logger.info("evaluate_pro_table_row: results saved to %s", output_path)
    if print_table:
        print(format_pro_table(results))
    return results


def write_results_json(results: Mapping[str, Any], output_path: str | Path) -> None:
    """Write an evaluation's results as indented UTF-8 JSON, creating the parent folder."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
