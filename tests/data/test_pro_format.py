"""PRO jsonl: the official layout, built here from real HH-RLHF rows (no PRO-format file could be obtained)."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from datasets import Dataset
from tiny_models import HH_RLHF_FILE

from trl_ranking.data import load_hh_rlhf, load_pro_jsonl, save_pro_jsonl


ROLES = {"Human": "<|prompter|>", "Assistant": "<|assistant|>"}


def official_split_dialogue(text: str) -> list[tuple[str, str]]:
    """The official preprocessing's `_split_dialogue` (train/hh_preprocess_data/step_1_process.py), re-implemented."""
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
                dialogue.append((ROLES[role], "\n".join(messages)))
                messages = []
            role = speaker
        messages.append(message.strip())
    if role is not None and messages:
        dialogue.append((ROLES[role], "\n".join(messages)))
    return dialogue


def official_record(raw: dict, rewards: list[float]) -> dict | None:
    """A training line as the official steps 1-2 write it (one prefix copy per suffix), or None when dropped."""
    chosen, rejected = official_split_dialogue(raw["chosen"]), official_split_dialogue(raw["rejected"])
    if len(chosen) != len(rejected):
        return None
    prefix = [role + text for role, text in chosen[:-1]] + [chosen[-1][0]]
    return {"prefix": [prefix, prefix], "suffix": [chosen[-1][1], rejected[-1][1]], "reward": rewards, "sft_index": 0}


def official_prompt(prefix: list[str]) -> str:
    """How the official collator (train/utils/data_manager.py) renders a prefix."""
    return "".join(prefix).replace("<|prompter|>", "\n\nHuman: ").replace("<|assistant|>", "\n\nAssistant: ").rstrip()


@pytest.fixture(scope="module")
def hh_pairs_small():
    return load_hh_rlhf(HH_RLHF_FILE, max_rows=300)


def _write_lines(path, records):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")


def test_load_official_layout_built_from_real_rows(tmp_path):
    with gzip.open(HH_RLHF_FILE, "rt", encoding="utf-8") as handle:
        raws = [json.loads(line) for _, line in zip(range(40), handle)]
    records = []
    for index, raw in enumerate(raws):
        # Alternate sorted and unsorted rewards: the loader must put the higher reward first
        record = official_record(raw, [1.5, -0.5] if index % 2 == 0 else [-2.0, 0.25])
        if record is not None:
            records.append(record)
    path = tmp_path / "hh_train_len2.json"
    _write_lines(path, records)

    dataset = load_pro_jsonl(path)
    assert len(dataset) == len(records) >= 35
    for row, record in zip(dataset, records):
        assert row["prompt"] == official_prompt(record["prefix"][0])
        assert row["prompt"].startswith("\n\nHuman: ") and row["prompt"].endswith("\n\nAssistant:")
        first, second = record["suffix"]
        if record["reward"][0] >= record["reward"][1]:
            assert row["completions"] == [" " + first, " " + second]
        else:
            assert row["completions"] == [" " + second, " " + first]
        assert row["rewards"] == sorted(record["reward"], reverse=True)

    unsorted = load_pro_jsonl(path, sort_by_reward=False)
    assert unsorted["rewards"] == [record["reward"] for record in records]

    conversational = load_pro_jsonl(path, conversational=True)
    row, record = conversational[0], records[0]
    assert [m["role"] for m in row["prompt"]][0] == "user" and row["prompt"][-1]["role"] == "user"
    assert row["prompt"][0]["content"] == record["prefix"][0][0][len("<|prompter|>") :]
    assert row["completions"][0] == [{"role": "assistant", "content": record["suffix"][0]}]


def test_round_trip_of_real_hh_rows(tmp_path, hh_pairs_small):
    path = tmp_path / "pro.jsonl"
    save_pro_jsonl(hh_pairs_small, path)

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(hh_pairs_small)
    for line, row in zip(lines, hh_pairs_small):
        assert set(line) == {"prefix", "suffix", "sft_index"}  # no rewards in, no reward field out
        assert line["sft_index"] == 0
        assert len(line["prefix"]) == 2 and line["prefix"][0] == line["prefix"][1]
        turns = line["prefix"][0]
        assert turns[-1] == "<|assistant|>"
        assert all(turn.startswith(("<|prompter|>", "<|assistant|>")) for turn in turns)
        assert sum(turn.startswith("<|prompter|>") for turn in turns) == row["prompt"].count("\n\nHuman:")
        assert line["suffix"] == [row["chosen"][1:], row["rejected"][1:]]

    loaded = load_pro_jsonl(path)
    assert loaded.column_names == ["prompt", "completions"]
    assert loaded["completions"] == [[c, r] for c, r in zip(hh_pairs_small["chosen"], hh_pairs_small["rejected"])]

    # Turn texts are stripped, as the official preprocessing strips them: prompts come back equal up to whitespace
    def normalise(text):
        return re.sub(r"\s+", " ", text).strip()

    assert [normalise(p) for p in loaded["prompt"]] == [normalise(p) for p in hh_pairs_small["prompt"]]
    exact = sum(a == b for a, b in zip(loaded["prompt"], hh_pairs_small["prompt"]))
    assert exact >= 0.97 * len(loaded)


def test_round_trip_with_rewards_gzip_and_conversational(tmp_path):
    rows = {
        "prompt": [
            "\n\nHuman: Name a fruit.\n\nAssistant:",
            "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye\n\nAssistant:",
        ],
        "completions": [[" Apple.", " A car.", " Nothing."], [" Goodbye!", " No."]],
        "rewards": [[2.0, 0.5, -1.0], [1.0, 1.0]],
    }
    path = tmp_path / "ranked.jsonl.gz"
    save_pro_jsonl(Dataset.from_dict(rows), path)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    assert first["prefix"] == [["<|prompter|>Name a fruit.", "<|assistant|>"]] * 3
    assert first["suffix"] == ["Apple.", "A car.", "Nothing."]
    assert first["reward"] == [2.0, 0.5, -1.0]
    assert load_pro_jsonl(path).to_dict() == rows

    conversational = load_pro_jsonl(path, conversational=True)
    assert conversational[1]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    path2 = tmp_path / "conversational.jsonl"
    save_pro_jsonl(conversational, path2)
    assert load_pro_jsonl(path2, conversational=True).to_dict() == conversational.to_dict()
    assert load_pro_jsonl(path2).to_dict() == rows


def test_preference_rows_plain_prompts_and_default_reward(tmp_path):
    pairs = Dataset.from_dict(
        {
            "prompt": ["Post: my cat sat on the mat all day.\nTL;DR:"],
            "chosen": [" Cat sits."],
            "rejected": [" Dog runs."],
            "score_chosen": [0.9],
            "score_rejected": [0.1],
        }
    )
    path = tmp_path / "summarize.jsonl"
    save_pro_jsonl(pairs, path)
    line = json.loads(path.read_text(encoding="utf-8"))
    assert line["prefix"] == ["Post: my cat sat on the mat all day.\nTL;DR:"] * 2  # plain prompts stay strings
    assert line["suffix"] == [" Cat sits.", " Dog runs."]  # and their completions unchanged
    assert line["reward"] == [0.9, 0.1]
    loaded = load_pro_jsonl(path)
    assert loaded[0] == {
        "prompt": pairs[0]["prompt"],
        "completions": [" Cat sits.", " Dog runs."],
        "rewards": [0.9, 0.1],
    }

    save_pro_jsonl(pairs.remove_columns(["score_chosen", "score_rejected"]), path, default_reward=1.0)
    assert json.loads(path.read_text(encoding="utf-8"))["reward"] == [1.0, 1.0]


def test_single_prompt_forms(tmp_path):
    path = tmp_path / "forms.jsonl"
    _write_lines(
        path,
        [
            {"prefix": ["<|prompter|>Hi", "<|assistant|>"], "suffix": ["Hello", "Go away"], "sft_index": 0},
            {"prefix": "Summarize: text\nTL;DR:", "suffix": [" a", " b"]},
        ],
    )
    dataset = load_pro_jsonl(path)
    assert dataset.column_names == ["prompt", "completions"]
    assert dataset[0] == {"prompt": "\n\nHuman: Hi\n\nAssistant:", "completions": [" Hello", " Go away"]}
    assert dataset[1] == {"prompt": "Summarize: text\nTL;DR:", "completions": [" a", " b"]}


@pytest.mark.parametrize(
    "record, field",
    [
        ({"prefix": [["<|prompter|>a", "<|assistant|>"]] * 2, "suffix": "x"}, "suffix"),
        (
            {"prefix": [["<|prompter|>a", "<|assistant|>"], ["<|prompter|>b", "<|assistant|>"]], "suffix": ["x", "y"]},
            "prefix",
        ),
        ({"prefix": [1, 2], "suffix": ["x", "y"]}, "prefix"),
        ({"prefix": "p", "suffix": ["x", "y"], "reward": [1.0]}, "reward"),
        ({"prefix": "p", "suffix": ["x", "y"], "reward": [1.0, "high"]}, r"reward\[1\]"),
        ({"prefix": "p", "suffix": ["x", "y"], "reward": [1.0, float("nan")]}, r"reward\[1\]"),
        ({"prefix": "p", "suffix": ["x", "y"], "reward": [1.0, 0.0], "sft_index": 1}, "sft_index"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, record, field):
    path = tmp_path / "broken.jsonl"
    _write_lines(path, [{"prefix": "p", "suffix": ["x", "y"], "reward": [1.0, 0.0]}, record])
    with pytest.raises(ValueError, match=rf"broken\.jsonl, row 1 \(line 2\)[:,] field '{field}'"):
        load_pro_jsonl(path)


def test_invalid_json_and_unwritable_rows(tmp_path):
    path = tmp_path / "broken.jsonl"
    _write_lines(path, ['{"prefix": "p", "suffix": ["x"]}', "{oops"])
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: not valid JSON"):
        load_pro_jsonl(path)
    system = Dataset.from_dict(
        {
            "prompt": [[{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]],
            "completions": [["a", "b"]],
        }
    )
    with pytest.raises(ValueError, match="row 0: the PRO format has only user and assistant turns"):
        save_pro_jsonl(system, tmp_path / "out.jsonl")
    single = Dataset.from_dict({"prompt": ["p", "q"], "completions": [["a", "b"], ["a"]]})
    with pytest.raises(ValueError, match="Row 1, field 'completions': a ranking needs at least 2 completions, got 1"):
        save_pro_jsonl(single, tmp_path / "out.jsonl")


def test_encoding_gzip_bom_and_empty_files_name_file_and_line(tmp_path):
    good = json.dumps({"prefix": "p", "suffix": ["x", "y"], "reward": [1.0, 0.0]}) + "\n"
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(good.encode() + '{"prefix": "caf\xe9", "suffix": ["x", "y"]}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl, line 2: not UTF-8 text .*byte 0xe9"):
        load_pro_jsonl(latin1)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    lines = "".join(json.dumps({"prefix": f"p{i}", "suffix": [f"x{i * i}", f"y{i}"]}) + "\n" for i in range(2000))
    compressed = gzip.compress(lines.encode())
    corrupt.write_bytes(compressed[: len(compressed) // 2])  # truncated halfway
    with pytest.raises(ValueError, match=r"corrupt\.jsonl\.gz, line \d+: the gzip file is corrupt or truncated"):
        load_pro_jsonl(corrupt)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(good.encode())
    with pytest.raises(ValueError, match=r"plain\.jsonl\.gz, line 1: the gzip file is corrupt"):
        load_pro_jsonl(not_gzip)
    for name, content in (("empty.jsonl", b""), ("blank.jsonl", b"\n  \n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: the file holds no JSON record"):
            load_pro_jsonl(tmp_path / name)
    # A UTF-8 byte-order mark (as some Windows editors write) is not part of the first record
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + good.encode())
    assert load_pro_jsonl(bom)["completions"] == [["x", "y"]]
