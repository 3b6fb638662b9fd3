"""Collators that turn tokenized rankings and joint pairs into model batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.data_utils import common_prefix_length
from trl.trainer.utils import pad

from .packing import PackedGroup, build_packed_layout


@dataclass
class DataCollatorForRanking(DataCollatorMixin):
    """
    Data collator for rankings of `n >= 2` completions per prompt, `n` free to differ between examples.

    Each example holds `"prompt_ids"` (list of ints), `"completion_ids"` (list of `n` lists of ints, best first) and
    optionally `"rewards"` (`n` floats, descending) and `"ref_logps"` (`n` floats, precomputed reference scores).
    Every candidate becomes one row `[prompt][candidate]`, example by example, right-padded to the longest row:

    - `"input_ids"`, `"attention_mask"`, `"completion_mask"`: `[sum(n), seq]`, as in `DataCollatorForPreference`.
    - `"num_candidates"`: `[batch]`, each example's `n`.
    - `"rewards"`, `"ref_logps"`: `[batch, max(n)]`, padded with 0, when every example has them.

    Rows are truncated to `max_length` (keeping the start) before padding.

    With `prefix_sharing=True` each example becomes one row holding its prompt once and every candidate after it, and
    with `padding_free=True` the whole batch becomes one row with no padding (both together: one row, each prompt
    once). The batch is then a packed layout (`trl_ranking.packing.build_packed_layout`: `input_ids`,
    `attention_mask` (2D, padding only), `position_ids`, `document_ids`, `branch_ids`, `shift_labels`,
    `score_sequence`, `score_position`, `num_sequences`) with the same `num_candidates`, `rewards` and `ref_logps`,
    and the same tokens scored for each candidate, candidates numbered as the padded rows.

    Examples:
    ```python
    >>> from trl_ranking import DataCollatorForRanking

    >>> collator = DataCollatorForRanking(pad_token_id=0)
    >>> examples = [
    ...     {"prompt_ids": [1, 2], "completion_ids": [[3], [4, 5], [6]]},
    ...     {"prompt_ids": [7], "completion_ids": [[8, 9], [10]]},
    ... ]
    >>> batch = collator(examples)
    >>> batch["input_ids"]
    tensor([[ 1,  2,  3,  0],
            [ 1,  2,  4,  5],
            [ 1,  2,  6,  0],
            [ 7,  8,  9,  0],
            [ 7, 10,  0,  0]])
    >>> batch["completion_mask"]
    tensor([[0, 0, 1, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 0],
            [0, 1, 1, 0],
            [0, 1, 0, 0]])
    >>> batch["num_candidates"]
    tensor([3, 2])
    >>> packed = DataCollatorForRanking(pad_token_id=0, prefix_sharing=True, padding_free=True)(examples)
    >>> packed["input_ids"]  # each prompt once, minus its last token, which starts each candidate's branch
    tensor([[ 1,  2,  3,  2,  4,  5,  2,  6,  7,  8,  9,  7, 10]])

    ```
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    prefix_sharing: bool = False
    padding_free: bool = False
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.prefix_sharing or self.padding_free:
            return self._packed_call(examples)
        input_ids, completion_mask = [], []
        for example in examples:
            prompt = list(example["prompt_ids"])
            for completion in example["completion_ids"]:
                ids = prompt + list(completion)
                mask = [0] * len(prompt) + [1] * len(completion)
                if self.max_length is not None:
                    ids, mask = ids[: self.max_length], mask[: self.max_length]
                input_ids.append(torch.tensor(ids, dtype=torch.long))
                completion_mask.append(torch.tensor(mask, dtype=torch.long))
        attention_mask = [torch.ones_like(ids) for ids in input_ids]
        output = {
            "input_ids": pad(input_ids, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad(attention_mask, 0, "right", self.pad_to_multiple_of),
            "completion_mask": pad(completion_mask, 0, "right", self.pad_to_multiple_of),
            "num_candidates": torch.tensor([len(example["completion_ids"]) for example in examples]),
        }
        for key in ("rewards", "ref_logps"):
            if all(example.get(key) is not None for example in examples):
                output[key] = pad([torch.tensor(example[key], dtype=torch.float32) for example in examples], 0.0)
        return output

    def _packed_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        groups = []
        for example in examples:
            prompt = list(example["prompt_ids"])
            sequences, scored = [], []
            for completion in example["completion_ids"]:
                ids = prompt + list(completion)
                mask = [0] * len(prompt) + [1] * len(completion)
                if self.max_length is not None:
                    ids, mask = ids[: self.max_length], mask[: self.max_length]
                sequences.append(ids)
                scored.append(mask)
            groups.append(PackedGroup(sequences, scored, prefix_length=len(prompt)))
        output = build_packed_layout(
            groups,
            share_prefix=self.prefix_sharing,
            padding_free=self.padding_free,
            pad_token_id=self.pad_token_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        output["num_candidates"] = torch.tensor([len(example["completion_ids"]) for example in examples])
        for key in ("rewards", "ref_logps"):
            if all(example.get(key) is not None for example in examples):
                output[key] = pad([torch.tensor(example[key], dtype=torch.float32) for example in examples], 0.0)
        return output


@dataclass
class DataCollatorForJointPreference(DataCollatorMixin):
    """
    Data collator for joint preferences: a chosen `(instruction, response)` pair against a rejected one, the two
    instructions free to differ (DOVE).

    Each example holds `"chosen_prompt_ids"`, `"chosen_ids"`, `"rejected_prompt_ids"` and `"rejected_ids"` (lists of
    ints; a shared `"prompt_ids"` stands for both prompts, so DPO's tokenized rows collate too), and optionally
    `"ref_chosen_logps"` and `"ref_rejected_logps"`. The output has exactly the keys of
    `trl.trainer.dpo_trainer.DataCollatorForPreference`, so `DPOTrainer`'s loss and reference code run on it
    unchanged:

    - `"input_ids"`, `"attention_mask"`: `[2 * batch, seq]`, the rows `[chosen prompt][chosen]` of every example, then
      the rows `[rejected prompt][rejected]`, right-padded.
    - `"completion_mask"`: `[2 * batch, seq]`, the tokens whose log-probabilities are summed. With `joint=True` (DOVE)
      every token of the row but the first (which has no prediction) and the padding: `log p(I, R)`. With
      `joint=False` the response tokens only, as `DataCollatorForPreference`: `log p(R | I)`.
    - `"ref_chosen_logps"`, `"ref_rejected_logps"`: `[batch]`, when the examples have them.

    With `return_instruction_info=True` two more keys feed the DOVE metrics (the trainer removes them before the
    model sees the batch): `"prompt_mask"` (`[2 * batch, seq]`, the instruction tokens but the first of the row) and
    `"different_instruction"` (`[batch]`, whether the two tokenized instructions differ).

    Rows are truncated to `max_length` before padding, keeping the start (`truncation_mode="keep_start"`) or the end.

    With `prefix_sharing=True` and/or `padding_free=True` the batch also holds a packed layout of the same rows
    (`trl_ranking.packing.build_packed_layout`), under keys prefixed with `"packed_"`: `packed_input_ids`,
    `packed_attention_mask`, `packed_position_ids`, `packed_document_ids`, `packed_branch_ids`,
    `packed_shift_labels`, `packed_score_sequence`, `packed_score_position`, `packed_num_sequences`, and
    `packed_score_row`/`packed_score_column` (where each scored token's log-probability sits in the padded rows'
    `[2 * batch, seq - 1]` log-probs). The padded keys above stay (DPO's loss code reads its masks off them); the
    model runs on the packed rows only. With prefix sharing, a pair whose two (truncated) rows start with the same
    tokens (the shared prompt of a conditional pair, or a common opening such as a chat template's system turn) is
    one tree: the common prefix once, then each side's remainder; a pair whose rows share at most one token (a joint
    pair) is two separate sequences. With `padding_free=True` every sequence of the batch goes into one row, with no
    padding. Sequences are numbered pair by pair, chosen then rejected (`packed_score_sequence` `2i` and `2i + 1`).

    Examples:
    ```python
    >>> from trl_ranking import DataCollatorForJointPreference

    >>> collator = DataCollatorForJointPreference(pad_token_id=0)
    >>> examples = [
    ...     {"chosen_prompt_ids": [1, 2], "chosen_ids": [3], "rejected_prompt_ids": [4, 5, 6], "rejected_ids": [7, 8]},
    ...     {"prompt_ids": [9], "chosen_ids": [10, 11], "rejected_ids": [12]},
    ... ]
    >>> batch = collator(examples)
    >>> batch["input_ids"]
    tensor([[ 1,  2,  3,  0,  0],
            [ 9, 10, 11,  0,  0],
            [ 4,  5,  6,  7,  8],
            [ 9, 12,  0,  0,  0]])
    >>> batch["completion_mask"]
    tensor([[0, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 1, 1, 1],
            [0, 1, 0, 0, 0]])
    >>> DataCollatorForJointPreference(pad_token_id=0, joint=False)(examples)["completion_mask"]
    tensor([[0, 0, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 1, 0, 0, 0]])
    >>> packed = DataCollatorForJointPreference(pad_token_id=0, prefix_sharing=True, padding_free=True)(examples)
    >>> packed["packed_input_ids"]  # one row, no padding (a one-token prompt such as [9] shares nothing)
    tensor([[ 1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11,  9, 12]])

    ```
    """

    pad_token_id: int
    joint: bool = True
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    return_instruction_info: bool = False
    prefix_sharing: bool = False
    padding_free: bool = False
    return_tensors: str = "pt"

    PACKED_PREFIX: ClassVar[str] = "packed_"

    def _side(self, example: dict[str, Any], side: str) -> tuple[list[int], list[int]]:
        prompt = example.get(f"{side}_prompt_ids")
        if prompt is None:
            prompt = example["prompt_ids"]
        return list(prompt), list(example[f"{side}_ids"])

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.truncation_mode == "keep_start":
            window = slice(None, self.max_length)
        elif self.truncation_mode == "keep_end":
            window = slice(-self.max_length, None) if self.max_length is not None else slice(None)
        else:
            raise ValueError(
                f"Unsupported truncation mode: {self.truncation_mode}, expected 'keep_start' or 'keep_end'."
            )
        input_ids, completion_mask, prompt_mask = [], [], []
        sequences: list[list[int]] = []  # the truncated rows, chosen rows then rejected rows
        scored_flags: list[list[int]] = []
        for side in ("chosen", "rejected"):
            for example in examples:
                prompt, response = self._side(example, side)
                ids = prompt + response
                if self.joint:
                    scored = [1] * len(ids)
                else:
                    scored = [0] * len(prompt) + [1] * len(response)
                instruction = [1] * len(prompt) + [0] * len(response)
                ids, scored, instruction = ids[window], scored[window], instruction[window]
                # The first token of a row has no prediction: it is never part of log p(I, R) nor of log p(I)
                if self.joint and scored:
                    scored[0] = 0
                if instruction:
                    instruction[0] = 0
                sequences.append(ids)
                scored_flags.append(scored)
                input_ids.append(torch.tensor(ids, dtype=torch.long))
                completion_mask.append(torch.tensor(scored, dtype=torch.long))
                prompt_mask.append(torch.tensor(instruction, dtype=torch.long))
        attention_mask = [torch.ones_like(ids) for ids in input_ids]
        output = {
            "input_ids": pad(input_ids, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad(attention_mask, 0, "right", self.pad_to_multiple_of),
            "completion_mask": pad(completion_mask, 0, "right", self.pad_to_multiple_of),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                output[key] = torch.tensor([example[key] for example in examples])
        if self.return_instruction_info:
            output["prompt_mask"] = pad(prompt_mask, 0, "right", self.pad_to_multiple_of)
            output["different_instruction"] = torch.tensor(
                [self._side(example, "chosen")[0] != self._side(example, "rejected")[0] for example in examples]
            )
        if self.prefix_sharing or self.padding_free:
            output.update(self._packed_layout(sequences, scored_flags))
        return output

    def _packed_layout(self, sequences: list[list[int]], scored: list[list[int]]) -> dict[str, torch.Tensor]:
        """The packed layout of the padded rows `sequences` (chosen rows, then rejected rows), keys prefixed."""
        batch_size = len(sequences) // 2
        groups = []
        for i in range(batch_size):
            pair = [sequences[i], sequences[batch_size + i]]
            flags = [scored[i], scored[batch_size + i]]
            shared = common_prefix_length(*pair) if self.prefix_sharing else 0
            if shared >= 2:  # the common prefix minus its last token is held once (see `trl_ranking.packing`)
                groups.append(PackedGroup(pair, flags, prefix_length=shared))
            else:  # nothing to share: each side its own sequence
                groups += [PackedGroup([pair[0]], [flags[0]]), PackedGroup([pair[1]], [flags[1]])]
        layout = build_packed_layout(
            groups,
            share_prefix=True,
            padding_free=self.padding_free,
            pad_token_id=self.pad_token_id,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_token_index=True,
        )
        # Sequence 2i is the chosen row i of the padded layout, 2i + 1 the rejected row batch_size + i
        sequence = layout["score_sequence"]
        layout["score_row"] = (sequence % 2) * batch_size + sequence // 2
        layout["score_column"] = layout.pop("score_token") - 1
        return {self.PACKED_PREFIX + key: value for key, value in layout.items()}
