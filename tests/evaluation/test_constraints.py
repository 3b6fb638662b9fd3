"""Verifiable-constraint prompts and their reward, checked on hand-written responses whose pass/fail is known."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from tiny_models import DOVE_DIR, HH_RLHF_FILE

from trl_ranking.evaluation.constraints import (
    DEFAULT_CONSTRAINTS,
    IFEVAL_CONSTRAINTS,
    ConstraintScorer,
    ConstraintSpec,
    build_constraint_prompts,
    check_constraints,
    constraint_metrics,
    constraint_pass_rates,
    constraint_rankings,
    constraint_reward,
    describe_constraint,
    drop_ifeval_overlap,
    format_constraint_pass_rates,
    ifeval_overlap,
    infeasible_reason,
    load_dove_instructions,
    load_hh_first_turns,
    load_sparse_feedback_instructions,
    load_tldr_instructions,
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


# --- All 25 IFEval types, built by the checkers' own builders ---------------------------------------------------------

RELATION_ARGUMENT = {
    "length_constraints:number_words": "relation",
    "length_constraints:number_sentences": "relation",
    "keywords:frequency": "relation",
    "keywords:letter_frequency": "let_relation",
    "change_case:capital_word_frequency": "capital_relation",
}


@pytest.fixture(scope="module")
def real_instructions():
    """Instructions of the three training sources (not HH's red-team prompts), without any that overlap IFEval."""
    from tiny_models import SPARSE_FEEDBACK_DIR

    helpful = load_dove_instructions(
        [DOVE_DIR / "anthropic_helpful" / "test.jsonl", DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl"]
    )
    tldr = load_tldr_instructions([DOVE_DIR / "tldr" / "test.jsonl"])
    sparse = load_sparse_feedback_instructions(SPARSE_FEEDBACK_DIR / "sample_generation.json")
    assert len(tldr) == 500 and len(sparse) == 20 and tldr[0].startswith("You are given a social media post")
    # One val_sft instruction shares "... but i don't know how can you help me" with an IFEval prompt
    overlapping = [text for text in helpful if "comfort her but I don't know how" in text]
    assert len(overlapping) == 1
    candidates = helpful[:400] + overlapping + tldr[:60] + sparse
    instructions = drop_ifeval_overlap(candidates)
    assert instructions == [text for text in candidates if text not in overlapping]
    return instructions


@pytest.fixture(scope="module")
def ifeval_rows(real_instructions):
    return build_constraint_prompts(
        real_instructions, seed=0, constraints=IFEVAL_CONSTRAINTS, num_constraints=(1, 2, 3)
    )


def test_ifeval_catalogue_covers_every_type_both_directions_without_conflicts(real_instructions, ifeval_rows):
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    from trl_ranking.evaluation.ifeval import IFEVAL_INSTRUCTION_IDS

    assert {spec.instruction_id for spec in IFEVAL_CONSTRAINTS} == set(IFEVAL_INSTRUCTION_IDS)
    counts = {}
    for r in ifeval_rows:
        for instruction_id in r["instruction_id_list"]:
            counts[instruction_id] = counts.get(instruction_id, 0) + 1
    assert set(counts) == set(IFEVAL_INSTRUCTION_IDS), set(IFEVAL_INSTRUCTION_IDS) - set(counts)
    assert min(counts.values()) >= 5
    directions = {
        (instruction_id, kwargs[RELATION_ARGUMENT[instruction_id]])
        for r in ifeval_rows
        for instruction_id, kwargs in zip(r["instruction_id_list"], r["kwargs"])
        if instruction_id in RELATION_ARGUMENT
    }
    assert directions == {(i, relation) for i in RELATION_ARGUMENT for relation in ("less than", "at least")}
    assert {len(r["instruction_id_list"]) for r in ifeval_rows} == {1, 2, 3}
    for r in ifeval_rows:
        ids = r["instruction_id_list"]
        assert len(set(ids)) == len(ids)
        for a in ids:  # the official table, read in both directions
            for b in ids:
                if a != b:
                    assert b not in INSTRUCTION_CONFLICTS[a] and a not in INSTRUCTION_CONFLICTS[b], (a, b)
        assert infeasible_reason(ids, r["kwargs"]) is None
        for instruction_id, kwargs in zip(ids, r["kwargs"]):
            if instruction_id == "length_constraints:nth_paragraph_first_word":
                assert 1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]
    # The builders' own random arguments: the official ranges, not short answers only
    words = [k["num_words"] for r in ifeval_rows for i, k in zip(r["instruction_id_list"], r["kwargs"])
             if i == "length_constraints:number_words"]  # fmt: skip
    assert min(words) >= 100 and max(words) <= 500 and max(words) > 400
    # Seeded: the same seed gives the same prompts, another seed others; the global random state is left alone
    random.seed(123)
    state = random.getstate()
    again = build_constraint_prompts(
        real_instructions, seed=0, constraints=IFEVAL_CONSTRAINTS, num_constraints=(1, 2, 3)
    )
    assert again == ifeval_rows and random.getstate() == state
    assert build_constraint_prompts(real_instructions[:50], seed=1, constraints=IFEVAL_CONSTRAINTS) != ifeval_rows[:50]


def test_prompt_dependent_arguments_repeat_the_prompt(ifeval_rows):
    repeats = [r for r in ifeval_rows if "combination:repeat_prompt" in r["instruction_id_list"]]
    assert repeats
    for r in repeats:
        assert r["instruction_id_list"][-1] == "combination:repeat_prompt"  # its sentence comes last, as in IFEval
        to_repeat = r["kwargs"][-1]["prompt_to_repeat"]
        separator = "\n\n" if len(r["instruction_id_list"]) == 1 else "\n"  # after the instruction, or a constraint
        sentence = describe_constraint("combination:repeat_prompt", r["kwargs"][-1])
        assert r["prompt_text"] == to_repeat + separator + sentence
        assert to_repeat.startswith(r["instruction"])
        follows = check_constraints(r, to_repeat + "\n\nHere is my answer.")
        assert follows[-1] is True
        assert check_constraints(r, "Sure! " + to_repeat)[-1] is False
    # With another constraint before it, the request to repeat includes that constraint's sentence
    row = build_constraint_prompts(
        ["How do I boil an egg"],
        seed=0,
        constraints=[ConstraintSpec("combination:repeat_prompt"), ConstraintSpec("detectable_format:title")],
        num_constraints=(2,),
    )[0]
    assert row["instruction_id_list"] == ["detectable_format:title", "combination:repeat_prompt"]
    assert row["kwargs"][1]["prompt_to_repeat"] == "How do I boil an egg\n\n" + describe_constraint(
        "detectable_format:title", {}
    )


def test_infeasible_combinations_are_named():
    nth = {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "pride"}
    assert "beyond" in infeasible_reason(["length_constraints:nth_paragraph_first_word"], [nth])
    assert infeasible_reason(["length_constraints:nth_paragraph_first_word"], [dict(nth, nth_paragraph=2)]) is None
    one_sentence = {"num_sentences": 1, "relation": "less than"}
    assert infeasible_reason(["length_constraints:number_sentences"], [one_sentence]) == "fewer than 1 sentence"
    sections = {"section_spliter": "Section", "num_sections": 2}
    ids = ["change_case:english_lowercase", "detectable_format:multiple_sections"]
    assert "lowercase" in infeasible_reason(ids, [{}, sections])
    ids = ["change_case:english_capital", "detectable_format:multiple_sections"]
    assert "capitals" in infeasible_reason(ids, [{}, sections])
    assert infeasible_reason(ids, [{}, dict(sections, section_spliter="SECTION")]) is None
    # A postscript is checked ignoring case: "p.s." in a lowercase answer follows it
    assert infeasible_reason(["change_case:english_lowercase", "detectable_content:postscript"], [{}, {}]) is None
    clash = ["keywords:existence", "keywords:forbidden_words"]
    assert "both required and forbidden" in infeasible_reason(
        clash, [{"keywords": ["egg"]}, {"forbidden_words": ["egg"]}]
    )
    ending = ["startend:end_checker", "keywords:forbidden_words"]
    kwargs = [{"end_phrase": "Is there anything else I can help with?"}, {"forbidden_words": ["help"]}]
    assert "['help']" in infeasible_reason(ending, kwargs)
    frequency = ["keywords:existence", "keywords:frequency"]
    assert infeasible_reason(
        frequency, [{"keywords": ["egg"]}, {"keyword": "egg", "frequency": 1, "relation": "less than"}]
    )
    assert (
        infeasible_reason(
            frequency, [{"keywords": ["egg"]}, {"keyword": "egg", "frequency": 2, "relation": "less than"}]
        )
        is None
    )
    letter = ["startend:end_checker", "keywords:letter_frequency"]
    kwargs = [{"end_phrase": "Any other questions?"}, {"letter": "o", "let_frequency": 2, "let_relation": "less than"}]
    assert "letter 'o'" in infeasible_reason(letter, kwargs)
    capital = ["detectable_format:multiple_sections", "change_case:capital_word_frequency"]
    kwargs = [
        {"section_spliter": "SECTION", "num_sections": 3},
        {"capital_frequency": 3, "capital_relation": "less than"},
    ]
    assert "all-capital" in infeasible_reason(capital, kwargs)
    repeat = ["punctuation:no_comma", "combination:repeat_prompt"]
    assert "comma" in infeasible_reason(repeat, [{}, {"prompt_to_repeat": "Hi, there"}])
    assert infeasible_reason(repeat, [{}, {"prompt_to_repeat": "Hi there"}]) is None
    words = ["length_constraints:number_words"]
    assert infeasible_reason(words, [{"num_words": 400, "relation": "at least"}], max_words=300)
    assert infeasible_reason(words, [{"num_words": 400, "relation": "less than"}], max_words=300) is None


def test_max_words_redraws_long_word_limits(real_instructions):
    rows = build_constraint_prompts(
        real_instructions[:300], seed=0, constraints=IFEVAL_CONSTRAINTS, num_constraints=(1, 2, 3), max_words=250
    )
    limits = [(k["relation"], k["num_words"]) for r in rows for i, k in zip(r["instruction_id_list"], r["kwargs"])
              if i == "length_constraints:number_words"]  # fmt: skip
    assert limits and all(n <= 250 for relation, n in limits if relation == "at least")
    assert any(n > 250 for relation, n in limits if relation == "less than")


def _words_answer(n: int) -> str:
    return " ".join(["word"] * n)


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "response", "expected"),
    [
        ("length_constraints:number_words", {"num_words": 120, "relation": "at least"}, _words_answer(120), True),
        ("length_constraints:number_words", {"num_words": 120, "relation": "at least"}, _words_answer(119), False),
        ("length_constraints:number_words", {"num_words": 120, "relation": "less than"}, _words_answer(119), True),
        (
            "length_constraints:number_sentences",
            {"num_sentences": 3, "relation": "at least"},
            "One. Two. Three.",
            True,
        ),
        (
            "length_constraints:number_sentences",
            {"num_sentences": 3, "relation": "less than"},
            "One. Two. Three.",
            False,
        ),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First part.\n***\nSecond part.", False),
        ("detectable_format:json_format", {}, '```json\n{"answer": "boil it"}\n```', True),
        ("detectable_format:json_format", {}, "answer: boil it", False),
        ("combination:two_responses", {}, "Boil it.\n******\nSteam it.", True),
        ("language:response_language", {"language": "de"}, "Koche das Ei zehn Minuten lang in Wasser.", True),
        (
            "change_case:capital_word_frequency",
            {"capital_frequency": 2, "capital_relation": "at least"},
            "BOIL the EGG",
            True,
        ),
        (
            "keywords:frequency",
            {"keyword": "egg", "frequency": 2, "relation": "at least"},
            "An egg, then an egg.",
            True,
        ),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Boil it.\nP.S. Salt the water.", True),
    ],
)
def test_rewards_are_the_official_checks(instruction_id, kwargs, response, expected):
    from trl_ranking.evaluation.ifeval import check_instruction

    example = row([instruction_id], [kwargs])
    assert check_constraints(example, response) == [expected]
    assert check_instruction(instruction_id, kwargs, example["prompt_text"], response)[0] is expected


HAND_WRITTEN = [
    "<<Boiled eggs>>\nPut the egg in boiling water for nine minutes. Then cool it.\nP.S. Salt helps.",
    "boil the egg in water for nine minutes, then cool it in cold water.",
    '"BOIL THE EGG FOR NINE MINUTES. ANY OTHER QUESTIONS?"',
    "* Boil the water\n* Add the egg\n* Wait nine minutes\n\n*highlighted part*\n\nIs there anything else I can help with?",
    "SECTION 1\nBoil.\nSECTION 2\nCool. [time] and [place]\n******\nSteam it instead.",
    '```json\n{"steps": ["boil", "cool"]}\n```',
    "",
]


def test_rewards_of_built_rows_equal_check_instruction(ifeval_rows):
    from trl_ranking.evaluation.ifeval import check_instruction

    for r in ifeval_rows[:150]:
        for response in HAND_WRITTEN:
            for loose in (False, True):
                expected = [
                    check_instruction(i, k, r["prompt_text"], response)[loose]
                    for i, k in zip(r["instruction_id_list"], r["kwargs"])
                ]
                assert check_constraints(r, response, loose=loose) == expected
                assert constraint_reward(r, response, loose=loose) == pytest.approx(sum(expected) / len(expected))
    scorer = ConstraintScorer(ifeval_rows[:5], loose=True)
    assert scorer([r["prompt"] for r in ifeval_rows[:5]], HAND_WRITTEN[:5]) == [
        constraint_reward(r, text, loose=True) for r, text in zip(ifeval_rows[:5], HAND_WRITTEN[:5])
    ]


def test_training_prompts_are_never_ifeval_prompts(ifeval_rows):
    """No base instruction shares 8 words in a row with IFEval; the rest of the prompt is the builders' own text."""
    import re

    from trl_ranking.evaluation.ifeval import load_ifeval_prompts

    def grams(text):
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + 8]) for i in range(len(words) - 7)}

    ifeval = set().union(*(grams(p["prompt"]) for p in load_ifeval_prompts()))
    assert len(ifeval) > 10_000
    for r in ifeval_rows:
        descriptions = [describe_constraint(i, k) for i, k in zip(r["instruction_id_list"], r["kwargs"])]
        assert r["prompt_text"] == r["instruction"] + "\n\n" + "\n".join(descriptions)
        assert not grams(r["instruction"]) & ifeval, r["instruction"][:80]
    assert ifeval_overlap([r["instruction"] for r in ifeval_rows]) == []
    # The check itself finds a copied IFEval prompt, and `check_ifeval_overlap` refuses it
    copied = load_ifeval_prompts()[0]["prompt"]
    assert ifeval_overlap(["How do I boil an egg?", copied.upper()]) == [1]
    with pytest.raises(ValueError, match="share a sequence of 8 words with an IFEval prompt"):
        build_constraint_prompts(["How do I boil an egg?", copied], check_ifeval_overlap=True)


def test_pass_rates_against_hand_counts():
    rankings = [
        {"instruction_id_list": ["punctuation:no_comma", "detectable_format:title"],
         "follow_instruction_list": [[True, True], [True, False]]},
        {"instruction_id_list": ["punctuation:no_comma"], "follow_instruction_list": [[False], [False], [False]]},
        dict(NO_COMMA_AND_KEYWORD, completions=["In water.", [{"role": "assistant", "content": "Boil, wait."}]]),
    ]  # fmt: skip
    rates = constraint_pass_rates(rankings)
    assert list(rates) == ["detectable_format:title", "keywords:existence", "punctuation:no_comma"]
    assert rates["punctuation:no_comma"] == {"prompts": 3.0, "answers": 7.0, "pass_rate": 3 / 7, "signal": 1 / 3}
    assert rates["detectable_format:title"] == {"prompts": 1.0, "answers": 2.0, "pass_rate": 0.5, "signal": 1.0}
    assert rates["keywords:existence"]["pass_rate"] == 0.5
    table = format_constraint_pass_rates(rates)
    assert "| `punctuation:no_comma` | 3 | 7 | 42.9% | 33.3% |" in table


def test_constraint_rankings_on_a_tiny_model(tiny_model_path, chat_tokenizer, ifeval_rows):
    from datasets import Dataset
    from tiny_models import tiny_causal_lm

    from trl_ranking.pro.rows import dataset_has_rewards, to_ranking

    model = tiny_causal_lm(tiny_model_path)
    rows = [r for r in ifeval_rows if len(r["prompt_text"]) < 400][:3]
    rankings = constraint_rankings(model, chat_tokenizer, rows, n=2, max_new_tokens=8, seed=0, batch_size=4)
    assert rankings == constraint_rankings(model, chat_tokenizer, rows, n=2, max_new_tokens=8, seed=0, batch_size=4)
    assert 1 <= len(rankings) <= 3
    for ranking in rankings:
        source = next(r for r in rows if r["prompt_text"] == ranking["prompt_text"])
        assert ranking["prompt"] == [{"role": "user", "content": source["prompt_text"]}]
        assert ranking["instruction_id_list"] == source["instruction_id_list"]
        assert len(ranking["completions"]) == len(ranking["rewards"]) == 2
        assert ranking["rewards"] == sorted(ranking["rewards"], reverse=True)
        for completion, reward, follows in zip(
            ranking["completions"], ranking["rewards"], ranking["follow_instruction_list"]
        ):
            assert completion[0]["role"] == "assistant" and completion[0]["content"].strip()
            assert check_constraints(source, completion[0]["content"]) == follows
            assert reward == constraint_reward(source, completion[0]["content"])
    # PROTrainer's row reader takes them as they are, in a list or an Arrow dataset
    dataset = Dataset.from_list(rankings)
    assert dataset_has_rewards(dataset, dataset[0], "train")
    for index, example in enumerate(dataset):
        prompt, completions, rewards = to_ranking(example, index, with_rewards=True)
        assert prompt == rankings[index]["prompt"] and rewards == rankings[index]["rewards"]
        assert completions == rankings[index]["completions"]
    assert set(constraint_pass_rates(rankings)) == {i for r in rankings for i in r["instruction_id_list"]}
    # A tokenizer without a chat template samples from the plain prompt text
    plain = constraint_rankings(model, _without_chat_template(chat_tokenizer), rows[:1], n=2, max_new_tokens=4)
    assert all(isinstance(r["prompt"], str) and isinstance(r["completions"][0], str) for r in plain)
    with pytest.raises(ValueError, match="at least 2 answers"):
        constraint_rankings(model, chat_tokenizer, rows, n=1)


def _without_chat_template(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def test_more_instruction_loaders(tmp_path):
    path = tmp_path / "tldr.jsonl"
    path.write_text(json.dumps({"title": "T", "subreddit": "s", "instruction": "  My post about cats.  "}) + "\n\n")
    assert load_tldr_instructions([path]) == [
        "You are given a social media post, summarize it accordingly.\n\nPost: My post about cats."
    ]
    assert load_tldr_instructions([path], template="{subreddit}/{title}: {post}") == ["s/T: My post about cats."]
    assert load_tldr_instructions([path], min_chars=100) == []
    data = tmp_path / "sparse.json"
    data.write_text(
        json.dumps([{"instruction": "Add them up.", "input": "1, 2"}, {"instruction": "Say hi to me.", "input": ""}])
    )
    assert load_sparse_feedback_instructions(data) == ["Add them up.\n\nInput:\n1, 2", "Say hi to me."]
    data.write_text(json.dumps([{"input": "x"}]))
    with pytest.raises(ValueError, match="entry 0: field 'instruction'"):
        load_sparse_feedback_instructions(data)
