"""The DOVE data protocol: judge-labelled joint pairs (D_H) and conditional pairs (D_C).

From the DOVE paper (arXiv 2404.00530, Section 4.1): conditional pairs D_C compare the two responses to one
instruction; D_S keeps one response per instruction; joint pairs D_H match each (I_i, R_i) in D_S with another
(I_j, R_j) of a different instruction. A judge is asked each comparison in both orders, and a pair is kept only when
the two answers agree: a flip is a tie, and ties are dropped. A comparison for which the judge gives no verdict in
either order (`None`: an unparseable reply or a failed call) is skipped and counted as `failed`, as the official code
skips it; it is never read as a tie or a win. The paper trains on D_C together with D_H.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from ..judges import Judge, Pair, validate_judgement


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairStats:
    """Counts from a pair builder.

    Attributes:
        rows (`int`): Input rows.
        asked (`int`): Comparisons judged (each asked in both orders).
        kept (`int`): Comparisons whose two orders agreed: the output rows.
        ties (`int`): Comparisons whose answer flipped with the order (dropped). Conditional rows whose two responses
            are identical count as ties without asking the judge.
        failed (`int`): Comparisons skipped because the judge gave no verdict (`None`: an unparseable reply or a
            failed call) in at least one of the two orders. Neither a tie nor a win: `asked = kept + ties + failed`.
        unpaired (`int`): Rows for which fewer than `num_pairs_per_row` partners could be drawn (joint pairs only: no
            row with a different instruction left that is not already paired with it).
        judge_calls (`int`): Calls made to the judge (two per comparison, fewer for skipped identical responses).
    """

    rows: int
    asked: int
    kept: int
    ties: int
    unpaired: int = 0
    judge_calls: int = 0
    failed: int = 0

    @property
    def tie_rate(self) -> float:
        """Fraction of the comparisons asked that were ties."""
        return self.ties / self.asked if self.asked else 0.0

    @property
    def failure_rate(self) -> float:
        """Fraction of the comparisons asked that were skipped for want of a verdict."""
        return self.failed / self.asked if self.asked else 0.0

    def __str__(self) -> str:
        text = f"{self.asked} comparisons asked in both orders: {self.kept} kept, {self.ties} dropped as ties"
        text += f" ({100 * self.tie_rate:.1f}%)"
        if self.failed:
            text += f", {self.failed} skipped without a verdict ({100 * self.failure_rate:.1f}%)"
        if self.unpaired:
            text += f", {self.unpaired} rows without a partner"
        return text


_PROMPT_COLUMNS = ("prompt", "instruction")
_COMPLETION_COLUMNS = ("completion", "response")
_TWO_COLUMN_CANDIDATES = (("completion_a", "completion_b"), ("response_0", "response_1"), ("response_a", "response_b"))
_LIST_COLUMN_CANDIDATES = ("completions", "responses")


def _as_rows(dataset: Dataset | Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    if isinstance(dataset, Dataset):
        return list(dataset.column_names), dataset.to_list()
    rows = []
    for index, row in enumerate(dataset):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {index}: expected a mapping of column names to values, got {type(row).__name__}")
        rows.append(dict(row))
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns, rows


def _pick_column(columns: Sequence[str], requested: str | None, candidates: Sequence[str], role: str) -> str:
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"the dataset has no '{requested}' column for the {role} (columns: {list(columns)})")
        return requested
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise ValueError(
        f"the dataset has no {role} column: expected one of {list(candidates)} or an explicit column name "
        f"(columns: {list(columns)})"
    )


def _check_text(value: Any, index: int, field: str) -> Any:
    """Validate one prompt or completion (a non-empty string or a non-empty list of messages) and return it."""
    where = f"row {index}: field '{field}'"
    if value is None:
        raise ValueError(f"{where} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where} is empty")
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{where} is an empty list of messages")
        for turn_index, turn in enumerate(value):
            if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
                raise ValueError(f"{where}: message {turn_index} is not a {{'role', 'content'}} mapping")
            content = turn["content"]
            if not isinstance(content, str) or not content.strip():
                raise ValueError(f"{where}: message {turn_index} has empty or non-text content")
        return [dict(turn) for turn in value]
    raise ValueError(f"{where} must be a string or a list of messages, got {type(value).__name__}")


def _key(value: Any) -> str:
    """A hashable identity for a prompt or completion (surrounding whitespace of text ignored)."""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# A share of comparisons without a verdict above which the builders warn (besides the count they always log)
FAILURE_WARNING_RATE = 0.1
TIE = "tie"
NO_VERDICT = "no verdict"


def _judge_both_orders(
    judge: Judge,
    comparisons: list[tuple[Pair, Pair, str, str, str]],
    batch_size: int,
    progress_bar: bool = True,
    desc: str = "Judging",
) -> tuple[list[int | str], int]:
    """Ask each comparison `(first, second, where, first_name, second_name)` in both orders, with a progress bar over
    the judge calls.

    Returns, per comparison, the preferred side (0 = first, 1 = second), `TIE` (the answer flipped with the order) or
    `NO_VERDICT` (the judge answered `None` in at least one order), and the number of judge calls.
    """
    calls: list[tuple[Pair, Pair, str]] = []
    for first, second, where, first_name, second_name in comparisons:
        calls.append((first, second, f"{where}, asked as ({first_name}, {second_name})"))
        calls.append((second, first, f"{where}, asked as ({second_name}, {first_name})"))
    answers: list[int | None] = []
    judge_batch = getattr(judge, "judge_batch", None)
    with tqdm(total=len(calls), desc=desc, unit="judgement", disable=not progress_bar) as progress:
        if callable(judge_batch):
            for start in range(0, len(calls), 2 * batch_size):
                chunk = calls[start : start + 2 * batch_size]
                try:
                    results = list(judge_batch([call[0] for call in chunk], [call[1] for call in chunk]))
                except ValueError as error:
                    raise ValueError(f"judging {chunk[0][2]} ... {chunk[-1][2]}: {error}") from error
                if len(results) != len(chunk):
                    raise ValueError(f"judge.judge_batch returned {len(results)} answers for {len(chunk)} comparisons")
                answers.extend(validate_judgement(result, call[2]) for result, call in zip(results, chunk))
                progress.update(len(chunk))
        else:
            for first, second, where in calls:
                try:
                    answer = judge(first, second)
                except ValueError as error:
                    raise ValueError(f"{where}: {error}") from error
                answers.append(validate_judgement(answer, where))
                progress.update(1)
    winners: list[int | str] = []
    for k in range(len(comparisons)):
        forward, backward = answers[2 * k], answers[2 * k + 1]
        if forward is None or backward is None:
            winners.append(NO_VERDICT)
        else:
            # Agreement: the same side wins in both orders (index 0 then 1, or 1 then 0)
            winners.append(forward if forward != backward else TIE)
    return winners, len(calls)


def _report(name: str, stats: PairStats) -> None:
    """Log the counts; warn about comparisons without a verdict; fail when no pair was kept."""
    logger.info("%s: %s", name, stats)
    if stats.failed:
        logger.warning(
            "%s: %d of %d comparisons (%.1f%%) were skipped because the judge gave no verdict (an unparseable reply or "
            "a failed call; see the judge's warnings).",
            name,
            stats.failed,
            stats.asked,
            100 * stats.failure_rate,
        )
        if stats.failure_rate > FAILURE_WARNING_RATE:
            warnings.warn(
                f"{name}: the judge gave no verdict for {100 * stats.failure_rate:.1f}% of the comparisons "
                f"({stats.failed} of {stats.asked}); check its endpoint and its replies.",
                UserWarning,
                stacklevel=3,
            )
    if stats.kept == 0:
        raise ValueError(
            f"{name}: no pair was kept, so the result would be an empty dataset ({stats}). Every comparison was a tie "
            "(the answer flipped with the order) or got no verdict: check the judge."
        )


def _draw_partners(keys: list[str], num_pairs_per_row: int, rng: random.Random) -> tuple[list[tuple[int, int]], int]:
    """For each row i, draw partners j with a different prompt, never repeating an unordered pair."""
    n = len(keys)
    used: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    unpaired = 0
    for i in range(n):
        for _ in range(num_pairs_per_row):
            partner = None
            # Rejection sampling is fast when most rows have other prompts; enumerate when it keeps failing
            for _attempt in range(64):
                j = rng.randrange(n)
                if keys[j] != keys[i] and (min(i, j), max(i, j)) not in used:
                    partner = j
                    break
            if partner is None:
                candidates = [j for j in range(n) if keys[j] != keys[i] and (min(i, j), max(i, j)) not in used]
                if not candidates:
                    unpaired += 1
                    break
                partner = rng.choice(candidates)
            used.add((min(i, partner), max(i, partner)))
            pairs.append((i, partner))
    return pairs, unpaired


def build_joint_pairs(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    judge: Judge,
    seed: int = 0,
    prompt_column: str | None = "prompt",
    completion_column: str | None = "completion",
    num_pairs_per_row: int = 1,
    batch_size: int = 64,
    return_stats: bool = False,
    progress_bar: bool = True,
) -> Dataset | tuple[Dataset, PairStats]:
    """Build joint preference pairs (the DOVE paper's D_H) from rows with one response per instruction (D_S).

    Each row i is matched with a partner row j drawn at random (seeded, deterministic) among the rows whose prompt
    differs from row i's; an unordered pair is never drawn twice. The judge compares `(prompt_i, completion_i)` with
    `(prompt_j, completion_j)` in both orders; the pair is kept only when both orders prefer the same row (a flip is a
    tie, as in the paper), and ties are dropped. The counts are logged at INFO level and available as `PairStats`
    with `return_stats=True`.

    Args:
        dataset (`Dataset` or iterable of dicts):
            Prompt-completion rows, standard (strings) or conversational (lists of messages).
        judge (`Callable[[Pair, Pair], int | None]`):
            `judge(first, second) -> 0 | 1 | None`, the index of the preferred `(prompt, completion)` pair or `None`
            for no verdict (the comparison is then skipped and counted in `PairStats.failed`), e.g. a
            `RewardModelJudge` or an `OpenAIChatJudge`. If it has a `judge_batch(firsts, seconds)` method, that is
            used instead, `batch_size` comparisons (both orders each) per call.
        seed (`int`, defaults to `0`): Seed of the partner draw.
        prompt_column (`str`, defaults to `"prompt"`), completion_column (`str`, defaults to `"completion"`):
            The columns to read. When the default column is absent, `"instruction"` / `"response"` (the DOVE
            files' schema) is used instead; `None` means the same automatic choice.
        num_pairs_per_row (`int`, defaults to `1`): Partners drawn per row.
        batch_size (`int`, defaults to `64`): Comparisons per `judge_batch` call.
        return_stats (`bool`, defaults to `False`): Also return the `PairStats`.
        progress_bar (`bool`, defaults to `True`): Show a progress bar over the judge calls.

    Returns:
        `Dataset` with the columns `chosen_prompt`, `chosen`, `rejected_prompt`, `rejected` (the `DOVETrainer`
        format), one row per kept pair, in the order of the anchor rows; with `return_stats=True`, a
        `(dataset, stats)` tuple.

    Raises:
        ValueError: a missing column or field, an empty prompt or completion, fewer than two distinct prompts, a
        judge answer other than 0, 1 or `None`, naming the row (0-based) and the field or comparison; or no pair kept
        (every comparison a tie or without a verdict).

    Example:

    ```python
    >>> from datasets import load_dataset
    >>> from trl_ranking.data import build_joint_pairs

    >>> rows = load_dataset("json", data_files="val_sft.jsonl", split="train")  # {"instruction", "response"}
    >>> longer = lambda first, second: 0 if len(first[1]) > len(second[1]) else 1  # a toy judge
    >>> pairs, stats = build_joint_pairs(rows, longer, seed=0, return_stats=True)
    >>> pairs.column_names
    ['chosen_prompt', 'chosen', 'rejected_prompt', 'rejected']
    >>> print(stats)
    500 comparisons asked in both orders: 499 kept, 1 dropped as ties (0.2%)
    ```
    """
    if not isinstance(num_pairs_per_row, int) or num_pairs_per_row < 1:
        raise ValueError(f"num_pairs_per_row must be a positive integer, got {num_pairs_per_row!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not callable(judge):
        raise ValueError(f"judge must be a callable judge(first, second) -> 0 | 1 | None, got {type(judge).__name__}")

    columns, rows = _as_rows(dataset)
    # The defaults fall back to the DOVE files' "instruction"/"response"; an explicit other name must exist
    prompt_column = _pick_column(
        columns, None if prompt_column in (None, "prompt") else prompt_column, _PROMPT_COLUMNS, "prompt"
    )
    completion_column = _pick_column(
        columns,
        None if completion_column in (None, "completion") else completion_column,
        _COMPLETION_COLUMNS,
        "completion",
    )

    prompts = [_check_text(row.get(prompt_column), index, prompt_column) for index, row in enumerate(rows)]
    completions = [_check_text(row.get(completion_column), index, completion_column) for index, row in enumerate(rows)]
    keys = [_key(prompt) for prompt in prompts]
    if len(set(keys)) < 2:
        raise ValueError(
            f"joint pairs need at least two distinct prompts in '{prompt_column}'; the dataset has {len(set(keys))}"
        )

    partners, unpaired = _draw_partners(keys, num_pairs_per_row, random.Random(seed))
    comparisons = [
        (
            (prompts[i], completions[i]),
            (prompts[j], completions[j]),
            f"row {i} paired with row {j}",
            f"row {i}",
            f"row {j}",
        )
        for i, j in partners
    ]
    winners, judge_calls = _judge_both_orders(judge, comparisons, batch_size, progress_bar, "Judging joint pairs")

    output: dict[str, list[Any]] = {"chosen_prompt": [], "chosen": [], "rejected_prompt": [], "rejected": []}
    for (i, j), winner in zip(partners, winners):
        if winner in (TIE, NO_VERDICT):
            continue
        chosen, rejected = (i, j) if winner == 0 else (j, i)
        output["chosen_prompt"].append(prompts[chosen])
        output["chosen"].append(completions[chosen])
        output["rejected_prompt"].append(prompts[rejected])
        output["rejected"].append(completions[rejected])

    failed = winners.count(NO_VERDICT)
    kept = len(output["chosen"])
    stats = PairStats(
        rows=len(rows),
        asked=len(partners),
        kept=kept,
        ties=len(partners) - kept - failed,
        unpaired=unpaired,
        judge_calls=judge_calls,
        failed=failed,
    )
    _report("build_joint_pairs", stats)
    result = Dataset.from_dict(output)
    return (result, stats) if return_stats else result


def build_conditional_pairs(
    dataset: Dataset | Iterable[Mapping[str, Any]],
    judge: Judge,
    prompt_column: str | None = None,
    completion_columns: str | Sequence[str] | None = None,
    batch_size: int = 64,
    return_stats: bool = False,
    progress_bar: bool = True,
) -> Dataset | tuple[Dataset, PairStats]:
    """Build conditional preference pairs (the DOVE paper's D_C) from rows with two responses per instruction.

    The judge compares `(prompt, response_a)` with `(prompt, response_b)` in both orders (a conditional comparison:
    equal prompts); the row is kept only when both orders agree, and a flip is a tie and dropped. Rows whose two
    responses are identical are counted as ties without asking the judge.

    Args:
        dataset (`Dataset` or iterable of dicts):
            Rows with a prompt and two responses, standard or conversational.
        judge (`Callable[[Pair, Pair], int]`): As in `build_joint_pairs`.
        prompt_column (`str`, *optional*): Defaults to `"prompt"`, else `"instruction"`.
        completion_columns (`str` or pair of `str`, *optional*):
            Either two column names, one response each, or one column holding a list of exactly two responses.
            Defaults to the first present of `("completion_a", "completion_b")`, `("response_0", "response_1")` (the
            DOVE authors' schema), `("response_a", "response_b")`, `"completions"`, `"responses"`.
        batch_size (`int`, defaults to `64`): Comparisons per `judge_batch` call.
        return_stats (`bool`, defaults to `False`): Also return the `PairStats`.
        progress_bar (`bool`, defaults to `True`): Show a progress bar over the judge calls.

    Returns:
        `Dataset` with the columns `prompt`, `chosen`, `rejected` (TRL's preference format), one row per kept input
        row, in input order; with `return_stats=True`, a `(dataset, stats)` tuple.

    Raises:
        ValueError: a missing column or field, an empty prompt or response, a list column without exactly two
        responses, a judge answer other than 0, 1 or `None`, naming the row (0-based) and the field or comparison; or
        no pair kept (every comparison a tie or without a verdict).

    Example:

    ```python
    >>> from trl_ranking.data import build_conditional_pairs

    >>> rows = [{"prompt": "Where can I buy dry ice?", "completions": ["At grocery stores.", "No idea."]}]
    >>> build_conditional_pairs(rows, judge)[0]
    {'prompt': 'Where can I buy dry ice?', 'chosen': 'At grocery stores.', 'rejected': 'No idea.'}
    ```
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not callable(judge):
        raise ValueError(f"judge must be a callable judge(first, second) -> 0 | 1 | None, got {type(judge).__name__}")

    columns, rows = _as_rows(dataset)
    prompt_column = _pick_column(columns, prompt_column, _PROMPT_COLUMNS, "prompt")

    list_column: str | None = None
    two_columns: tuple[str, str] | None = None
    if isinstance(completion_columns, str):
        list_column = _pick_column(columns, completion_columns, (), "two responses")
    elif completion_columns is not None:
        names = tuple(completion_columns)
        if len(names) != 2:
            raise ValueError(f"completion_columns must name two columns (or one list column), got {names!r}")
        for name in names:
            _pick_column(columns, name, (), "responses")
        two_columns = (names[0], names[1])
    else:
        two_columns = next((pair for pair in _TWO_COLUMN_CANDIDATES if all(name in columns for name in pair)), None)
        if two_columns is None:
            list_column = _pick_column(columns, None, _LIST_COLUMN_CANDIDATES, "two responses")

    prompts: list[Any] = []
    responses: list[tuple[Any, Any]] = []
    for index, row in enumerate(rows):
        prompts.append(_check_text(row.get(prompt_column), index, prompt_column))
        if list_column is not None:
            value = row.get(list_column)
            if value is None:
                raise ValueError(f"row {index}: field '{list_column}' is missing")
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                size = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
                raise ValueError(f"row {index}: field '{list_column}' must hold exactly two responses, got {size}")
            responses.append(
                (
                    _check_text(value[0], index, f"{list_column}[0]"),
                    _check_text(value[1], index, f"{list_column}[1]"),
                )
            )
        else:
            assert two_columns is not None
            responses.append(
                (
                    _check_text(row.get(two_columns[0]), index, two_columns[0]),
                    _check_text(row.get(two_columns[1]), index, two_columns[1]),
                )
            )

    asked_indices = [index for index, (a, b) in enumerate(responses) if _key(a) != _key(b)]
    comparisons = [
        (
            (prompts[index], responses[index][0]),
            (prompts[index], responses[index][1]),
            f"row {index}",
            "response 0",
            "response 1",
        )
        for index in asked_indices
    ]
    winners, judge_calls = _judge_both_orders(
        judge, comparisons, batch_size, progress_bar, "Judging conditional pairs"
    )

    output: dict[str, list[Any]] = {"prompt": [], "chosen": [], "rejected": []}
    for index, winner in zip(asked_indices, winners):
        if winner in (TIE, NO_VERDICT):
            continue
        output["prompt"].append(prompts[index])
        output["chosen"].append(responses[index][winner])
        output["rejected"].append(responses[index][1 - winner])

    failed = winners.count(NO_VERDICT)
    kept = len(output["chosen"])
    stats = PairStats(
        rows=len(rows),
        asked=len(rows),
        kept=kept,
        ties=len(rows) - kept - failed,
        judge_calls=judge_calls,
        failed=failed,
    )
    _report("build_conditional_pairs", stats)
    result = Dataset.from_dict(output)
    return (result, stats) if return_stats else result
