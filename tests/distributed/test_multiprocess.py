"""PROTrainer under several processes: 2 CPU ranks on the gloo backend, launched with torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


WORKER = Path(__file__).resolve().parent / "pro_worker.py"


def run_worker(nproc: int, model_path: str, output_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(29500 + nproc + os.getpid() % 1000),
        str(WORKER),
        model_path,
        str(output_dir),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if completed.returncode != 0:
        raise AssertionError(
            f"worker failed ({completed.returncode}):\n{completed.stdout[-4000:]}\n{completed.stderr[-8000:]}"
        )
    return json.loads((output_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_path):
    single = run_worker(1, tiny_model_path, tmp_path_factory.mktemp("one-process"))
    double = run_worker(2, tiny_model_path, tmp_path_factory.mktemp("two-processes"))
    return single, double


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(runs):
    single, double = runs
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert len(double["copies_losses"]) == 3
    assert double["copies_losses"] == pytest.approx(single["copies_losses"], rel=1e-5)


@pytest.mark.slow
def test_mixed_n_across_processes_trains_and_logs_finite_metrics(runs):
    _, double = runs
    assert double["final_step"] == 4 and double["mixed_finite"]
    # One ranking of n=2 and one of n=5 per step: the gathered mean is 3.5 when the two processes differ
    assert any(value == pytest.approx(3.5) for value in double["mixed_num_candidates"])
    assert all(math.isfinite(value) for value in double["eval"].values())
    assert {"eval_loss", "eval_ranking/accuracy", "eval_scores/rank_5"} <= set(double["eval"])


@pytest.mark.slow
def test_precomputed_reference_is_gathered_in_dataset_order(runs):
    single, double = runs
    assert [len(values) for values in double["ref_logps"]] == [2, 5] * 4
    for two, one in zip(double["ref_logps"], single["ref_logps"], strict=True):
        assert two == pytest.approx(one, rel=1e-5)


@pytest.mark.slow
def test_resume_from_a_two_process_checkpoint(runs):
    _, double = runs
    assert double["resumed_step"] == 4
    # The history of steps 1-2 comes from the checkpoint; steps 3-4, computed after resuming, repeat those of the
    # uninterrupted run
    assert len(double["resumed_losses"]) == 4
    assert double["resumed_losses"] == pytest.approx(double["mixed_losses"], rel=1e-4)


@pytest.mark.slow
def test_dove_precomputes_and_trains_on_two_processes(runs):
    single, double = runs
    assert double["dove_ref_chosen"] == pytest.approx(single["dove_ref_chosen"], rel=1e-5)
    assert len(double["dove_losses"]) == 2 and all(math.isfinite(x) for x in double["dove_losses"])
    assert math.isfinite(double["dove_eval"]["eval_loss"])
    assert "eval_joint/different_instructions" in double["dove_eval"]
