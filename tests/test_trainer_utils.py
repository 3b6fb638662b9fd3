"""The pieces PRO and DOVE share (`trl_ranking.trainer_utils`): one batch-layout rule for both trainers."""

from __future__ import annotations

import warnings

import pytest
from datasets import Dataset
from tiny_models import cpu_test_config, hh_rankings, loss_and_grad

from trl_ranking import (
    DataCollatorForJointPreference,
    DataCollatorForRanking,
    DOVEConfig,
    DOVETrainer,
    PROConfig,
    PROTrainer,
)


def build(kind: str, tmp_path, model_path, tokenizer, hh_pairs, data_collator=None, **config):
    """A PRO trainer on real rankings, or a DOVE trainer on the same rows as DPO pairs, with `data_collator`."""
    rows = hh_rankings(hh_pairs, 40, 400, sizes=(3, 2))
    values = dict(max_length=64, max_prompt_length=40, per_device_train_batch_size=2, **config)
    if kind == "pro":
        trainer_cls, args = PROTrainer, cpu_test_config(PROConfig, tmp_path, **values)
    else:
        rows = [{"prompt": r["prompt"], "chosen": r["completions"][0], "rejected": r["completions"][1]} for r in rows]
        trainer_cls, args = DOVETrainer, cpu_test_config(DOVEConfig, tmp_path, **values)
    return trainer_cls(
        model=model_path,
        args=args,
        data_collator=data_collator,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def collator(kind: str, tokenizer, **layout):
    collator_cls = DataCollatorForRanking if kind == "pro" else DataCollatorForJointPreference
    return collator_cls(pad_token_id=tokenizer.pad_token_id, max_length=64, **layout)


@pytest.mark.parametrize("kind", ["pro", "dove"])
def test_custom_collator_keeps_its_layout_in_pro_and_dove_alike(kind, tmp_path, tiny_model_path, tokenizer, hh_pairs):
    # Asking the config for a layout while passing a collator: a warning, and the collator is left as it is
    custom = collator(kind, tokenizer, prefix_sharing=True)
    with pytest.warns(UserWarning, match="with a `data_collator` passed in, the batches keep the layout"):
        trainer = build(kind, tmp_path, tiny_model_path, tokenizer, hh_pairs, custom, padding_free=True)
    assert trainer.data_collator is custom
    assert (custom.prefix_sharing, custom.padding_free) == (True, False)  # not overwritten by the config
    assert (trainer.prefix_sharing, trainer.padding_free) == (True, False)  # the collator's layout, reported

    # Its packed batches are scored as packed: the loss and gradients of the padded batch of the same rows
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    packed_batch, padded_batch = custom(examples), collator(kind, tokenizer)(examples)
    assert (
        padded_batch["input_ids"].numel() != (packed_batch.get("packed_input_ids", packed_batch["input_ids"])).numel()
    )
    loss, grad = loss_and_grad(trainer, padded_batch)
    packed_loss, packed_grad = loss_and_grad(trainer, packed_batch)
    assert packed_loss == pytest.approx(loss, rel=1e-5)
    assert ((packed_grad - grad).norm() / grad.norm()).item() < 1e-5

    # A collator without layout flags (any callable): padded, reported as such; no warning when nothing is asked for
    plain = collator(kind, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        trainer = build(kind, tmp_path, tiny_model_path, tokenizer, hh_pairs, lambda rows: plain(rows))
    assert (trainer.prefix_sharing, trainer.padding_free) == (False, False)
