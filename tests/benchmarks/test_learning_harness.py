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
def test_harness_end_to_end_on_tiny_model(tmp_path, monkeypatch):
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
    # Training precision: bf16 where the CPU computes it natively (AMX or AVX512-BF16), float32 elsewhere; recorded
    from trl_ranking.precision import bf16_is_fast

    assert results["bf16"] is bf16_is_fast()  # the device the harness trains on: CUDA when available, else the CPU
    assert results["precision"].startswith("training: bfloat16" if results["bf16"] else "training: float32")
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
    # A rerun in the other precision does not mix it into (or overwrite) those results
    other = "fp32" if results["bf16"] else "bf16"
    with pytest.raises(SystemExit, match=f"--precision {'bf16' if results['bf16'] else 'fp32'}"):
        run.main(["--config", "tiny", "--methods", "base", "--steps", "3", "--output", str(output), "--work-dir",
                  str(tmp_path / "work"), "--precision", other])  # fmt: skip
    assert json.loads(output.read_text())["methods"] == results["methods"]

    # The committed candidates (results/<config>-candidates.json) are reused by a run with a fresh work directory:
    # nothing is sampled
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    (tmp_path / "tiny-candidates.json").write_bytes((tmp_path / "work" / "candidates.json").read_bytes())
    fresh = run.main(["--config", "tiny", "--methods", "base", "--steps", "3", "--output", str(tmp_path / "r2.json"),
                      "--work-dir", str(tmp_path / "work2")])  # fmt: skip
    assert fresh["data"] == results["data"]
    assert not (tmp_path / "work2" / "candidates.json").exists()
    assert fresh["methods"]["base"]["metrics"] == results["methods"]["base"]["metrics"]

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


def test_method_sets_name_known_methods():
    run = _load("run")
    table = run._method_table()
    for name, methods in run.METHOD_SETS.items():
        assert set(methods) <= set(table), name
    assert set(run.METHOD_SETS["core"]) < set(run.METHOD_SETS["all"])


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


def test_human_sequence_logps_match_unpadded_forwards(tiny_model_path, chat_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    human = _load("human")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    prompts = [[{"role": "user", "content": text}] for text in ("Hi", "A much longer question about eggs and water?")]
    prompts.append(prompts[0])
    responses = ["Hello there.", "Boil.", "A longer answer with several more tokens in it."]
    sums, counts = human.sequence_logps(model, chat_tokenizer, prompts, responses, batch_size=3, max_length=512)
    for prompt, response, total, count in zip(prompts, responses, sums, counts):
        text = chat_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        p = chat_tokenizer(text, add_special_tokens=False)["input_ids"]
        r = chat_tokenizer(response, add_special_tokens=False)["input_ids"] + [chat_tokenizer.eos_token_id]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        expected = sum(logps[len(p) - 1 + k, token].item() for k, token in enumerate(r))
        assert count == len(r)
        assert total == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_drift_matches_per_sequence_kl_and_nll(tmp_path, chat_tokenizer):
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    from trl_ranking.assets import make_tiny_causal_lm

    run = _load("run")
    policy = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm(tmp_path / "a", seed=1))
    base = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm(tmp_path / "b", seed=2))

    class Switch(torch.nn.Module):  # the policy, or the base model inside `with switch.base()`
        def __init__(self):
            super().__init__()
            self.policy, self.base_model, self.use_base = policy, base, False

        def forward(self, **kwargs):
            return (self.base_model if self.use_base else self.policy)(**kwargs)

        @contextlib.contextmanager
        def base(self):
            self.use_base = True
            yield
            self.use_base = False

    switch = Switch()
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question, with words?"}]]
    responses = ["Hello there.", "Boil them for nine minutes."]
    result = run.drift(switch, chat_tokenizer, prompts, responses, batch_size=2, base_context=switch.base)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        text = chat_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        p = chat_tokenizer(text, add_special_tokens=False)["input_ids"]
        r = chat_tokenizer(response, add_special_tokens=False)["input_ids"] + [chat_tokenizer.eos_token_id]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            lp = policy(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
            lb = base(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
        kl = torch.nn.functional.kl_div(lb, lp, log_target=True, reduction="none").sum(-1).mean().item()
        nll = -lb.gather(-1, torch.tensor(r).unsqueeze(-1)).mean().item()
        assert result["kl"][i] == pytest.approx(kl, rel=1e-4)
        assert result["base_nll"][i] == pytest.approx(nll, rel=1e-4)
        assert result["tokens"][i] == len(r) - 1
    # The base model scored as its own policy: zero KL by definition, the same base NLL, one pass only
    alone = run.drift(switch, chat_tokenizer, prompts, responses, 2, base_context=switch.base, policy_is_base=True)
    assert alone["kl"] == [0.0, 0.0]
    assert alone["base_nll"] == pytest.approx(result["base_nll"], rel=1e-6)


def test_learning_rate_is_chosen_on_the_validation_half_and_judged_on_the_test_half():
    report = _load("report")

    def entry(rewards: list[float], lr: float) -> dict:
        count = len(rewards)
        return {
            "learning_rate": lr,
            "metrics": {"mean_reward": sum(rewards) / count},
            "per_prompt": {"reward": rewards, "prompt_pass": [float(r == 1.0) for r in rewards], "kl": [0.1] * count},
        }

    # Even positions are the validation half, odd ones the test half. At 3x DPO is best on validation but worst on
    # test: the choice must follow validation, and the test half must then show the drop.
    results = {
        "methods": {
            "base": entry([0.0, 0.0, 0.0, 0.0], 0.0),
            "dpo": entry([0.5, 1.0, 0.5, 1.0], 1e-3),
            "dpo@3": entry([1.0, 0.0, 1.0, 0.0], 3e-3),
            "dpo@0.3": entry([0.5, 0.5, 0.5, 0.5], 3e-4),
            "pro_n4": entry([1.0, 1.0, 0.5, 0.5], 1e-3),
            "pro_n4@0.3": entry([1.0, 0.5, 0.5, 0.5], 3e-4),  # ties 1x on validation: the configured rate is kept
        }
    }
    assert report.halves(5) == ([0, 2, 4], [1, 3])
    selection = report.lr_selection(results)
    assert selection["dpo"]["selected"] == 3.0
    assert selection["dpo"]["validation"] == {0.3: 0.5, 1.0: 0.5, 3.0: 1.0}
    assert selection["pro_n4"]["selected"] == 1.0
    text = report.lr_sweep_table(results)
    # DPO at its chosen 3x scores 0 on the test half; PRO at 1x scores 0.75 there: +0.75 over tuned DPO
    assert "| dpo | 3.0e-03 | 0.000 | 0.000 [0.000, 0.000] |" in text
    assert (
        "| pro_n4 | 1.0e-03 | 0.500 | 0.750 [0.500, 1.000] | +0.750 [+0.500, +1.000] * | +0.750 [+0.500, +1.000] * |"
        in text
    )
    # The sweep's extra rows stay out of the main table (its rows are the configured rates)
    assert list(report._main_rows(results)) == ["base", "dpo", "pro_n4"]
