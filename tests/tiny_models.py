"""Helpers shared by the tests (imported as `from tiny_models import ...`): the tiny reward model and causal LM, built
once per session, the real data paths, CPU test configs, and the pieces the trainer and layout tests of PRO and DOVE
have in common (rankings of real rows, independent log-probabilities, loss-and-gradient of a batch, LoRA set-up)."""

from __future__ import annotations

import builtins
import contextlib
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


SMALL_VOCAB_SIZE = 4096
"""The vocabulary of the small tokenizer and the tiny models built for it: GPT-2's first 4,095 tokens and its EOS."""


def save_small_vocab_tokenizer(output_dir, vocab_size: int = SMALL_VOCAB_SIZE) -> str:
    """GPT-2's byte-level BPE cut to its first `vocab_size - 1` tokens (the 256 bytes and the merges that make the
    next ones, in GPT-2's order), with `<|endoftext|>` (BOS, EOS, UNK, and pad once loaded) as its last id. Saved to
    `output_dir`, whose path is returned.

    It tokenizes like GPT-2 (same pre-tokenizer, no BOS added, EOS the last id) into ~1.2x as many tokens on English
    text, for a model whose LM head has 4,096 rows instead of 50,257: that head is most of a tiny model's cost. The
    tests of trainer mechanics, layouts and losses use it; tokenization tests and real-text formats keep GPT-2.
    """
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from trl_ranking.assets import bundled_tokenizer_path

    data = json.loads((Path(bundled_tokenizer_path()) / "tokenizer.json").read_text(encoding="utf-8"))
    eos_id = vocab_size - 1
    data["model"]["vocab"] = {token: i for token, i in data["model"]["vocab"].items() if i < eos_id}
    data["model"]["merges"] = data["model"]["merges"][: eos_id - 256]  # merge k makes token 256 + k
    data["model"]["vocab"]["<|endoftext|>"] = eos_id
    (added,) = data["added_tokens"]
    added["id"] = eos_id
    special = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)), bos_token=special, eos_token=special, unk_token=special
    )
    assert len(tokenizer) == vocab_size and tokenizer.eos_token_id == eos_id
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def make_small_vocab_causal_lm(output_dir, seed: int = 0, model_type: str = "llama", **sizes) -> str:
    """`make_tiny_causal_lm`'s model (same sizes and seed rule) with the small tokenizer's vocabulary and special ids,
    saved to `output_dir` (with the small tokenizer), whose path is returned."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    eos_id = SMALL_VOCAB_SIZE - 1
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    values.update(sizes)
    values["num_key_value_heads"] = values["num_attention_heads"]
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config}[model_type](
        vocab_size=SMALL_VOCAB_SIZE,
        max_position_embeddings=2048,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
        **values,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(output_dir)
    save_small_vocab_tokenizer(output_dir)
    return str(output_dir)


def load_small_vocab_tokenizer(path, chat_template: bool = False):
    """The small tokenizer saved at `path`, with `pad_token = eos_token` (and the ChatML-style test template), as
    `load_bundled_tokenizer` gives GPT-2's."""
    from transformers import AutoTokenizer

    from trl_ranking.assets import SIMPLE_CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
    return tokenizer


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


# Logged metrics that are a difference of two other logged metrics (TRL's DPO metrics, which DOVE logs too)
DIFFERENCE_METRICS = {"rewards/margins": ("rewards/chosen", "rewards/rejected")}


def assert_same_metrics(got: dict, expected: dict, names, context: str = "", rel: float = 1e-5, abs: float = 1e-6):
    """Logged metrics of two computations that must agree (a packed layout and the padded one, two runs): each within
    `rel`/`abs` of the other.

    A margin (`rewards/margins`, the chosen minus the rejected rewards) is a difference of two close numbers: float32
    sums in another order move it by the rewards' rounding, not the margin's, so a tolerance relative to the margin is
    too tight. The two rewards are compared at their own tolerance, and the margin at the sum of theirs."""
    for name in names:
        if name in DIFFERENCE_METRICS:
            terms = DIFFERENCE_METRICS[name]
            for term in terms:
                assert got[term] == pytest.approx(expected[term], rel=rel, abs=abs), f"{context}: {term}"
            tolerance = sum(rel * builtins.abs(expected[term]) + abs for term in terms)
            assert builtins.abs(got[name] - expected[name]) <= tolerance, f"{context}: {name}"
        else:
            assert got[name] == pytest.approx(expected[name], rel=rel, abs=abs), f"{context}: {name}"


def move_lora_away_from_zero(model, std: float = 0.5) -> None:
    """Give a fresh LoRA adapter non-zero `B` matrices, so the policy differs from the base model (the reference)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)


# bf16 tolerances. bfloat16 keeps 8 significant bits: one rounding moves a value by up to 2^-9 (0.2%) of itself.
# Under CPU autocast every matrix product rounds its inputs and output to bf16, the log-probabilities come out of
# TRL's fused head in float32, and the losses are float32 sums of thousands of them, so the rounding errors mostly
# average out (measured on the tiny models: ~1e-4 relative between bf16 and float32, <1e-5 between layouts). 2e-2 is
# ten bf16 roundings: a margin for accumulation through the layers, and still far below what a wrong token, mask or
# normalisation moves a loss by (tens of percent). Gradients are compared by direction, cosine > 0.99 (measured
# 0.9995 bf16 against float32, 0.99999 between layouts), and by relative norm of the difference (< 5e-2).
BF16_REL = 2e-2
BF16_GRAD_COSINE = 0.99
BF16_GRAD_REL = 5e-2


def prepare_for_mixed_precision(trainer):
    """Wrap the trainer's model as `Trainer.train` does: with `bf16=True`, accelerate runs its forward under
    `torch.autocast(device, dtype=torch.bfloat16)` and casts the outputs to float32 (the weights stay float32)."""
    trainer.model = trainer.accelerator.prepare_model(trainer.model)
    return trainer


def assert_close_gradient_bf16(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Two gradients agree at bf16 tolerance: same direction (cosine) and a small relative difference."""
    cosine = torch.nn.functional.cosine_similarity(got.double(), expected.double(), dim=0).item()
    relative = ((got - expected).norm() / expected.norm()).item()
    assert cosine > BF16_GRAD_COSINE, f"{name}: gradient cosine {cosine:.5f}"
    assert relative < BF16_GRAD_REL, f"{name}: relative gradient difference {relative:.2e}"


@contextlib.contextmanager
def linear_output_dtypes(model):
    """Record the output dtype of every `nn.Linear` of `model` (the matrix products autocast lowers to bf16) during
    the block: yields the list the forwards fill."""
    dtypes: list[torch.dtype] = []
    handles = [
        module.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        yield dtypes
    finally:
        for handle in handles:
            handle.remove()
