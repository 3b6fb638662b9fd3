"""Reading PRO's training rows: a ranking (or a DPO pair) per row, validated, best completion first.

Shared by `PROTrainer._prepare_dataset` and the self-bootstrapper, which reads the raw rows of each chunk.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset, IterableDataset
from trl.data_utils import is_conversational

from ..tokenization import is_empty_text
from ..validation import check_implicit_prompt_sides, check_rewards, check_split_prompt, check_text


def _common_prompt(completions: list) -> tuple[Any, list]:
    """Split an implicit prompt off `completions`: their longest common prefix (of messages, or of characters)."""
    first = completions[0]
    length = min(len(c) for c in completions)
    index = length
    for i in range(length):
        if any(c[i] != first[i] for c in completions[1:]):
            index = i
            break
    if isinstance(first, str) and index > 0 and first[index - 1] == " ":
        index -= 1  # keep the space with the completions, as `trl.extract_prompt` does
    return first[:index], [c[index:] for c in completions]


# Columns of the DOVE trainer's joint format: a PRO row has one prompt for all its candidates
_JOINT_COLUMNS = ("chosen_prompt", "rejected_prompt")


def _rewards_of(example: dict[str, Any]) -> tuple[Any, str]:
    """The raw rewards of a row (`None` when it has none) and the field they come from."""
    if "completions" in example:
        return example.get("rewards"), "rewards"
    if example.get("score_chosen") is not None or example.get("score_rejected") is not None:
        return [example.get("score_chosen"), example.get("score_rejected")], "score_chosen/score_rejected"
    return None, "score_chosen/score_rejected"


def row_has_rewards(example: dict[str, Any]) -> bool:
    """Whether one row carries rewards (`rewards`, or either of `score_chosen`/`score_rejected`)."""
    return _rewards_of(example)[0] is not None


def dataset_has_rewards(dataset: Dataset | IterableDataset, first_example: dict[str, Any], dataset_name: str) -> bool:
    """Whether the rows of `dataset` have rewards: all of them, or none (a mixed dataset is an error naming a row).

    A map-style `Dataset` is checked whole here; an `IterableDataset` is decided by its first row, and `to_ranking`
    rejects any later row that disagrees.
    """
    has_rewards = row_has_rewards(first_example)
    if not isinstance(dataset, Dataset):
        return has_rewards
    columns = [name for name in ("rewards", "score_chosen", "score_rejected") if name in dataset.column_names]
    if not columns:
        return False
    index = 0
    for batch in dataset.select_columns(columns).iter(batch_size=1024):
        for values in zip(*(batch[name] for name in columns)):
            if any(value is not None for value in values) != has_rewards:
                _raise_mixed_rewards(index, has_rewards, "rewards" if "rewards" in columns else "score_chosen")
            index += 1
    return has_rewards


def _raise_mixed_rewards(index: int, first_has_rewards: bool, field: str) -> None:
    state = (
        "is missing its rewards, while row 0 has rewards" if first_has_rewards else "has rewards, but row 0 has none"
    )
    raise ValueError(
        f"Row {index}, field '{field}': the row {state}. Give rewards for every row or for none: with rewards each "
        "ranking is sorted by them and they set the dynamic temperature, so a mixed dataset would be half trained "
        "on an unsorted order. Rank the rows without rewards first (`trl_ranking.data.rank_completions`) or drop "
        "the rewards column."
    )


def to_ranking(
    example: dict[str, Any], index: int, with_rewards: bool, allow_empty: bool = False
) -> tuple[Any, list, list[float] | None]:
    """Read one row as `(prompt, completions best first, rewards descending or None)`, validating it.

    Accepts ranking rows (`prompt`, `completions`, optional `rewards`) and DPO rows (`prompt`, `chosen`, `rejected`,
    optional `score_chosen`/`score_rejected`), each with an explicit or an implicit prompt. When rewards are given the
    completions are sorted by descending reward (stable: ties keep the given order). `with_rewards` says whether the
    dataset has rewards (`dataset_has_rewards`): every row must then have them, and no row may have them otherwise.
    `allow_empty` lets empty completions through: the data tools convert and rank real data, which has some (HH-RLHF
    does), while a trainer cannot learn from an answer with no tokens.

    Raises:
        ValueError: naming the row and the field, for a ranking of fewer than two completions, rewards whose length
            differs from the completions', rewards that are not numbers or not finite in float32, rewards in a row of
            a dataset without rewards (or missing in a dataset with rewards), missing columns, columns of the DOVE
            format, a prompt or completion that is neither text nor chat messages (or has a message with a wrong
            role or no content), or empty completions.
    """
    where = f"Row {index}"
    for name in _JOINT_COLUMNS:
        if example.get(name) is not None:
            raise ValueError(
                f"{where}, field '{name}': a per-side instruction is the joint-pair format of `DOVETrainer`; PRO ranks "
                "completions of one prompt (columns 'prompt', 'completions', optional 'rewards', or "
                "'prompt'/'chosen'/'rejected'). Train this dataset with `DOVETrainer` (`trl-ranking dove`)."
            )
    if "completions" in example:
        completions = example["completions"]
        if not isinstance(completions, list):
            raise ValueError(
                f"{where}, field 'completions': expected a list of completions, got {type(completions).__name__}."
            )
    elif "chosen" in example and "rejected" in example:
        completions = [example["chosen"], example["rejected"]]
    else:
        raise ValueError(
            f"{where}: missing columns. A ranking row needs 'completions' (and 'prompt' unless it is implicit); a "
            f"preference row needs 'chosen' and 'rejected'. Got columns {sorted(example)}."
        )
    rewards, reward_field = _rewards_of(example)
    if len(completions) < 2:
        raise ValueError(
            f"{where}, field 'completions': a ranking needs at least 2 completions, got {len(completions)}."
        )
    fields = ["completions"] * len(completions) if "completions" in example else ["chosen", "rejected"]
    for i, (completion, field) in enumerate(zip(completions, fields)):
        name = f"completions[{i}]" if field == "completions" else field
        if completion is None:
            raise ValueError(f"{where}, field '{name}': the completion is missing (None).")
        check_text(completion, where, name, completion=False)  # types and roles; the completion role rule below
    names = [f"completions[{i}]" if field == "completions" else field for i, field in enumerate(fields)]
    if "prompt" in example and example["prompt"] is not None:
        prompt = example["prompt"]
        check_text(prompt, where, "prompt", completion=False)
        if isinstance(prompt, list) and not prompt:  # TRL's format checks would fail on it with a bare IndexError
            raise ValueError(
                f"{where}, field 'prompt': the prompt is an empty list of messages. Give at least one message, or a "
                "string prompt."
            )
    else:
        if not allow_empty:  # the data tools keep such rows of real data; a trainer cannot learn from them
            check_implicit_prompt_sides(where, list(zip(names, completions)))
        prompt, completions = _common_prompt(completions)
        check_split_prompt(prompt, where, "the completions")
    for i, (completion, field) in enumerate(zip(completions, fields)):
        name = f"completions[{i}]" if field == "completions" else field
        if is_empty_text(completion) and not allow_empty:
            raise ValueError(f"{where}, field '{name}': the completion is empty.")
        check_text(completion, where, name, completion=is_conversational({"prompt": prompt}) and bool(prompt))
    if with_rewards:
        if rewards is None or any(r is None for r in rewards):
            raise ValueError(
                f"{where}, field '{reward_field}': missing rewards (other rows of the dataset have them)."
            )
        if len(rewards) != len(completions):
            raise ValueError(
                f"{where}, field '{reward_field}': {len(rewards)} rewards for {len(completions)} completions."
            )
        rewards = check_rewards(rewards, where, reward_field)
        order = sorted(range(len(completions)), key=lambda i: -rewards[i])
        completions = [completions[i] for i in order]
        rewards = [rewards[i] for i in order]
    else:
        if rewards is not None:
            _raise_mixed_rewards(index, False, reward_field)
        rewards = None
    return prompt, completions, rewards


def read_rankings(dataset: Dataset, dataset_name: str = "input") -> list[tuple[Any, list, list[float] | None]]:
    """Every row of `dataset` read by `to_ranking`, under the dataset's one rewards rule (`dataset_has_rewards`).

    The reader of `save_pro_jsonl`, which converts real data and so lets empty completions through (`allow_empty`);
    an empty dataset gives an empty list. (`rank_completions` and `add_completions` read each row by its own
    rewards, `trl_ranking.data.ranking_view`: they replace or drop the rewards, so a mixed dataset is no harm there.)
    """
    if len(dataset) == 0:
        return []
    with_rewards = dataset_has_rewards(dataset, dataset[0], dataset_name)
    return [to_ranking(example, index, with_rewards, allow_empty=True) for index, example in enumerate(dataset)]
