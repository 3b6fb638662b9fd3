"""DOVE jsonl on the real DOVE files (Hritikbansal/dove, MIT)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from tiny_models import DOVE_DIR

from trl_ranking.data import DOVE_PROMPT_TEMPLATE, load_dove_jsonl, save_dove_jsonl


VAL_FILE = DOVE_DIR / "anthropic_helpful" / "val_conditional_pref.jsonl"


def _raw():
    return [json.loads(line) for line in VAL_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_load_real_file_as_joint_rows():
    raw = _raw()
    dataset = load_dove_jsonl(VAL_FILE)
    assert len(dataset) == len(raw) == 363
    assert dataset.column_names == ["chosen_prompt", "chosen", "rejected_prompt", "rejected"]
    assert [(r["i_chosen"], r["r_chosen"], r["i_reject"], r["r_reject"]) for r in raw] == list(
        zip(dataset["chosen_prompt"], dataset["chosen"], dataset["rejected_prompt"], dataset["rejected"])
    )
    # This file holds conditional pairs only
    assert dataset["chosen_prompt"] == dataset["rejected_prompt"]


def test_template_and_conversational():
    raw = _raw()[:20]
    templated = load_dove_jsonl(VAL_FILE, prompt_template=DOVE_PROMPT_TEMPLATE).select(range(20))
    for row, record in zip(templated, raw):
        assert row["chosen_prompt"] == "### Instructions: " + record["i_chosen"] + "\n\n### Response:"
        assert row["chosen"] == record["r_chosen"]
    conversational = load_dove_jsonl(VAL_FILE, conversational=True).select(range(20))
    for row, record in zip(conversational, raw):
        assert row["rejected_prompt"] == [{"role": "user", "content": record["i_reject"]}]
        assert row["rejected"] == [{"role": "assistant", "content": record["r_reject"]}]
    with pytest.raises(ValueError, match="cannot be combined"):
        load_dove_jsonl(VAL_FILE, prompt_template=DOVE_PROMPT_TEMPLATE, conversational=True)
    with pytest.raises(ValueError, match="exactly once"):
        load_dove_jsonl(VAL_FILE, prompt_template="### Instructions:")


@pytest.mark.parametrize("template", [None, DOVE_PROMPT_TEMPLATE])
def test_save_round_trips_the_real_file(tmp_path, template):
    dataset = load_dove_jsonl(VAL_FILE, prompt_template=template)
    out = tmp_path / "out.jsonl.gz"
    save_dove_jsonl(dataset, out, prompt_template=template)
    assert load_dove_jsonl(out, prompt_template=template).to_dict() == dataset.to_dict()
    plain = tmp_path / "out.jsonl"
    save_dove_jsonl(dataset, plain, prompt_template=template)
    assert [json.loads(line) for line in plain.read_text(encoding="utf-8").splitlines()] == _raw()


def test_save_conditional_conversational_and_joint_rows(tmp_path):
    conversational = load_dove_jsonl(VAL_FILE, conversational=True).select(range(5))
    save_dove_jsonl(conversational, tmp_path / "c.jsonl")
    assert [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()] == _raw()[:5]

    rows = Dataset.from_dict({"prompt": ["Q?"], "chosen": ["good"], "rejected": ["bad"]})  # a DPOTrainer row
    save_dove_jsonl(rows, tmp_path / "d.jsonl")
    assert json.loads((tmp_path / "d.jsonl").read_text()) == {
        "i_chosen": "Q?",
        "r_chosen": "good",
        "i_reject": "Q?",
        "r_reject": "bad",
    }
    joint = Dataset.from_dict(
        {"chosen_prompt": ["Q1"], "chosen": ["A1"], "rejected_prompt": ["Q2"], "rejected": ["A2"]}
    )
    save_dove_jsonl(joint, tmp_path / "j.jsonl")
    assert load_dove_jsonl(tmp_path / "j.jsonl").to_dict() == joint.to_dict()


def test_bad_input(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = VAL_FILE.read_text(encoding="utf-8").splitlines()[0]
    path.write_text(good + "\n" + json.dumps({"i_chosen": "a", "r_chosen": "b", "i_reject": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl, row 1 \(line 2\): field 'r_reject'"):
        load_dove_jsonl(path)
    path.write_text(good + "\n\n" + "not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 3: not valid JSON"):
        load_dove_jsonl(path)

    rows = Dataset.from_dict({"prompt": ["no template here"], "chosen": ["a"], "rejected": ["b"]})
    with pytest.raises(ValueError, match="row 0, field 'prompt': the prompt does not match prompt_template"):
        save_dove_jsonl(rows, tmp_path / "x.jsonl", prompt_template=DOVE_PROMPT_TEMPLATE)
    with pytest.raises(ValueError, match="expected joint rows"):
        save_dove_jsonl(Dataset.from_dict({"chosen": ["a"], "rejected": ["b"]}), tmp_path / "x.jsonl")
