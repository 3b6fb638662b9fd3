"""BLEU, sigmoid-normalised reward and pairwise win rates, checked against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sacrebleu
from tiny_models import DOVE_DIR, HH_RLHF_FILE, direct_reward, tiny_reward_model

from trl_ranking.data import load_hh_rlhf
from trl_ranking.evaluation import bleu, compute_rewards, mean_reward, pairwise_win_rate
from trl_ranking.rewards import RewardModelScorer


@pytest.fixture(scope="module")
def dove_outputs_and_gold():
    """The DOVE model's real generations on Anthropic-helpful test instructions, with the gold responses."""
    folder = DOVE_DIR / "anthropic_helpful"
    gold = {}
    for line in (folder / "test.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        gold[record["instruction"]] = record["gold_response"]
    text = (folder / "model_outputs_t0.001.json").read_text(encoding="utf-8")
    outputs = [json.loads(line) for line in text.splitlines() if line.strip()]  # JSON lines despite the name
    pairs = []
    for record in outputs:
        instruction = record["instruction"].removeprefix("### Instructions: ").removesuffix("\n\n### Response:")
        if instruction in gold:
            pairs.append((instruction, record["outputs"], gold[instruction]))
    assert len(pairs) >= 400
    return pairs


def test_bleu_matches_sacrebleu_on_real_generations(dove_outputs_and_gold):
    predictions = [output for _, output, _ in dove_outputs_and_gold]
    references = [reference for _, _, reference in dove_outputs_and_gold]
    corpus = bleu(predictions, references)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert 0.0 < corpus < 100.0
    sentence = bleu(predictions[:50], references[:50], sentence_level=True)
    expected = np.mean([sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(predictions[:50], references[:50])])
    assert sentence == pytest.approx(expected)
    assert bleu(references[:10], references[:10]) == pytest.approx(100.0)
    assert bleu(predictions, references, lowercase=True) == pytest.approx(
        sacrebleu.corpus_bleu(predictions, [references], lowercase=True).score
    )


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="predictions is empty"):
        bleu([], [])
    with pytest.raises(ValueError, match="predictions has 2, references has 1"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match=r"references\[1\] must be a string"):
        bleu(["a", "b"], ["a", None])
    with pytest.raises(ValueError, match="not a string"):
        bleu("a cat", "a cat")


def test_sigmoid_reward_of_a_tiny_reward_model(tokenizer):
    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=6)
    model = tiny_reward_model()
    scorer = RewardModelScorer(model, tokenizer, batch_size=4)
    raw = [direct_reward(model, tokenizer, p, c) for p, c in zip(pairs["prompt"], pairs["chosen"])]
    assert max(raw) - min(raw) > 0.5, "the rewards are spread out"
    expected = [1 / (1 + math.exp(-r)) for r in raw]
    assert compute_rewards(scorer, pairs["prompt"], pairs["chosen"]) == pytest.approx(expected, abs=1e-5)
    assert compute_rewards(scorer, pairs["prompt"], pairs["chosen"], sigmoid=False) == pytest.approx(raw, abs=1e-4)
    assert mean_reward(scorer, pairs["prompt"], pairs["chosen"]) == pytest.approx(np.mean(expected), abs=1e-5)
    # Large logits stay finite and in (0, 1)
    assert compute_rewards(lambda p, c: [-800.0, 800.0], ["a", "b"], ["x", "y"]) == [0.0, 1.0]


def test_reward_bad_input():
    with pytest.raises(ValueError, match="prompts has 2, responses has 1"):
        mean_reward(lambda p, c: [0.0] * len(c), ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="prompts is empty"):
        mean_reward(lambda p, c: [], [], [])
    with pytest.raises(ValueError, match="returned 1 scores for 2 pairs"):
        compute_rewards(lambda p, c: [0.0], ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match=r"pair 1: the scorer returned a non-finite score \(inf\)"):
        compute_rewards(lambda p, c: [0.0, float("inf")], ["a", "b"], ["x", "y"])


def _counted(results):
    return {key: round(value * 8) for key, value in results.items()}


def test_pairwise_win_rate_both_orders(dove_outputs_and_gold):
    rows = dove_outputs_and_gold[:8]
    prompts = [instruction for instruction, _, _ in rows]
    model_outputs = [output for _, output, _ in rows]
    gold = [reference for _, _, reference in rows]

    def prefer_longer(first, second):
        return int(len(second[1]) > len(first[1]))

    # Hand count: with distinct lengths, a judge that reads the content agrees with itself in both orders
    longer = sum(len(a) > len(b) for a, b in zip(model_outputs, gold))
    shorter = sum(len(a) < len(b) for a, b in zip(model_outputs, gold))
    equal = 8 - longer - shorter
    results = pairwise_win_rate(prefer_longer, prompts, model_outputs, gold)
    assert set(results) == {"win", "tie", "lose", "win_rate", "num_judged", "failed"}
    assert results["num_judged"] == 8 and results["failed"] == 0
    # equal lengths: 0 then 0 in the two orders, a flip, counted as a tie
    rates = {key: results[key] for key in ("win", "tie", "lose")}
    assert _counted(rates) == {"win": longer, "tie": equal, "lose": shorter}
    assert sum(rates.values()) == pytest.approx(1.0)

    always_first = pairwise_win_rate(lambda first, second: 0, prompts, model_outputs, gold)
    assert always_first["win"] == 0.0 and always_first["tie"] == 1.0, "a position-biased judge flips: all ties"

    seen = []

    def recording(first, second):
        seen.append((first, second))
        return np.int64(0) if first[1] == model_outputs[prompts.index(first[0])] else np.int64(1)

    assert pairwise_win_rate(recording, prompts, model_outputs, gold)["win"] == 1.0
    assert ((prompts[0], model_outputs[0]), (prompts[0], gold[0])) in seen
    assert ((prompts[0], gold[0]), (prompts[0], model_outputs[0])) in seen
    assert len(seen) == 16


def test_pairwise_win_rate_uses_judge_batch():
    class BatchJudge:
        calls = 0

        def __call__(self, first, second):
            raise AssertionError("judge_batch should be used")

        def judge_batch(self, firsts, seconds):
            BatchJudge.calls += 1
            return [int(len(s[1]) > len(f[1])) for f, s in zip(firsts, seconds)]

    prompts = [f"q{i}" for i in range(5)]
    results = pairwise_win_rate(BatchJudge(), prompts, ["aaaa"] * 3 + ["a"] * 2, ["bb"] * 5, batch_size=2)
    assert results == {"win": 0.6, "tie": 0.0, "lose": 0.4, "win_rate": 0.6, "num_judged": 5, "failed": 0}
    assert BatchJudge.calls == 3


@pytest.mark.parametrize("answer", [2, -1, True, "0", 0.0])
def test_judge_must_answer_0_or_1(answer):
    with pytest.raises(ValueError, match=r"prompt 0, order \(a, b\): the judge must return 0 or 1"):
        pairwise_win_rate(lambda first, second: answer, ["q"], ["a"], ["b"])


def test_win_rate_bad_lengths():
    with pytest.raises(ValueError, match="responses_b has 1"):
        pairwise_win_rate(lambda f, s: 0, ["q", "r"], ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="prompts is empty"):
        pairwise_win_rate(lambda f, s: 0, [], [], [])
