"""`rank_completions` and `add_completions` on real rankings, with a tiny reward model and a tiny causal LM."""

from __future__ import annotations

import math
import random

import pytest
from conftest import HH_RLHF_FILE, SPARSE_FEEDBACK_DIR
from datasets import Dataset
from tiny_models import direct_reward, tiny_causal_lm, tiny_reward_model

from trl_ranking.data import add_completions, load_hh_rlhf, load_sparse_feedback_rankings, rank_completions
from trl_ranking.evaluation import generate_responses
from trl_ranking.rewards import RewardModelScorer


@pytest.fixture(scope="module")
def shuffled_sparse_rankings():
    """The real sparse-feedback rankings with each row's completions shuffled and the rewards dropped."""
    rankings = load_sparse_feedback_rankings(SPARSE_FEEDBACK_DIR, prompt_format="plain")
    rng = random.Random(0)
    shuffled = [rng.sample(completions, len(completions)) for completions in rankings["completions"]]
    return rankings, rankings.remove_columns(["completions", "rewards"]).add_column("completions", shuffled)


def test_sorts_by_score_across_call_boundaries(shuffled_sparse_rankings):
    rankings, shuffled = shuffled_sparse_rankings
    # A scorer that knows the real mean ratings: ranking the shuffled rows must give back the real rankings
    rating = {
        (prompt, completion): reward
        for prompt, completions, rewards in zip(rankings["prompt"], rankings["completions"], rankings["rewards"])
        for completion, reward in zip(completions, rewards)
    }
    calls = []

    def scorer(prompts, completions):
        calls.append(len(completions))
        return [rating[(p, c)] for p, c in zip(prompts, completions)]

    for rows_per_call in (1, 3, 64):
        calls.clear()
        ranked = rank_completions(shuffled, scorer, rows_per_call=rows_per_call)
        assert ranked["rewards"] == rankings["rewards"]
        # Ties keep the input order: compare with a hand-made stable sort of the shuffled rows
        for row, original in zip(ranked, shuffled):
            expected = sorted(original["completions"], key=lambda c, p=original["prompt"]: -rating[(p, c)])
            assert row["completions"] == expected
        assert len(calls) == math.ceil(len(shuffled) / rows_per_call)
    assert set(ranked.column_names) == {"prompt", "instruction", "input", "completions", "rewards"}


def test_tiny_reward_model_on_real_hh_pairs(tokenizer):
    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=6)
    model = tiny_reward_model()
    ranked = rank_completions(pairs, RewardModelScorer(model, tokenizer, batch_size=4), rows_per_call=4)
    assert ranked.column_names == ["prompt", "completions", "rewards"]  # preference rows became ranking rows
    for row, pair in zip(ranked, pairs):
        scores = {
            pair["chosen"]: direct_reward(model, tokenizer, pair["prompt"], pair["chosen"]),
            pair["rejected"]: direct_reward(model, tokenizer, pair["prompt"], pair["rejected"]),
        }
        expected = sorted([pair["chosen"], pair["rejected"]], key=lambda c: -scores[c])
        assert row["completions"] == expected
        assert row["rewards"] == pytest.approx([scores[c] for c in expected], abs=1e-4)


def test_conversational_rows_reach_the_scorer_as_messages(chat_tokenizer):
    pairs = load_hh_rlhf(HH_RLHF_FILE, conversational=True, max_rows=3)
    seen = []

    def recording_scorer(prompts, completions):
        seen.extend(zip(prompts, completions))
        return [float(len(c[0]["content"])) for c in completions]  # longest first

    ranked = rank_completions(pairs, recording_scorer)
    assert all(isinstance(p, list) and p[0]["role"] == "user" for p, _ in seen)
    for row in ranked:
        lengths = [len(c[0]["content"]) for c in row["completions"]]
        assert lengths == sorted(lengths, reverse=True) and row["rewards"] == [float(n) for n in lengths]
    # The reward-model scorer applies the chat template to these rows
    scored = rank_completions(pairs, RewardModelScorer(tiny_reward_model(), chat_tokenizer, batch_size=2))
    assert all(len(r) == 2 and r[0] >= r[1] for r in scored["rewards"])


def test_bad_scores_name_the_row():
    dataset = Dataset.from_dict({"prompt": ["a", "b", "c"], "completions": [["x", "y"], ["x", "y"], ["x", "y"]]})
    with pytest.raises(ValueError, match=r"rows 0-1: the scorer returned 3 scores for 4"):
        rank_completions(dataset, lambda p, c: [0.0] * 3, rows_per_call=2)

    def nan_for_b(prompts, completions):
        return [float("nan") if (p, c) == ("b", "y") else 0.0 for p, c in zip(prompts, completions)]

    with pytest.raises(ValueError, match=r"row 1: the scorer returned a non-finite score \(nan\) for completion 1"):
        rank_completions(dataset, nan_for_b)
    with pytest.raises(ValueError, match="row 0: field 'rewards' has 1 values for 2 completions"):
        rank_completions(dataset.add_column("rewards", [[1.0]] * 3), lambda p, c: [0.0] * len(c))
    with pytest.raises(ValueError, match="explicit 'prompt'"):
        rank_completions(Dataset.from_dict({"chosen": ["a"], "rejected": ["b"]}), lambda p, c: [0.0] * len(c))


def test_add_completions_then_rank(tokenizer, tiny_model_path):
    model = tiny_causal_lm(tiny_model_path)
    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=3).map(lambda row: {"score_chosen": 1.0, "score_rejected": 0.0})

    greedy = add_completions(pairs, model, tokenizer, num_completions=1, max_new_tokens=5, do_sample=False)
    assert greedy.column_names == ["prompt", "completions"]  # the old scores no longer cover every completion
    expected = generate_responses(model, tokenizer, pairs["prompt"], max_new_tokens=5)
    for row, pair, response in zip(greedy, pairs, expected):
        assert row["completions"] == [pair["chosen"], pair["rejected"], response]

    sampled = add_completions(greedy, model, tokenizer, num_completions=2, max_new_tokens=4, batch_size=2, top_k=50)
    assert [len(c) for c in sampled["completions"]] == [5, 5, 5]
    assert [c[:3] for c in sampled["completions"]] == greedy["completions"]
    assert all(isinstance(c, str) for row in sampled["completions"] for c in row)

    ranked = rank_completions(sampled, RewardModelScorer(tiny_reward_model(), tokenizer, batch_size=8))
    assert all(len(r) == 5 and r == sorted(r, reverse=True) for r in ranked["rewards"])
    for row, unranked in zip(ranked, sampled):
        assert sorted(row["completions"]) == sorted(unranked["completions"])


def test_add_completions_conversational_and_errors(chat_tokenizer, tiny_model_path):
    model = tiny_causal_lm(tiny_model_path)
    pairs = load_hh_rlhf(HH_RLHF_FILE, conversational=True, max_rows=2)
    extended = add_completions(pairs, model, chat_tokenizer, max_new_tokens=3)
    for row in extended:
        assert len(row["completions"]) == 3
        assert row["completions"][2][0]["role"] == "assistant" and isinstance(row["completions"][2][0]["content"], str)
    with pytest.raises(ValueError, match="num_completions must be a positive integer"):
        add_completions(pairs, model, chat_tokenizer, num_completions=0)
    with pytest.raises(ValueError, match="greedy decoding"):
        add_completions(pairs, model, chat_tokenizer, num_completions=2, do_sample=False)
