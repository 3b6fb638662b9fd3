"""CUDA paths: bf16 autocast, 4-bit (QLoRA) with bitsandbytes' CUDA kernels. Skipped cleanly without a GPU."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def rankings(hh_pairs, count=8):
    rows = []
    for i in range(count):
        base = hh_pairs[i]
        rows.append(
            {
                "prompt": base["prompt"],
                "completions": [base["chosen"], base["rejected"], hh_pairs[100 + i]["rejected"]],
                "rewards": [1.0, 0.0, -1.0],
            }
        )
    return Dataset.from_list(rows)


def common_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        max_length=256,
        max_prompt_length=192,
        learning_rate=1e-3,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        save_strategy="no",
    )
    values.update(overrides)
    return values


def test_pro_bf16_sdpa(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from trl_ranking import PROConfig, PROTrainer

    trainer = PROTrainer(
        model=tiny_model_path,
        args=PROConfig(**common_args(tmp_path, bf16=True, model_init_kwargs={"attn_implementation": "sdpa"})),
        train_dataset=rankings(hh_pairs),
        processing_class=tokenizer,
    )
    assert trainer.model.device.type == "cuda"
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_pro_and_dove_qlora_4bit(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from trl_ranking import DOVEConfig, DOVETrainer, PROConfig, PROTrainer

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    pro = PROTrainer(
        model=tiny_model_path,
        args=PROConfig(**common_args(tmp_path, bf16=True, gradient_checkpointing=True)),
        train_dataset=rankings(hh_pairs),
        processing_class=tokenizer,
        quantization_config=quantization,
        peft_config=lora,
    )
    pro.train()
    assert all(math.isfinite(log["loss"]) for log in pro.state.log_history if "loss" in log)

    joint = Dataset.from_list(
        [
            {
                "chosen_prompt": hh_pairs[i]["prompt"],
                "chosen": hh_pairs[i]["chosen"],
                "rejected_prompt": hh_pairs[50 + i]["prompt"],
                "rejected": hh_pairs[50 + i]["rejected"],
            }
            for i in range(8)
        ]
    )
    dove = DOVETrainer(
        model=tiny_model_path,
        args=DOVEConfig(**common_args(tmp_path, bf16=True, beta=0.1)),
        train_dataset=joint,
        processing_class=tokenizer,
        quantization_config=quantization,
        peft_config=lora,
    )
    dove.train()
    first = next(log for log in dove.state.log_history if "loss" in log)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-2)  # policy == reference at the first step
