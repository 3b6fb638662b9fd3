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


# --- issue 16: nothing silently wrong ------------------------------------------------------------------------------


def iterable(rows):
    from datasets import IterableDataset

    def generate():
        yield from rows

    return IterableDataset.from_generator(generate)


def make_trainer(tmp_path, model_path, tokenizer, dataset, **config):
    args = PROConfig(
        output_dir=str(tmp_path / "out"),
        max_length=config.pop("max_length", 64),
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        **config,
    )
    return PROTrainer(model=model_path, args=args, train_dataset=dataset, processing_class=tokenizer)


def test_rewards_in_some_rows_only_are_rejected(tmp_path, tiny_model_path, tokenizer):
    # Row 0 without rewards used to switch rewards off for the whole dataset: row 1 was trained unsorted, its
    # lower-reward completion getting the SFT term
    no_rewards = {"prompt": "Q:", "completions": [" a", " b"], "rewards": None}
    unsorted = {"prompt": "Q:", "completions": [" worse", " better"], "rewards": [0.0, 1.0]}
    message = r"Row 1, field 'rewards': the row has rewards, but row 0 has none"
    with pytest.raises(ValueError, match=message):
        build(tmp_path, tiny_model_path, tokenizer, [no_rewards, unsorted])
    # An IterableDataset is read lazily: the row is rejected when training reaches it
    trainer = make_trainer(
        tmp_path,
        tiny_model_path,
        tokenizer,
        iterable([no_rewards, unsorted]),
        max_steps=1,
        per_device_train_batch_size=2,
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()
    # DPO rows: the scores follow the same rule
    dpo = {"prompt": "Q:", "chosen": " a", "rejected": " b", "score_chosen": None, "score_rejected": None}
    scored = {"prompt": "Q:", "chosen": " a", "rejected": " b", "score_chosen": 0.0, "score_rejected": 1.0}
    with pytest.raises(ValueError, match=r"Row 2, field 'score_chosen.*has rewards, but row 0 has none"):
        build(tmp_path, tiny_model_path, tokenizer, [dpo, dpo, scored])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # Finite in float64, infinite in the float32 the loss uses
        (
            [{"prompt": "Q:", "completions": [" a", " b"], "rewards": [1e39, 0.0]}],
            r"Row 0, field 'rewards\[0\]': the reward 1e\+39 overflows torch.float32",
        ),
        (
            [{"prompt": "Q:", "completions": [" a", " b"], "rewards": [3e38, -3e38]}],
            r"Row 0, field 'rewards': the rewards span 6e\+38, whose differences overflow",
        ),
        (
            [{"prompt": "Q:", "completions": [" a", " b"], "rewards": ["1.5", "0"]}],
            r"Row 0, field 'rewards\[0\]': a reward must be a number, got str",
        ),
        ([{"prompt": "Q:", "completions": [1, 2]}], r"Row 0, field 'completions\[0\]': expected a string .* got int"),
        ([{"prompt": 3, "completions": [" a", " b"]}], r"Row 0, field 'prompt': expected a string .* got int"),
        (
            [{"prompt": [{"role": "user"}], "completions": [[{"role": "assistant", "content": "a"}]] * 2}],
            r"Row 0, field 'prompt\[0\]': the message has no 'content'",
        ),
        (
            [
                {
                    "prompt": [{"role": "human", "content": "Hi"}],
                    "completions": [[{"role": "assistant", "content": "a"}]] * 2,
                }
            ],
            r"Row 0, field 'prompt\[0\]': the role 'human' is not allowed",
        ),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "Hi"}],
                    "completions": [
                        [{"role": "assistant", "content": "a"}],
                        [{"role": "user", "content": "b"}],
                    ],
                }
            ],
            r"Row 0, field 'completions\[1\]\[0\]': the role 'user' is not allowed for a completion's messages",
        ),
        # A DOVE joint row: its per-side instructions used to be dropped (training on an empty prompt)
        (
            [{"chosen_prompt": "Name a color.", "chosen": " Blue.", "rejected_prompt": "2+2?", "rejected": " 5."}],
            r"Row 0, field 'chosen_prompt': a per-side instruction is the joint-pair format of `DOVETrainer`",
        ),
    ],
)
def test_wrong_types_roles_and_formats_name_row_and_field(tmp_path, tiny_model_path, tokenizer, rows, message):
    with pytest.raises(ValueError, match=message):
        build(tmp_path, tiny_model_path, tokenizer, rows)


def test_empty_datasets_are_named(tmp_path, tiny_model_path, tokenizer):
    empty = Dataset.from_dict({"prompt": [], "completions": []})
    with pytest.raises(ValueError, match="The train dataset is empty"):
        make_trainer(tmp_path, tiny_model_path, tokenizer, empty)
    with pytest.raises(ValueError, match="The train dataset is empty"):
        make_trainer(tmp_path, tiny_model_path, tokenizer, iterable([]), max_steps=1)
    trainer = make_trainer(tmp_path, tiny_model_path, tokenizer, Dataset.from_list([GOOD]))
    with pytest.raises(ValueError, match="The eval dataset is empty"):
        trainer.evaluate(empty)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sft_weight", float("nan")),
        ("sft_weight", float("inf")),
        ("ranking_eps", float("nan")),
        ("beta", float("nan")),
    ],
)
def test_non_finite_config_floats_are_rejected(option, value):
    with pytest.raises(ValueError, match=rf"`{option}` must be a finite number, got {value}"):
        PROConfig(output_dir="x", bf16=False, report_to="none", **{option: value})


def test_truncated_completions_and_degenerate_rankings_are_counted(tmp_path, tiny_model_path, tokenizer, caplog):
    long = " word" * 40
    rows = [
        {"prompt": "Q:", "completions": [long, " b", long], "rewards": [2.0, 1.0, 0.0]},
        {"prompt": "Q:", "completions": [" a", " b"], "rewards": [1.0, 1.0]},  # all rewards tied
        {"prompt": "Q:", "completions": [" same", " same"], "rewards": [1.0, 0.0]},  # identical candidates
        {"prompt": "Q:", "completions": [" a", " b"], "rewards": [1.0, 0.0]},
    ]
    with caplog.at_level("WARNING", logger="trl_ranking.pro.trainer"):
        build(tmp_path, tiny_model_path, tokenizer, rows, max_length=32)
    n_prompt = len(tokenizer("Q:")["input_ids"])
    assert n_prompt + len(tokenizer(long)["input_ids"]) + 1 > 32  # +1: EOS
    assert "2 of 9 completions of the train dataset are longer than `max_length=32`" in caplog.text
    assert "2 of 4 rankings of the train dataset are degenerate" in caplog.text


def _poison(trainer, at_step, where):
    """Make step `at_step` (1-based) non-finite: its loss (`where="loss"`) or only its gradients (`"grad"`)."""
    compute_loss = trainer._compute_loss

    def poisoned(model, inputs, return_outputs):
        loss = compute_loss(model, inputs, return_outputs)
        if trainer.model.training and trainer.state.global_step + 1 == at_step:
            if where == "loss":
                return loss * float("nan")
            return _nan_grad(loss)  # a finite loss whose gradients are NaN
        return loss

    trainer._compute_loss = poisoned


class _NanGrad(__import__("torch").autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _nan_grad(loss):
    return _NanGrad.apply(loss)


@pytest.mark.parametrize("where, what", [("loss", "the training loss is nan"), ("grad", "the gradient norm")])
def test_non_finite_step_stops_training_naming_the_step(tmp_path, tiny_model_path, tokenizer, where, what):
    import torch

    rows = [GOOD] * 8
    trainer = build(tmp_path, tiny_model_path, tokenizer, rows, max_steps=4, per_device_train_batch_size=2)
    _poison(trainer, at_step=2, where=where)
    with pytest.raises(FloatingPointError, match=rf"Step 2: {what}"):
        trainer.train()
    # Step 1 trained, step 2 never updated the weights: none is NaN
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.slow
def test_skip_nonfinite_steps_drops_only_those_updates(tmp_path, tiny_model_path, tokenizer):
    import torch

    rows = [GOOD] * 8
    trainer = build(
        tmp_path,
        tiny_model_path,
        tokenizer,
        rows,
        max_steps=3,
        per_device_train_batch_size=2,
        skip_nonfinite_steps=True,
        logging_steps=1,
    )
    initial = [p.detach().clone() for p in trainer.model.parameters()]
    _poison(trainer, at_step=2, where="grad")
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(initial, trainer.model.parameters()))  # steps 1 and 3 trained
    logged = [entry["nonfinite_steps"] for entry in trainer.state.log_history if "nonfinite_steps" in entry]
    assert logged == [1.0]  # one skipped step, logged at step 2
