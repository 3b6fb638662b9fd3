"""Helpers shared by the data and evaluation tests: the tiny reward model and causal LM, built once per session."""

from __future__ import annotations

from functools import cache

import torch

from trl_ranking.assets import make_tiny_reward_model


@cache
def tiny_reward_model():
    """A 1-layer Llama sequence classifier with the GPT-2 vocabulary, its head scaled so that rewards spread out."""
    return make_tiny_reward_model(score_scale=100.0)


@cache
def tiny_causal_lm(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def direct_reward(model, tokenizer, prompt: str, completion: str) -> float:
    """A pair's reward computed without any scorer code: one unpadded forward pass, the logit at the last token."""
    ids = tokenizer(prompt)["input_ids"] + tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def cpu_test_config(config_cls, tmp_path, **overrides):
    """A trainer config for fast CPU tests: no bf16, no gradient checkpointing, no reporting, no checkpoints, a log
    every step. `overrides` set (or replace) any field."""
    values = dict(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    values.update(overrides)
    return config_cls(**values)
