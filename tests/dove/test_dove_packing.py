"""DOVETrainer with packed layouts (prefix sharing, padding-free) against TRL's padded layout: same loss, gradients
and metrics.

Every exactness test collates the same tokenized pairs with the padded layout and with each packed layout, runs
`DOVETrainer.compute_loss` and a backward on each, and asks for the loss and the gradient to agree within 1e-5
(relative) in float32. The pairs are real (DOVE's Anthropic-helpful rows) and mixed in one batch: joint pairs whose
templated instructions share their opening tokens (a tree), a joint pair sharing nothing (two sequences) and
conditional pairs (one shared prompt).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_models import (
    BF16_REL,
    LAYOUTS,
    assert_close_gradient_bf16,
    assert_same_gradient,
    assert_same_metrics,
    linear_output_dtypes,
    make_small_vocab_causal_lm,
    move_lora_away_from_zero,
    prepare_for_mixed_precision,
)
from transformers import AutoModelForCausalLM

from trl_ranking.collators import DataCollatorForJointPreference
from trl_ranking.dove import DOVEConfig, DOVETrainer


# Trainer mechanics and losses, not GPT-2's tokenization: conftest's fixtures give the tiny models and tokenizer
# with the 4,096-token vocabulary, whose LM head costs a twelfth of GPT-2's
SMALL_VOCABULARY = True


DOVE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dove" / "anthropic_helpful"
TEMPLATE = "### Instructions: {}\n\n### Response:"
MAX_LENGTH = 96
METRICS = ["logps/chosen", "logps/rejected", "rewards/margins", "entropy", "mean_token_accuracy", "logits/chosen"]


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def mixed_rows(tokenizer) -> list[dict]:
    """Two templated joint pairs, one untemplated joint pair, two conditional pairs: real rows, at most ~70 tokens."""

    def fits(*texts) -> bool:
        return len(tokenizer("".join(texts))["input_ids"]) <= 70

    sft = [
        r for r in read_jsonl(DOVE_DATA / "val_sft.jsonl") if fits(TEMPLATE.format(r["instruction"]), r["response"])
    ]
    rows = []
    for a, b in [(sft[0], sft[1]), (sft[2], sft[3])]:
        rows.append(
            {
                "prompt": None,
                "chosen_prompt": TEMPLATE.format(a["instruction"]),
                "chosen": " " + a["response"].strip(),
                "rejected_prompt": TEMPLATE.format(b["instruction"]),
                "rejected": " " + b["response"].strip(),
            }
        )
    a, b = sft[4], sft[5]  # no template: the two rows share no opening token
    rows.append(
        {
            "prompt": None,
            "chosen_prompt": a["instruction"],
            "chosen": " " + a["response"].strip(),
            "rejected_prompt": "Tell me: " + b["instruction"],
            "rejected": " " + b["response"].strip(),
        }
    )
    for row in read_jsonl(DOVE_DATA / "val_conditional_pref.jsonl"):
        prompt = TEMPLATE.format(row["i_chosen"])
        chosen, rejected = " " + row["r_chosen"].strip(), " " + row["r_reject"].strip()
        if fits(prompt, chosen) and fits(prompt, rejected):
            rows.append(
                {
                    "prompt": prompt,
                    "chosen_prompt": None,
                    "chosen": chosen,
                    "rejected_prompt": None,
                    "rejected": rejected,
                }
            )
        if len(rows) == 5:
            return rows
    raise AssertionError("not enough short conditional rows")


@pytest.fixture(scope="module")
def ref_model_path(tmp_path_factory) -> str:
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-llama-ref"), seed=1)


def make_trainer(tmp_path, policy, rows, tokenizer, ref_model=None, peft_config=None, **overrides) -> DOVETrainer:
    values = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        bf16=False,
        beta=0.1,
        max_length=MAX_LENGTH,
        per_device_train_batch_size=len(rows),
        per_device_eval_batch_size=len(rows),
        gradient_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        prefix_sharing=False,
    )
    values.update(overrides)
    return DOVETrainer(
        model=policy,
        ref_model=ref_model,
        args=DOVEConfig(**values),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def collate(trainer, layout: dict | None) -> dict:
    collator = trainer.data_collator
    collator = dataclasses.replace(collator, **(layout or {"prefix_sharing": False, "padding_free": False}))
    return collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def loss_grad_metrics(trainer, batch) -> tuple[float, torch.Tensor, dict[str, float]]:
    trainer.model.zero_grad()
    shapes = []  # the rows the policy's embedding layer sees: the packed rows for a packed batch
    hook = trainer.model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: shapes.append(args[0].shape)
    )
    try:
        loss = trainer.compute_loss(trainer.model, batch)
    finally:
        hook.remove()
    expected = batch["packed_input_ids" if "packed_input_ids" in batch else "input_ids"].shape
    assert shapes and all(shape == expected for shape in shapes), (shapes, expected)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    trainer.model.zero_grad()
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    return loss.item(), grad, {name: values[-1] for name, values in metrics.items()}


def assert_same_loss_and_grad(trainer, layouts=LAYOUTS) -> dict:
    from trl_ranking.packing import use_ranking_attention

    if any(layout["padding_free"] for layout in layouts.values()):
        # As the trainer does for padding-free rows (SDPA models): attention per pair; plain SDPA on padded rows
        for model in (trainer.model, trainer.ref_model):
            if model is not None:
                use_ranking_attention(model)
    padded = collate(trainer, None)
    assert "packed_input_ids" not in padded
    loss, grad, metrics = loss_grad_metrics(trainer, padded)
    assert grad.abs().sum() > 0
    names = [
        n for n in METRICS + ["joint/logps_chosen_instruction", "joint/logps_rejected_instruction"] if n in metrics
    ]
    for name, layout in layouts.items():
        batch = collate(trainer, layout)
        packed_tokens = batch["packed_attention_mask"].sum()
        assert packed_tokens < padded["attention_mask"].sum() or not layout["prefix_sharing"], name
        assert batch["packed_input_ids"].numel() < padded["input_ids"].numel() or not layout["padding_free"], name
        packed_loss, packed_grad, packed_metrics = loss_grad_metrics(trainer, batch)
        assert packed_loss == pytest.approx(loss, rel=1e-5), name
        assert_same_gradient(packed_grad, grad, name)
        assert_same_metrics(packed_metrics, metrics, names, name)
    return padded


# ----------------------------------------------------------------------------------------------------------------------
# The collator's packed layout
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("max_length, mode", [(None, "keep_start"), (30, "keep_start"), (30, "keep_end")])
def test_packed_layout_scores_the_padded_tokens(tokenizer, mixed_rows, joint, max_length, mode):
    """Every token the padded rows score is scored once in the packed rows, with the same label, nothing else."""
    examples = []
    for row in mixed_rows:
        prompts = [row["chosen_prompt"] or row["prompt"], row["rejected_prompt"] or row["prompt"]]
        prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
        examples.append(
            {
                "chosen_prompt_ids": prompt_ids[0],
                "chosen_ids": tokenizer(row["chosen"])["input_ids"] + [tokenizer.eos_token_id],
                "rejected_prompt_ids": prompt_ids[1],
                "rejected_ids": tokenizer(row["rejected"])["input_ids"] + [tokenizer.eos_token_id],
            }
        )
    collator = DataCollatorForJointPreference(
        pad_token_id=tokenizer.pad_token_id or 0, joint=joint, max_length=max_length, truncation_mode=mode
    )
    padded = collator(examples)
    expected = {tuple(index) for index in padded["completion_mask"][:, 1:].nonzero().tolist()}
    for name, layout in LAYOUTS.items():
        batch = dataclasses.replace(collator, **layout)(examples)
        for key in padded:
            torch.testing.assert_close(batch[key], padded[key])  # the padded keys are unchanged
        rows, columns = batch["packed_score_row"], batch["packed_score_column"]
        assert set(zip(rows.tolist(), columns.tolist())) == expected, name
        assert len(rows) == len(expected)  # each (row, token) once
        labels = batch["packed_shift_labels"].reshape(-1)[batch["packed_score_position"]]
        assert torch.equal(labels, padded["input_ids"][rows, columns + 1]), name
        documents = batch["packed_document_ids"]
        num_documents = len(documents[documents >= 0].unique())
        if layout["prefix_sharing"] and max_length is None:
            # 4 pairs are trees (template opening or shared prompt), the untemplated joint pair is 2 sequences
            assert num_documents == 6, name
        else:
            assert num_documents <= 10, name
        if layout["padding_free"]:
            assert batch["packed_input_ids"].shape[0] == 1 and bool(batch["packed_attention_mask"].all())


# ----------------------------------------------------------------------------------------------------------------------
# Exactness: loss, gradients and metrics equal the padded layout's
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("joint", [True, False], ids=["joint", "conditional-ablation"])
def test_mixed_pairs_match_padded(tmp_path, tokenizer, tiny_model_path, ref_model_path, mixed_rows, joint,
                                  attn_implementation):  # fmt: skip
    """An explicit reference with other weights, so the reference log-ratios are nonzero."""

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)

    trainer = make_trainer(
        tmp_path, load(tiny_model_path), mixed_rows, tokenizer, ref_model=load(ref_model_path), joint=joint
    )
    padded = assert_same_loss_and_grad(trainer)
    assert padded["different_instruction"].tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_truncation_at_max_length_matches_padded(tmp_path, tokenizer, tiny_model_path, ref_model_path, mixed_rows,
                                                 mode):  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # DPO's `truncation_mode` is deprecated
        trainer = make_trainer(
            tmp_path,
            tiny_model_path,
            mixed_rows,
            tokenizer,
            ref_model=AutoModelForCausalLM.from_pretrained(ref_model_path),
            max_length=48,  # GPT-2 had 36 and 30: the small tokenizer cuts the text into ~1.2x the tokens
            max_prompt_length=40,
            truncation_mode=mode,
        )
    batch = collate(trainer, None)
    assert batch["input_ids"].shape[1] == 48  # rows were cut
    assert_same_loss_and_grad(trainer)


def test_lora_matches_padded(tmp_path, tokenizer, tiny_model_path, mixed_rows):
    """The reference is the policy with its adapter switched off (no `ref_model`), on the same packed rows."""
    from peft import LoraConfig

    trainer = make_trainer(
        tmp_path,
        tiny_model_path,
        mixed_rows,
        tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    move_lora_away_from_zero(trainer.model)
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    assert_same_loss_and_grad(trainer)


def test_precomputed_reference_matches_padded(tmp_path, tokenizer, tiny_model_path, ref_model_path, mixed_rows):
    def build(name, **layout):
        return make_trainer(
            tmp_path / name,
            tiny_model_path,
            mixed_rows,
            tokenizer,
            ref_model=AutoModelForCausalLM.from_pretrained(ref_model_path),
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=2,
            **layout,
        )

    padded = build("padded")
    packed = build("packed", prefix_sharing=True, padding_free=True)
    assert packed.prefix_sharing and packed.padding_free and not padded.prefix_sharing
    # The reference log-probs were precomputed in the packed layout and equal the padded layout's
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        expected = torch.tensor(padded.train_dataset[key])
        torch.testing.assert_close(torch.tensor(packed.train_dataset[key]), expected, rtol=1e-5, atol=0)
    assert_same_loss_and_grad(packed)


@pytest.mark.parametrize(
    "options",
    [
        dict(loss_type=["sigmoid", "ipo", "apo_zero"], loss_weights=[1.0, 0.5, 0.3], ld_alpha=0.5, use_weighting=True),
        # (TRL's "sft" loss cannot be combined with `use_weighting`: an in-place product on an expanded tensor)
        dict(loss_type=["sigmoid_norm", "sft"], loss_weights=[1.0, 0.2]),
    ],
    ids=["ipo+ld_alpha+wpo", "sigmoid_norm+sft"],
)
def test_dpo_loss_options_match_padded(tmp_path, tokenizer, tiny_model_path, ref_model_path, mixed_rows, options):
    """Loss types that count tokens or read per-token values (`ipo`, `sigmoid_norm`, `sft`), `ld_alpha`, WPO."""
    trainer = make_trainer(
        tmp_path,
        tiny_model_path,
        mixed_rows,
        tokenizer,
        ref_model=AutoModelForCausalLM.from_pretrained(ref_model_path),
        **options,
    )
    assert_same_loss_and_grad(trainer, layouts={"prefix_shared+padding_free": LAYOUTS["prefix_shared+padding_free"]})


def test_training_steps_match_padded(tmp_path, tokenizer, tiny_model_path, mixed_rows):
    """Two SGD steps end to end (gradient checkpointing, the reference a copy of the initial policy) land on the
    padded run's weights, with the same logged metrics."""
    rows = mixed_rows * 2

    def train(name, **layout):
        trainer = make_trainer(
            tmp_path / name,
            tiny_model_path,
            rows,
            tokenizer,
            per_device_train_batch_size=5,
            max_steps=2,
            learning_rate=1e-1,
            optim="sgd",
            logging_steps=1,
            gradient_checkpointing=True,
            **layout,
        )
        trainer.train()
        return trainer

    padded = train("padded", prefix_sharing=False)
    packed = train("packed", prefix_sharing=None, padding_free=True)  # the default rule turns prefix sharing on here
    assert packed.prefix_sharing and packed.padding_free and not padded.prefix_sharing
    for (name, p), q in zip(padded.model.named_parameters(), packed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
    logs = [log for log in packed.state.log_history if "loss" in log]
    padded_logs = [log for log in padded.state.log_history if "loss" in log]
    assert len(logs) == 2
    for log, padded_log in zip(logs, padded_logs):
        assert_same_metrics(log, padded_log, ["loss", *METRICS, "joint/logps_chosen_instruction", "num_tokens"])
    assert logs[-1]["rewards/margins"] != 0.0


# ----------------------------------------------------------------------------------------------------------------------
# bf16 on CPU (`bf16=True, use_cpu=True`): accelerate's autocast around the forward, float32 weights
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spread_model_path(tmp_path_factory) -> str:
    """The small model with 10x its initial weights: its log-probs spread over nats (a fresh model's are all about
    log(1/4096)), so the bf16 rounding of its logits and activations shows in the scores."""
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-llama-spread"), initializer_range=0.2)


BF16_METRICS = ["logps/chosen", "logps/rejected", "rewards/margins", "entropy", "joint/logps_chosen_instruction"]


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
def test_bf16_layouts_match_padded(tmp_path, tokenizer, spread_model_path, ref_model_path, mixed_rows, layout_name,
                                   monkeypatch):  # fmt: skip
    """In bf16 as `Trainer.train` runs it (accelerate's autocast forward; TRL's reference forward under
    `accelerator.autocast()`), each packed layout against the padded one, both bf16, and bf16 against float32 on the
    same layout: loss, gradient and DPO's metrics at bf16 tolerance (`tiny_models.BF16_REL`). The matrix products
    run in bf16; the per-token log-probabilities that DPO sums, and the loss, are float32."""
    from trl_ranking.dove import trainer as dove_trainer

    logp_dtypes = []
    original = dove_trainer.dpo_fused_outputs

    def spy(*args, **kwargs):
        outputs = original(*args, **kwargs)
        logp_dtypes.append(outputs.log_probs.dtype)
        return outputs

    monkeypatch.setattr(dove_trainer, "dpo_fused_outputs", spy)
    results = {}
    for bf16 in (False, True):
        ref_model = AutoModelForCausalLM.from_pretrained(ref_model_path)
        trainer = make_trainer(
            tmp_path, spread_model_path, mixed_rows, tokenizer, ref_model=ref_model, bf16=bf16, use_cpu=True
        )
        from trl_ranking.packing import use_ranking_attention

        for model in (trainer.model, trainer.ref_model):
            use_ranking_attention(model)  # per-pair SDPA on padding-free rows, as the trainer sets it up
        prepare_for_mixed_precision(trainer)
        assert trainer.accelerator.native_amp == bf16
        for name, layout in (("padded", None), (layout_name, LAYOUTS[layout_name])):
            logp_dtypes.clear()
            with linear_output_dtypes(trainer.model) as dtypes, linear_output_dtypes(trainer.ref_model) as ref_dtypes:
                loss, grad, metrics = loss_grad_metrics(trainer, collate(trainer, layout))
            assert set(dtypes) == set(ref_dtypes) == {torch.bfloat16 if bf16 else torch.float32}, name
            assert logp_dtypes == [torch.float32, torch.float32], name  # the reference's forward and the policy's
            assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast: weights stay fp32
            results[bf16, name] = loss, grad, metrics
    for context, got, expected in [
        (f"bf16 {layout_name} vs bf16 padded", results[True, layout_name], results[True, "padded"]),
        (f"bf16 vs float32, {layout_name}", results[True, layout_name], results[False, layout_name]),
        ("bf16 vs float32, padded", results[True, "padded"], results[False, "padded"]),
    ]:
        assert got[0] == pytest.approx(expected[0], rel=BF16_REL), context
        assert_close_gradient_bf16(got[1], expected[1], context)
        assert_same_metrics(got[2], expected[2], BF16_METRICS, context, rel=BF16_REL, abs=BF16_REL)
    assert results[False, layout_name][0] == pytest.approx(results[False, "padded"][0], rel=1e-5)
    assert_same_gradient(results[False, layout_name][1], results[False, "padded"][1], layout_name)


# ----------------------------------------------------------------------------------------------------------------------
# Where packing is not exact: fallbacks; evaluation with outputs
# ----------------------------------------------------------------------------------------------------------------------
def test_default_rule_and_fallbacks(tmp_path, tokenizer, tiny_model_path, mixed_rows):
    from peft import PromptTuningConfig

    default = make_trainer(tmp_path, tiny_model_path, mixed_rows, tokenizer, prefix_sharing=None)
    assert default.prefix_sharing and not default.padding_free
    assert "packed_input_ids" in default.data_collator([default.train_dataset[0]])

    # Flash attention: no shared prefix in its varlen kernels; padding-free alone is fine
    model, ref_model = (AutoModelForCausalLM.from_pretrained(tiny_model_path) for _ in range(2))
    model.config._attn_implementation = ref_model.config._attn_implementation = "flash_attention_2"
    with pytest.warns(UserWarning, match="falls back to the padded layout"):
        flash = make_trainer(
            tmp_path, model, mixed_rows, tokenizer, ref_model=ref_model, prefix_sharing=True, padding_free=True
        )
    assert not flash.prefix_sharing and flash.padding_free

    # Prompt-learning PEFT prepends virtual tokens: off under the default rule (quietly), a warning when asked for
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        auto = make_trainer(
            tmp_path,
            tiny_model_path,
            mixed_rows,
            tokenizer,
            prefix_sharing=None,
            peft_config=PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        )
    assert not auto.prefix_sharing
    assert "packed_input_ids" not in auto.data_collator([auto.train_dataset[0]])
    with pytest.warns(UserWarning, match="prompt-learning"):
        make_trainer(
            tmp_path,
            tiny_model_path,
            mixed_rows,
            tokenizer,
            padding_free=True,
            peft_config=PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        )

    # A collator passed in keeps its own layout
    with pytest.warns(UserWarning, match="collator"):
        custom = DOVETrainer(
            model=tiny_model_path,
            args=DOVEConfig(output_dir=str(tmp_path), report_to="none", bf16=False, padding_free=True),
            data_collator=DataCollatorForJointPreference(pad_token_id=tokenizer.pad_token_id or 0),
            train_dataset=Dataset.from_list(mixed_rows),
            processing_class=tokenizer,
        )
    assert not custom.prefix_sharing and not custom.padding_free


def test_eval_with_outputs_on_a_packed_batch(tmp_path, tokenizer, tiny_model_path, mixed_rows):
    trainer = make_trainer(tmp_path, tiny_model_path, mixed_rows, tokenizer, prefix_sharing=True, padding_free=True)
    padded, batch = collate(trainer, None), collate(trainer, LAYOUTS["prefix_shared+padding_free"])
    with torch.no_grad(), pytest.warns(FutureWarning):
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        padded_loss = trainer.compute_loss(trainer.model, padded)
    assert outputs.logits.shape[:2] == batch["input_ids"].shape  # the padded rows' logits, for `compute_metrics`
    assert loss.item() == pytest.approx(padded_loss.item(), rel=1e-5)
