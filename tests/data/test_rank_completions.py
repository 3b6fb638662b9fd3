"""`rank_completions` and `add_completions` on real rankings, with a tiny reward model and a tiny causal LM."""

from __future__ import annotations

import math
import random

import pytest
from datasets import Dataset
from tiny_models import HH_RLHF_FILE, SPARSE_FEEDBACK_DIR, direct_reward, tiny_causal_lm, tiny_reward_model

from trl_ranking.data import (
    add_completions,
    load_hh_rlhf,
    load_sparse_feedback_rankings,
    rank_completions,
    ranking_view,
)
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

    with pytest.raises(
        ValueError, match=r"row 1, completion 1 \(the scorer's score\): the reward is not finite \(nan\)"
    ):
        rank_completions(dataset, nan_for_b)
    with pytest.raises(ValueError, match=r"row 1, completion 0 \(the scorer's score\): the reward 1e\+39 overflows"):
        rank_completions(dataset, lambda p, c: [1e39 if x == "b" else 0.0 for x in p])
    with pytest.raises(ValueError, match="Row 0, field 'rewards': 1 rewards for 2 completions"):
        rank_completions(dataset.add_column("rewards", [[1.0]] * 3), lambda p, c: [0.0] * len(c))
    # Old rewards on some rows only: re-scored like the others (the remedy the trainer's mixed-rewards error names)
    mixed = dataset.add_column("rewards", [[1.0, 0.0], None, [0.0, 1.0]])
    assert rank_completions(mixed, lambda p, c: [float(x == "y") for x in c])["completions"] == [["y", "x"]] * 3
    with pytest.raises(ValueError, match=r"Row 0, field 'completions': a ranking needs at least 2 completions, got 1"):
        rank_completions(Dataset.from_dict({"prompt": ["a"], "completions": [["x"]]}), lambda p, c: [0.0])


def test_rows_are_read_as_the_trainer_reads_them():
    """One reader: an implicit prompt is split off as `PROTrainer` splits it, and existing rewards order a ranking."""
    implicit = Dataset.from_dict({"chosen": ["Q: 2+2? A: four"], "rejected": ["Q: 2+2? A: seven"]})
    seen = []

    def record(prompts, completions):
        seen.extend(zip(prompts, completions))
        return [0.0, 1.0]

    ranked = rank_completions(implicit, record)
    assert seen == [("Q: 2+2? A:", " four"), ("Q: 2+2? A:", " seven")]
    assert ranked[0]["prompt"] == "Q: 2+2? A:" and ranked[0]["completions"] == [" seven", " four"]
    # `add_completions` drops the rewards: the order they gave is kept as the ranking (best first)
    assert ranking_view({"prompt": "p", "completions": ["b", "a"], "rewards": [0.1, 0.9]}) == (
        "p",
        ["a", "b"],
        [0.9, 0.1],
    )


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
