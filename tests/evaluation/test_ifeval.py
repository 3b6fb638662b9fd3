"""`trl_ranking.evaluation.ifeval`: IFEval scored exactly as Google's official `instruction_following_eval`.

The acceptance test reproduces the official scorer's figures on the GPT-4 responses Google published
(`tests/fixtures/data/ifeval/`, see its SOURCE.md); the unit tests pin the checks where `if-verifiable` 0.1.2 (whose
checker classes the module reuses) and the official code disagree.
"""

from __future__ import annotations

import doctest
import gzip
import json
import random
import re
import time
from pathlib import Path

import pytest

from trl_ranking.evaluation import ifeval
from trl_ranking.evaluation.ifeval import (
    IFEVAL_INSTRUCTION_IDS,
    check_instruction,
    count_sentences,
    ensure_punkt_tab,
    evaluate_ifeval,
    format_ifeval_table,
    load_ifeval_prompts,
    score_ifeval,
    select_ifeval_prompts,
    title_check,
)


pytest.importorskip("if_verifiable")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "ifeval"
GPT4_PROMPTS = FIXTURES / "input_data_gpt4_20231107_145030.jsonl.gz"
GPT4_RESPONSES = FIXTURES / "input_response_data_gpt4_20231107_145030.jsonl.gz"


@pytest.fixture(scope="module")
def gpt4():
    rows = load_ifeval_prompts(GPT4_PROMPTS)
    with gzip.open(GPT4_RESPONSES, "rt", encoding="utf-8") as handle:
        by_prompt = {row["prompt"]: row["response"] for row in map(json.loads, handle)}
    # the official `evaluation_main` matches responses to prompts by the prompt text
    return rows, {row["key"]: by_prompt[row["prompt"]] for row in rows}


def test_official_figures_on_gpt4_responses(gpt4):
    """Google's `evaluation_main` (current `instructions.py`) prints 77.08 / 83.69 / 79.67 / 85.61 on these."""
    rows, responses = gpt4
    result = score_ifeval(rows, responses)
    assert (result.num_prompts, result.num_instructions) == (541, 834)
    assert result.prompt_strict_count == 417
    assert result.inst_strict_count == 698
    assert result.prompt_loose_count == 431
    assert result.inst_loose_count == 714
    assert [round(100 * value, 2) for value in (result.prompt_strict, result.inst_strict)] == [77.08, 83.69]
    assert [round(100 * value, 2) for value in (result.prompt_loose, result.inst_loose)] == [79.67, 85.61]
    assert result.average == pytest.approx((417 / 541 + 698 / 834 + 431 / 541 + 714 / 834) / 4)
    # the two letter-frequency prompts whose symbol is not a letter (the whole difference to the paper's Table 3)
    by_key = {prompt.key: prompt for prompt in result.per_prompt}
    assert by_key[1122].follow_strict == [True, True]  # lowercase; `#` at least 4 times
    assert by_key[1129].follow_strict == [True, True]  # `!` at least 6 times; repeat the prompt
    assert result.per_type["keywords:letter_frequency"] == {"count": 33, "strict": 21 / 33, "loose": 21 / 33}
    assert sum(row["count"] for row in result.per_type.values()) == 834
    assert set(result.per_type) == set(IFEVAL_INSTRUCTION_IDS)
    assert result.answer_stats["empty_share"] == 0.0 and result.answer_stats["median_words"] > 100
    json.dumps(result.to_dict())  # JSON-ready

    again = score_ifeval(rows, responses)  # deterministic: langdetect is seeded, no letter is drawn at random
    assert again.per_prompt == result.per_prompt and again.metrics() == result.metrics()


def test_letter_frequency_counts_the_requested_symbol():
    """Official: `#` is counted; if-verifiable 0.1.2 replaces a non-letter by a random letter."""
    kwargs = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    assert check_instruction("keywords:letter_frequency", kwargs, "p", "# one\n## two\n# three") == (True, True)
    assert check_instruction("keywords:letter_frequency", kwargs, "p", "# one # two # three") == (False, False)
    less = {"letter": "!", "let_frequency": 2, "let_relation": "less than"}
    assert check_instruction("keywords:letter_frequency", less, "p", "Wow! Hello.") == (True, True)
    assert check_instruction("keywords:letter_frequency", less, "p", "Wow!! Hello.") == (False, False)
    # a letter counts in either case, as officially
    upper = {"letter": "Q", "let_frequency": 3, "let_relation": "at least"}
    assert check_instruction("keywords:letter_frequency", upper, "p", "Quite quick Qs") == (True, True)

    from if_verifiable.ifeval.instructions import LetterFrequencyChecker

    ported = LetterFrequencyChecker("keywords:letter_frequency")
    ported.build_description(**kwargs)
    assert ported.get_instruction_args()["letter"] != "#"  # the deviation this module corrects


def test_strict_checks_the_raw_response():
    """Official strict mode does not strip the response (if-verifiable strips it); loose tries it without its first
    line, which is what rescues a leading blank line."""
    kwargs = {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "hello"}
    text = "Hello world.\n\nSecond paragraph."
    assert check_instruction("length_constraints:nth_paragraph_first_word", kwargs, "p", text) == (True, True)
    padded = "\n\n" + text  # the first of three split paragraphs is empty
    assert check_instruction("length_constraints:nth_paragraph_first_word", kwargs, "p", padded) == (False, True)
    # a response that is only whitespace follows nothing, strict or loose
    assert check_instruction("punctuation:no_comma", {}, "p", " \n ") == (False, False)


def test_think_blocks_are_not_stripped():
    """if-verifiable drops `<think>...</think>` before checking; the official scorer checks what it is given."""
    response = "<think>Plan: Answer in lowercase.</think>sure, here is my answer in lowercase letters only."
    assert check_instruction("change_case:english_lowercase", {}, "p", response) == (False, False)
    assert check_instruction("change_case:english_lowercase", {}, "p", response.split("</think>")[1]) == (True, True)
    no_comma = "<think>First, plan.</think>No commas here."
    assert check_instruction("punctuation:no_comma", {}, "p", no_comma) == (False, False)


def test_loose_variants_follow_the_official_order():
    response = "Sure!\n**<<My Title>>** text\nBye"
    variants = ifeval.loose_variants(response)
    assert variants == [
        response,
        "Sure!\n<<My Title>> text\nBye",
        "**<<My Title>>** text\nBye",
        "Sure!\n**<<My Title>>** text",
        "**<<My Title>>** text",
        "<<My Title>> text\nBye",
        "Sure!\n<<My Title>> text",
        "<<My Title>> text",
    ]
    # the end phrase is met once the trailing line is dropped, which only the loose mode does
    kwargs = {"end_phrase": "Any other questions?"}
    assert check_instruction("startend:end_checker", kwargs, "p", "Done. Any other questions?\n---") == (False, True)


def test_unknown_instruction_id_is_an_error():
    prompts = [{"key": 42, "prompt": "p", "instruction_id_list": ["keywords:made_up"], "kwargs": [{}]}]
    with pytest.raises(ValueError, match=r"42.*keywords:made_up"):
        score_ifeval(prompts, {42: "answer"})


def test_missing_response_is_an_error_or_empty():
    prompts = [
        {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"key": 2, "prompt": "q", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    ]
    with pytest.raises(ValueError, match="IFEval prompt 2 has no response"):
        score_ifeval(prompts, {1: "fine"})
    result = score_ifeval(prompts, {1: "fine"}, missing="empty")
    assert (result.prompt_strict_count, result.answer_stats["empty_share"]) == (1, 0.5)
    # a list aligned with the prompts, and string keys (as read back from JSON), score the same
    assert (
        score_ifeval(prompts, ["fine", "a, b"]).per_prompt
        == score_ifeval(prompts, {"1": "fine", "2": "a, b"}).per_prompt
    )
    with pytest.raises(ValueError, match="aligned"):
        score_ifeval(prompts, ["fine"])


def test_instruction_level_is_pooled_not_a_mean_of_prompts():
    prompts = [
        {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {
            "key": 2,
            "prompt": "q",
            "instruction_id_list": ["punctuation:no_comma", "startend:quotation", "change_case:english_capital"],
            "kwargs": [{}, {}, {}],
        },
    ]
    result = score_ifeval(prompts, {1: "a, b", 2: '"THIS IS ALL IN CAPITAL LETTERS AND ENGLISH"'})
    assert result.inst_strict == 3 / 4  # pooled; the mean of per-prompt shares would be (0 + 1) / 2
    assert result.prompt_strict == 1 / 2
    assert result.per_category["punctuation"] == {"count": 2, "strict": 0.5, "loose": 0.5}


def test_title_check_is_linear_and_agrees_with_the_official_regex():
    def official(value: str) -> bool:
        return any(title.lstrip("<").rstrip(">").strip() for title in re.findall(r"<<[^\n]+>>", value))

    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("<<>> a\n") for _ in range(rng.randint(0, 14)))
        assert title_check(text) == official(text), repr(text)
    for text in ["<<poem of joy>>", "<< >>", "<<>>>", "<<<a>>>", "x << y\n>>", "<<a>> <<>>", "<<\n>>"]:
        assert title_check(text) == official(text), repr(text)

    # 1 MB of `<<`: the official regex backtracks quadratically (minutes); this takes milliseconds
    start = time.perf_counter()
    assert check_instruction("detectable_format:title", {}, "p", "<<" * 500_000) == (False, False)
    assert check_instruction("detectable_format:title", {}, "p", "<<" * 500_000 + "T>>") == (True, True)
    assert time.perf_counter() - start < 5


def test_sentence_counting_uses_the_punkt_model(tmp_path, monkeypatch):
    assert count_sentences("Hello there. How are you? I am fine!") == 3
    assert count_sentences("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.") == 2  # abbreviations
    kwargs = {"num_sentences": 2, "relation": "less than"}
    assert check_instruction("length_constraints:number_sentences", kwargs, "p", "One sentence only.") == (True, True)

    # with no punkt model on NLTK's path, `ensure_punkt_tab` writes one from `punkt.data.english` into the cache,
    # where NLTK loads it with the same parameters
    import nltk
    from nltk.tokenize.punkt import PunktTokenizer, load_punkt_params
    from punkt.data import english

    monkeypatch.setattr(nltk.data, "path", [])
    root = ensure_punkt_tab(tmp_path)
    assert root == str(tmp_path / "nltk_data") and nltk.data.path == [root]
    assert ensure_punkt_tab(tmp_path) == root  # written once, reused
    params = load_punkt_params(nltk.data.find("tokenizers/punkt_tab/english/"))
    assert params.abbrev_types == set(english.ABBREV_TYPES)
    assert params.sent_starters == set(english.SENT_STARTERS)
    assert params.collocations == set(english.COLLOCATIONS)
    assert dict(params.ortho_context) == dict(english.ORTHO_CONTEXT)
    assert len(PunktTokenizer("english").tokenize("Dr. Who arrived. He left.")) == 2


def test_bundled_prompts_and_selection():
    rows = load_ifeval_prompts()
    assert len(rows) == 541 and sum(len(row["instruction_id_list"]) for row in rows) == 834
    assert {i for row in rows for i in row["instruction_id_list"]} == set(IFEVAL_INSTRUCTION_IDS)
    sample = select_ifeval_prompts(limit=5, seed=3)
    assert len(sample) == 5 and sample == select_ifeval_prompts(limit=5, seed=3)
    assert [row["key"] for row in select_ifeval_prompts(limit=2, seed=None)] == [1000, 1001]
    assert [row["key"] for row in select_ifeval_prompts(keys=[1001, "1005"])] == [1001, 1005]
    with pytest.raises(ValueError, match="999999"):
        select_ifeval_prompts(keys=[999999])


def test_format_table_and_answer_stats():
    prompts = select_ifeval_prompts(keys=[1000, 1001])
    result = score_ifeval(prompts, {1000: "word " * 8, 1001: ""})
    stats = result.answer_stats
    assert stats["mean_words"] == 4.0 and stats["median_words"] == 4.0 and stats["empty_share"] == 0.5
    assert stats["repeated_4gram_share"] == pytest.approx(1 - 1 / 5)  # 5 four-grams, one distinct
    table = format_ifeval_table(result)
    assert "| prompt-level strict | 0.00 | 0/2 |" in table and "| punctuation:no_comma |" in table


def test_module_docstring_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the evaluate_ifeval example saves a tiny model in the working directory
    result = doctest.testmod(ifeval, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_evaluate_ifeval_on_a_tiny_model(tiny_model_path, chat_tokenizer, monkeypatch):
    from transformers import AutoModelForCausalLM

    import trl_ranking.generation

    calls = []
    real = trl_ranking.generation.generate_responses

    def spy(model, tokenizer, prompts, **kwargs):
        calls.append((prompts, kwargs))
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(trl_ranking.generation, "generate_responses", spy)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    keys = [1000, 1001, 1005]
    result = evaluate_ifeval(model, chat_tokenizer, keys=keys, max_new_tokens=6, batch_size=2, progress_bar=False)

    ((prompts, kwargs),) = calls
    rows = select_ifeval_prompts(keys=keys)
    assert prompts == [[{"role": "user", "content": row["prompt"]}] for row in rows]
    assert (kwargs["max_new_tokens"], kwargs["batch_size"]) == (6, 2)
    assert list(result.responses) == keys and all(isinstance(text, str) for text in result.responses.values())
    assert score_ifeval(rows, result.responses).to_dict() == result.to_dict()
    assert result.num_prompts == 3


@pytest.mark.parametrize("adapter", [False, True], ids=["model", "peft-adapter"])
def test_cli_ifeval_mode(tmp_path, adapter):
    from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm
    from trl_ranking.cli import main

    model_dir = make_tiny_causal_lm(tmp_path / "tiny-model")
    load_bundled_tokenizer(chat_template=True).save_pretrained(model_dir)
    if adapter:
        peft = pytest.importorskip("peft")
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(model_dir)
        lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        model_dir = str(tmp_path / "adapter")
        lora.save_pretrained(model_dir)
        load_bundled_tokenizer(chat_template=True).save_pretrained(model_dir)
    output = tmp_path / "ifeval.json"
    main(["eval", "--eval_mode", "ifeval", "--model_name_or_path", str(model_dir), "--ifeval_limit", "3",
          "--max_new_tokens", "4", "--output_file", str(output)])  # fmt: skip
    written = json.loads(output.read_text())
    assert written["eval_mode"] == "ifeval" and written["num_prompts"] == 3 and len(written["responses"]) == 3
    rows = select_ifeval_prompts(limit=3, seed=0)
    assert [int(key) for key in written["responses"]] == [row["key"] for row in rows]
    rescored = score_ifeval(rows, written["responses"])  # anyone can rescore from the stored answers
    assert rescored.metrics() == {name: written[name] for name in rescored.metrics()}
