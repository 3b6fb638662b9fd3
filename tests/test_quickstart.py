"""`python -m trl_ranking.quickstart`: the `--tiny` smoke run, and a much reduced real-model run (slow)."""

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

    from trl_ranking.evaluation.constraints import build_constraint_prompts, constraint_metrics

    args = ["--model", smollm2_path, "--output-dir", str(tmp_path), "--train-prompts", "8", "--eval-prompts", "3"]
    args += ["--eval-ranking-prompts", "3", "--max-new-tokens", "16", "--epochs", "1", "--batch-size", "2"]
    result = quickstart.main(args + ["--show", "3"])

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["before"] == result["before"] and saved["after"] == result["after"]
    assert (tmp_path / "pro-lora" / "adapter_model.safetensors").is_file()
    # The printed metrics are IFEval's on the printed answers (recomputed here from the answers and the prompts)
    _, eval_instructions = quickstart._load_instructions(0, 8, 3)
    rows = build_constraint_prompts(eval_instructions, seed=1)
    assert [row["prompt_text"] for row in rows] == [example["prompt"] for example in result["examples"]]
    for when in ("before", "after"):
        expected = constraint_metrics(rows, [example[when] for example in result["examples"]])
        assert result[when]["prompt_accuracy"] == expected["prompt_accuracy"]
        assert result[when]["instruction_accuracy"] == expected["instruction_accuracy"]
    # Training moved the adapter away from its initialisation (LoRA's B matrices start at zero)
    adapter = load_file(tmp_path / "pro-lora" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    if result["ranking_before"]:  # held-out rankings exist when some sampled answers differ in reward
        assert result["ranking_after"]["eval_held_out_loss"] != result["ranking_before"]["eval_held_out_loss"]
    out = capsys.readouterr().out
    assert "Held-out results (before -> after training)" in out and "Timings (s)" in out
    assert Path(result["model"]) == Path(smollm2_path)


def test_bundled_samples_cover_the_default_run():
    """The default run reuses the bundled answers: they exist for its prompts and settings, 4 per prompt, and only
    there (another setting gets no stale answers)."""
    import gzip

    from trl_ranking.assets import bundled_quickstart_samples_path
    from trl_ranking.evaluation.constraints import build_constraint_prompts

    bundle = json.loads(gzip.decompress(Path(bundled_quickstart_samples_path()).read_bytes()))
    args = quickstart._parser().parse_args([])
    assert args.samples == "bundled"
    train, held_out = quickstart._load_instructions(args.seed, args.train_prompts, args.eval_prompts)
    train_rows = build_constraint_prompts(train, seed=args.seed)
    ranking_rows = build_constraint_prompts(held_out, seed=args.seed + 1)[: args.eval_ranking_prompts]
    for rows in (train_rows, ranking_rows):
        answers = bundle["answers"][quickstart._samples_key(rows, args)]
        assert len(answers) == len(rows) * args.candidates
        assert all(isinstance(answer, str) for answer in answers) and len(set(answers)) > len(rows)
    other = quickstart._parser().parse_args(["--max-new-tokens", "47"])
    assert quickstart._samples_key(train_rows, other) not in bundle["answers"]
    assert "SmolLM2-135M-Instruct" in bundle["source"]
