"""DataCollatorForJointPreference: the keys and layout of `DataCollatorForPreference`, with the instruction scored."""

from __future__ import annotations

import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from trl_ranking.collators import DataCollatorForJointPreference


JOINT_EXAMPLES = [
    {"chosen_prompt_ids": [1, 2], "chosen_ids": [3], "rejected_prompt_ids": [4, 5, 6], "rejected_ids": [7, 8]},
    {"chosen_prompt_ids": [9], "chosen_ids": [10, 11], "rejected_prompt_ids": [9], "rejected_ids": [12]},
]


def test_joint_layout_and_masks():
    batch = DataCollatorForJointPreference(pad_token_id=0, return_instruction_info=True)(JOINT_EXAMPLES)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [9, 10, 11, 0, 0], [4, 5, 6, 7, 8], [9, 12, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # Every token but the first of the row and the padding is scored: log p(I, R)
    assert batch["completion_mask"].tolist() == [[0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1], [0, 1, 0, 0, 0]]
    # Instruction tokens but the first of the row
    assert batch["prompt_mask"].tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert batch["different_instruction"].tolist() == [True, False]


def test_conditional_equals_dpo_collator():
    """`joint=False` on DPO-tokenized rows gives exactly `DataCollatorForPreference`'s batch (keys and values)."""
    examples = [
        {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6], "ref_chosen_logps": -1.0,
         "ref_rejected_logps": -2.0},
        {"prompt_ids": [7, 8], "chosen_ids": [9], "rejected_ids": [10, 11], "ref_chosen_logps": -3.0,
         "ref_rejected_logps": -4.0},
    ]  # fmt: skip
    for max_length, mode in [(None, "keep_start"), (4, "keep_start"), (4, "keep_end")]:
        ours = DataCollatorForJointPreference(pad_token_id=0, joint=False, max_length=max_length, truncation_mode=mode)
        theirs = DataCollatorForPreference(pad_token_id=0, max_length=max_length, truncation_mode=mode)
        a, b = ours(examples), theirs(examples)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=f"{key} ({max_length}, {mode})")


def test_default_keys_are_dpo_keys():
    batch = DataCollatorForJointPreference(pad_token_id=0)(JOINT_EXAMPLES)
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}


def test_truncation_keeps_first_token_unscored():
    collator = DataCollatorForJointPreference(pad_token_id=0, max_length=3, truncation_mode="keep_end")
    batch = collator(JOINT_EXAMPLES)
    assert batch["input_ids"][2].tolist() == [6, 7, 8]
    assert batch["completion_mask"][2].tolist() == [0, 1, 1]
    collator = DataCollatorForJointPreference(pad_token_id=0, max_length=3, return_instruction_info=True)
    batch = collator(JOINT_EXAMPLES)
    assert batch["input_ids"][2].tolist() == [4, 5, 6]
    assert batch["completion_mask"][2].tolist() == [0, 1, 1]
    assert batch["prompt_mask"][2].tolist() == [0, 1, 1]
