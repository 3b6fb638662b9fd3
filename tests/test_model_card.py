"""The model card a trainer saves with its checkpoints names trl-ranking and its version beside TRL, and cites the
method's paper."""

from __future__ import annotations

import pytest
import transformers
import trl
from datasets import Dataset
from tiny_models import cpu_test_config

import trl_ranking
from trl_ranking import DOVEConfig, DOVETrainer, PROConfig, PROTrainer
from trl_ranking.model_card import add_trl_ranking_to_card


@pytest.mark.parametrize(
    ("trainer_cls", "config_cls", "title", "arxiv_id", "bibtex_key"),
    [
        (
            PROTrainer,
            PROConfig,
            "Preference Ranking Optimization for Human Alignment",
            "2306.17492",
            "song2024preference",
        ),
        (
            DOVETrainer,
            DOVEConfig,
            "Comparing Bad Apples to Good Oranges: Aligning Large Language Models via Joint Preference Optimization",
            "2404.00530",
            "bansal2024comparing",
        ),
    ],
    ids=["pro", "dove"],
)
def test_saved_model_card(
    tmp_path, tiny_model_path, tokenizer, hh_pairs, trainer_cls, config_cls, title, arxiv_id, bibtex_key
):
    args = cpu_test_config(
        config_cls,
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=2,
        max_length=64,
        max_prompt_length=40,
        save_strategy="steps",
        save_steps=1,
    )
    rows = Dataset.from_list([dict(hh_pairs[i]) for i in range(2)])  # real prompt/chosen/rejected rows
    trainer = trainer_cls(model=tiny_model_path, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()  # the checkpoint save writes the card into output_dir
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")

    assert f"- trl-ranking: {trl_ranking.__version__}\n- TRL: {trl.__version__}" in card
    assert f"- Transformers: {transformers.__version__}" in card
    assert f"[trl-ranking](https://github.com/trl-ranking/trl-ranking) {trl_ranking.__version__}" in card
    assert f"[{title}](https://huggingface.co/papers/{arxiv_id})" in card
    assert bibtex_key in card and "vonwerra2020trl" in card  # the method's citation and TRL's
    assert "- trl-ranking" in card.split("---")[1]  # the tag, in the card's metadata
    assert card.count("- trl-ranking: ") == 1


def test_card_without_trls_texts_gets_a_section():
    card = add_trl_ranking_to_card("# Model Card\n\nSome other template.\n", "9.9")
    assert card.endswith("## trl-ranking\n\n") is False and "- trl-ranking: 9.9" in card
    assert add_trl_ranking_to_card(card, "9.9") == card  # idempotent
