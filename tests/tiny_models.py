"""Helpers shared by the tests (imported as `from tiny_models import ...`): the tiny reward model and causal LM, built
once per session, the real data paths, CPU test configs, and the pieces the trainer and layout tests of PRO and DOVE
have in common (rankings of real rows, independent log-probabilities, loss-and-gradient of a batch, LoRA set-up)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from trl_ranking.assets import make_tiny_reward_model


DATA_DIR = Path(__file__).resolve().parent / "fixtures" / "data"
HH_RLHF_FILE = DATA_DIR / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DOVE_DIR = DATA_DIR / "dove"
SPARSE_FEEDBACK_DIR = DATA_DIR / "sparse-feedback"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The packed layouts every layout test compares with the padded one
LAYOUTS = {
    "prefix_shared": {"prefix_sharing": True, "padding_free": False},
    "padding_free": {"prefix_sharing": False, "padding_free": True},
    "prefix_shared+padding_free": {"prefix_sharing": True, "padding_free": True},
}


@cache
def tiny_reward_model():
    """A 1-layer Llama sequence classifier with the GPT-2 vocabulary, its head scaled so that rewards spread out."""
    return make_tiny_reward_model(score_scale=100.0)


@cache
def tiny_causal_lm(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def record_generate_calls(model, monkeypatch) -> list[dict]:
    """Spy on `model.generate`: the returned list receives the keyword arguments of every call."""
    calls: list[dict] = []
    original = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


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


def hh_rankings(hh_pairs, first: int, extras_from: int, rewards=None, sizes=(2, 4, 3)) -> list[dict]:
    """Rankings of real HH-RLHF responses, of `sizes` candidates: row `first + i`'s chosen and rejected response, then
    extra candidates borrowed from rows `extras_from + 7 * i + j`. `rewards[i]` (given out of order on purpose: the
    trainer sorts by descending reward) is cut to the ranking's size; `None` gives rows without rewards."""
    rows = []
    for i, n in enumerate(sizes):
        base = hh_pairs[first + i]
        extras = [hh_pairs[extras_from + 7 * i + j]["rejected"] for j in range(n - 2)]
        row = {"prompt": base["prompt"], "completions": [base["chosen"], base["rejected"], *extras]}
        if rewards is not None:
            row["rewards"] = [float(r) for r in rewards[i][:n]]
        rows.append(row)
    return rows


def sorted_ranking(row):
    """A ranking row's completions in descending reward order, and the rewards (`None` without rewards)."""
    if "rewards" not in row:
        return row["completions"], None
    order = sorted(range(len(row["rewards"])), key=lambda i: -row["rewards"][i])
    return [row["completions"][i] for i in order], [row["rewards"][i] for i in order]


def completion_log_probs(model, tokenizer, prompt: str, completion: str, max_prompt_length: int, max_length: int):
    """Per-token log-probs (float64) of `completion + EOS` after the left-truncated prompt, cut at `max_length`: one
    plain forward of the unpadded row, no trainer code."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"][len(prompt_ids) :]
    prompt_ids = prompt_ids[-max_prompt_length:]
    ids = (prompt_ids + completion_ids)[:max_length]
    n_completion = len(ids) - len(prompt_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logps = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    return logps[-n_completion:]


def loss_and_grad(trainer, batch) -> tuple[float, torch.Tensor]:
    """The trainer's loss on `batch` and the gradient of every trainable parameter, flattened (gradients reset)."""
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    trainer.model.zero_grad()
    return loss.item(), grad


def assert_same_gradient(packed_grad: torch.Tensor, grad: torch.Tensor, name: str) -> None:
    """A packed layout's gradient equals the padded layout's, to float tolerance."""
    relative = ((packed_grad - grad).norm() / grad.norm()).item()
    assert relative < 1e-5, f"{name}: relative gradient difference {relative:.2e}"
    torch.testing.assert_close(packed_grad, grad, rtol=1e-4, atol=1e-5 * grad.abs().max().item())


def move_lora_away_from_zero(model, std: float = 0.5) -> None:
    """Give a fresh LoRA adapter non-zero `B` matrices, so the policy differs from the base model (the reference)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)
