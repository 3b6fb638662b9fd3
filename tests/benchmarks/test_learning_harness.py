"""The learning benchmark harness end to end on the tiny random model: every method gets metrics, the report renders."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest


pytest.importorskip("if_verifiable")
pytest.importorskip("peft")
pytest.importorskip("matplotlib")

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "learning"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"learning_{name}", HARNESS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_harness_end_to_end_on_tiny_model(tmp_path):
    run, report = _load("run"), _load("report")
    output = tmp_path / "results.json"
    methods = ["base", "sft", "dpo", "pro_n3"]
    run.main(
        [
            "--config",
            "tiny",
            "--methods",
            ",".join(methods),
            "--steps",
            "3",
            "--output",
            str(output),
            "--work-dir",
            str(tmp_path / "work"),
            "--threads",
            "1",
        ]
    )
    results = json.loads(output.read_text())
    assert list(results["methods"]) == methods
    num_eval = results["eval_prompts"]
    for name in methods:
        entry = results["methods"][name]
        assert "error" not in entry, entry.get("error")
        metrics = entry["metrics"]
        for key in ("prompt_accuracy", "instruction_accuracy", "mean_reward", "kl_to_base", "base_nll", "tokens"):
            assert math.isfinite(metrics[key]), (name, key)
        # the aggregates are the means of the stored per-prompt values
        assert len(entry["per_prompt"]["reward"]) == num_eval
        assert metrics["mean_reward"] == pytest.approx(sum(entry["per_prompt"]["reward"]) / num_eval)
        assert metrics["prompt_accuracy"] == pytest.approx(sum(entry["per_prompt"]["prompt_pass"]) / num_eval)
        assert 0 <= metrics["prompt_accuracy"] <= metrics["mean_reward"] <= 1
    # The base model is its own reference: zero drift. A trained adapter moves the model: positive KL.
    assert results["methods"]["base"]["metrics"]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
    for name in ("sft", "dpo", "pro_n3"):
        assert results["methods"][name]["metrics"]["kl_to_base"] > 0, name
        assert results["methods"][name]["steps"] == 3
    # PRO logged both loss terms; its rankings have the asked length
    pro = results["methods"]["pro_n3"]
    assert {"loss/ranking", "loss/sft"} <= set(pro["train_log"])
    assert pro["data"]["ranking_length"] == 3

    # A rerun finds every method done and the candidates cached: nothing is trained or sampled again
    again = run.main(["--config", "tiny", "--methods", ",".join(methods), "--steps", "3", "--output", str(output),
                      "--work-dir", str(tmp_path / "work")])  # fmt: skip
    assert again["methods"] == results["methods"]

    text = report.render(results)
    for name in methods:
        assert f"| {name} |" in text
    assert "loss/ranking" in text
    paths = report.plots(results, tmp_path / "plots", "tiny")
    assert {p.name for p in paths} == {"tiny_reward_vs_ranking_length.png", "tiny_reward_vs_drift.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- results:tiny:start -->\nold\n<!-- results:tiny:end -->\nafter\n")
    report.main([str(output), "--readme", str(readme)])
    updated = readme.read_text()
    assert "old" not in updated and "| pro_n3 |" in updated and updated.endswith("after\n")


def test_rankings_are_nested_best_first():
    run = _load("run")
    import random

    row = {"candidates": list("abcdefgh"), "rewards": [0.5, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.5]}
    two, r2 = run.ranking_of(row, 2, random.Random(0))
    assert two == ["b", "f"] and r2 == [1.0, 0.0]  # best and worst (ties keep sample order)
    for n in (3, 4, 8):
        ranking, rewards = run.ranking_of(row, n, random.Random(n))
        assert len(ranking) == n and ranking[0] == "b" and ranking[-1] == "f"
        assert rewards == sorted(rewards, reverse=True)
        assert len(set(ranking)) == n


def test_human_heldout_pairs_skip_ties():
    human = _load("human")
    rows = [{"prompt": "p", "completions": ["a", "b", "c"], "rewards": [2.0, 2.0, 1.0]}]
    # (a, b) tie; a and b each beat c
    assert human.heldout_pairs(rows) == [("p", "a", "c"), ("p", "b", "c")]
