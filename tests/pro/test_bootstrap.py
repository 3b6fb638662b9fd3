"""Self-bootstrapping PRO (the paper's Algorithm 1) on tiny models: chunks, footnote 6, one run, resume, logs.

Run as a script under `torchrun --nproc_per_node 2` it is the worker of the two-process test (see the end).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_models import cpu_test_config

from trl_ranking import PROConfig, PROTrainer
from trl_ranking.pro import bootstrap as bootstrap_module
from trl_ranking.pro.bootstrap import (
    BOOTSTRAP_STATE_NAME,
    ChunkSampler,
    SelfBootstrapper,
    chunk_bounds,
    rerank_keeping_top,
)


def length_reward(prompts, completions):
    """Deterministic reward: the closer a completion is to 20 characters, the better."""
    return [-abs(len(completion) - 20) for completion in completions]


def make_rows(num_rows: int) -> list[dict]:
    # The top candidate is long, so the reward model often prefers a sample: footnote 6 has work to do
    return [
        {
            "prompt": f"Question {i}: what is {i} plus {i}?",
            "completions": [" It is " + "x" * (30 + 3 * i), f" {2 * i}.", " I do not know, sorry."],
        }
        for i in range(num_rows)
    ]


def make_config(tmp_path, **overrides) -> PROConfig:
    values = dict(
        per_device_train_batch_size=2,
        max_length=64,
        max_prompt_length=40,
        learning_rate=1e-3,
        num_train_epochs=1,
        self_bootstrap=True,
        bootstrap_chunks=2,
        bootstrap_max_new_tokens=8,
    )
    values.update(overrides)
    return cpu_test_config(PROConfig, tmp_path, **values)


class Recorder:
    """Wraps `generate_responses` and `SelfBootstrapper._build_round` to see when and how chunks are sampled."""

    def __init__(self, monkeypatch, trainer_box: list):
        self.calls: list[dict] = []
        self.rounds: dict[int, list[dict]] = {}
        original_generate = bootstrap_module.generate_responses
        original_build = SelfBootstrapper._build_round

        def generate(model, tokenizer, prompts, **kwargs):
            trainer = trainer_box[0]
            seen = {}
            had_own_forward = "forward" in vars(model)
            original_forward = model.forward

            def spy(*args, **forward_kwargs):  # the forward pass, which every generation engine calls
                seen.setdefault("training", model.training)
                seen.setdefault("grad_enabled", torch.is_grad_enabled())
                return original_forward(*args, **forward_kwargs)

            model.forward = spy
            try:
                out = original_generate(model, tokenizer, prompts, **kwargs)
            finally:
                if had_own_forward:
                    model.forward = original_forward
                else:
                    del model.forward
            optimizer_steps = [s.get("step") for s in trainer.optimizer.state.values()] if trainer.optimizer else []
            self.calls.append(
                {
                    "global_step": trainer.state.global_step,
                    "prompts": list(prompts),
                    "checkpointing": model.is_gradient_checkpointing,
                    "model": model,
                    "optimizer": id(trainer.optimizer),
                    "optimizer_steps": {int(step) for step in optimizer_steps if step is not None},
                    "kwargs": dict(kwargs),
                    **seen,
                }
            )
            return out

        def build(self_, round_id, rows):
            self.rounds[round_id] = [dict(row) for row in rows]
            return original_build(self_, round_id, rows)

        monkeypatch.setattr(bootstrap_module, "generate_responses", generate)
        monkeypatch.setattr(SelfBootstrapper, "_build_round", build)


def build_trainer(model_path, tokenizer, tmp_path, monkeypatch, rows, reward=length_reward, **config):
    box: list = []
    recorder = Recorder(monkeypatch, box)
    trainer = PROTrainer(
        model=model_path,
        args=make_config(tmp_path, **config),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        reward_model=reward,
    )
    box.append(trainer)
    return trainer, recorder


def assert_footnote_6(rows: list[dict], raw_rows: list[dict]) -> None:
    for row in rows:
        raw = raw_rows[row["index"]]
        assert row["prompt"] == raw["prompt"]
        assert row["completions"][0] == raw["completions"][0]  # the original top stays first
        assert row["is_sample"][0] is False
        assert len(row["completions"]) == len(raw["completions"]) + sum(row["is_sample"])
        rewards = row["rewards"]
        assert all(a >= b for a, b in zip(rewards, rewards[1:]))  # descending
        # The rewards are the scorer's, except the top's, raised to the best other one when it was lower
        scores = length_reward(None, row["completions"])
        assert rewards[1:] == scores[1:]
        assert rewards[0] == max(scores[0], scores[1])


# ----------------------------------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------------------------------
def test_rerank_keeps_the_top_first_and_rewards_descending():
    ranked, rewards, flags, would_lead = rerank_keeping_top(["top", "b", "s"], [0.1, 0.5, 0.9], [False, False, True])
    assert (ranked, rewards, flags, would_lead) == (["top", "s", "b"], [0.9, 0.9, 0.5], [False, True, False], True)
    # The top already best: nothing changes but the order of the others
    ranked, rewards, flags, would_lead = rerank_keeping_top(["top", "b", "s"], [2.0, -1.0, 0.5], [False, False, True])
    assert (ranked, rewards, flags, would_lead) == (["top", "s", "b"], [2.0, 0.5, -1.0], [False, True, False], False)
    # An original candidate outscoring the top is handled the same way; a tie does not count as leading
    assert rerank_keeping_top(["t", "b", "s"], [0.0, 3.0, 0.0], [False, False, True]) == (
        ["t", "b", "s"],
        [3.0, 3.0, 0.0],
        [False, False, True],
        False,
    )
    with pytest.raises(ValueError, match="original top candidate"):
        rerank_keeping_top(["s", "t"], [1.0, 0.0], [True, False])


def test_rerank_sort_rewards_reading_of_footnote_6():
    """The other reading: same order, the reward values sorted and reassigned by position."""
    ranked, rewards, flags, would_lead = rerank_keeping_top(
        ["top", "b", "s"], [0.1, 0.5, 0.9], [False, False, True], rule="sort_rewards"
    )
    assert ranked == ["top", "s", "b"] and flags == [False, True, False] and would_lead
    assert rewards == [0.9, 0.5, 0.1]
    # Dynamic temperature of stage 1 (w_1i = r_1 - r_i, w_11 = max_i w_1i): the sample now has a margin of 0.4 below
    # the top, where "raise_top" gives it 0 (a tie with the raised top)
    raised = rerank_keeping_top(["top", "b", "s"], [0.1, 0.5, 0.9], [False, False, True])[1]
    assert [raised[0] - r for r in raised[1:]] == pytest.approx([0.0, 0.4])
    assert [rewards[0] - r for r in rewards[1:]] == pytest.approx([0.4, 0.8])
    # Without a sample outscoring the top, both readings give the reward model's own values
    plain = ["top", "b", "s"], [2.0, -1.0, 0.5], [False, False, True]
    assert rerank_keeping_top(*plain, rule="sort_rewards") == rerank_keeping_top(*plain)
    with pytest.raises(ValueError, match="rule must be one of"):
        rerank_keeping_top(*plain, rule="swap")


def test_bootstrap_sampling_options_are_checked(tmp_path):
    assert make_config(tmp_path).bootstrap_top_k == 0 and make_config(tmp_path).bootstrap_rerank == "raise_top"
    with pytest.raises(ValueError, match="`bootstrap_top_k` must be a non-negative integer"):
        make_config(tmp_path, bootstrap_top_k=-1)
    with pytest.raises(ValueError, match="`bootstrap_rerank` must be 'raise_top' or 'sort_rewards'"):
        make_config(tmp_path, bootstrap_rerank="sorted")


def test_chunk_sampler_walks_chunks_in_order_and_shuffles_within():
    assert chunk_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    sampler = ChunkSampler(10, 3, seed=1)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 10
    located = [divmod(key, 10) for key in keys]
    assert [r for r, _ in located] == [0] * 3 + [1] * 3 + [2] * 4
    assert sorted(i for _, i in located) == list(range(10))
    assert [i for _, i in located] != list(range(10))
    sampler.set_epoch(1)
    assert [divmod(key, 10)[0] for key in sampler] == [3] * 3 + [4] * 3 + [5] * 4
    # Several passes per chunk, and padding to the global batch with rows of the last chunk
    sampler = ChunkSampler(5, 2, passes_per_chunk=2, shuffle=False, pad_to_multiple_of=4)
    assert list(sampler) == [0, 1, 0, 1, 7, 8, 9, 7, 8, 9, 7, 8]


# ----------------------------------------------------------------------------------------------------------------------
# One run over two chunks
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_path, tokenizer):
    tmp_path = tmp_path_factory.mktemp("bootstrap-run")
    raw_rows = make_rows(8)
    with pytest.MonkeyPatch.context() as monkeypatch:
        trainer, recorder = build_trainer(
            tiny_model_path,
            tokenizer,
            tmp_path,
            monkeypatch,
            raw_rows,
            save_strategy="steps",
            save_steps=1,
            gradient_checkpointing=True,
        )
        trainer.train()
    final = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    return {"trainer": trainer, "recorder": recorder, "raw_rows": raw_rows, "final": final, "tmp_path": tmp_path}


def test_each_chunk_is_sampled_once_from_the_policy_as_the_chunk_starts(run):
    trainer, calls = run["trainer"], run["recorder"].calls
    assert trainer.state.global_step == 4  # 8 rows, batch 2: one run across both chunks
    assert [call["global_step"] for call in calls] == [0, 2]
    assert sorted(calls[0]["prompts"]) == sorted(row["prompt"] for row in run["raw_rows"][:4])
    assert sorted(calls[1]["prompts"]) == sorted(row["prompt"] for row in run["raw_rows"][4:])
    for call in calls:
        # Eval mode, no grad, gradient checkpointing off while generating (it is on for training)
        assert call["training"] is False and call["grad_enabled"] is False and call["checkpointing"] is False
    assert trainer.model.is_gradient_checkpointing


def test_sample_never_first_and_rewards_descending(run):
    rounds = run["recorder"].rounds
    assert sorted(rounds) == [0, 1]
    rows = rounds[0] + rounds[1]
    assert [row["index"] for row in rows] == list(range(8))
    assert_footnote_6(rows, run["raw_rows"])
    assert all(sum(row["is_sample"]) == 1 for row in rows)
    # The long top candidate lost to a sample somewhere, and still stayed first
    history = run["trainer"].bootstrapper.history
    assert any(record["sample_first_rate"] > 0 for record in history)


def test_optimizer_schedule_and_logs_continue_across_chunks(run):
    trainer, calls = run["trainer"], run["recorder"].calls
    assert calls[0]["optimizer"] == calls[1]["optimizer"]
    assert calls[1]["optimizer_steps"] == {2}  # Adam's state carries the two steps of chunk 0 into chunk 1
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [log["step"] for log in logs] == [1, 2, 3, 4]
    # One linear schedule over the 4 steps of the run, not one per chunk
    assert [log["learning_rate"] for log in logs] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    # The bootstrapping curve: once per chunk, in the log line of the step that started the chunk
    curve = [log for log in logs if "bootstrap/sample_reward" in log]
    assert [log["step"] for log in curve] == [1, 3]
    assert [log["bootstrap/chunk"] for log in curve] == [0, 1]
    history = trainer.bootstrapper.history
    for log, record in zip(curve, history, strict=True):
        assert log["bootstrap/sample_reward"] == pytest.approx(record["sample_reward"])
        assert 0 <= log["bootstrap/sample_first_rate"] <= 1
    assert all(0 < log["bootstrap/generation_share"] < 1 for log in logs)
    assert all(math.isfinite(log["loss"]) for log in logs)


def test_checkpoints_hold_the_chunk_in_progress(run):
    out = run["tmp_path"] / "out"
    states = {step: json.loads((out / f"checkpoint-{step}" / BOOTSTRAP_STATE_NAME).read_text()) for step in (1, 3)}
    assert [entry["round"] for entry in states[1]["rounds"]] == [0]
    assert [entry["round"] for entry in states[3]["rounds"]] == [1]
    assert states[3]["rounds"][0]["rows"] == run["recorder"].rounds[1]
    assert [record["chunk"] for record in states[3]["history"]] == [0, 1]


@pytest.mark.parametrize(
    ("checkpoint", "expected_calls"),
    [(3, []), (2, [2])],  # mid chunk 1: reuse it; between the chunks: sample chunk 1 as the uninterrupted run did
)
def test_resume_reuses_the_saved_chunk(run, tiny_model_path, tokenizer, monkeypatch, checkpoint, expected_calls):
    tmp_path = run["tmp_path"]
    trainer, recorder = build_trainer(
        tiny_model_path, tokenizer, tmp_path, monkeypatch, run["raw_rows"], gradient_checkpointing=True
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{checkpoint}"))
    assert trainer.state.global_step == 4
    assert [call["global_step"] for call in recorder.calls] == expected_calls
    if expected_calls:
        assert recorder.rounds[1] == run["recorder"].rounds[1]  # same samples as the uninterrupted run
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(param.detach(), run["final"][name], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("resample", [False, True], ids=["sample-once", "resample-each-epoch"])
def test_epochs_sample_each_chunk_once_by_default(tmp_path, tiny_model_path, tokenizer, monkeypatch, resample):
    """Algorithm 1 samples each chunk once: with 2 epochs the second trains on the first epoch's rankings, unless
    `bootstrap_resample_each_epoch=True`. Plain sampling: `top_k=0` reaches `generate`."""
    raw_rows = make_rows(8)
    trainer, recorder = build_trainer(
        tiny_model_path,
        tokenizer,
        tmp_path,
        monkeypatch,
        raw_rows,
        num_train_epochs=2,
        bootstrap_resample_each_epoch=resample,
        save_strategy="no",
    )
    trainer.train()
    assert trainer.state.global_step == 8
    assert [call["global_step"] for call in recorder.calls] == ([0, 2, 4, 6] if resample else [0, 2])
    assert all(call["kwargs"]["top_k"] == 0 and call["kwargs"]["top_p"] == 1.0 for call in recorder.calls)
    assert sorted(recorder.rounds) == [0, 1, 2, 3]
    for chunk in (0, 1):
        first, second = recorder.rounds[chunk], recorder.rounds[chunk + 2]
        assert_footnote_6(first + second, raw_rows)
        if not resample:
            assert second == first  # the same augmented rankings, samples included
    assert [record["epoch"] for record in trainer.bootstrapper.history] == ([0, 0, 1, 1] if resample else [0, 0])


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------
def test_configuration_errors(tmp_path, tiny_model_path, tokenizer):
    dataset = Dataset.from_list(make_rows(4))
    with pytest.raises(ValueError, match="needs a `reward_model`"):
        PROTrainer(
            model=tiny_model_path, args=make_config(tmp_path), train_dataset=dataset, processing_class=tokenizer
        )
    with pytest.raises(ValueError, match="self_bootstrap` is False"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, self_bootstrap=False),
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_model=length_reward,
        )
    with pytest.raises(ValueError, match="bootstrap_chunks"):
        make_config(tmp_path, bootstrap_chunks=0)
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        make_config(tmp_path, reference_normalized=True, precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="larger than the training set"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, bootstrap_chunks=5),
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_model=length_reward,
        )


def test_rewards_in_some_rows_only_are_rejected(tmp_path, tiny_model_path, tokenizer):
    # The dataset's rewards decide which original candidate stays on top: decided for all rows, not by row 0
    rows = make_rows(4)
    rows[2]["rewards"] = [0.0, 2.0, 1.0]
    for row in rows:
        row.setdefault("rewards", None)
    with pytest.raises(ValueError, match=r"Row 2, field 'rewards': the row has rewards, but row 0 has none"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            reward_model=length_reward,
        )


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (
            lambda prompts, completions: [0.0] * (len(completions) - 1),
            r"Bootstrap chunk 0: the scorer returned 7 scores for 8",
        ),
        (
            lambda prompts, completions: [1e39 if i == 3 else 0.0 for i in range(len(completions))],
            r"chunk 0, row 0, a sampled response \(the reward model's score\): the reward 1e\+39 overflows torch.float32",
        ),
        (
            lambda prompts, completions: [float("nan") if i == 3 else 0.0 for i in range(len(completions))],
            r"chunk 0, row 0, a sampled response \(the reward model's score\): the reward is not finite \(nan\)",
        ),
    ],
)
def test_bad_reward_model_output(tmp_path, tiny_model_path, tokenizer, monkeypatch, reward, message):
    trainer, _ = build_trainer(tiny_model_path, tokenizer, tmp_path, monkeypatch, make_rows(4), reward=reward)
    with pytest.raises(ValueError, match=message):
        trainer.train()


# ----------------------------------------------------------------------------------------------------------------------
# LoRA / 4-bit, a real reward model, conversational rows
# ----------------------------------------------------------------------------------------------------------------------
def test_qlora_samples_with_the_adapter_active(tmp_path, tokenizer, monkeypatch):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, PeftModel
    from transformers import BitsAndBytesConfig

    from trl_ranking.assets import make_tiny_causal_lm

    # bitsandbytes repacks 4-bit weights for CPU inference (eval, no grad) in blocks of 64 input features: the default
    # tiny model's 32 are too few, so this one is a little wider
    model_path = make_tiny_causal_lm(tmp_path / "model", hidden_size=64, intermediate_size=128)
    box: list = []
    recorder = Recorder(monkeypatch, box)
    trainer = PROTrainer(
        model=model_path,
        args=make_config(tmp_path, gradient_checkpointing=True),
        train_dataset=Dataset.from_list(make_rows(4)),
        processing_class=tokenizer,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        reward_model=length_reward,
    )
    box.append(trainer)
    assert trainer.model.get_base_model().is_loaded_in_4bit
    lora_layers = [m for n, m in trainer.model.named_modules() if n.endswith("q_proj") and hasattr(m, "lora_A")]
    adapter_states = []
    original_forward = lora_layers[0].forward

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            adapter_states.append((lora_layers[0].disable_adapters, tuple(lora_layers[0].active_adapters)))
        return original_forward(*args, **kwargs)

    lora_layers[0].forward = forward
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2 and [call["global_step"] for call in recorder.calls] == [0, 1]
    assert all(isinstance(call["model"], PeftModel) for call in recorder.calls)
    assert all(call["checkpointing"] is False for call in recorder.calls)
    assert adapter_states and all(state == (False, ("default",)) for state in adapter_states)
    assert_footnote_6(recorder.rounds[0] + recorder.rounds[1], make_rows(4))
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)


def test_sequence_classification_reward_model_on_conversational_rows(tmp_path, tiny_model_path, chat_tokenizer):
    from trl_ranking.assets import make_tiny_reward_model
    from trl_ranking.rewards import RewardModelScorer

    reward_model = make_tiny_reward_model(vocab_size=len(chat_tokenizer)).train()
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
            "completions": [
                [{"role": "assistant", "content": f"{2 * i}."}],
                [{"role": "assistant", "content": "No idea."}],
            ],
        }
        for i in range(4)
    ]
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, bootstrap_chunks=1, bootstrap_num_samples=2, per_device_train_batch_size=4),
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
        reward_model=reward_model,
        reward_processing_class=chat_tokenizer,
    )
    assert isinstance(trainer.bootstrapper.scorer, RewardModelScorer)
    trainer.train()
    assert trainer.state.global_step == 1
    (augmented,) = trainer.bootstrapper._rounds.values()
    scorer = RewardModelScorer(reward_model, chat_tokenizer)
    for row in augmented.rows:
        assert row["completions"][0] == rows[row["index"]]["completions"][0]
        samples = [c for c, flag in zip(row["completions"], row["is_sample"]) if flag]
        assert len(samples) <= 2 and all(c[0]["role"] == "assistant" for c in samples)
        scores = scorer([row["prompt"]] * len(row["completions"]), row["completions"])
        assert row["rewards"][1:] == pytest.approx(scores[1:], rel=1e-4, abs=1e-5)
        assert row["rewards"][0] == pytest.approx(max(scores[:2]), rel=1e-4, abs=1e-5)
        assert all(a >= b for a, b in zip(row["rewards"], row["rewards"][1:]))


# ----------------------------------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo): each samples its own rows, the rankings stay with their prompts
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_share_the_sampling_and_stay_aligned(tmp_path, tiny_model_path):
    # The worker imports this file as a script: put the tests folder (shared helpers) on its path
    tests_dir = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": python_path,
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29700 + os.getpid() % 1000),
        str(Path(__file__).resolve()),
        tiny_model_path,
        str(tmp_path),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    raw_rows = make_rows(10)
    for rank, result in enumerate(results):
        assert result["global_step"] == 5
        # Chunks of 5 rows, global batch 2: the step that holds rows 5 and 6 of the stream starts chunk 1 on both
        assert [call["global_step"] for call in result["calls"]] == [0, 2]
        for call, (start, end) in zip(result["calls"], chunk_bounds(10, 2)):
            expected = [raw_rows[i]["prompt"] for i in range(start, end) if i % 2 == rank]
            assert sorted(call["prompts"]) == sorted(expected)
        assert result["resumed_step"] == 5 and result["resumed_calls"] == 0 and result["resumed_equal"]
    assert results[0]["rounds"] == results[1]["rounds"]
    rows = [row for round_rows in results[0]["rounds"].values() for row in round_rows]
    assert [row["index"] for row in rows] == list(range(10))
    assert_footnote_6(rows, raw_rows)


def _distributed_worker(model_path: str, output_dir: str) -> None:
    from trl_ranking.assets import load_bundled_tokenizer

    rank = int(os.environ.get("RANK", "0"))

    def train(resume_from_checkpoint=None):
        box: list = []
        with pytest.MonkeyPatch.context() as monkeypatch:
            recorder = Recorder(monkeypatch, box)
            trainer = PROTrainer(
                model=model_path,
                args=make_config(
                    Path(output_dir), per_device_train_batch_size=1, use_cpu=True, save_strategy="steps", save_steps=1
                ),
                train_dataset=Dataset.from_list(make_rows(10)),
                processing_class=load_bundled_tokenizer(),
                reward_model=length_reward,
            )
            box.append(trainer)
            trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        return trainer, recorder

    trainer, recorder = train()
    final = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    # Resume in the middle of chunk 1 (steps 3-5): the saved chunk is reused, and the run ends where it ended
    resumed, resumed_recorder = train(os.path.join(output_dir, "out", "checkpoint-4"))
    result = {
        "global_step": trainer.state.global_step,
        "calls": [{"global_step": c["global_step"], "prompts": c["prompts"]} for c in recorder.calls],
        "rounds": {str(r): rows for r, rows in sorted(recorder.rounds.items())},
        "resumed_step": resumed.state.global_step,
        "resumed_calls": len(resumed_recorder.calls),
        "resumed_equal": all(
            torch.allclose(param.detach(), final[name], rtol=1e-5, atol=1e-7)
            for name, param in resumed.model.named_parameters()
        ),
    }
    (Path(output_dir) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _distributed_worker(sys.argv[1], sys.argv[2])
