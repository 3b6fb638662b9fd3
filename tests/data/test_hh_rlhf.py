"""`load_hh_rlhf` on the real HH-RLHF harmless-base test split, and on malformed files."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
from tiny_models import HH_RLHF_FILE

from trl_ranking.data import load_hh_rlhf


def _raw_records():
    with gzip.open(HH_RLHF_FILE, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _official_split_dialogue(text: str) -> list[tuple[str, str]]:
    """The official PRO preprocessing's `_split_dialogue` (`train/hh_preprocess_data/step_1_process.py`), rewritten:
    lines starting with a speaker open or continue that speaker's message, other lines are skipped, and consecutive
    lines of one speaker are joined with a newline after stripping."""
    dialogue, role, messages = [], None, []
    for line in text.split("\n\n"):
        if line.startswith("Human:"):
            speaker, message = "Human", line[7:]
        elif line.startswith("Assistant:"):
            speaker, message = "Assistant", line[11:]
        else:
            continue
        if role != speaker:
            if role is not None:
                dialogue.append((role, "\n".join(messages)))
                messages = []
            role = speaker
        messages.append(message.strip())
    if role is not None and messages:
        dialogue.append((role, "\n".join(messages)))
    return dialogue


def test_real_file_keeps_all_2312_rows_as_the_paper(caplog):
    records = _raw_records()
    assert len(records) == 2312
    # The official filter: a row is kept when "Assistant" is in `chosen` and both dialogues have as many messages
    official = [
        r
        for r in records
        if "Assistant" in r["chosen"]
        and len(_official_split_dialogue(r["chosen"])) == len(_official_split_dialogue(r["rejected"]))
    ]
    assert len(official) == 2312  # the paper's Table 1 count for harmless-base test
    with caplog.at_level(logging.INFO, logger="trl_ranking.data.hh_rlhf"):
        dataset = load_hh_rlhf(HH_RLHF_FILE)
    assert len(dataset) == 2312
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert "merged the consecutive final Assistant turns of 5 rows" in caplog.text
    assert "dropped" not in caplog.text


def test_rows_rebuild_the_raw_transcripts():
    # Independent split: everything up to the last "\n\nAssistant:" of each transcript, when both agree
    dataset = load_hh_rlhf(HH_RLHF_FILE)
    merged = 0
    for record, row in zip(_raw_records(), dataset):
        cut_c = record["chosen"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        cut_r = record["rejected"].rfind("\n\nAssistant:") + len("\n\nAssistant:")
        if record["chosen"][:cut_c] == record["rejected"][:cut_r]:
            assert (row["prompt"], row["chosen"], row["rejected"]) == (
                record["chosen"][:cut_c],
                record["chosen"][cut_c:],
                record["rejected"][cut_r:],
            )
            continue
        # A transcript ending with several Assistant turns: its response is the official merged last message
        merged += 1
        for side in ("chosen", "rejected"):
            official = _official_split_dialogue(record[side])
            assert official[-1][0] == "Assistant"
            assert row[side].strip() == official[-1][1]
            assert record[side].startswith(row["prompt"])
    assert merged == 5
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
    path.write_text(f"{good}\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"broken\.jsonl, row 1 \(line 2\): field '{field}'"):
        load_hh_rlhf(path)
    # Blank lines are not records (rows count records, lines count lines), and a field may change its type
    path.write_text(f"{good}\n\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"broken\.jsonl, row 1 \(line 3\): field '{field}'"):
        load_hh_rlhf(path)


def test_a_line_that_is_not_an_object_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(f"{json.dumps(_raw_records()[0])}\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: expected a JSON object \(one record per line\), got list"):
        load_hh_rlhf(path)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(_raw_records()[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl\.gz, line 2: not valid JSON"):
        load_hh_rlhf(path)
