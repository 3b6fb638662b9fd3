"""The loss table is the one list of losses: the docs, the config, the trainer and the model card agree with it, and
the docs' worked example adds a loss with one function and one registration."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_models import cpu_test_config

import trl_ranking.pro.trainer as trainer_module
from trl_ranking import PROConfig, PROTrainer
from trl_ranking.loss_table import (
    DOCS_TABLE_END,
    DOCS_TABLE_START,
    LOSSES,
    SCORES,
    loss_table_markdown,
    model_card_info,
    reference_losses,
)
from trl_ranking.pro.config import LOSS_TYPES, REFERENCE_LOSSES


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_table_is_the_rendered_loss_table():
    text = (DOCS / "listwise.md").read_text(encoding="utf-8")
    block = text[text.index(DOCS_TABLE_START) + len(DOCS_TABLE_START) : text.index(DOCS_TABLE_END)].strip()
    assert block == loss_table_markdown(), "docs/listwise.md is stale: paste `python -m trl_ranking.loss_table`"
    names = re.findall(r'^\| `"(\w+)"` \|', block, re.M)
    assert names == list(LOSSES)
    for spec in LOSSES.values():
        row = next(line for line in block.splitlines() if line.startswith(f'| `"{spec.name}"` |'))
        assert spec.paper.arxiv in row and ("| reference |" in row) == spec.needs_reference, spec.name


def test_config_reads_the_table():
    assert tuple(LOSSES) == LOSS_TYPES
    assert REFERENCE_LOSSES == reference_losses() == tuple(n for n, s in LOSSES.items() if s.needs_reference)
    assert set(REFERENCE_LOSSES) >= {"listmle", "lipo_lambda", "dpo_pairs"}
    assert not {"pro", "rrhf", "slic", "best_of_n_sft", "simpo_pairs", "simpo_listmle"} & set(REFERENCE_LOSSES)
    fields = PROConfig.__dataclass_fields__
    help_text = fields["loss_type"].metadata["help"]
    for name, spec in LOSSES.items():
        assert repr(name) in help_text and f'`"{name}"`' in PROConfig.__doc__, name
        assert spec.score in SCORES
        for option in spec.options.values():
            assert option in fields, (name, option)
            assert f"{option} (`" in PROConfig.__doc__, option  # documented in the config's docstring
        args = PROConfig(output_dir="x", bf16=False, report_to="none", loss_type=name)
        assert args.uses_reference == spec.needs_reference


def test_docs_name_every_metric_and_the_trainer_has_no_per_loss_branch():
    text = (DOCS / "listwise.md").read_text(encoding="utf-8")
    metrics = text[text.index("## Metrics") :]
    for spec in LOSSES.values():
        for metric in spec.logged:
            assert f"`{metric}`" in metrics, metric
    # The trainer dispatches through the table: no loss name is spelled out in its loss code
    source = inspect.getsource(trainer_module.PROTrainer._listwise_loss)
    assert not [name for name in LOSSES if f'"{name}"' in source]


def test_model_card_info_from_the_table():
    name, paper, tags = model_card_info(["pro"])
    assert (name, paper["id"], tags) == ("PRO", "2306.17492", ["trl", "trl-ranking", "pro"])
    name, paper, tags = model_card_info(["neural_ndcg", "approx_ndcg", "best_of_n_sft"])
    assert name == "NeuralNDCG (OPO) + ApproxNDCG (OPO) + best-of-n SFT (RAFT)"
    assert paper["id"] == "2410.04346" and paper["citation"].count("zhao2024ordinal") == 1
    assert "dong2023raft" in paper["citation"] and tags == ["trl", "trl-ranking", "opo", "raft"]


def _contributing_example() -> str:
    text = (DOCS / "contributing.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a loss") :]
    return re.search(r"```python\n(.+?)\n```", section, re.S).group(1)


def test_the_contributing_example_adds_a_loss(tmp_path, small_model_path, small_tokenizer):
    namespace: dict = {}
    exec(compile(_contributing_example(), "docs/contributing.md", "exec"), namespace)
    try:
        assert "apo_zero_list" in LOSSES and LOSSES["apo_zero_list"].needs_reference
        # The pure function: at n = 2 TRL's apo_zero, (1 - sigmoid(s_w)) + sigmoid(s_l)
        loss = namespace["apo_zero_list_loss"]
        scores = torch.tensor([[0.4, -0.3, 0.9, 0.0]], dtype=torch.float64)
        labels = torch.tensor([[2.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
        sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        assert loss(scores[:, :2], labels[:, :2], torch.tensor([2])).item() == pytest.approx(
            1 - sigmoid(0.4) + sigmoid(-0.3), rel=1e-12
        )
        expected = 1 - sigmoid(0.4) + (sigmoid(-0.3) + sigmoid(0.9)) / 2  # the padded 4th column is ignored
        assert loss(scores, labels, torch.tensor([3])).item() == pytest.approx(expected, rel=1e-12)

        # Through the config and the trainer: a reference is loaded (a copy of the policy), so s = 0 at step 0
        args = cpu_test_config(PROConfig, tmp_path, loss_type=["apo_zero_list", "pro"], max_length=64)
        assert args.uses_reference
        rows = Dataset.from_list([{"prompt": "Hi", "completions": [" a", " b", " c"]}] * 2)
        trainer = PROTrainer(model=small_model_path, args=args, train_dataset=rows, processing_class=small_tokenizer)
        assert trainer.ref_model is not None
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        with torch.no_grad():
            trainer.compute_loss(trainer.model, batch)
        mode = "train" if trainer.model.training else "eval"
        assert trainer._metrics[mode]["loss/apo_zero_list"][-1] == pytest.approx(1.0)  # (1 - 0.5) + 0.5
        assert trainer._name == "APO-zero (best against the rest) + PRO"
        assert trainer._paper["id"] == "2408.06266" and "doosterlinck2024anchored" in trainer._paper["citation"]
        assert trainer._tag_names == ["trl", "trl-ranking", "apo_zero_list", "pro"]
    finally:
        LOSSES.pop("apo_zero_list", None)
