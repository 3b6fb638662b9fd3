"""Left-truncating a prompt keeps the BOS token a Llama/Mistral-style tokenizer puts first.

The tokenizer here is the real GPT-2 tokenizer loaded with `add_bos_token=True`, so that it adds `<|endoftext|>` in
front of every text as a BOS token, the way Llama's tokenizer adds `<s>`.
"""

from __future__ import annotations

import pytest
from datasets import Dataset
from tiny_models import HH_RLHF_FILE, record_generate_calls, tiny_causal_lm
from transformers import AutoTokenizer

from trl_ranking import PROConfig, PROTrainer
from trl_ranking.assets import bundled_tokenizer_path
from trl_ranking.data import load_hh_rlhf
from trl_ranking.evaluation import generate_responses
from trl_ranking.tokenization import left_truncate_prompt


@pytest.fixture(scope="module")
def bos_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_path(), add_bos_token=True)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id
    return tokenizer


@pytest.fixture(scope="module")
def long_prompts():
    return [p for p in load_hh_rlhf(HH_RLHF_FILE, max_rows=30)["prompt"] if len(p) > 400][:2]


def test_left_truncate_prompt():
    assert left_truncate_prompt([1, 10, 11, 12, 13], 3, {1}) == [1, 12, 13]
    assert left_truncate_prompt([10, 11, 12, 13], 3, {1}) == [11, 12, 13]  # no leading special token: plain cut
    assert left_truncate_prompt([1, 2, 10, 11, 12], 3, {1, 2}) == [1, 2, 12]  # every leading special token
    assert left_truncate_prompt([1, 10], 3, {1}) == [1, 10]  # short enough: unchanged
    assert left_truncate_prompt([1, 2, 3, 10], 2, {1, 2, 3}) == [3, 10]  # the run fills the budget: plain cut


def test_generation_keeps_bos(bos_tokenizer, tiny_model_path, long_prompts, monkeypatch):
    model = tiny_causal_lm(tiny_model_path)
    calls = record_generate_calls(model, monkeypatch)
    generate_responses(model, bos_tokenizer, long_prompts, max_new_tokens=2, max_prompt_length=16, engine="generate")
    rows = {tuple(row.tolist()) for row in calls[-1]["input_ids"]}
    expected = {(bos_tokenizer.bos_token_id, *bos_tokenizer(prompt)["input_ids"][-15:]) for prompt in long_prompts}
    assert rows == expected


def test_pro_training_rows_keep_bos(tmp_path, bos_tokenizer, tiny_model_path, long_prompts):
    rows = [{"prompt": p, "completions": [" Yes.", " No."], "rewards": [1.0, 0.0]} for p in long_prompts]
    args = PROConfig(
        output_dir=str(tmp_path),
        max_length=64,
        max_prompt_length=16,
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = PROTrainer(
        model=tiny_model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=bos_tokenizer
    )
    for prompt, row in zip(long_prompts, trainer.train_dataset):
        full = bos_tokenizer(prompt)["input_ids"]
        assert row["prompt_truncated"] and len(row["prompt_ids"]) == 16
        assert row["prompt_ids"] == [bos_tokenizer.bos_token_id, *full[-15:]]
