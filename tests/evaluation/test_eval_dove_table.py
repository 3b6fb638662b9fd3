"""`evaluate_dove_win_rates`: the DOVE paper's table (win rate against gold, ties 1/2, per temperature), recomputed."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import DOVE_DIR, tiny_causal_lm

from trl_ranking.data import DOVE_PROMPT_TEMPLATE
from trl_ranking.evaluation import evaluate_dove_win_rates, format_dove_table, generate_responses


def test_dove_table_matches_the_official_computation(tokenizer, tiny_model_path, tmp_path, capsys):
    lines = (DOVE_DIR / "anthropic_helpful" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    records = [json.loads(line) for line in lines]
    prompts = [DOVE_PROMPT_TEMPLATE.replace("{instruction}", r["instruction"]) for r in records]
    gold = [r["gold_response"] for r in records]
    model = tiny_causal_lm(tiny_model_path)

    def judge(first, second):
        # Prefers the response whose length is closest to 15 characters; no verdict on the second prompt
        if first[0] == prompts[1]:
            return None
        return int(abs(len(second[1]) - 15) < abs(len(first[1]) - 15))

    results = evaluate_dove_win_rates(
        model,
        tokenizer,
        prompts,
        gold,
        judge,
        output_path=tmp_path / "dove.json",
        temperatures=(0.5, 1.0),
        max_new_tokens=6,
        batch_size=4,
        seed=7,
        save_predictions=True,
    )
    for row in results["temperatures"]:
        torch.manual_seed(7)
        responses = generate_responses(
            model, tokenizer, prompts, max_new_tokens=6, batch_size=4, stop_strings=None,
            do_sample=True, temperature=row["temperature"],
        )  # fmt: skip
        assert results["predictions"][str(row["temperature"])] == responses
        # dove/auto_eval.py: (gold, model) then (model, gold); 'model' 1, 'equal' 0.5, 'gold' 0; None skipped
        score = total = 0
        for prompt, response, reference in zip(prompts, responses, gold):
            feedback_1 = judge((prompt, reference), (prompt, response))
            feedback_2 = judge((prompt, response), (prompt, reference))
            if feedback_1 is None or feedback_2 is None:
                continue
            if (feedback_1, feedback_2) == (1, 0):
                score += 1
            elif feedback_1 == feedback_2:
                score += 0.5
            total += 1
        assert total == 5 and row["num_judged"] == 5 and row["failed"] == 1
        assert row["win_rate"] == pytest.approx(100 * score / total)
    assert json.loads((tmp_path / "dove.json").read_text(encoding="utf-8")) == results
    assert capsys.readouterr().out.strip() == format_dove_table(results)

    with pytest.raises(ValueError, match="temperatures must be"):
        evaluate_dove_win_rates(model, tokenizer, prompts, gold, judge, temperatures=[0.0])
    with pytest.raises(ValueError, match="6 prompts but 5 gold"):
        evaluate_dove_win_rates(model, tokenizer, prompts, gold[:5], judge)
