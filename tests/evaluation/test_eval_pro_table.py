"""`evaluate_pro_table_row`: the PRO paper's BLEU/reward table, recomputed independently from its parts."""

from __future__ import annotations

import json
import math

import pytest
import sacrebleu
from datasets import Dataset
from tiny_models import HH_RLHF_FILE, tiny_causal_lm, tiny_reward_model

from trl_ranking.data import load_hh_rlhf
from trl_ranking.evaluation import evaluate_pro_table_row, format_pro_table, generate_responses, pro_bleu
from trl_ranking.rewards import RewardModelScorer


@pytest.fixture(scope="module")
def test_sets():
    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=7)
    ranking = Dataset.from_dict(
        {
            "prompt": pairs["prompt"][4:],
            "completions": [[c, r] for c, r in zip(pairs["chosen"][4:], pairs["rejected"][4:])],
        }
    )
    return {"harmless_base": pairs.select(range(4)), "as_rankings": ranking}


def test_table_row_matches_independent_computation(tokenizer, tiny_model_path, test_sets, tmp_path, capsys):
    model = tiny_causal_lm(tiny_model_path)
    scorer = RewardModelScorer(tiny_reward_model(), tokenizer, batch_size=4)
    output = tmp_path / "eval" / "pro_table.json"
    results = evaluate_pro_table_row(
        model, tokenizer, test_sets, scorer, output_path=output, max_new_tokens=6, batch_size=2, save_predictions=True
    )

    all_predictions, all_references, all_rewards = [], [], []
    for name, dataset in test_sets.items():
        predictions = [
            r.strip()
            for r in generate_responses(model, tokenizer, dataset["prompt"], max_new_tokens=6, stop_strings="pro")
        ]
        if "chosen" in dataset.column_names:
            references = [c.strip() for c in dataset["chosen"]]
        else:
            references = [c[0].strip() for c in dataset["completions"]]
        rewards = [1 / (1 + math.exp(-s)) for s in scorer(dataset["prompt"], predictions)]
        row = results["subsets"][name]
        assert row["num_examples"] == len(dataset)
        assert row["bleu"] == pytest.approx(pro_bleu(predictions, references))
        assert row["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
        assert row["reward"] == pytest.approx(100 * sum(rewards) / len(rewards), abs=1e-4)
        assert results["predictions"][name] == predictions
        all_predictions += predictions
        all_references += references
        all_rewards += rewards
    assert results["total"]["num_examples"] == 7
    assert results["total"]["bleu"] == pytest.approx(pro_bleu(all_predictions, all_references))
    assert results["total"]["sacrebleu"] == pytest.approx(
        sacrebleu.corpus_bleu(all_predictions, [all_references]).score
    )
    assert results["total"]["reward"] == pytest.approx(100 * sum(all_rewards) / 7, abs=1e-4)
    assert 0 < results["total"]["reward"] < 100

    assert json.loads(output.read_text(encoding="utf-8")) == results
    printed = capsys.readouterr().out
    assert printed.strip() == format_pro_table(results)
    assert "| harmless_base | 4 |" in printed and "| total | 7 |" in printed


def test_reference_column_and_bad_input(tokenizer, tiny_model_path, test_sets):
    model = tiny_causal_lm(tiny_model_path)

    def scorer(prompts, completions):
        return [0.0] * len(completions)

    perfect = Dataset.from_dict({"prompt": test_sets["harmless_base"]["prompt"][:2]})
    outputs = generate_responses(model, tokenizer, perfect["prompt"], max_new_tokens=8)
    perfect = perfect.add_column("gold", [o.strip() for o in outputs])
    assert all(len(o.split()) >= 4 for o in perfect["gold"]), "BLEU needs 4-grams"
    results = evaluate_pro_table_row(
        model, tokenizer, {"own": perfect}, scorer, reference_column="gold", max_new_tokens=8, print_table=False
    )
    assert results["subsets"]["own"]["bleu"] == pytest.approx(100.0)
    assert results["subsets"]["own"]["sacrebleu"] == pytest.approx(100.0)
    assert results["subsets"]["own"]["reward"] == 50.0
    assert "predictions" not in results

    with pytest.raises(ValueError, match="test_sets is empty"):
        evaluate_pro_table_row(model, tokenizer, {}, scorer)
    with pytest.raises(ValueError, match="empty: the test set is empty"):
        evaluate_pro_table_row(model, tokenizer, {"empty": test_sets["harmless_base"].select([])}, scorer)
    with pytest.raises(ValueError, match="no_prompt: the test set needs a 'prompt' column"):
        evaluate_pro_table_row(model, tokenizer, {"no_prompt": Dataset.from_dict({"chosen": ["a"]})}, scorer)
    with pytest.raises(ValueError, match="no_reference: no reference column"):
        evaluate_pro_table_row(model, tokenizer, {"no_reference": Dataset.from_dict({"prompt": ["a"]})}, scorer)


def test_references_are_the_first_candidate_or_the_reward_models_favourite(tokenizer, tiny_model_path, test_sets):
    """The official test files: helpful subsets keep the human-chosen response first (unsorted); harmless-base was
    re-ranked by the reward model, so its reference is the candidate with the highest reward."""
    model = tiny_causal_lm(tiny_model_path)
    rows = test_sets["harmless_base"]

    def longer_is_better(prompts, completions):
        return [float(len(c)) for c in completions]

    predictions = [
        r.strip() for r in generate_responses(model, tokenizer, rows["prompt"], max_new_tokens=6, stop_strings="pro")
    ]
    results = evaluate_pro_table_row(
        model,
        tokenizer,
        {"helpful": rows, "harmless": rows},
        longer_is_better,
        rerank_references=["harmless"],
        max_new_tokens=6,
        print_table=False,
    )
    first = [c.strip() for c in rows["chosen"]]
    favourite = [max((c, r), key=len).strip() for c, r in zip(rows["chosen"], rows["rejected"])]
    assert first != favourite, "the sample must have a row whose rejected response is longer"
    assert results["subsets"]["helpful"]["bleu"] == pytest.approx(pro_bleu(predictions, first))
    assert results["subsets"]["harmless"]["bleu"] == pytest.approx(pro_bleu(predictions, favourite))
    with pytest.raises(ValueError, match="not in test_sets"):
        evaluate_pro_table_row(model, tokenizer, {"helpful": rows}, longer_is_better, rerank_references=["harmless"])
