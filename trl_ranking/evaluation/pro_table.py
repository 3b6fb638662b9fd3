"""The PRO paper's automatic evaluation: BLEU against the chosen response and mean sigmoid reward, per test subset."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_ranking.data.ranking import is_messages

from .generation import generate_responses
from .metrics import bleu, compute_rewards


logger = logging.getLogger(__name__)


def _reference_text(value: Any, subset: str, index: int) -> str:
    """A reference response as text: a string, or the content of the assistant message(s) of a conversational one."""
    if isinstance(value, str):
        return value.strip()
    if is_messages(value):
        return "\n".join(str(message.get("content", "")) for message in value).strip()
    raise ValueError(
        f"{subset}, row {index}: the reference must be a string or a list of messages, got {type(value).__name__}"
    )


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
    """Render the result of [`evaluate_pro_table_row`] as a Markdown table (one line per subset, then the total)."""
    lines = ["| subset | examples | BLEU | reward |", "|---|---:|---:|---:|"]
    rows = list(results["subsets"].items()) + [("total", results["total"])]
    for name, row in rows:
        lines.append(f"| {name} | {row['num_examples']} | {row['bleu']:.2f} | {row['reward']:.4f} |")
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
    save_predictions: bool = False,
    print_table: bool = True,
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> dict[str, Any]:
    """Produce a model's row of the PRO paper's automatic-evaluation table: BLEU and reward on each test subset.

    For every subset the model answers each `prompt` ([`generate_responses`]: greedy, `max_new_tokens=128`, prompts
    left-truncated to 384 = 512 - 128 tokens, HH responses stopped at the next `"\\n\\nHuman:"`, as the official
    evaluation does); the responses are stripped and then

    - **BLEU**: sacreBLEU corpus BLEU (0-100) against the reference response, the chosen response of the test pair
      (`chosen`, or the first of the best-first `completions`, or `reference_column`). The official scripts average
      NLTK sentence BLEU instead; see [`bleu`].
    - **reward**: mean over examples of `sigmoid(scorer(prompt, response))` (0-1), as the official
      `infer_and_eval_main_reward.py` computes it. The official reward model (OpenAssistant's
      `oasst-rm-2-pythia-6.9b-epoch-1`) reads `<|prompter|>...<|endoftext|><|assistant|>...<|endoftext|>` text: wrap
      the scorer to reformat if your reward model expects that template.

    The `total` row pools all examples: corpus BLEU over every prediction, reward averaged over every example (so
    larger subsets weigh more, as the official "Global Eval" does).

    Args:
        model (`PreTrainedModel`): The causal LM under evaluation.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        test_sets (`dict[str, datasets.Dataset]`): Test subsets by name (e.g. `{"harmless_base": ...,
            "helpful_base": ...}`), preference rows (`prompt`/`chosen`/`rejected`, as [`~trl_ranking.data.load_hh_rlhf`]
            gives) or ranking rows (`prompt`/`completions`), standard or conversational.
        scorer (`Callable[[list, list], list[float]]`): The reward model, e.g. a
            [`~trl_ranking.rewards.RewardModelScorer`]; it gets the prompts as in the dataset and the stripped
            responses as strings.
        output_path (`str` or `Path`, *optional*): Where to save the results as JSON.
        max_new_tokens (`int`, defaults to `128`): Maximum new tokens per response.
        batch_size (`int`, defaults to `8`): Prompts per `generate` call.
        max_prompt_length (`int` or `None`, defaults to `384`): Left-truncate prompts to this many tokens.
        reference_column (`str`, *optional*): Column holding the reference response.
        save_predictions (`bool`, defaults to `False`): Also store the generated responses (per subset, under
            `"predictions"`) in the results and the JSON file.
        print_table (`bool`, defaults to `True`): Print the table ([`format_pro_table`]).
        progress_bar (`bool`, defaults to `True`): Show `tqdm` progress bars.
        **generation_kwargs: Passed to `model.generate`.

    Returns:
        `dict`: `{"subsets": {name: {"num_examples", "bleu", "reward"}}, "total": {...}, "settings": {...}}`, plus
        `"predictions"` with `save_predictions=True`.

    Raises:
        ValueError: no test set, an empty test set, or a test set without a `prompt` column or a reference.

    Example:

    ```python
    >>> from trl_ranking.data import load_hh_rlhf
    >>> from trl_ranking.evaluation import evaluate_pro_table_row
    >>> from trl_ranking.rewards import RewardModelScorer

    >>> test_sets = {"harmless_base": load_hh_rlhf("harmless-base/test.jsonl.gz")}
    >>> scorer = RewardModelScorer("OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1", batch_size=16)
    >>> results = evaluate_pro_table_row(policy, tokenizer, test_sets, scorer, output_path="pro_table.json")
    | subset | examples | BLEU | reward |
    |---|---:|---:|---:|
    | harmless_base | 2307 | ... | ... |
    | total | 2307 | ... | ... |
    ```
    """
    if not test_sets:
        raise ValueError("test_sets is empty: pass at least one named test subset")
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
        references = _references(dataset, name, reference_column)
        responses = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_prompt_length=max_prompt_length,
            progress_bar=progress_bar,
            **generation_kwargs,
        )
        responses = [response.strip() for response in responses]
        rewards = compute_rewards(scorer, prompts, responses, sigmoid=True)
        subsets[name] = {
            "num_examples": len(prompts),
            "bleu": bleu(responses, references),
            "reward": sum(rewards) / len(rewards),
        }
        predictions[name] = responses
        all_predictions.extend(responses)
        all_references.extend(references)
        all_rewards.extend(rewards)

    results: dict[str, Any] = {
        "subsets": subsets,
        "total": {
            "num_examples": len(all_predictions),
            "bleu": bleu(all_predictions, all_references),
            "reward": sum(all_rewards) / len(all_rewards),
        },
        "settings": {
            "bleu": "sacreBLEU corpus BLEU (0-100) against the chosen response",
            "reward": "mean sigmoid(reward model logit) (0-1)",
            "max_new_tokens": max_new_tokens,
            "max_prompt_length": max_prompt_length,
            "generation_kwargs": {key: repr(value) for key, value in generation_kwargs.items()},
        },
    }
    if save_predictions:
        results["predictions"] = predictions
    if output_path is not None:
        output_path = Path(output_path)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        logger.info("evaluate_pro_table_row: results saved to %s", output_path)
    if print_table:
        print(format_pro_table(results))
    return results
