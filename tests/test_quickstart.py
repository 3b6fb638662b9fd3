"""`python -m trl_ranking.quickstart`: the `--tiny` smoke run, a much reduced real-model run (slow), and its task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trl_ranking import quickstart


@pytest.mark.slow  # minutes on a loaded 2-core machine: TRL's chunked log-prob over GPT-2's 50k vocabulary
def test_tiny_quickstart_orders_the_training_rankings(tmp_path, capsys):
    result = quickstart.main(["--tiny", "--output-dir", str(tmp_path)])
    before, after = result["before"], result["after"]
    assert after["eval_train_ranking/accuracy"] > before["eval_train_ranking/accuracy"]
    assert result["losses"][-1] < result["losses"][0]
    assert (tmp_path / "pro" / "model.safetensors").is_file()
    out = capsys.readouterr().out
    assert "eval_held_out_ranking/accuracy" in out and "shows the machinery, not" in out


@pytest.mark.slow
def test_real_quickstart_reduced(smollm2_path, tmp_path, capsys):
    from safetensors.torch import load_file

    from trl_ranking.evaluation.constraints import constraint_metrics
    from trl_ranking.evaluation.ifeval import score_ifeval, select_ifeval_prompts

    args = ["--model", smollm2_path, "--output-dir", str(tmp_path), "--train-prompts", "8", "--eval-prompts", "3"]
    args += ["--ifeval-prompts", "2", "--max-new-tokens", "16", "--epochs", "1", "--batch-size", "2", "--show", "3"]
    result = quickstart.main(args)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["before"] == result["before"] and saved["after"] == result["after"]
    assert saved["ifeval_after"] == result["ifeval_after"]
    assert (tmp_path / "pro-lora" / "adapter_model.safetensors").is_file()
    rankings = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    assert len(rankings) == result["train_rankings"]["rankings"] and rankings[0]["follow_instruction_list"]
    # The printed constraint metrics are IFEval's checks on the printed answers (recomputed from answers and prompts)
    _, eval_instructions = quickstart._load_instructions(0, 8, 3)
    rows = quickstart._constraint_rows(eval_instructions, 1, quickstart._parser().parse_args(args))
    assert [row["prompt_text"] for row in rows] == [example["prompt"] for example in result["examples"]]
    # ... and the IFEval figures are the official scorer's on a fixed sample of IFEval's own prompts
    ifeval_rows = select_ifeval_prompts(limit=2, seed=quickstart.IFEVAL_SUBSET_SEED)
    assert sorted(result["ifeval_responses"]) == sorted(str(row["key"]) for row in ifeval_rows)
    for when in ("before", "after"):
        expected = constraint_metrics(rows, [example[when] for example in result["examples"]])
        assert result[when]["prompt_accuracy"] == expected["prompt_accuracy"]
        assert result[when]["instruction_accuracy"] == expected["instruction_accuracy"]
        answers = {key: answer[when] for key, answer in result["ifeval_responses"].items()}
        assert result[f"ifeval_{when}"]["prompt_strict"] == score_ifeval(ifeval_rows, answers).prompt_strict
        assert result[f"ifeval_{when}"]["inst_loose"] == score_ifeval(ifeval_rows, answers).inst_loose
    # Training moved the adapter away from its initialisation (LoRA's B matrices start at zero)
    adapter = load_file(tmp_path / "pro-lora" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    out = capsys.readouterr().out
    assert "Held-out results (before -> after training)" in out and "Timings (s)" in out
    assert "prompt-level strict" in out and "Training precision: " in out and "Generation precision: " in out
    assert Path(result["model"]) == Path(smollm2_path)


def test_default_task_uses_every_ifeval_type_in_both_directions():
    """The default run's training prompts: 1 to 3 constraints drawn from all IFEval types, word targets in both
    directions and never more words than the answers' token cap holds; no instruction overlaps IFEval or is shared
    between training and held-out prompts."""
    from trl_ranking.evaluation.constraints import DEFAULT_CONSTRAINTS, ifeval_overlap

    args = quickstart._parser().parse_args([])
    assert (args.max_new_tokens, quickstart._max_words(args)) == (256, 179)
    train, held_out = quickstart._load_instructions(args.seed, args.train_prompts, args.eval_prompts)
    assert not set(train) & set(held_out) and not ifeval_overlap(train + held_out)
    rows = quickstart._constraint_rows(train, args.seed, args)
    assert {len(row["instruction_id_list"]) for row in rows} == {1, 2, 3}
    kinds = {kind for row in rows for kind in row["instruction_id_list"]}
    assert len(kinds) >= 15 and kinds - {spec.instruction_id for spec in DEFAULT_CONSTRAINTS}
    words = [
        kwargs
        for row in rows
        for kind, kwargs in zip(row["instruction_id_list"], row["kwargs"])
        if kind == "length_constraints:number_words"
    ]
    assert {kwargs["relation"] for kwargs in words} == {"at least", "less than"}
    assert all(kwargs["num_words"] <= 179 for kwargs in words if kwargs["relation"] == "at least")
