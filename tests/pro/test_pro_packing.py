"""Packed layouts (prefix sharing, padding-free) against TRL's padded layout: same loss, same gradients.

Every exactness test collates the same tokenized rankings with the padded layout and with each packed layout, runs
`PROTrainer.compute_loss` and a backward on each, and asks for the loss and the gradient to agree within 1e-5
(relative) in float32.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset
from tiny_models import (
    BF16_REL,
    LAYOUTS,
    assert_close_gradient_bf16,
    assert_same_gradient,
    assert_same_metrics,
    cpu_test_config,
    hh_rankings,
    linear_output_dtypes,
    loss_and_grad,
    make_small_vocab_causal_lm,
    move_lora_away_from_zero,
    prepare_for_mixed_precision,
    requires_cuda,
)
from transformers import AutoModelForCausalLM, Qwen2Config

from trl_ranking import DataCollatorForRanking, PROConfig, PROTrainer
from trl_ranking.packing import (
    PackedGroup,
    _block_mask,
    _visible,
    build_packed_layout,
    is_packed,
    packed_attention_mask,
    packing_unsupported_reason,
    use_ranking_attention,
)
from trl_ranking.scoring import packed_token_log_probs, token_log_probs


# Trainer mechanics and losses, not GPT-2's tokenization: conftest's fixtures give the tiny models and tokenizer
# with the 4,096-token vocabulary, whose LM head costs a twelfth of GPT-2's
SMALL_VOCABULARY = True


MAX_LENGTH = 96
MAX_PROMPT_LENGTH = 64
REWARDS = [0.5, 2.0, -1.0, 1.0, 0.0]


def make_config(tmp_path, **overrides) -> PROConfig:
    values = dict(
        per_device_train_batch_size=3,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
        prefix_sharing=False,
    )
    values.update(overrides)
    return cpu_test_config(PROConfig, tmp_path, **values)


def ranking_rows(hh_pairs, sizes=(2, 4, 3), with_rewards: bool = True) -> list[dict]:
    """Rankings of real HH-RLHF responses, of mixed sizes (extra candidates borrowed from other rows)."""
    return hh_rankings(hh_pairs, 20, 200, [REWARDS] * len(sizes) if with_rewards else None, sizes)


def collate(trainer, layout: dict | None, max_length: int | None = MAX_LENGTH):
    collator = DataCollatorForRanking(
        pad_token_id=trainer.processing_class.pad_token_id, max_length=max_length, **(layout or {})
    )
    return collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def assert_same_loss_and_grad(trainer, max_length: int | None = MAX_LENGTH, layouts=LAYOUTS):
    if any(layout["padding_free"] for layout in layouts.values()):
        # As the trainer does for padding-free rows (SDPA models): attention per ranking; plain SDPA on padded rows
        for model in (trainer.model, trainer.ref_model):
            if model is not None:
                use_ranking_attention(model)
    padded = collate(trainer, None, max_length)
    assert not is_packed(padded)
    loss, grad = loss_and_grad(trainer, padded)
    assert grad.abs().sum() > 0
    for name, layout in layouts.items():
        batch = collate(trainer, layout, max_length)
        assert is_packed(batch)
        assert batch["attention_mask"].sum() < padded["attention_mask"].sum() or not layout["prefix_sharing"], name
        packed_loss, packed_grad = loss_and_grad(trainer, batch)
        assert packed_loss == pytest.approx(loss, rel=1e-5), name
        assert_same_gradient(packed_grad, grad, name)
    return padded


# ----------------------------------------------------------------------------------------------------------------------
# The layout itself
# ----------------------------------------------------------------------------------------------------------------------
def test_layout_scores_the_same_tokens_as_the_padded_rows():
    groups = [
        PackedGroup([[1, 2, 3, 4], [1, 2, 5], [1, 2, 6, 7, 8]], [[0, 0, 1, 1], [0, 0, 1], [0, 0, 1, 1, 1]], 2),
        PackedGroup([[9, 10], [9, 11, 12]], [[0, 1], [0, 1, 1]], 1),  # one-token prompt: nothing shared
        PackedGroup([[13, 14, 15], [13, 14, 16]], [[1, 1, 1], [1, 1, 1]], 2),  # prompt tokens scored too (DOVE)
        PackedGroup([[17, 18], [17, 18, 19, 20]], [[0, 0], [0, 0, 0, 1]], 3),  # truncated inside the prompt
    ]
    for share_prefix in (True, False):
        for padding_free in (True, False):
            layout = build_packed_layout(
                groups, share_prefix=share_prefix, padding_free=padding_free, pad_to_multiple_of=4
            )
            assert layout["input_ids"].shape[1] % 4 == 0
            assert int(layout["num_sequences"]) == 9
            labels = layout["shift_labels"].reshape(-1)
            # Each sequence scores exactly its tokens 1.. (the first has no prediction), labels are the tokens
            sequences = [(seq, m) for g in groups for seq, m in zip(g.sequences, g.scored)]
            for index, (sequence, scored) in enumerate(sequences):
                positions = layout["score_position"][layout["score_sequence"] == index]
                assert labels[positions].tolist() == [t for t, f in zip(sequence[1:], scored[1:]) if f]
            if padding_free:
                assert layout["input_ids"].shape[0] == 1
    shared = build_packed_layout(groups, share_prefix=True, padding_free=True)
    # Group 0 shares [1] (the prompt minus its last token); each branch restarts at position 1 with a copy of 2
    assert shared["input_ids"][0, :12].tolist() == [1, 2, 3, 4, 2, 5, 2, 6, 7, 8, 9, 10]
    assert shared["position_ids"][0, :12].tolist() == [0, 1, 2, 3, 1, 2, 1, 2, 3, 4, 0, 1]
    # The shared token 13 -> 14 is scored for both sequences of the last group
    last = (shared["score_sequence"] >= 5) & (shared["score_sequence"] <= 6)
    assert shared["score_position"][last].tolist().count(shared["score_position"][last].min().item()) == 2


def test_mask_is_the_tree_of_each_group():
    layout = build_packed_layout(
        [PackedGroup([[1, 2, 3], [1, 2, 4, 5]], [[0, 0, 1], [0, 0, 1, 1]], 2), PackedGroup([[6, 7]], [[0, 1]], 1)],
        padding_free=True,
        pad_to_multiple_of=10,
    )
    visible = _visible(layout, window=None)[0].int()
    # row: [1 | 2 3 | 2 4 5 | 6 7 | pad pad pad]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 1, 0, 0, 0, 0, 0],
            [1, 0, 0, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        ]
    )
    assert torch.equal(visible, expected)
    # Flex attention's block mask is built from the same rule (checked densely; flex kernels need a GPU to train)
    from torch.nn.attention.flex_attention import create_mask

    block_mask = _block_mask(layout, window=None)
    dense = create_mask(block_mask.mask_mod, 1, 1, 10, 10, device="cpu")[0, 0].int()
    assert torch.equal(dense, expected)
    assert torch.equal(_visible(layout, window=2)[0, 5].int(), torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 0, 0]))


# ----------------------------------------------------------------------------------------------------------------------
# The LM head on the scored positions only (`scored_forward`), against TRL's head scoring every position
# ----------------------------------------------------------------------------------------------------------------------
def full_head_forward(model, inputs, **labels):
    """TRL's fused head as it runs on CPU: every position of the batch projected onto the vocabulary."""
    return model(**inputs, **labels, fused_lm_head=True, use_cache=False)


@pytest.fixture
def spy_head(monkeypatch):
    """The number of hidden states each call of TRL's chunked log-prob head receives."""
    from trl.trainer import utils as trl_utils

    rows = []
    original = trl_utils._ChunkedLogProbFunction.apply

    def apply(hidden, *args):
        rows.append(hidden.shape[0])
        return original(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", apply)
    return rows


@pytest.mark.parametrize("layout_name", [None, *LAYOUTS])
def test_head_on_scored_positions_equals_the_full_head(tmp_path, tiny_model_path, tokenizer, hh_pairs, layout_name,
                                                      spy_head):  # fmt: skip
    from trl.trainer.utils import add_fused_lm_head

    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
    )
    model = trainer.model
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # the metrics' fields too
    batch = collate(trainer, LAYOUTS.get(layout_name))
    if layout_name is None:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        scored = token_log_probs(model, inputs, batch["completion_mask"])
        reference = full_head_forward(model, inputs, labels=labels)
        values, expected = scored.sums, (reference.log_probs * batch["completion_mask"][:, 1:]).sum(dim=1)
    else:
        inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": packed_attention_mask(model, batch),
            "position_ids": batch["position_ids"],
        }
        scored = packed_token_log_probs(model, batch)
        reference = full_head_forward(model, inputs, shift_labels=batch["shift_labels"])
        values, expected = scored.values, reference.log_probs.reshape(-1)[batch["score_position"]]
    # The head saw the scored positions alone; TRL's head on CPU sees every position of the batch
    assert spy_head[0] == int((reference.label_mask).sum()) < spy_head[1] == reference.label_mask.numel()
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)
    for name in ("log_probs", "entropy", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(scored.outputs, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scored.outputs.loss, reference.loss, rtol=1e-5, atol=0)
    # Gradients through the gathered hidden states equal the full head's
    weights = [p for p in model.parameters() if p.requires_grad]
    grad = torch.autograd.grad(values.sum(), weights)
    grad_expected = torch.autograd.grad(expected.sum(), weights)
    grad, grad_expected = torch.cat([g.flatten() for g in grad]), torch.cat([g.flatten() for g in grad_expected])
    assert ((grad - grad_expected).norm() / grad_expected.norm()).item() < 1e-5


def test_head_on_scored_positions_with_nothing_scored(tiny_model_path):
    """A batch with no scored token still returns a differentiable zero (TRL's head runs on every position)."""
    from trl.trainer.utils import add_fused_lm_head

    from trl_ranking.scoring import scored_forward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    add_fused_lm_head(model)
    input_ids = torch.tensor([[5, 6, 7, 8]])
    outputs = scored_forward(model, {"input_ids": input_ids}, torch.full((1, 3), -100))
    assert outputs.log_probs.shape == (1, 3) and not outputs.log_probs.any()
    outputs.loss.backward()


# ----------------------------------------------------------------------------------------------------------------------
# Exactness: loss and gradients equal the padded layout's
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_mixed_n_rankings_match_padded(tmp_path, tiny_model_path, tokenizer, hh_pairs, attn_implementation):
    trainer = PROTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation=attn_implementation),
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
    )
    padded = assert_same_loss_and_grad(trainer)
    assert padded["num_candidates"].tolist() == [2, 4, 3]


def test_padding_free_rows_attend_per_ranking(tmp_path, tiny_model_path, tokenizer, hh_pairs, monkeypatch):
    """With padding-free rows, SDPA runs on each ranking of the row on its own (not on the whole row), exactly."""
    from transformers.integrations import sdpa_attention

    from trl_ranking.packing import RANKING_SDPA

    trainer = PROTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation="sdpa"),
        args=make_config(tmp_path, prefix_sharing=True, padding_free=True),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
    )
    assert trainer.model.config._attn_implementation == RANKING_SDPA
    query_lengths = []
    original = sdpa_attention.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        query_lengths.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    batch = collate(trainer, LAYOUTS["prefix_shared+padding_free"])
    trainer.compute_loss(trainer.model, batch)
    document = batch["document_ids"][0]
    expected = [int((document == d).sum()) for d in range(3)]
    expected[-1] += int((document < 0).sum())  # the trailing padding goes with the last ranking
    layers = trainer.model.config.num_hidden_layers
    assert query_lengths == expected * layers
    # Padded rows (and generation) go to SDPA unchanged
    query_lengths.clear()
    trainer.compute_loss(trainer.model, collate(trainer, None))
    assert query_lengths == [collate(trainer, None)["input_ids"].shape[1]] * layers
    monkeypatch.undo()
    assert_same_loss_and_grad(trainer)


def test_truncation_at_max_length_matches_padded(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_length=48, max_prompt_length=40),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, sizes=(3, 5, 2))),
        processing_class=tokenizer,
    )
    batch = collate(trainer, None, 48)
    assert batch["input_ids"].shape[1] == 48  # rows were cut
    assert_same_loss_and_grad(trainer, max_length=48)
    # Cut to the prompt's length or less: candidates left with no token score nothing, in both layouts
    assert_same_loss_and_grad(trainer, max_length=41, layouts={"prefix_shared": LAYOUTS["prefix_shared"]})


def test_lora_matches_padded(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from peft import LoraConfig

    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    move_lora_away_from_zero(trainer.model)
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert_same_loss_and_grad(trainer)


def test_conversational_rankings_match_padded(tmp_path, tiny_model_path, chat_tokenizer, hh_pairs):
    rows = []
    for i, n in enumerate((3, 2, 4)):
        pair = hh_pairs[40 + i]
        completions = [pair["chosen"], pair["rejected"], *[hh_pairs[300 + i + j]["chosen"] for j in range(n - 2)]]
        rows.append(
            {
                "prompt": [{"role": "user", "content": pair["prompt"][-200:]}],
                "completions": [[{"role": "assistant", "content": c.strip()[:150]}] for c in completions],
            }
        )
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
    )
    assert_same_loss_and_grad(trainer)


@pytest.mark.parametrize("precompute", [False, True])
def test_reference_mode_matches_padded(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs, precompute):
    dataset = Dataset.from_list(ranking_rows(hh_pairs))

    def build(prefix_sharing, padding_free=False):
        return PROTrainer(
            model=tiny_model_path,
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
            args=make_config(
                tmp_path,
                reference_normalized=True,
                beta=0.5,
                precompute_ref_log_probs=precompute,
                prefix_sharing=prefix_sharing,
                padding_free=padding_free,
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    padded = build(False)
    packed = build(True, padding_free=True)
    assert packed.prefix_sharing and packed.padding_free
    if precompute:
        # The reference log-probs were precomputed in the packed layout and equal the padded layout's
        expected = torch.tensor(sum(padded.train_dataset["ref_logps"], []))
        torch.testing.assert_close(
            torch.tensor(sum(packed.train_dataset["ref_logps"], [])), expected, rtol=1e-5, atol=0
        )
    else:
        batch = collate(packed, LAYOUTS["prefix_shared+padding_free"])
        torch.testing.assert_close(
            packed.compute_ref_log_probs(packed.ref_model, batch),
            padded.compute_ref_log_probs(padded.ref_model, collate(padded, None)),
            rtol=1e-5,
            atol=0,
        )
    assert_same_loss_and_grad(packed)


def test_sliding_window_layers_match_padded(tmp_path, tokenizer, hh_pairs):
    """A Qwen2 with full and sliding-window layers, the window shorter than the rows."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    assert set(model.config.layer_types) == {"full_attention", "sliding_attention"}
    trainer = PROTrainer(
        model=model,
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
    )
    batch = collate(trainer, LAYOUTS["prefix_shared"])
    assert isinstance(packed_attention_mask(trainer.model, batch), dict)
    assert_same_loss_and_grad(trainer)


def test_training_steps_match_padded(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """Two SGD steps end to end (gradient checkpointing) land on the padded run's weights.

    (SGD: Adam's first step moves every weight by about the learning rate whatever its gradient's size, so weights
    whose gradient is ~0 would differ by rounding noise alone.)
    """
    dataset = Dataset.from_list(ranking_rows(hh_pairs, sizes=(2, 4, 3, 5, 2, 3)))

    def train(**layout):
        trainer = PROTrainer(
            model=tiny_model_path,
            args=make_config(
                tmp_path, max_steps=2, learning_rate=1e-2, optim="sgd", gradient_checkpointing=True, **layout
            ),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train()
        return trainer

    padded = train(prefix_sharing=False)
    packed = train(prefix_sharing=None, padding_free=True)  # the default rule turns prefix sharing on here
    assert packed.prefix_sharing and packed.padding_free and not padded.prefix_sharing
    for (name, p), q in zip(padded.model.named_parameters(), packed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
    logs = [log for log in packed.state.log_history if "loss" in log]
    padded_logs = [log for log in padded.state.log_history if "loss" in log]
    assert [log["loss"] for log in logs] == pytest.approx([log["loss"] for log in padded_logs], rel=1e-5)
    assert logs[0]["entropy"] == pytest.approx(padded_logs[0]["entropy"], rel=1e-5)
    assert logs[0]["mean_token_accuracy"] == pytest.approx(padded_logs[0]["mean_token_accuracy"], rel=1e-5)
    assert logs[-1]["num_tokens"] < padded_logs[-1]["num_tokens"]  # tokens processed: each prompt once, no padding


# ----------------------------------------------------------------------------------------------------------------------
# Where packing is not exact: fallbacks
# ----------------------------------------------------------------------------------------------------------------------
def test_default_rule_and_fallbacks(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from peft import PromptTuningConfig

    dataset = Dataset.from_list(ranking_rows(hh_pairs))
    default = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, prefix_sharing=None),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert default.prefix_sharing and not default.padding_free
    assert is_packed(default.data_collator([default.train_dataset[0]]))

    # Flash attention: no shared prefix in its varlen kernels; padding-free alone is fine
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model.config._attn_implementation = "flash_attention_2"
    assert "cu_seqlens" in packing_unsupported_reason(model, prefix_sharing=True)
    assert packing_unsupported_reason(model, prefix_sharing=False) is None
    with pytest.warns(UserWarning, match="falls back to the padded layout"):
        flash = PROTrainer(
            model=model,
            args=make_config(tmp_path, prefix_sharing=True, padding_free=True),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    assert not flash.prefix_sharing and flash.padding_free
    layout = flash.data_collator([flash.train_dataset[0]])
    assert packed_attention_mask(flash.model, layout) is None  # the kernels read the boundaries off position_ids

    # Prompt-learning PEFT prepends virtual tokens: off under the default rule, a warning when asked for
    peft_config = PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        auto = PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, prefix_sharing=None),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    assert not auto.prefix_sharing
    assert not is_packed(auto.data_collator([auto.train_dataset[0]]))
    with pytest.warns(UserWarning, match="prompt-learning"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, prefix_sharing=True),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        )

    # A collator passed in keeps its own layout
    with pytest.warns(UserWarning, match="collator"):
        custom = PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, prefix_sharing=True),
            data_collator=DataCollatorForRanking(pad_token_id=tokenizer.pad_token_id),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    assert not custom.prefix_sharing


def test_eval_with_outputs_on_a_packed_batch(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, prefix_sharing=True, padding_free=True),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
        processing_class=tokenizer,
    )
    batch = collate(trainer, LAYOUTS["prefix_shared+padding_free"])
    with torch.no_grad(), pytest.warns(FutureWarning):
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape


# ----------------------------------------------------------------------------------------------------------------------
# bf16 on CPU (`bf16=True, use_cpu=True`): accelerate's autocast around the forward, float32 weights
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spread_model_path(tmp_path_factory) -> str:
    """The small model with 10x its initial weights: a fresh model's log-probs are all about log(1/4096), this one's
    spread over nats, so the bf16 rounding of its logits and activations shows in the scores."""
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-llama-spread"), initializer_range=0.2)


BF16_METRICS = ["loss/ranking", "loss/sft", "scores/rank_1", "scores/rank_2", "entropy"]


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
def test_bf16_layouts_match_padded(tmp_path, spread_model_path, tokenizer, hh_pairs, layout_name, monkeypatch):
    """In bf16 as `Trainer.train` runs it (accelerate's autocast forward), each packed layout against the padded one,
    both bf16, and bf16 against float32 on the same layout: loss, gradient and logged metrics at bf16 tolerance
    (`tiny_models.BF16_REL`). The matrix products run in bf16 (no silent float32 fallback); the log-probabilities, the
    per-candidate sums and the loss are float32 (not bf16 sums)."""
    from trl_ranking.pro import trainer as pro_trainer

    score_dtypes = []
    original = pro_trainer.batch_token_log_probs

    def spy(*args, **kwargs):
        scores = original(*args, **kwargs)
        score_dtypes.append((scores.values.dtype, scores.sums.dtype))
        return scores

    monkeypatch.setattr(pro_trainer, "batch_token_log_probs", spy)
    results = {}
    for bf16 in (False, True):
        trainer = PROTrainer(
            model=spread_model_path,
            args=make_config(tmp_path, bf16=bf16, use_cpu=True),
            train_dataset=Dataset.from_list(ranking_rows(hh_pairs)),
            processing_class=tokenizer,
        )
        use_ranking_attention(trainer.model)  # per-ranking SDPA on padding-free rows, as the trainer sets it up
        prepare_for_mixed_precision(trainer)
        assert trainer.accelerator.native_amp == bf16
        for name, layout in (("padded", None), (layout_name, LAYOUTS[layout_name])):
            batch = collate(trainer, layout)
            trainer.model.zero_grad()
            score_dtypes.clear()
            with linear_output_dtypes(trainer.model) as dtypes:
                loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
            trainer.model.zero_grad()
            assert set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}, (name, set(dtypes))
            assert score_dtypes == [(torch.float32, torch.float32)] and loss.dtype == torch.float32, name
            assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast: weights stay fp32
            logged = trainer._metrics["train" if trainer.model.training else "eval"]
            metrics = {key: values[-1] for key, values in logged.items()}
            results[bf16, name] = loss.item(), grad, metrics
    for context, got, expected in [
        (f"bf16 {layout_name} vs bf16 padded", results[True, layout_name], results[True, "padded"]),
        (f"bf16 vs float32, {layout_name}", results[True, layout_name], results[False, layout_name]),
        ("bf16 vs float32, padded", results[True, "padded"], results[False, "padded"]),
    ]:
        assert got[0] == pytest.approx(expected[0], rel=BF16_REL), context
        assert_close_gradient_bf16(got[1], expected[1], context)
        assert_same_metrics(got[2], expected[2], BF16_METRICS, context, rel=BF16_REL, abs=BF16_REL)
    # And the float32 runs of both layouts still agree at float32 tolerance
    assert results[False, layout_name][0] == pytest.approx(results[False, "padded"][0], rel=1e-5)
    assert_same_gradient(results[False, layout_name][1], results[False, "padded"][1], layout_name)


def test_bf16_training_learns(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """A short bf16 run on CPU (`bf16=True, use_cpu=True`, the packed default layout) learns: ranking accuracy on the
    training rankings rises and the ranking loss falls; the weights stay float32."""
    dataset = hh_pairs.select(range(16))
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(
            tmp_path,
            bf16=True,
            use_cpu=True,
            prefix_sharing=None,
            num_train_epochs=5,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            learning_rate=3e-3,
            lr_scheduler_type="constant",
        ),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
    )
    assert trainer.args.mixed_precision == "bf16"
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert trainer.accelerator.native_amp
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert after["eval_loss/ranking"] < before["eval_loss/ranking"]
    assert after["eval_ranking/accuracy"] >= before["eval_ranking/accuracy"] + 0.25  # measured 0.44 -> 1.0
    assert after["eval_ranking/accuracy"] >= 0.9
    assert trainer.prefix_sharing  # the default layout rule packed the batches


# ----------------------------------------------------------------------------------------------------------------------
# Flex attention (its kernels train on a GPU only: CPU flex attention has no backward)
# ----------------------------------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.gpu
def test_flex_attention_matches_padded_sdpa_on_gpu(tiny_model_path):
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    groups = []
    for n, prompt_length in [(2, 37), (4, 150), (3, 5)]:
        prompt = torch.randint(0, 50000, (prompt_length,)).tolist()
        sequences = [prompt + torch.randint(0, 50000, (int(torch.randint(1, 60, (1,))),)).tolist() for _ in range(n)]
        groups.append(
            PackedGroup(
                sequences, [[0] * prompt_length + [1] * (len(s) - prompt_length) for s in sequences], prompt_length
            )
        )
    sequences = [s for g in groups for s in g.sequences]
    scored = [m for g in groups for m in g.scored]
    length = max(map(len, sequences))
    padded = {
        "input_ids": torch.tensor([s + [0] * (length - len(s)) for s in sequences]).cuda(),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences]).cuda(),
    }
    completion_mask = torch.tensor([m + [0] * (length - len(m)) for m in scored]).cuda()

    def run(attn_implementation, packed):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation=attn_implementation).cuda()
        add_fused_lm_head(model)
        if packed:
            layout = {k: v.cuda() for k, v in build_packed_layout(groups, padding_free=True).items()}
            sums = packed_token_log_probs(model, layout).sums
        else:
            sums = token_log_probs(model, padded, completion_mask).sums
        sums.sum().backward()
        return sums.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    sums, grad = run("sdpa", packed=False)
    flex_sums, flex_grad = run("flex_attention", packed=True)
    torch.testing.assert_close(flex_sums, sums, rtol=1e-5, atol=1e-5)
    assert ((flex_grad - grad).norm() / grad.norm()).item() < 1e-5
