"""Collators that turn tokenized rankings and joint pairs into model batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad


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
    ```
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
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
