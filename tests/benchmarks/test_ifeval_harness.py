"""The IFEval benchmark's pieces without a model: its training prompts never overlap IFEval, and the report's pooled
average and paired interval equal computations written here from the per-prompt results."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest


HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "ifeval"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"ifeval_{name}", HARNESS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _eight_grams(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + 8]) for i in range(len(words) - 7)}


def test_training_prompts_are_not_ifevals_and_are_deterministic():
    from trl_ranking.evaluation.ifeval import load_ifeval_prompts

    run = _load("run")
    cfg = run.Settings()
    train, validation = run.build_prompts(cfg)
    assert (len(train), len(validation)) == (cfg.num_train, cfg.num_validation)
    again, _ = run.build_prompts(cfg)
    assert [r["prompt_text"] for r in again] == [r["prompt_text"] for r in train]
    assert not {r["prompt_text"] for r in train} & {r["prompt_text"] for r in validation}
    ifeval = set().union(*(_eight_grams(row["prompt"]) for row in load_ifeval_prompts()))
    for row in train + validation:
        assert 1 <= len(row["instruction_id_list"]) <= 3
        # the base instruction (the text before the constraint sentences) shares no 8-word run with IFEval
        assert not _eight_grams(row["instruction"]) & ifeval, row["instruction"][:80]


def test_report_average_and_paired_interval():
    report = _load("report")
    rng = random.Random(0)
    # (prompt strict, prompt loose, followed strict, followed loose, instructions)
    a, b = {}, {}
    for key in range(200):
        n = rng.randint(1, 3)
        for side in (a, b):
            strict = rng.randint(0, n)
            loose = min(n, strict + rng.randint(0, 1))
            side[str(key)] = (float(strict == n), float(loose == n), strict, loose, n)
    rows = list(a.values())
    instructions = sum(r[4] for r in rows)
    expected = (
        sum(r[0] for r in rows) / len(rows) + sum(r[2] for r in rows) / instructions
        + sum(r[1] for r in rows) / len(rows) + sum(r[3] for r in rows) / instructions
    ) / 4
    assert report._average(rows) == pytest.approx(expected, abs=1e-12)
    diff, low, high = report.paired_interval(a, b, resamples=400)
    assert diff == pytest.approx(report._average(list(a.values())) - report._average(list(b.values())), abs=1e-12)
    assert low < diff < high
    same, low_same, high_same = report.paired_interval(a, a, resamples=50)
    assert same == low_same == high_same == 0.0
