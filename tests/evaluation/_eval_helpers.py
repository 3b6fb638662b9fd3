"""Helpers for the evaluation tests: a tiny random reward model and the tiny causal LM, built once per session."""

from __future__ import annotations

from functools import cache

import torch


@cache
def tiny_reward_model():
    """A 1-layer Llama sequence classifier (`num_labels=1`) with the GPT-2 vocabulary standing in for a reward model."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    config = LlamaConfig(
        vocab_size=50257,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=2048,
        num_labels=1,
        pad_token_id=50256,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    # A random head gives logits of ~1e-2; scale it so that rewards are spread out like a real model's
    with torch.no_grad():
        model.score.weight.mul_(100.0)
    return model.eval()


@cache
def tiny_causal_lm(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def direct_reward(model, tokenizer, prompt: str, completion: str) -> float:
    """A pair's reward computed without any scorer code: one unpadded forward pass, the logit at the last token."""
    ids = tokenizer(prompt)["input_ids"] + tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()
