"""Sparse-feedback ratings (Hritikbansal/sparse_feedback, MIT) as multi-candidate ranking rows."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections import defaultdict

import pytest
from tiny_models import SPARSE_FEEDBACK_DIR

from trl_ranking.data import load_sparse_feedback_rankings
from trl_ranking.data.sparse_feedback import ALPACA_PROMPT_TEMPLATE


def _independent_rankings():
    """Rankings rebuilt from the raw files: the rating of each response text, averaged, sorted by hand."""
    entries = json.loads((SPARSE_FEEDBACK_DIR / "sample_generation.json").read_text(encoding="utf-8"))
    ratings = defaultdict(list)
    with open(SPARSE_FEEDBACK_DIR / "feedback_ratings_sample_generation.csv", newline="", encoding="utf-8") as handle:
        for instruction, input_text, response, rating in csv.reader(handle):
            ratings[(instruction, input_text, response)].append(int(rating))
    expected, skipped = [], 0
    for entry in entries:
        keys = [(entry["instruction"], entry["input"], response) for response in entry["responses"]]
        # every occurrence of a response text needs its own rating
        if any(len(ratings[key]) < keys.count(key) for key in keys):
            skipped += 1
            continue
        unique = list(dict.fromkeys(entry["responses"]))
        means = {}
        for response in unique:
            values = ratings[(entry["instruction"], entry["input"], response)]
            means[response] = sum(values) / len(values)
        ranked = sorted(unique, key=lambda response: (-means[response], unique.index(response)))
        expected.append((entry, ranked, [means[r] for r in ranked]))
    return expected, skipped


def test_real_ratings_to_rankings(caplog):
    expected, skipped = _independent_rankings()
    assert skipped == 1 and len(expected) == 19
    with caplog.at_level(logging.WARNING, logger="trl_ranking.data.sparse_feedback"):
        dataset = load_sparse_feedback_rankings(SPARSE_FEEDBACK_DIR)
    assert "skipped 1 of 20 instructions" in caplog.text
    assert len(dataset) == 19
    assert dataset.column_names == ["prompt", "completions", "rewards", "instruction", "input"]
    for row, (entry, ranked, means) in zip(dataset, expected):
        assert row["instruction"] == entry["instruction"] and row["input"] == entry["input"]
        assert row["completions"] == ranked
        assert row["rewards"] == pytest.approx(means)
        assert row["rewards"] == sorted(row["rewards"], reverse=True)
        assert all(1 <= reward <= 7 for reward in row["rewards"])
        assert row["prompt"] == ALPACA_PROMPT_TEMPLATE.format(instruction=entry["instruction"], input=entry["input"])
    assert sorted(len(c) for c in dataset["completions"]) == [4, 4] + [5] * 17  # two instructions repeat a response


def test_without_deduplication_and_prompt_formats():
    dataset = load_sparse_feedback_rankings(SPARSE_FEEDBACK_DIR, deduplicate=False, prompt_format="plain")
    assert len(dataset) == 19 and all(len(c) == 5 for c in dataset["completions"])
    assert all(r == sorted(r, reverse=True) for r in dataset["rewards"])
    assert all(float(r).is_integer() for rewards in dataset["rewards"] for r in rewards)  # single ratings, not means
    row = dataset[0]
    assert row["prompt"] == f"{row['instruction']}\n\nInput:\n{row['input']}"
    custom = load_sparse_feedback_rankings(
        SPARSE_FEEDBACK_DIR, prompt_format=lambda i, x: [{"role": "user", "content": i}]
    )
    assert custom[0]["prompt"] == [{"role": "user", "content": row["instruction"]}]
    with pytest.raises(ValueError, match="prompt_format"):
        load_sparse_feedback_rankings(SPARSE_FEEDBACK_DIR, prompt_format="vicuna")


@pytest.mark.parametrize(
    "bad_record, message",
    [
        (["instr", "input", "response", "9"], r"line \d+: field 'rating' is '9', outside 1-7"),
        (["instr", "input", "response", "good"], r"line \d+: field 'rating' is not a number"),
        (["instr", "input", "response"], r"line \d+: expected 4 fields"),
    ],
)
def test_malformed_ratings(tmp_path, bad_record, message):
    shutil.copy(SPARSE_FEEDBACK_DIR / "sample_generation.json", tmp_path)
    ratings = tmp_path / "feedback_ratings_sample_generation.csv"
    shutil.copy(SPARSE_FEEDBACK_DIR / "feedback_ratings_sample_generation.csv", ratings)
    with open(ratings, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(bad_record)
    with pytest.raises(ValueError, match=r"feedback_ratings_sample_generation\.csv, " + message):
        load_sparse_feedback_rankings(tmp_path)
    lines = ratings.read_text(encoding="utf-8").count("\n")
    with pytest.raises(ValueError, match=rf"line {lines}:"):
        load_sparse_feedback_rankings(tmp_path)


def test_malformed_responses(tmp_path):
    shutil.copy(SPARSE_FEEDBACK_DIR / "feedback_ratings_sample_generation.csv", tmp_path)
    (tmp_path / "sample_generation.json").write_text(json.dumps([{"instruction": "a", "input": "", "responses": "x"}]))
    with pytest.raises(ValueError, match=r"sample_generation\.json, entry 0: field 'responses'"):
        load_sparse_feedback_rankings(tmp_path)
