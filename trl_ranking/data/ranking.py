"""Rank the completions of ranking rows with a scorer, and extend rankings with completions sampled from a model.

Ranking rows (DESIGN.md section 4) hold a `prompt`, its `completions` best first and optional `rewards` (one float per
completion, higher is better). TRL preference rows (`prompt`/`chosen`/`rejected`, optional `score_chosen`/
`score_rejected`) are read as a ranking of two, chosen first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset

from ..generation import generate_responses
from ..pro.rows import row_has_rewards, to_ranking
from ..tokenization import is_conversational_value
from ..validation import check_reward, scorer_output


logger = logging.getLogger(__name__)

Scorer = Callable[[list[Any], list[Any]], Sequence[float]]
"""`scorer(prompts, completions) -> list[float]`: one score per (prompt, completion) pair, higher is better."""

_PREFERENCE_COLUMNS = ("chosen", "rejected", "score_chosen", "score_rejected")


def ranking_view(example: dict[str, Any], index: int = 0) -> tuple[Any, list[Any], list[float] | None]:
    """Read one ranking row or TRL preference row as `(prompt, completions best first, rewards or None)`.

    The same reader `PROTrainer` uses (`trl_ranking.pro.rows.to_ranking`): a preference row is a ranking of two,
    `[chosen, rejected]`, with `[score_chosen, score_rejected]` as rewards; an implicit prompt is split off the
    completions; a row with rewards comes back sorted by them (descending, stable). `rewards` is `None` when the row
    has none.

    Raises:
        ValueError: naming the row and the field (see `to_ranking`): missing columns, fewer than two completions,
            rewards whose length differs from the completions' or that are not finite numbers. Empty completions are
            let through (a trainer rejects them).
    """
    return to_ranking(example, index, with_rewards=row_has_rewards(example), allow_empty=True)


def rank_completions(
    dataset: Dataset,
    scorer: Scorer,
    *,
    rows_per_call: int = 64,
    progress_bar: bool = True,
) -> Dataset:
    """Score every completion of every row with `scorer` and sort the completions best first.

    This is the PRO paper's "affordable preference ranking": a reward model orders candidates that no human ranked.
    Each row's `completions` are replaced by the same completions sorted by descending score and `rewards` by the
    sorted scores; ties keep their input order (the sort is stable). Other columns are kept. TRL preference rows
    (`chosen`/`rejected`) are read as a ranking of two and come back as ranking rows (their `chosen`, `rejected`,
    `score_chosen` and `score_rejected` columns are replaced by `completions` and `rewards`).

    The scorer sees the values as they are in the dataset: strings for standard rows, lists of messages for
    conversational rows (a prompt is a list of `{"role", "content"}` messages and a completion a list holding the
    assistant message). `trl_ranking.rewards.RewardModelScorer` renders conversational pairs with the tokenizer's
    chat template and standard pairs by concatenating prompt and completion; a custom scorer must accept whichever
    form the dataset holds.

    Args:
        dataset (`datasets.Dataset`):
            Ranking rows (`prompt`, `completions`, optional `rewards`, which are overwritten) or preference rows.
        scorer (`Callable[[list, list], list[float]]`):
            `scorer(prompts, completions)` returning one finite score per pair, higher is better, e.g. a
            `trl_ranking.rewards.RewardModelScorer`.
        rows_per_call (`int`, defaults to `64`):
            Number of rows whose pairs go to the scorer in one call (the scorer batches inside a call).
        progress_bar (`bool`, defaults to `True`):
            Show a `tqdm` progress bar.

    Returns:
        `datasets.Dataset`: the rows with `completions` sorted best first and `rewards` the matching scores.

    Raises:
        ValueError: the scorer returns the wrong number of scores for a call (the rows of that call are named) or a
            non-finite score (the row and the completion are named); a row is not a ranking or preference row.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_ranking.data import rank_completions

    >>> dataset = Dataset.from_dict({"prompt": ["2+2="], "completions": [[" 5", " 4", " four"]]})
    >>> scorer = lambda prompts, completions: [float(c.strip() in ("4", "four")) + len(c) / 10 for c in completions]
    >>> rank_completions(dataset, scorer)[0]
    {'prompt': '2+2=', 'completions': [' four', ' 4', ' 5'], 'rewards': [1.5, 1.2, 0.2]}
    ```
    """
    from tqdm.auto import tqdm

    if not callable(scorer):
        raise ValueError(f"scorer must be a callable scorer(prompts, completions) -> list[float], got {scorer!r}")
    if not isinstance(rows_per_call, int) or rows_per_call < 1:
        raise ValueError(f"rows_per_call must be a positive integer, got {rows_per_call!r}")

    views = [ranking_view(example, index) for index, example in enumerate(dataset)]
    ranked_completions: list[list[Any]] = []
    ranked_rewards: list[list[float]] = []
    for start in tqdm(
        range(0, len(views), rows_per_call), desc="Ranking completions", disable=not progress_bar, unit="call"
    ):
        chunk = views[start : start + rows_per_call]
        prompts = [prompt for prompt, completions, _ in chunk for _ in completions]
        completions = [completion for _, row_completions, _ in chunk for completion in row_completions]
        where = f"rows {start}-{start + len(chunk) - 1}"
        scores = scorer_output(scorer(prompts, completions), len(completions), where)
        offset = 0
        for row_offset, (_, row_completions, _) in enumerate(chunk):
            row_scores = [
                check_reward(score, f"row {start + row_offset}, completion {position} (the scorer's score)")
                for position, score in enumerate(scores[offset : offset + len(row_completions)])
            ]
            offset += len(row_completions)
            order = sorted(range(len(row_scores)), key=lambda i, row_scores=row_scores: -row_scores[i])
            ranked_completions.append([row_completions[i] for i in order])
            ranked_rewards.append([row_scores[i] for i in order])

    return _replace_ranking_columns(dataset, views, ranked_completions, ranked_rewards)


def _replace_ranking_columns(
    dataset: Dataset, views: list[tuple[Any, list[Any], Any]], completions: list[list[Any]], rewards: list | None
) -> Dataset:
    """Return `dataset` with `completions` (and `rewards`, dropped when `None`) replaced, preference columns removed.

    Rows with an implicit prompt get the `prompt` column `ranking_view` split off (`views`), as `PROTrainer` would.
    """
    drop = [name for name in ("completions", "rewards", *_PREFERENCE_COLUMNS) if name in dataset.column_names]
    if "completions" in dataset.column_names:
        drop = [name for name in drop if name in ("completions", "rewards")]
    # else: preference rows became ranking rows, their pair columns now in `completions`
    new: dict[str, list] = {} if "prompt" in dataset.column_names else {"prompt": [prompt for prompt, _, _ in views]}
    new["completions"] = completions
    if rewards is not None:
        new["rewards"] = rewards
    kept = dataset.remove_columns(drop)
    if not kept.column_names:  # a table without columns has no rows to add columns to
        return Dataset.from_dict(new)
    for name, values in new.items():
        kept = kept.add_column(name, values)
    return kept


def add_completions(
    dataset: Dataset,
    model: Any,
    tokenizer: Any,
    num_completions: int = 1,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    max_prompt_length: int | None = None,
    stop_strings: Sequence[str] | str | None = "auto",
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> Dataset:
    """Extend each row's `completions` with `num_completions` responses sampled from a causal LM.

    This is the PRO paper's HH-RLHF_{LLM,i} augmentation: new candidates are generated for every prompt and appended
    after the existing ones; `rank_completions` then orders the extended ranking with a reward model. Generation
    goes through `trl_ranking.generation.generate_responses` (batched, left padding, no gradients, eval mode,
    progress bar, HH-style prompts stopped at the next `"\\n\\nHuman:"` turn). Responses are kept as generated (an
    HH response keeps its leading space, like the dataset's completions); conversational rows get them as
    `[{"role": "assistant", "content": response}]`.

    Existing `rewards` no longer cover the new completions, so the column is dropped (run `rank_completions` to
    score everything again). TRL preference rows are read as a ranking of two (`chosen` first) and come back as
    ranking rows.

    Args:
        dataset (`datasets.Dataset`): Ranking rows (`prompt`, `completions`) or preference rows.
        model (`PreTrainedModel`): The causal LM to sample from.
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer (with a chat template for conversational rows).
        num_completions (`int`, defaults to `1`): Responses to add per row.
        max_new_tokens (`int`, defaults to `128`): Maximum new tokens per response.
        batch_size (`int`, defaults to `8`): Prompts per `generate` call (each gives `num_completions` sequences).
        max_prompt_length (`int`, *optional*): Left-truncate prompts to this many tokens.
        stop_strings (`list[str]`, `"auto"` or `None`, defaults to `"auto"`): See `generate_responses`.
        progress_bar (`bool`, defaults to `True`): Show a `tqdm` progress bar.
        **generation_kwargs: Passed to `model.generate`. Sampling is on (`do_sample=True`) unless you pass
            `do_sample=False`; with greedy decoding `num_completions` must be 1.

    Returns:
        `datasets.Dataset`: the rows with `len(completions)` grown by `num_completions`, without `rewards`.

    Example:

    ```python
    >>> from trl_ranking.data import add_completions, load_hh_rlhf, rank_completions
    >>> from trl_ranking.rewards import RewardModelScorer

    >>> pairs = load_hh_rlhf("harmless-base/test.jsonl.gz", max_rows=100)
    >>> rankings = add_completions(pairs, policy, tokenizer, num_completions=2, temperature=0.8, top_p=0.95)
    >>> rankings = rank_completions(rankings, RewardModelScorer(reward_model, reward_tokenizer, batch_size=16))
    >>> len(rankings[0]["completions"])  # chosen, rejected and two samples, best first
    4
    ```
    """
    if not isinstance(num_completions, int) or num_completions < 1:
        raise ValueError(f"num_completions must be a positive integer, got {num_completions!r}")
    if "num_return_sequences" in generation_kwargs:
        raise ValueError("pass num_completions instead of num_return_sequences")
    generation_kwargs.setdefault("do_sample", True)
    if not generation_kwargs["do_sample"] and num_completions > 1:
        raise ValueError("greedy decoding (do_sample=False) gives one response per prompt; use num_completions=1")

    views = [ranking_view(example, index) for index, example in enumerate(dataset)]
    if any(rewards is not None for _, _, rewards in views):
        logger.info(
            "add_completions: the existing rewards ordered each ranking (best first) but do not cover the new "
            "completions, so they are dropped"
        )
    if not views:
        return _replace_ranking_columns(dataset, [], [], None)
    prompts = [prompt for prompt, _, _ in views]
    responses = generate_responses(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_prompt_length=max_prompt_length,
        stop_strings=stop_strings,
        progress_bar=progress_bar,
        num_return_sequences=num_completions,
        **generation_kwargs,
    )
    extended = []
    for index, (prompt, completions, _) in enumerate(views):
        new = responses[index * num_completions : (index + 1) * num_completions]
        if is_conversational_value(prompt):
            new = [[{"role": "assistant", "content": response}] for response in new]
        extended.append(list(completions) + new)
    return _replace_ranking_columns(dataset, views, extended, None)
