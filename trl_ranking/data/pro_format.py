"""The PRO paper's jsonl format (AlibabaResearch/DAMO-ConvAI, `PRO/`) to ranking rows and back.

One JSON object a line, as written by the official preprocessing (`train/hh_preprocess_data/step_2_gen_train_data.py`)
and read by its collator (`train/utils/data_manager.py`):

```json
{"prefix": [["<|prompter|>Hi", "<|assistant|>"], ["<|prompter|>Hi", "<|assistant|>"]],
 "suffix": ["Hello! How can I help?", "Go away."],
 "reward": [1.7, -0.4],
 "sft_index": 0}
```

- `prefix` holds one prompt per candidate, all equal (the official files repeat it). For dialogue data (HH-RLHF) a
  prompt is a list of turns, each a role tag followed by the turn's text, ending with the bare `"<|assistant|>"` tag
  the candidate answers; for summarisation data it is a plain string (ending with `"\\nTL;DR:"`).
- `suffix` holds the candidates, `reward` their reward-model scores (the training files are sorted best first) and
  `sft_index` the candidate trained with the SFT term (always `0`, the best, in the official files).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..pro.rows import read_rankings
from ..tokenization import is_conversational_value
from ..validation import check_rewards
from .hh_rlhf import _hh_messages
from .jsonl import PathLike, as_files, iter_jsonl, open_text


logger = logging.getLogger(__name__)

PROMPTER_TAG = "<|prompter|>"
ASSISTANT_TAG = "<|assistant|>"
_TAG_TO_HH = {PROMPTER_TAG: "\n\nHuman: ", ASSISTANT_TAG: "\n\nAssistant: "}
_TAG_TO_ROLE = {PROMPTER_TAG: "user", ASSISTANT_TAG: "assistant"}
_ROLE_TO_TAG = {"user": PROMPTER_TAG, "assistant": ASSISTANT_TAG}


def _is_turn_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(turn, str) and turn.startswith((PROMPTER_TAG, ASSISTANT_TAG)) for turn in value)
    )


def _split_turn(turn: str) -> tuple[str, str]:
    tag = PROMPTER_TAG if turn.startswith(PROMPTER_TAG) else ASSISTANT_TAG
    return tag, turn[len(tag) :]


def turns_to_text(turns: list[str]) -> str:
    """Render PRO turns as an HH-RLHF transcript, exactly as the official collator does.

    Each tag becomes `"\\n\\nHuman: "` or `"\\n\\nAssistant: "`, the turns are concatenated and the result is
    right-stripped, so a prompt ends with `"\\n\\nAssistant:"`.

    Example:

    ```python
    >>> turns_to_text(["<|prompter|>Hi there", "<|assistant|>"])
    '\\n\\nHuman: Hi there\\n\\nAssistant:'
    ```
    """
    text = "".join(turns)
    for tag, hh in _TAG_TO_HH.items():
        text = text.replace(tag, hh)
    return text.rstrip()


def turns_to_messages(turns: list[str]) -> list[dict[str, str]]:
    """PRO turns to TRL messages; the final bare `"<|assistant|>"` (the slot the candidate fills) is dropped."""
    messages = [{"role": _TAG_TO_ROLE[tag], "content": text} for tag, text in map(_split_turn, turns)]
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def _prompt_to_turns(prompt: Any, where: str) -> list[str] | None:
    """A ranking row's prompt as PRO turns, or `None` for a plain-text (non-dialogue) prompt."""
    if is_conversational_value(prompt):
        turns = []
        for message in prompt:
            role = message.get("role")
            if role not in _ROLE_TO_TAG:
                raise ValueError(f"{where}: the PRO format has only user and assistant turns, got a {role!r} message")
            turns.append(_ROLE_TO_TAG[role] + str(message.get("content", "")))
        return turns + [ASSISTANT_TAG]
    if not isinstance(prompt, str):
        raise ValueError(
            f"{where}: field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
        )
    if prompt.lstrip().startswith("Human:") and prompt.rstrip().endswith("Assistant:"):
        messages = _hh_messages(prompt)
        return [_ROLE_TO_TAG[message["role"]] + message["content"] for message in messages] + [ASSISTANT_TAG]
    return None


def _completion_text(completion: Any, where: str) -> str:
    if isinstance(completion, str):
        return completion
    if is_conversational_value(completion) and len(completion) == 1 and completion[0].get("role") == "assistant":
        return str(completion[0].get("content", ""))
    raise ValueError(f"{where}: a completion must be a string or a single assistant message")


def load_pro_jsonl(
    data_files: PathLike | list[PathLike],
    conversational: bool = False,
    sort_by_reward: bool = True,
) -> Dataset:
    """Load PRO-format jsonl (gzipped or not) as ranking rows `prompt`, `completions` (best first), `rewards`.

    Dialogue prompts (lists of `<|prompter|>`/`<|assistant|>` turns) become HH-RLHF transcripts rendered exactly as
    the official collator renders them (`"\\n\\nHuman: ...\\n\\nAssistant:"`), and each candidate gets the single
    space the collator inserts between prompt and candidate (`completion = " " + suffix`), so a trainer sees the text
    the official code trained on. With `conversational=True` they become TRL messages instead (`prompt` a list of
    user/assistant messages, each completion one assistant message holding the suffix). Plain-string prompts
    (summarisation) are kept as they are, and so are their candidates (the official collator joins them with no
    separator).

    Assumptions, from the official code and data:

    - `prefix` is either one prompt per candidate (the official layout; the prompts must all be equal, since a
      ranking shares one prompt) or a single prompt (a list of turn strings, or a string).
    - When `reward` is present the ranking is its descending order: candidates are sorted by reward (stable, so
      ties keep the file's order) unless `sort_by_reward=False`. Without `reward` the file's order is the ranking
      and the rows have no `rewards` column. Constant rewards (the official files write `[1.0, ...]` for unscored
      data) carry no preference strength: with PRO's dynamic temperature every weight is then 0.
    - `sft_index` must be `0` (or absent): ranking rows train the SFT term on the first (best) completion, so another
      index cannot be represented. Other keys (`meta`) are ignored.

    Raises:
        ValueError: a malformed record, naming the file, the row (from 0) and the field.

    Example:

    ```python
    >>> from trl_ranking.data import load_pro_jsonl

    >>> dataset = load_pro_jsonl("hh_train_len2/train.json")
    >>> dataset[0]["prompt"]
    '\\n\\nHuman: How do I bake bread?\\n\\nAssistant:'
    >>> dataset[0]["completions"], dataset[0]["rewards"]
    ([' Mix flour, water, yeast and salt, ...', ' I do not know.'], [2.1, -0.7])
    ```
    """
    rows: dict[str, list[Any]] = {"prompt": [], "completions": [], "rewards": []}
    with_rewards: bool | None = None
    for file in as_files(data_files):
        for row, line, record in iter_jsonl(file):
            where = f"{file}, row {row} (line {line})"
            suffixes = record.get("suffix")
            if not isinstance(suffixes, list) or not suffixes or not all(isinstance(s, str) for s in suffixes):
                raise ValueError(f"{where}: field 'suffix' must be a non-empty list of strings")
            prompt_turns, prompt_text = _parse_prefix(record.get("prefix"), len(suffixes), where)

            rewards = record.get("reward")
            if with_rewards is not None and (rewards is not None) != with_rewards:
                raise ValueError(f"{where}: field 'reward' is present in some lines and missing in others")
            with_rewards = rewards is not None
            if rewards is not None:
                if not isinstance(rewards, list) or len(rewards) != len(suffixes):
                    raise ValueError(
                        f"{where}: field 'reward' must be a list of {len(suffixes)} numbers, one per suffix"
                    )
                rewards = check_rewards(rewards, where, "reward")

            sft_index = record.get("sft_index")
            sft_index = 0 if sft_index is None else sft_index  # absent (`None` where other records have it)
            if sft_index != 0 or isinstance(sft_index, bool):
                raise ValueError(
                    f"{where}: field 'sft_index' is {sft_index!r}; only 0 is supported (ranking rows train the SFT "
                    "term on the first, best, completion)"
                )

            if prompt_turns is not None:
                prompt = turns_to_messages(prompt_turns) if conversational else turns_to_text(prompt_turns)
                if conversational:
                    completions = [[{"role": "assistant", "content": s}] for s in suffixes]
                else:
                    completions = [" " + s for s in suffixes]
            else:
                if conversational:
                    prompt = [{"role": "user", "content": prompt_text}]
                    completions = [[{"role": "assistant", "content": s}] for s in suffixes]
                else:
                    prompt, completions = prompt_text, list(suffixes)

            if rewards is not None and sort_by_reward:
                order = sorted(range(len(rewards)), key=lambda i, rewards=rewards: -rewards[i])
                completions = [completions[i] for i in order]
                rewards = [rewards[i] for i in order]
            rows["prompt"].append(prompt)
            rows["completions"].append(completions)
            rows["rewards"].append(rewards)
    if not with_rewards:
        del rows["rewards"]
    return Dataset.from_dict(rows)


def _parse_prefix(prefix: Any, num_suffixes: int, where: str) -> tuple[list[str] | None, str | None]:
    """Return `(turns, None)` for a dialogue prompt or `(None, text)` for a plain one."""
    if isinstance(prefix, str):
        return None, prefix
    if _is_turn_list(prefix):
        return list(prefix), None
    if isinstance(prefix, list) and len(prefix) == num_suffixes and prefix:
        first = prefix[0]
        if not (isinstance(first, str) or _is_turn_list(first)):
            raise ValueError(
                f"{where}: field 'prefix' must hold prompts that are strings or lists of "
                f"'{PROMPTER_TAG}'/'{ASSISTANT_TAG}' turns"
            )
        for index, other in enumerate(prefix[1:], start=1):
            if other != first:
                raise ValueError(
                    f"{where}: field 'prefix': prompt {index} differs from prompt 0; a ranking shares one prompt"
                )
        return (None, first) if isinstance(first, str) else (list(first), None)
    raise ValueError(
        f"{where}: field 'prefix' must be one prompt per suffix ({num_suffixes}), a list of "
        f"'{PROMPTER_TAG}'/'{ASSISTANT_TAG}' turns, or a string"
    )


def save_pro_jsonl(dataset: Dataset, path: PathLike, default_reward: float | None = None) -> None:
    """Write ranking rows (or TRL preference rows, a ranking of two) as PRO-format jsonl, gzipped if `path` ends in `.gz`.

    The inverse of `load_pro_jsonl`, writing the official layout (one copy of the prompt per candidate):

    - An HH-RLHF transcript prompt (`"\\n\\nHuman: ...\\n\\nAssistant:"`) or a conversational prompt (user and
      assistant messages) becomes a list of `<|prompter|>`/`<|assistant|>` turns ending with the bare
      `"<|assistant|>"`; each turn's text is stripped, as the official preprocessing strips it. Its candidates are
      written without the one leading space `load_pro_jsonl` adds. Any other string prompt is written as a string
      and its candidates unchanged.
    - `reward` is the row's `rewards` (or `score_chosen`/`score_rejected`); rows without rewards get
      `[default_reward] * n` when `default_reward` is set (the official scripts use `1.0` for unscored data) and no
      `reward` field otherwise. Rows are read as `PROTrainer` reads them (`trl_ranking.pro.rows.read_rankings`): rows
      with rewards are written sorted by them, best first, so that `sft_index`, always `0`, names the best candidate;
      rows without rewards are assumed best first.

    Raises:
        ValueError: a row that cannot be written (a system message, a completion that is not a single assistant
            message) or that `PROTrainer` would reject (see `to_ranking`), naming the row.

    Example:

    ```python
    >>> from trl_ranking.data import load_hh_rlhf, load_pro_jsonl, save_pro_jsonl

    >>> pairs = load_hh_rlhf("harmless-base/test.jsonl.gz")
    >>> save_pro_jsonl(pairs, "harmless_base_pro.jsonl")
    >>> load_pro_jsonl("harmless_base_pro.jsonl")[0]["completions"] == [pairs[0]["chosen"], pairs[0]["rejected"]]
    True
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rankings = read_rankings(dataset)
    with open_text(path, "w") as handle:
        for index, (prompt, completions, rewards) in enumerate(rankings):
            where = f"row {index}"
            turns = _prompt_to_turns(prompt, where)
            suffixes = [_completion_text(completion, where) for completion in completions]
            if turns is not None and not is_conversational_value(prompt):
                suffixes = [s[1:] if s.startswith(" ") else s for s in suffixes]
            record: dict[str, Any] = {
                "prefix": [turns if turns is not None else prompt for _ in suffixes],
                "suffix": suffixes,
            }
            if rewards is None and default_reward is not None:
                rewards = [float(default_reward)] * len(suffixes)
            if rewards is not None:
                record["reward"] = rewards
            record["sft_index"] = 0
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("save_pro_jsonl: wrote %d rows to %s", len(dataset), path)
