"""Tests for the DOVE data protocol: `build_joint_pairs` (D_H) and `build_conditional_pairs` (D_C)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset

from trl_ranking.data.joint_pairs import PairStats, build_conditional_pairs, build_joint_pairs
from trl_ranking.judges import RewardModelJudge


DOVE_HELPFUL = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dove" / "anthropic_helpful"


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="module")
def sft_rows():
    return read_jsonl(DOVE_HELPFUL / "val_sft.jsonl")


def quality(pair) -> float:
    """A deterministic pseudo-quality in [0, 1) of a (prompt, completion) pair."""
    digest = hashlib.sha256(json.dumps(list(pair), sort_keys=True).encode("utf-8")).hexdigest()
    return int(digest[:12], 16) / 16**12


MARGIN = 0.15


class BiasedHashJudge:
    """Prefers the higher `quality`, except that close calls go to whichever pair is shown first (position bias).

    Position bias is what the both-orders protocol removes: a close call answers 0 in both orders, a flip.
    Records every call.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, first, second):
        self.calls.append((first, second))
        q_first, q_second = quality(first), quality(second)
        if abs(q_first - q_second) < MARGIN:
            return 0
        return 0 if q_first > q_second else 1


def canonical(pair):
    return json.dumps(list(pair), sort_keys=True)


def test_joint_pairs_from_val_sft(sft_rows, caplog):
    judge = BiasedHashJudge()
    with caplog.at_level(logging.INFO, logger="trl_ranking.data.joint_pairs"):
        pairs, stats = build_joint_pairs(Dataset.from_list(sft_rows), judge, seed=0, return_stats=True)

    assert isinstance(pairs, Dataset) and isinstance(stats, PairStats)
    assert pairs.column_names == ["chosen_prompt", "chosen", "rejected_prompt", "rejected"]

    # Independent reconstruction of what was asked, from the judge's own call log
    calls = Counter((canonical(first), canonical(second)) for first, second in judge.calls)
    assert all(count == 1 for count in calls.values())
    comparisons = {frozenset(key) for key in calls}
    assert all((b, a) in calls for a, b in calls)  # every comparison asked in both orders
    assert len(comparisons) == stats.asked == len(sft_rows)  # one partner per row, no repeated pair
    assert stats.judge_calls == len(judge.calls) == 2 * stats.asked
    by_key = {canonical((row["instruction"], row["response"])): row for row in sft_rows}
    anchors = Counter()
    for comparison in comparisons:
        a, b = (by_key[key] for key in comparison)
        assert a["instruction"] != b["instruction"]
        anchors.update([a["instruction"], b["instruction"]])
    assert set(anchors) == {row["instruction"] for row in sft_rows}  # every row takes part

    # Independent tie count and expected kept pairs
    expected_kept = set()
    expected_ties = 0
    for comparison in comparisons:
        a, b = (json.loads(key) for key in comparison)
        if abs(quality(a) - quality(b)) < MARGIN:
            expected_ties += 1
        else:
            chosen, rejected = (a, b) if quality(a) > quality(b) else (b, a)
            expected_kept.add((tuple(chosen), tuple(rejected)))
    assert expected_ties > 20  # the bias makes real ties
    assert stats.ties == expected_ties
    assert stats.kept == len(pairs) == len(comparisons) - expected_ties
    assert stats.rows == 500 and stats.unpaired == 0
    kept = {((r["chosen_prompt"], r["chosen"]), (r["rejected_prompt"], r["rejected"])) for r in pairs}
    assert kept == expected_kept

    # Every kept pair agrees in both orders, and no pair has equal instructions
    fresh = BiasedHashJudge()
    for row in pairs:
        chosen, rejected = (row["chosen_prompt"], row["chosen"]), (row["rejected_prompt"], row["rejected"])
        assert row["chosen_prompt"] != row["rejected_prompt"]
        assert fresh(chosen, rejected) == 0 and fresh(rejected, chosen) == 1

    assert f"{stats.ties} dropped as ties" in caplog.text
    assert str(stats) in caplog.text
    assert stats.tie_rate == pytest.approx(expected_ties / len(comparisons))


def test_joint_pairs_are_deterministic_under_the_seed(sft_rows):
    rows = sft_rows[:120]
    first = build_joint_pairs(rows, BiasedHashJudge(), seed=3)
    again = build_joint_pairs(rows, BiasedHashJudge(), seed=3)
    other = build_joint_pairs(rows, BiasedHashJudge(), seed=4)
    assert first.to_list() == again.to_list()
    assert first.to_list() != other.to_list()


def test_judge_batch_is_used_and_gives_the_same_pairs(sft_rows):
    rows = sft_rows[:100]
    calls = []

    def plain(first, second):
        calls.append((first, second))
        return 0 if len(first[1]) // 25 > len(second[1]) // 25 else 1

    class LengthScorer:
        def __init__(self):
            self.calls = 0

        def __call__(self, prompts, completions):
            self.calls += 1
            return [float(len(completion) // 25) for completion in completions]

    scorer = LengthScorer()
    batched, batched_stats = build_joint_pairs(
        rows, RewardModelJudge(scorer), seed=1, batch_size=16, return_stats=True
    )
    unbatched, unbatched_stats = build_joint_pairs(rows, plain, seed=1, return_stats=True)
    assert batched.to_list() == unbatched.to_list()
    assert batched_stats == unbatched_stats
    assert scorer.calls == -(-len(rows) // 16)  # ceil(100 / 16) judge_batch calls
    # Equal length buckets answer 0 in both orders: count those ties independently from the comparisons asked
    asked = {frozenset((canonical(first), canonical(second))) for first, second in calls}
    equal_lengths = sum(1 for pair in asked if len({len(json.loads(key)[1]) // 25 for key in pair}) == 1)
    assert equal_lengths > 5
    assert batched_stats.ties == equal_lengths
    assert all(len(row["chosen"]) // 25 > len(row["rejected"]) // 25 for row in batched)


def test_instructions_repeated_across_rows_are_never_paired_together():
    rows = [{"prompt": f"question {i % 3}", "completion": f"answer {i}"} for i in range(30)]
    pairs, stats = build_joint_pairs(rows, lambda a, b: 0 if a[1] < b[1] else 1, seed=0, return_stats=True)
    assert stats.asked == 30 and stats.kept == 30
    assert all(row["chosen_prompt"] != row["rejected_prompt"] for row in pairs)


def test_rows_without_an_unused_partner_are_counted():
    rows = [{"prompt": "a", "completion": "x"}, {"prompt": "b", "completion": "yy"}]
    pairs, stats = build_joint_pairs(rows, lambda a, b: 0 if len(a[1]) > len(b[1]) else 1, return_stats=True)
    assert stats.asked == 1 and stats.unpaired == 1
    assert pairs.to_list() == [{"chosen_prompt": "b", "chosen": "yy", "rejected_prompt": "a", "rejected": "x"}]


def test_conversational_rows():
    rows = [
        {
            "prompt": [{"role": "user", "content": f"question {i}"}],
            "completion": [{"role": "assistant", "content": "a" * (i + 1)}],
        }
        for i in range(6)
    ]

    def longer(first, second):
        return 0 if len(first[1][0]["content"]) > len(second[1][0]["content"]) else 1

    pairs = build_joint_pairs(Dataset.from_list(rows), longer, seed=0)
    assert len(pairs) == 6
    for row in pairs:
        assert row["chosen_prompt"][0]["role"] == "user"
        assert len(row["chosen"][0]["content"]) > len(row["rejected"][0]["content"])


def test_explicit_and_fallback_columns(sft_rows):
    renamed = [{"q": row["instruction"], "a": row["response"]} for row in sft_rows[:10]]
    pairs = build_joint_pairs(renamed, BiasedHashJudge(), prompt_column="q", completion_column="a")
    assert set(pairs["chosen_prompt"]) <= {row["q"] for row in renamed}
    with pytest.raises(ValueError, match="no 'question' column for the prompt"):
        build_joint_pairs(renamed, BiasedHashJudge(), prompt_column="question", completion_column="a")
    with pytest.raises(ValueError, match=r"no prompt column: expected one of \['prompt', 'instruction'\]"):
        build_joint_pairs(renamed, BiasedHashJudge())


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"instruction": "   ", "response": "fine"}, "row 2: field 'instruction' is empty"),
        ({"instruction": "fine", "response": ""}, "row 2: field 'response' is empty"),
        ({"instruction": "fine", "response": None}, "row 2: field 'response' is missing"),
        ({"instruction": "fine"}, "row 2: field 'response' is missing"),
        ({"instruction": 3, "response": "fine"}, "row 2: field 'instruction' must be a string or a list of messages"),
        ({"instruction": [], "response": "fine"}, "row 2: field 'instruction' is an empty list"),
    ],
)
def test_bad_rows_name_the_row_and_field(sft_rows, bad_row, message):
    rows = [dict(row) for row in sft_rows[:5]]
    rows[2] = bad_row
    with pytest.raises(ValueError, match=message):
        build_joint_pairs(rows, BiasedHashJudge())


@pytest.mark.parametrize("answer", [2, -1, True, "a", 0.0])
def test_bad_judge_answers_name_the_rows(sft_rows, answer):
    with pytest.raises(ValueError, match=r"^row 0 paired with row \d+, asked as \(row 0, row \d+\): the judge must"):
        build_joint_pairs(sft_rows[:5], lambda first, second: answer)


class FlakyJudge(BiasedHashJudge):
    """`BiasedHashJudge`, except that it gives no verdict (None) for the calls whose first pair's quality is < 0.2."""

    def __call__(self, first, second):
        verdict = super().__call__(first, second)
        return None if quality(first) < 0.2 else verdict


def test_joint_pairs_skip_and_count_comparisons_without_a_verdict(sft_rows, caplog):
    # A failed or unparseable judge call (None) drops its comparison, counted apart: never a tie, never a win
    judge = FlakyJudge()
    with (
        caplog.at_level(logging.WARNING, logger="trl_ranking.data.joint_pairs"),
        pytest.warns(UserWarning, match="no verdict for"),
    ):
        pairs, stats = build_joint_pairs(sft_rows[:200], judge, seed=0, return_stats=True)
    reference, reference_stats = build_joint_pairs(sft_rows[:200], BiasedHashJudge(), seed=0, return_stats=True)
    # Independently: which comparisons of the reference run had a None in either order
    asked = {}
    for first, second in judge.calls:
        key = frozenset((canonical(first), canonical(second)))
        asked[key] = asked.get(key, False) or quality(first) < 0.2
    failed = sum(asked.values())
    assert failed > 10
    assert stats.failed == failed and stats.asked == reference_stats.asked == len(asked)
    assert stats.kept + stats.ties + stats.failed == stats.asked
    # The kept pairs are exactly the reference's pairs whose comparison had verdicts in both orders
    expected = [
        row
        for row in reference.to_list()
        if not asked[
            frozenset(
                (
                    canonical((row["chosen_prompt"], row["chosen"])),
                    canonical((row["rejected_prompt"], row["rejected"])),
                )
            )
        ]
    ]
    assert pairs.to_list() == expected
    assert f"{failed} of {stats.asked} comparisons" in caplog.text
    assert f"{failed} skipped without a verdict" in str(stats)


def test_a_judge_without_any_verdict_or_only_ties_is_an_error(sft_rows):
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no pair was kept.*5 skipped without a verdict"):
        build_joint_pairs(sft_rows[:5], lambda first, second: None)
    # A judge that always prefers the pair shown first: every comparison flips, a tie
    with pytest.raises(ValueError, match=r"no pair was kept.*0 kept, 5 dropped as ties"):
        build_joint_pairs(sft_rows[:5], lambda first, second: 0)
    with pytest.raises(ValueError, match="build_conditional_pairs: no pair was kept"):
        build_conditional_pairs([{"prompt": "q", "completions": ["same", "same"]}], lambda first, second: 0)


def test_judge_errors_get_the_row(sft_rows):
    def refuses(first, second):
        raise ValueError("could not find 'Output (a)' or 'Output (b)' in the judge's reply: 'no idea'")

    with pytest.raises(ValueError, match=r"^row 0 paired with row \d+, asked as .*: could not find 'Output \(a\)'"):
        build_joint_pairs(sft_rows[:4], refuses)


def test_bad_arguments(sft_rows):
    with pytest.raises(ValueError, match="at least two distinct prompts"):
        build_joint_pairs([{"prompt": "same", "completion": str(i)} for i in range(4)], BiasedHashJudge())
    with pytest.raises(ValueError, match="judge must be a callable"):
        build_joint_pairs(sft_rows[:4], "gpt-4")
    with pytest.raises(ValueError, match="num_pairs_per_row"):
        build_joint_pairs(sft_rows[:4], BiasedHashJudge(), num_pairs_per_row=0)

    class WrongLength:
        def __call__(self, first, second):
            return 0

        def judge_batch(self, firsts, seconds):
            return [0]

    with pytest.raises(ValueError, match="returned 1 answers for 8 comparisons"):
        build_joint_pairs(sft_rows[:4], WrongLength())


# --- conditional pairs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional_rows():
    """The DOVE authors' labelled conditional pairs, turned back into unlabelled two-response rows."""
    rows = read_jsonl(DOVE_HELPFUL / "val_conditional_pref.jsonl")
    return rows, [
        {
            "prompt": row["i_chosen"],
            "completions": [row["r_chosen"], row["r_reject"]] if k % 2 else [row["r_reject"], row["r_chosen"]],
        }
        for k, row in enumerate(rows)
    ]


def test_conditional_pairs_recover_the_labels(conditional_rows):
    labelled, rows = conditional_rows
    gold_chosen = {row["r_chosen"] for row in labelled}

    calls = []

    def gold_judge(first, second):
        """Knows the human label, but is position-biased on rows whose chosen response is short."""
        calls.append((first, second))
        assert first[0] == second[0]  # conditional comparisons have equal prompts
        if first[1] in gold_chosen and len(first[1]) < 40:
            return 0
        if second[1] in gold_chosen and len(second[1]) < 40:
            return 0
        return 0 if first[1] in gold_chosen else 1

    pairs, stats = build_conditional_pairs(rows, gold_judge, return_stats=True)
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    identical = sum(1 for row in labelled if row["r_chosen"].strip() == row["r_reject"].strip())
    expected_ties = sum(
        1
        for row in labelled
        if row["r_chosen"].strip() != row["r_reject"].strip()
        and (
            row["r_chosen"] in gold_chosen
            and len(row["r_chosen"]) < 40
            or row["r_reject"] in gold_chosen
            and len(row["r_reject"]) < 40
        )
    )
    assert expected_ties > 0
    assert stats.asked == len(rows) and stats.ties == expected_ties + identical
    assert stats.judge_calls == len(calls) == 2 * (len(rows) - identical)
    assert len(pairs) == stats.kept == len(rows) - stats.ties
    assert all(row["chosen"] in gold_chosen for row in pairs)


def test_conditional_pairs_column_schemas():
    def longer(first, second):
        return 0 if len(first[1]) > len(second[1]) else 1

    rows = [
        {"instruction": "q1", "response_0": "short", "response_1": "much longer"},
        {"instruction": "q2", "response_0": "same", "response_1": "same "},  # identical once stripped: a tie
        {"instruction": "q3", "response_0": "a long answer", "response_1": "tiny"},
    ]
    pairs, stats = build_conditional_pairs(rows, longer, return_stats=True)
    assert pairs.to_list() == [
        {"prompt": "q1", "chosen": "much longer", "rejected": "short"},
        {"prompt": "q3", "chosen": "a long answer", "rejected": "tiny"},
    ]
    assert (stats.asked, stats.kept, stats.ties, stats.judge_calls) == (3, 2, 1, 4)
    explicit = build_conditional_pairs(
        [{"prompt": "q", "x": "one", "y": "three"}], longer, completion_columns=("x", "y")
    )
    assert explicit[0] == {"prompt": "q", "chosen": "three", "rejected": "one"}


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"prompt": "q", "completions": ["a", "b", "c"]},
            "row 1: field 'completions' must hold exactly two responses, got 3",
        ),
        ({"prompt": "q", "completions": None}, "row 1: field 'completions' is missing"),
        ({"prompt": "q", "completions": ["a", ""]}, r"row 1: field 'completions\[1\]' is empty"),
        ({"prompt": "", "completions": ["a", "b"]}, "row 1: field 'prompt' is empty"),
    ],
)
def test_conditional_bad_rows(row, message):
    rows = [{"prompt": "fine", "completions": ["x", "yy"]}, row]
    with pytest.raises(ValueError, match=message):
        build_conditional_pairs(rows, lambda first, second: 0)


def test_conditional_pairs_skip_comparisons_without_a_verdict():
    def picky(first, second):
        # No verdict on q2 in the order (response 1, response 0) only: the comparison is skipped, not a tie
        if first[0] == "q2" and first[1] == "b2x":
            return None
        return 0 if len(first[1]) > len(second[1]) else 1

    rows = [{"prompt": f"q{i}", "completions": [f"a{i}", f"b{i}x"]} for i in range(1, 4)]
    with pytest.warns(UserWarning, match="33.3% of the comparisons"):
        pairs, stats = build_conditional_pairs(rows, picky, return_stats=True)
    assert (stats.asked, stats.kept, stats.ties, stats.failed) == (3, 2, 0, 1)
    assert [row["prompt"] for row in pairs] == ["q1", "q3"]


def test_conditional_bad_judge_answer():
    with pytest.raises(ValueError, match=r"row 0, asked as \(response 0, response 1\): the judge must return 0 or 1"):
        build_conditional_pairs([{"prompt": "q", "completions": ["a", "b"]}], lambda first, second: "Output (a)")
    with pytest.raises(ValueError, match="no two responses column"):
        build_conditional_pairs([{"prompt": "q", "answer": "a"}], lambda first, second: 0)


def test_judging_shows_a_progress_bar_unless_turned_off(sft_rows, capsys):
    rows = sft_rows[:10]
    judge = BiasedHashJudge()
    build_joint_pairs(rows, judge, seed=0)
    progress = capsys.readouterr().err
    assert "Judging joint pairs: 100%" in progress and f"{len(judge.calls)}/{len(judge.calls)}" in progress
    build_joint_pairs(rows, BiasedHashJudge(), seed=0, progress_bar=False)
    two = [{"prompt": "q", "completions": ["yes", "no"]}, {"prompt": "r", "completions": ["a", "bb"]}]
    build_conditional_pairs(two, lambda first, second: 0 if len(first[1]) > len(second[1]) else 1, progress_bar=False)
    assert "Judging" not in capsys.readouterr().err
    build_conditional_pairs(two, lambda first, second: 0 if len(first[1]) > len(second[1]) else 1)
    assert "Judging conditional pairs: 100%" in capsys.readouterr().err
