"""The papers' evaluation rules, each against the official rule written out independently here.

- PRO's BLEU: NLTK `sentence_bleu([ref], hyp)` on raw strings (character n-grams), no smoothing, mean x100
  (`PRO/eval/metrics2.py`); checked by the hand formula on tiny strings and against NLTK called directly.
- PRO's stop strings (`PRO/eval/infer_func_now.py`): the official loop, copied as a rule.
- DOVE's win rate against gold (`dove/auto_eval.py`): score 1 / 0.5 / 0, failed comparisons skipped.
- The PRO paper's GPT-4 rule: the two orderings averaged.
- The DOVE paper's D_S: one response per instruction, chosen at random with a seed, each instruction once.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from nltk.translate.bleu_score import sentence_bleu
from tiny_models import DOVE_DIR

from trl_ranking.data import select_single_responses
from trl_ranking.evaluation import PRO_STOP_STRINGS, bleu, pairwise_win_rate, pro_bleu, truncate_at_stop_strings


def _dove_rows(limit: int = 60) -> list[tuple[str, str, str]]:
    folder = DOVE_DIR / "anthropic_helpful"
    gold = {}
    for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        gold[record["instruction"]] = record["gold_response"]
    rows = []
    for line in (folder / "model_outputs_t0.001.json").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        instruction = record["instruction"].removeprefix("### Instructions: ").removesuffix("\n\n### Response:")
        if instruction in gold:
            rows.append((instruction, record["outputs"], gold[instruction]))
    return rows[:limit]


# ---------------------------------------------------------------------------------------------------------------------
# PRO: BLEU
# ---------------------------------------------------------------------------------------------------------------------
def test_pro_bleu_hand_formula_on_tiny_strings():
    # Character n-grams. "abcdef" vs "abcdeg": 1-grams 5/6, 2-grams 4/5, 3-grams 3/4, 4-grams 2/3, same length (BP 1)
    first = (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    # "abcde" vs "abcdefgh": every n-gram of the hypothesis matches; brevity penalty exp(1 - 8/5)
    second = math.exp(1 - 8 / 5)
    # Clipping: "aaaa" vs "aab": 1-grams min(4, 2)/4, 2-grams "aa" x3 clipped to 1 -> 1/3, 3-grams 0/2: no smoothing, 0
    third = 0.0
    # Surrounding whitespace is stripped before scoring, as the official get_bleu does
    expected = 100 * (first + second + third) / 3
    assert pro_bleu(["abcdef", "  abcde\n", "aaaa"], ["abcdeg", "abcdefgh", " aab"]) == pytest.approx(expected)
    assert pro_bleu(["same text"], ["same text"]) == pytest.approx(100.0)
    assert pro_bleu([""], ["abc"]) == 0.0


def test_pro_bleu_equals_nltk_on_real_rows_and_differs_from_sacrebleu():
    rows = _dove_rows()
    predictions = [output for _, output, _ in rows]
    references = [gold for _, _, gold in rows]
    official = [sentence_bleu([r.strip()], p.strip()) for p, r in zip(predictions, references)]
    expected = 100 * sum(official) / len(official)
    assert pro_bleu(predictions, references) == pytest.approx(expected, rel=1e-12)
    # Character n-grams score far higher than word n-grams on the same texts: the two numbers are not comparable
    assert expected > 2 * bleu(predictions, references)


def test_pro_bleu_bad_input():
    with pytest.raises(ValueError, match="predictions is empty"):
        pro_bleu([], [])
    with pytest.raises(ValueError, match=r"references\[0\] must be a string"):
        pro_bleu(["a"], [None])


# ---------------------------------------------------------------------------------------------------------------------
# PRO: stop strings
# ---------------------------------------------------------------------------------------------------------------------
def _official_cut(text: str) -> str:
    text = text.strip()
    for stop in ["Human:", "human:", "Assistant:", "assistant:"]:
        stop_ix = text.find(stop)
        if stop_ix >= 0:
            text = text[:stop_ix].rstrip()
    return text


@pytest.mark.parametrize(
    "text",
    [
        " Sure, here it is.\n\nHuman: thanks",
        " I am an assistant: Assistant: no",
        " The human: said hi. Human: and then",
        " Nothing to cut here. ",
        " assistant: starts with a stop string",
    ],
)
def test_pro_stop_strings_match_the_official_loop(text):
    assert truncate_at_stop_strings(text, PRO_STOP_STRINGS).strip() == _official_cut(text)


# ---------------------------------------------------------------------------------------------------------------------
# Win rates
# ---------------------------------------------------------------------------------------------------------------------
def _scripted_judge(verdicts: dict[tuple[str, str], int | None]):
    """Answers from a table keyed by (first completion, second completion)."""
    return lambda first, second: verdicts[(first[1], second[1])]


def test_dove_rule_against_the_official_score_with_failures():
    # a: model responses, b: gold. Verdicts for (a, b) and (b, a): 0 prefers the first shown
    cases = [
        ("m0", "g0", 0, 1),  # model preferred in both orders: win
        ("m1", "g1", 1, 0),  # gold in both: lose
        ("m2", "g2", 0, 0),  # flip: tie
        ("m3", "g3", 1, 1),  # flip: tie
        ("m4", "g4", None, 1),  # no verdict: skipped
        ("m5", "g5", 0, 1),  # win
        ("m6", "g6", 0, None),  # no verdict: skipped
    ]
    verdicts = {}
    for model, gold, ab, ba in cases:
        verdicts[(model, gold)], verdicts[(gold, model)] = ab, ba
    prompts = [f"q{i}" for i in range(len(cases))]
    results = pairwise_win_rate(
        _scripted_judge(verdicts), prompts, [c[0] for c in cases], [c[1] for c in cases], rule="dove"
    )

    # dove/auto_eval.py: feedback 'model' scores 1, 'equal' 0.5, 'gold' 0; None is skipped (not in `total`)
    score = total = 0
    for _, _, ab, ba in cases:
        if ab is None or ba is None:
            continue
        feedback = "model" if (ab, ba) == (0, 1) else "gold" if (ab, ba) == (1, 0) else "equal"
        score += 1 if feedback == "model" else 0.5 if feedback == "equal" else 0
        total += 1
    assert results["win_rate"] == pytest.approx(score / total)
    assert results["num_judged"] == 5 and results["failed"] == 2
    assert (results["win"], results["tie"], results["lose"]) == pytest.approx((2 / 5, 2 / 5, 1 / 5))


def test_pro_rule_averages_the_two_orderings():
    cases = [("m0", "g0", 0, 1), ("m1", "g1", 0, 0), ("m2", "g2", 1, 0), ("m3", "g3", 1, 1), ("m4", "g4", 0, 1)]
    verdicts = {}
    for model, gold, ab, ba in cases:
        verdicts[(model, gold)], verdicts[(gold, model)] = ab, ba
    results = pairwise_win_rate(
        _scripted_judge(verdicts), ["q"] * 5, [c[0] for c in cases], [c[1] for c in cases], rule="pro"
    )
    # Each ordering is one half-comparison: win rate of ordering (a, b) and of ordering (b, a), averaged
    win_ab = sum(ab == 0 for _, _, ab, _ in cases) / 5
    win_ba = sum(ba == 1 for _, _, _, ba in cases) / 5
    assert results["win"] == pytest.approx((win_ab + win_ba) / 2)
    assert results["lose"] == pytest.approx(1 - (win_ab + win_ba) / 2)
    assert results["tie"] == 0.0
    # The flips, ties under the DOVE rule, are half a win and half a loss here
    dove = pairwise_win_rate(
        _scripted_judge(verdicts), ["q"] * 5, [c[0] for c in cases], [c[1] for c in cases], rule="dove"
    )
    assert dove["tie"] == pytest.approx(2 / 5) and dove["win"] == pytest.approx(2 / 5)
    assert results["win"] == pytest.approx(3 / 5)


def test_win_rate_all_failed_and_bad_rule():
    results = pairwise_win_rate(lambda first, second: None, ["q", "r"], ["a", "b"], ["c", "d"])
    assert results["num_judged"] == 0 and results["failed"] == 2 and math.isnan(results["win_rate"])
    with pytest.raises(ValueError, match="rule must be one of"):
        pairwise_win_rate(lambda first, second: 0, ["q"], ["a"], ["b"], rule="gpt4")


# ---------------------------------------------------------------------------------------------------------------------
# DOVE: D_S
# ---------------------------------------------------------------------------------------------------------------------
def test_select_single_responses_on_real_conditional_pairs():
    path = DOVE_DIR / "anthropic_helpful" / "val_conditional_pref.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"prompt": r["i_chosen"], "chosen": r["r_chosen"], "rejected": r["r_reject"]} for r in records]
    # Repeat some instructions with other responses, as a dataset with several pairs per instruction has
    rows += [{"prompt": rows[i]["prompt"], "chosen": f"extra {i}", "rejected": f"other {i}"} for i in range(0, 40, 4)]
    single = select_single_responses(rows, seed=3)

    # Independent computation: group by instruction in first-seen order, draw with random.Random(seed)
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row["prompt"].strip(), []).extend([row["chosen"], row["rejected"]])
    rng = random.Random(3)
    expected = [(prompt, rng.choice(responses)) for prompt, responses in groups.items()]
    assert [p.strip() for p in single["prompt"]] == [p for p, _ in expected]
    assert single["completion"] == [c for _, c in expected]
    assert len(set(single["prompt"])) == len(single) == len(groups) < len(rows)
    # Both responses get drawn over the dataset, and another seed draws differently
    assert any(c == r["chosen"] for c, r in zip(single["completion"], rows))
    assert any(c == r["rejected"] for c, r in zip(single["completion"], rows))
    assert select_single_responses(rows, seed=4)["completion"] != single["completion"]


def test_select_single_responses_columns_and_bad_input():
    rows = [
        {"instruction": "a", "response": "x"},
        {"instruction": "a", "response": "y"},
        {"instruction": "b", "response": "z"},
    ]
    single = select_single_responses(rows, seed=0)
    assert single["prompt"] == ["a", "b"] and single["completion"][1] == "z"
    lists = select_single_responses([{"prompt": "a", "completions": ["x", "y", "z"]}], seed=1)
    assert lists["completion"] == [random.Random(1).choice(["x", "y", "z"])]
    with pytest.raises(ValueError, match="row 1: field 'response' is empty"):
        select_single_responses([{"prompt": "a", "response": "x"}, {"prompt": "b", "response": " "}])
    with pytest.raises(ValueError, match="no response column"):
        select_single_responses([{"prompt": "a", "text": "x"}])
