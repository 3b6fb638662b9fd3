"""Verifiable-constraint prompts and their reward, checked on hand-written responses whose pass/fail is known."""

from __future__ import annotations

import gzip
import json

import pytest
from tiny_models import DOVE_DIR, HH_RLHF_FILE

from trl_ranking.evaluation.constraints import (
    DEFAULT_CONSTRAINTS,
    ConstraintScorer,
    build_constraint_prompts,
    check_constraints,
    constraint_metrics,
    constraint_reward,
    describe_constraint,
    load_dove_instructions,
    load_hh_first_turns,
)


pytest.importorskip("if_verifiable")


def row(ids, kwargs, instruction="How do I boil an egg?"):
    return {"instruction": instruction, "prompt_text": instruction, "instruction_id_list": ids, "kwargs": kwargs}


WORDS_20 = row(["length_constraints:number_words"], [{"num_words": 20, "relation": "less than"}])
NO_COMMA_AND_KEYWORD = row(["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["water"]}])


@pytest.mark.parametrize(
    ("example", "response", "expected"),
    [
        # 19 words pass "less than 20", 20 words do not
        (WORDS_20, " ".join(["word"] * 19), [True]),
        (WORDS_20, " ".join(["word"] * 20), [False]),
        (NO_COMMA_AND_KEYWORD, "Put the egg in boiling water for nine minutes.", [True, True]),
        (NO_COMMA_AND_KEYWORD, "Put the egg in boiling water, then wait.", [False, True]),
        (NO_COMMA_AND_KEYWORD, "Boil it, then wait.", [False, False]),
        (row(["keywords:forbidden_words"], [{"forbidden_words": ["egg"]}]), "Boil it for nine minutes.", [True]),
        (row(["keywords:forbidden_words"], [{"forbidden_words": ["egg"]}]), "Boil the egg.", [False]),
        # "eggs" is not the word "egg" (IFEval matches whole words)
        (row(["keywords:forbidden_words"], [{"forbidden_words": ["egg"]}]), "Boil the eggs.", [True]),
        (row(["change_case:english_lowercase"], [{}]), "boil the egg in water for nine minutes.", [True]),
        (row(["change_case:english_lowercase"], [{}]), "Boil the egg in water for nine minutes.", [False]),
        (row(["detectable_format:title"], [{}]), "<<Boiled eggs>>\nBoil them.", [True]),
        (row(["detectable_format:title"], [{}]), "Boiled eggs: boil them.", [False]),
        (row(["startend:quotation"], [{}]), '"Boil them."', [True]),
        (row(["startend:quotation"], [{}]), "Boil them.", [False]),
        (
            row(["startend:end_checker"], [{"end_phrase": "Any other questions?"}]),
            "Boil. Any other questions?",
            [True],
        ),
        (
            row(["startend:end_checker"], [{"end_phrase": "Any other questions?"}]),
            "Any other questions? Boil.",
            [False],
        ),
        (row(["detectable_format:number_bullet_lists"], [{"num_bullets": 2}]), "* boil\n* cool", [True]),
        (row(["detectable_format:number_bullet_lists"], [{"num_bullets": 2}]), "* boil\n* cool\n* peel", [False]),
        (
            row(["keywords:letter_frequency"], [{"letter": "z", "let_frequency": 1, "let_relation": "at least"}]),
            "A dozen eggs.",
            [True],
        ),
        (
            row(["keywords:letter_frequency"], [{"letter": "z", "let_frequency": 1, "let_relation": "at least"}]),
            "Twelve eggs.",
            [False],
        ),
    ],
)
def test_check_constraints_on_known_responses(example, response, expected):
    assert check_constraints(example, response) == expected
    assert constraint_reward(example, response) == pytest.approx(sum(expected) / len(expected))


def test_empty_response_meets_nothing():
    assert check_constraints(NO_COMMA_AND_KEYWORD, "") == [False, False]
    assert constraint_reward(NO_COMMA_AND_KEYWORD, "   ") == 0.0


def test_bad_rows_raise():
    with pytest.raises(ValueError, match="instruction_id_list"):
        constraint_reward({"kwargs": []}, "x")
    with pytest.raises(ValueError, match="one dict per instruction id"):
        constraint_reward(row(["punctuation:no_comma"], [{}, {}]), "x")
    with pytest.raises(ValueError, match="Unknown IFEval instruction id"):
        constraint_reward(row(["made:up"], [{}]), "x")
    with pytest.raises(ValueError, match="instruction 1 is empty"):
        build_constraint_prompts(["fine", "  "])


def test_kwargs_stored_as_json_text_are_read():
    stored = dict(NO_COMMA_AND_KEYWORD, kwargs=json.dumps(NO_COMMA_AND_KEYWORD["kwargs"]))
    assert check_constraints(stored, "Boil it in water.") == [True, True]


def test_constraint_metrics_against_hand_counts():
    rows = [WORDS_20, NO_COMMA_AND_KEYWORD, NO_COMMA_AND_KEYWORD]
    responses = ["Short answer.", "Boil it in water.", "Boil it, then wait."]
    # passes: [T], [T, T], [F, F] -> prompts 2/3, instructions 3/5, rewards (1 + 1 + 0) / 3
    metrics = constraint_metrics(rows, responses)
    assert metrics["prompt_accuracy"] == pytest.approx(2 / 3)
    assert metrics["instruction_accuracy"] == pytest.approx(3 / 5)
    assert metrics["mean_reward"] == pytest.approx(2 / 3)
    assert metrics["rate/punctuation:no_comma"] == pytest.approx(1 / 2)
    assert metrics["rate/length_constraints:number_words"] == 1.0
    with pytest.raises(ValueError, match="2 rows but 1 responses"):
        constraint_metrics(rows[:2], responses[:1])


def test_build_is_deterministic_and_uses_ifeval_descriptions():
    instructions = [f"Question number {i} about cooking pasta?" for i in range(40)]
    first = build_constraint_prompts(instructions, seed=3)
    assert first == build_constraint_prompts(instructions, seed=3)
    assert first != build_constraint_prompts(instructions, seed=4)
    counts = {len(r["instruction_id_list"]) for r in first}
    assert counts == {1, 2}
    known = {spec.instruction_id for spec in DEFAULT_CONSTRAINTS}
    for r in first:
        assert set(r["instruction_id_list"]) <= known
        assert len(set(r["instruction_id_list"])) == len(r["instruction_id_list"])
        assert r["prompt"] == [{"role": "user", "content": r["prompt_text"]}]
        assert r["prompt_text"].startswith(r["instruction"] + "\n\n")
        for instruction_id, kwargs in zip(r["instruction_id_list"], r["kwargs"]):
            assert describe_constraint(instruction_id, kwargs) in r["prompt_text"]
    # lowercase and a title do not conflict in IFEval, but lowercase and all-capitals would
    assert describe_constraint("length_constraints:number_words", {"num_words": 20, "relation": "less than"}) == (
        "Answer with less than 20 words."
    )


def test_scorer_looks_prompts_up():
    rows = build_constraint_prompts(["How do I boil an egg?", "What is a good name for a cat?"], seed=0)
    scorer = ConstraintScorer(rows)
    responses = ["ok", "fine answer"]
    expected = [constraint_reward(r, text) for r, text in zip(rows, responses)]
    assert scorer([r["prompt"] for r in rows], responses) == expected
    completions = [[{"role": "assistant", "content": text}] for text in responses]
    assert scorer([r["prompt_text"] for r in rows], completions) == expected
    with pytest.raises(ValueError, match="prompt 0 is not one of"):
        scorer(["unknown"], ["x"])


def test_real_instruction_loaders():
    hh = load_hh_first_turns(HH_RLHF_FILE)
    with gzip.open(HH_RLHF_FILE, "rt", encoding="utf-8") as handle:
        first = json.loads(handle.readline())["chosen"]
    assert hh[0] == first.split("Human:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
    assert len(hh) == len(set(hh)) > 1000
    dove = load_dove_instructions([DOVE_DIR / "anthropic_helpful" / "test.jsonl"])
    assert len(dove) == len(set(dove)) > 400
    assert all(10 <= len(text) <= 300 for text in hh + dove)


def test_module_docstring_example_runs():
    import doctest

    import trl_ranking.evaluation.constraints as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
