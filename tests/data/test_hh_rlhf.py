"""`load_hh_rlhf` on the real HH-RLHF harmless-base test split, and on malformed files."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
from conftest import HH_RLHF_FILE

from trl_ranking.data import load_hh_rlhf


def _raw_records():
    with gzip.open(HH_RLHF_FILE, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_real_file_keeps_2307_of_2312_and_logs_the_dropped(caplog):
    assert len(_raw_records()) == 2312
    with caplog.at_level(logging.WARNING, logger="trl_ranking.data.hh_rlhf"):
        dataset = load_hh_rlhf(HH_RLHF_FILE)
    assert len(dataset) == 2307
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert "dropped 5 rows" in caplog.text


def test_rows_rebuild_the_raw_transcripts():
    # Independent split: everything up to the last "\n\nAssistant:" of each transcript, kept when both agree
    expected = []
    for record in _raw_records():
        cut_c = record["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        cut_r = record["rejected"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        if record["chosen"][:cut_c] == record["rejected"][:cut_r]:
            expected.append((record["chosen"][:cut_c], record["chosen"][cut_c:], record["rejected"][cut_r:]))
    dataset = load_hh_rlhf(HH_RLHF_FILE)
    assert list(zip(dataset["prompt"], dataset["chosen"], dataset["rejected"])) == expected
    assert all(prompt.endswith("\n\nAssistant:") for prompt in dataset["prompt"])


def test_conversational_rows_are_trl_messages():
    standard = load_hh_rlhf(HH_RLHF_FILE, max_rows=50)
    dataset = load_hh_rlhf(HH_RLHF_FILE, conversational=True, max_rows=50)
    assert len(dataset) == 50
    for row, plain in zip(dataset, standard):
        roles = [message["role"] for message in row["prompt"]]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:])), "turns alternate"
        assert roles.count("user") == plain["prompt"].count("\n\nHuman:")
        assert row["chosen"] == [{"role": "assistant", "content": plain["chosen"].strip()}]
        assert row["rejected"] == [{"role": "assistant", "content": plain["rejected"].strip()}]
        assert row["prompt"][0]["content"] in plain["prompt"]


def test_max_rows_and_several_files(tmp_path):
    records = _raw_records()[:6]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    first.write_text("".join(json.dumps(r) + "\n" for r in records[:3]), encoding="utf-8")
    with gzip.open(second, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records[3:])
    both = load_hh_rlhf([first, second])
    assert len(both) == 6
    assert both["chosen"] == load_hh_rlhf(HH_RLHF_FILE, max_rows=6)["chosen"]
    assert len(load_hh_rlhf([first, second], max_rows=4)) == 4


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello"}', "rejected"),
        ('{"chosen": 3, "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}', "chosen"),
        ('{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}', "chosen"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, bad_line, field):
    path = tmp_path / "broken.jsonl"
    good = json.dumps(_raw_records()[0])
    path.write_text(f"{good}\n\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"broken\.jsonl, line 3: field '{field}'"):
        load_hh_rlhf(path)


def test_a_line_that_is_not_an_object_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{json.dumps(_raw_records()[0])}\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: expected a JSON object, got list"):
        load_hh_rlhf(path)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(_raw_records()[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl\.gz, line 2: not valid JSON"):
        load_hh_rlhf(path)
