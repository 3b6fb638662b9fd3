"""Bad input gets a clear error naming the row and the field, before training starts."""

from __future__ import annotations

import pytest
from datasets import Dataset

from trl_ranking import PROConfig, PROTrainer


def build(tmp_path, model_path, tokenizer, rows, **config):
    args = PROConfig(
        output_dir=str(tmp_path / "out"),
        max_length=config.pop("max_length", 64),
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        **config,
    )
    return PROTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


GOOD = {"prompt": "Q:", "completions": [" a", " b"], "rewards": [1.0, 0.0]}


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt": "Q:", "completions": [" only one"], "rewards": [1.0]}, r"Row 1, field 'completions'.*at least 2"),
        (
            {"prompt": "Q:", "completions": [" a", " b", " c"], "rewards": [1.0, 0.0]},
            r"Row 1, field 'rewards'.*2 rewards for 3",
        ),
        (
            {"prompt": "Q:", "completions": [" a", " b"], "rewards": [1.0, float("nan")]},
            r"Row 1, field 'rewards\[1\]'.*not finite",
        ),
        (
            {"prompt": "Q:", "completions": [" a", " b"], "rewards": [float("inf"), 0.0]},
            r"Row 1, field 'rewards\[0\]'.*not finite",
        ),
        (
            {"prompt": "Q:", "completions": [" a", "   "], "rewards": [1.0, 0.0]},
            r"Row 1, field 'completions\[1\]'.*empty",
        ),
        ({"prompt": "Q:", "completions": [" a", " b"], "rewards": None}, r"Row 1, field 'rewards'.*missing"),
    ],
)
def test_bad_rankings_name_row_and_field(tmp_path, tiny_model_path, tokenizer, bad_row, message):
    with pytest.raises(ValueError, match=message):
        build(tmp_path, tiny_model_path, tokenizer, [GOOD, bad_row])


def test_missing_columns(tmp_path, tiny_model_path, tokenizer):
    with pytest.raises(ValueError, match=r"missing columns.*'completions'.*Got columns \['answer', 'prompt'\]"):
        build(tmp_path, tiny_model_path, tokenizer, [{"prompt": "Q:", "answer": " a"}])


def test_prompt_filling_max_length(tmp_path, tiny_model_path, tokenizer):
    long_prompt = "word " * 80
    rows = [GOOD, {"prompt": long_prompt, "completions": [" a", " b"], "rewards": [1.0, 0.0]}]
    n_tokens = len(tokenizer(long_prompt)["input_ids"])
    with pytest.raises(ValueError, match=rf"Row 1, field 'prompt'.*{n_tokens} tokens.*max_length=64"):
        build(tmp_path, tiny_model_path, tokenizer, rows)
    # With `max_prompt_length` the prompt is left-truncated (its end kept) and counted in the log
    trainer = build(tmp_path, tiny_model_path, tokenizer, rows, max_prompt_length=16)
    row = trainer.train_dataset[1]
    assert len(row["prompt_ids"]) == 16 and row["prompt_truncated"]
    assert tokenizer.decode(row["prompt_ids"]).endswith("word ")


def test_dpo_loss_options_are_rejected():
    with pytest.raises(ValueError, match="loss_type.*unknown losses"):
        PROConfig(output_dir="x", bf16=False, loss_type="ipo", report_to="none")
    with pytest.raises(ValueError, match=r"`max_prompt_length` \(64\) must be smaller than `max_length` \(64\)"):
        PROConfig(output_dir="x", bf16=False, max_length=64, max_prompt_length=64, report_to="none")
    with pytest.raises(
        ValueError, match="precompute_ref_log_probs=True` needs `reference_normalized=True` or a reference-based"
    ):
        PROConfig(output_dir="x", bf16=False, precompute_ref_log_probs=True, report_to="none")


def test_ref_model_without_reference_normalized(tmp_path, tiny_model_path, tokenizer):
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match="reference_normalized"):
        PROTrainer(
            model=tiny_model_path,
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=PROConfig(output_dir=str(tmp_path), report_to="none", bf16=False),
            train_dataset=Dataset.from_list([GOOD]),
            processing_class=tokenizer,
        )
