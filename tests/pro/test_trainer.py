"""PROTrainer end to end on tiny models and real HH-RLHF rows, checked against independent computations."""

from __future__ import annotations

import math
import os

import pytest
import torch
from datasets import Dataset
from tiny_models import (
    completion_log_probs,
    cpu_test_config,
    hh_rankings,
    loss_and_grad,
    make_small_vocab_causal_lm,
    move_lora_away_from_zero,
    sorted_ranking,
)
from transformers import AutoModelForCausalLM

from trl_ranking import PROConfig, PROTrainer


# Trainer mechanics and losses, not GPT-2's tokenization: conftest's fixtures give the tiny models and tokenizer
# with the 4,096-token vocabulary, whose LM head costs a twelfth of GPT-2's
SMALL_VOCABULARY = True


MAX_LENGTH = 64
MAX_PROMPT_LENGTH = 40


def make_config(tmp_path, **overrides) -> PROConfig:
    values = dict(
        per_device_train_batch_size=3,
        per_device_eval_batch_size=3,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
    )
    values.update(overrides)
    return cpu_test_config(PROConfig, tmp_path, **values)


def ranking_rows(hh_pairs, with_rewards: bool) -> list[dict]:
    """Rankings of 2, 4 and 3 real HH-RLHF responses (extra candidates borrowed from other rows)."""
    return hh_rankings(hh_pairs, 10, 100, [[0.5, 2.0, -1.0, 1.0]] * 3 if with_rewards else None)


def independent_row_logps(model, tokenizer, prompt: str, completion: str) -> tuple[float, float]:
    """Mean and summed log-prob of `completion + EOS` after the (left-truncated) prompt, with a plain forward."""
    logps = completion_log_probs(model, tokenizer, prompt, completion, MAX_PROMPT_LENGTH, MAX_LENGTH)
    return logps.mean().item(), logps.sum().item()


def naive_pro_loss(scores, rewards, sft_nll, sft_weight=0.05, dynamic=True, first_only=False, eps=1e-10):
    total = 0.0
    for s, r, nll in zip(scores, rewards, sft_nll, strict=True):
        n = len(s)
        for k in range(1 if first_only else n - 1):
            if r is not None and dynamic:
                w = [r[k] - r[i] for i in range(k + 1, n)]
                wk = max(w)
            else:
                w, wk = [1.0] * (n - k - 1), 1.0
            denominator = eps + math.exp(s[k] * wk) + sum(math.exp(s[i] * wi) for i, wi in zip(range(k + 1, n), w))
            total += math.log(denominator) - s[k] * wk
        total += sft_weight * (n - 1) ** 2 * nll
    return total / len(scores)


def collate_all(trainer, dataset):
    return trainer.data_collator([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize("with_rewards", [False, True])
@pytest.mark.parametrize(
    "options", [{}, {"dynamic_temperature": False}, {"first_stage_only": True}, {"sft_weight": 0.0}]
)
def test_loss_matches_independent_computation(tmp_path, tiny_model_path, tokenizer, hh_pairs, with_rewards, options):
    rows = ranking_rows(hh_pairs, with_rewards)
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, **options),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    assert trainer.ref_model is None
    batch = collate_all(trainer, trainer.train_dataset)
    assert batch["num_candidates"].tolist() == [2, 4, 3]
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()

    model = trainer.model
    scores, rewards, nlls = [], [], []
    for row in rows:
        completions, row_rewards = sorted_ranking(row)
        stats = [independent_row_logps(model, tokenizer, row["prompt"], c) for c in completions]
        scores.append([mean for mean, _ in stats])
        nlls.append(-stats[0][1])
        rewards.append(row_rewards)
    expected = naive_pro_loss(
        scores,
        rewards,
        nlls,
        sft_weight=trainer.args.sft_weight,
        dynamic=trainer.args.dynamic_temperature,
        first_only=trainer.args.first_stage_only,
    )
    assert loss == pytest.approx(expected, rel=1e-5)


def test_padding_does_not_change_loss_or_gradients(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
    )
    batch = collate_all(trainer, trainer.train_dataset)
    assert (batch["attention_mask"] == 0).any()

    loss, grad = loss_and_grad(trainer, batch)
    noisy = dict(batch)
    noisy["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 1234)
    noisy_loss, noisy_grad = loss_and_grad(trainer, noisy)
    assert noisy_loss == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(noisy_grad, grad, rtol=1e-5, atol=1e-7)


def test_reference_free_never_loads_a_reference(tmp_path, tiny_model_path, tokenizer, hh_pairs, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_module

    loads = []
    original = dpo_module.create_model_from_path
    monkeypatch.setattr(dpo_module, "create_model_from_path", lambda *a, **k: loads.append(a) or original(*a, **k))
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path),
        train_dataset=hh_pairs.select(range(3)),
        processing_class=tokenizer,
    )
    assert len(loads) == 1  # the policy only
    assert trainer.ref_model is None
    assert trainer.args.precompute_ref_log_probs is False
    assert "ref_logps" not in trainer.train_dataset.column_names


def test_reference_normalized_scores_and_no_gradient_through_reference(
    tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs
):
    rows = ranking_rows(hh_pairs, with_rewards=True)
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_path)
    trainer = PROTrainer(
        model=tiny_model_path,
        ref_model=ref_model,
        args=make_config(tmp_path, reference_normalized=True, beta=0.5),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = collate_all(trainer, trainer.train_dataset)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    assert all(p.grad is None for p in trainer.ref_model.parameters())
    assert any(p.grad is not None for p in trainer.model.parameters())

    scores, rewards, nlls = [], [], []
    for row in rows:
        completions, row_rewards = sorted_ranking(row)
        policy = [independent_row_logps(trainer.model, tokenizer, row["prompt"], c) for c in completions]
        reference = [independent_row_logps(trainer.ref_model, tokenizer, row["prompt"], c) for c in completions]
        scores.append([0.5 * (p[0] - r[0]) for p, r in zip(policy, reference, strict=True)])
        nlls.append(-policy[0][1])
        rewards.append(row_rewards)
    assert loss.item() == pytest.approx(naive_pro_loss(scores, rewards, nlls), rel=1e-5)


def test_reference_normalized_default_reference_is_the_initial_model(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    # No ref_model: TRL's default copy of the initial policy. At step 0 every score is 0, so without rewards
    # stage k of an n-ranking costs exactly log(n - k + eps) (0-based k).
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, reference_normalized=True, sft_weight=0.0),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, with_rewards=False)),
        processing_class=tokenizer,
    )
    assert trainer.ref_model is not None
    batch = collate_all(trainer, trainer.train_dataset)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    expected = sum(sum(math.log(n - k + 1e-10) for k in range(n - 1)) for n in [2, 4, 3]) / 3
    assert loss == pytest.approx(expected, rel=1e-5)


def test_precomputed_reference_equals_on_the_fly(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs):
    dataset = Dataset.from_list(ranking_rows(hh_pairs, with_rewards=True))

    def build(precompute):
        return PROTrainer(
            model=tiny_model_path,
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
            args=make_config(tmp_path, reference_normalized=True, precompute_ref_log_probs=precompute),
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    precomputed = build(True)
    assert [len(v) for v in precomputed.train_dataset["ref_logps"]] == [2, 4, 3]
    on_the_fly = build(False)
    batch = collate_all(on_the_fly, on_the_fly.train_dataset)
    expected = on_the_fly.compute_ref_log_probs(on_the_fly.ref_model, batch)
    batch_pre = collate_all(precomputed, precomputed.train_dataset)
    torch.testing.assert_close(batch_pre["ref_logps"], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert precomputed.compute_loss(precomputed.model, batch_pre).item() == pytest.approx(
            on_the_fly.compute_loss(on_the_fly.model, batch).item(), rel=1e-5
        )


def test_dpo_dataset_with_scores_and_implicit_prompt_trains(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    rows = hh_pairs.select(range(6))
    # Implicit prompt: the transcripts hold the prompt; scores are rewards (ties with the order given)
    implicit = Dataset.from_dict(
        {
            "chosen": [r["prompt"] + r["chosen"] for r in rows],
            "rejected": [r["prompt"] + r["rejected"] for r in rows],
            "score_chosen": [1.0] * 6,
            "score_rejected": [0.0] * 6,
        }
    )
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_steps=2),
        train_dataset=implicit,
        processing_class=tokenizer,
    )
    assert trainer.train_dataset[0]["rewards"] == [1.0, 0.0]
    explicit = PROTrainer(
        model=tiny_model_path, args=make_config(tmp_path), train_dataset=rows, processing_class=tokenizer
    )
    # The implicit prompt is recovered exactly: same tokens as the explicit dataset
    assert trainer.train_dataset[0]["prompt_ids"] == explicit.train_dataset[0]["prompt_ids"]
    assert trainer.train_dataset[0]["completion_ids"] == explicit.train_dataset[0]["completion_ids"]
    trainer.train()
    logged = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logged) == 2 and all(math.isfinite(log["loss"]) for log in logged)
    assert {"loss/ranking", "loss/sft", "ranking/accuracy", "ranking/kendall_tau", "scores/rank_2"} <= set(logged[0])


def test_conversational_rankings(tmp_path, tiny_model_path, chat_tokenizer):
    rows = [
        {
            "prompt": [{"role": "user", "content": "What color is the sky?"}],
            "completions": [
                [{"role": "assistant", "content": "It is blue."}],
                [{"role": "assistant", "content": "It is green."}],
                [{"role": "assistant", "content": "Cheese."}],
            ],
        },
        {
            "prompt": [{"role": "user", "content": "Two plus two?"}],
            "completions": [
                [{"role": "assistant", "content": "Four."}],
                [{"role": "assistant", "content": "Five."}],
            ],
        },
    ]
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
    )
    row = trainer.train_dataset[0]
    expected_prompt = chat_tokenizer.apply_chat_template(rows[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert chat_tokenizer.decode(row["prompt_ids"]) == expected_prompt
    assert chat_tokenizer.decode(row["completion_ids"][2]) == "Cheese.<|im_end|>\n"
    trainer.train()
    assert trainer.state.global_step == 1


def test_lora_trains_only_the_adapter(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from peft import LoraConfig

    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, with_rewards=True)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    assert trainer.ref_model is None


def test_lora_reference_is_the_adapter_switched_off(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    from peft import LoraConfig

    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, reference_normalized=True, sft_weight=0.0),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, with_rewards=False)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    # Move the adapter away from zero: the policy now differs from the base model, the reference does not
    move_lora_away_from_zero(trainer.model)
    batch = collate_all(trainer, trainer.train_dataset)
    with torch.no_grad():
        ref = trainer.compute_ref_log_probs(trainer.model, batch)
        base = trainer.model.get_base_model()
        with trainer.model.disable_adapter():
            expected = [
                independent_row_logps(base, tokenizer, r["prompt"], r["completions"][0])[1]  # summed, as DPO's
                for r in ranking_rows(hh_pairs, False)
            ]
    assert ref[:, 0].tolist() == pytest.approx(expected, rel=1e-5)
    policy_top = independent_row_logps(
        trainer.model,
        tokenizer,
        ranking_rows(hh_pairs, False)[0]["prompt"],
        ranking_rows(hh_pairs, False)[0]["completions"][0],
    )[1]
    assert policy_top != pytest.approx(expected[0], rel=1e-3)


def test_qlora_4bit_trains_on_cpu(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, with_rewards=True)),
        processing_class=tokenizer,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.model.get_base_model().is_loaded_in_4bit
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_save_resume_and_model_card(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    dataset = hh_pairs.select(range(6))
    config = make_config(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-3)
    trainer = PROTrainer(model=tiny_model_path, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Preference Ranking Optimization" in card and "song2024preference" in card
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    resumed = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-3),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    for name, param in resumed.model.named_parameters():
        torch.testing.assert_close(param.detach(), final[name], rtol=1e-4, atol=1e-6)

    resumed.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"))
    for name, param in reloaded.named_parameters():
        torch.testing.assert_close(param, final[name], rtol=1e-4, atol=1e-6)


def test_training_orders_the_training_rankings(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """Learning, not just no crash: ranking accuracy on the training rankings rises well above its start."""
    dataset = hh_pairs.select(range(24))
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(
            tmp_path,
            num_train_epochs=6,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=12,
            learning_rate=2e-3,
            lr_scheduler_type="constant",
        ),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert before["eval_ranking/accuracy"] <= 0.75
    assert after["eval_ranking/accuracy"] >= 0.95
    assert after["eval_ranking/accuracy"] >= before["eval_ranking/accuracy"] + 0.25
    assert after["eval_loss/ranking"] < before["eval_loss/ranking"]


def test_qlora_still_trains_after_an_evaluation(tmp_path, tokenizer, hh_pairs):
    # bitsandbytes repacks 4-bit weights for CPU inference on the first eval-mode, no-grad forward, after which
    # training would get no gradient: `evaluate` must leave the layers trainable
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    model_path = make_small_vocab_causal_lm(tmp_path / "model64", hidden_size=64, intermediate_size=128)
    dataset = Dataset.from_list(ranking_rows(hh_pairs, with_rewards=True))
    trainer = PROTrainer(
        model=model_path,
        args=make_config(tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    trainer.evaluate()
    trainer.train()
    grad_norms = [log["grad_norm"] for log in trainer.state.log_history if "grad_norm" in log]
    assert len(grad_norms) == 2 and all(norm > 0 for norm in grad_norms)


@pytest.mark.slow
def test_resume_skips_a_checkpoint_half_written_when_killed(tmp_path, tiny_model_path, tokenizer, caplog):
    """A real SIGKILL while checkpoint-2 is written (model and optimizer saved, trainer state not yet): resuming with
    `resume_from_checkpoint=True` takes checkpoint-1, the last complete one, and trains to the end."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    output_dir, marker = tmp_path / "out", tmp_path / "marker"
    worker = Path(__file__).with_name("checkpoint_worker.py")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, str(worker), tiny_model_path, str(output_dir), str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300  # a bound on a hung worker, not a timing assertion
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the worker did not reach checkpoint-2: {process.stderr.read().decode()[-2000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    half = output_dir / "checkpoint-2"
    assert half.is_dir() and not (half / "trainer_state.json").exists()
    assert (output_dir / "checkpoint-1" / "trainer_state.json").exists()

    rows = [{"prompt": f"Q{i}:", "completions": [" yes", " no"], "rewards": [1.0, 0.0]} for i in range(8)]
    args = cpu_test_config(
        PROConfig,
        tmp_path,
        max_steps=3,
        per_device_train_batch_size=2,
        max_length=32,
        save_strategy="steps",
        save_steps=1,
    )
    trainer = PROTrainer(
        model=tiny_model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    with caplog.at_level("WARNING", logger="trl_ranking.trainer_utils"):
        trainer.train(resume_from_checkpoint=True)
    assert (
        "Skipping incomplete checkpoint(s) checkpoint-2" in caplog.text and "resuming from checkpoint-1" in caplog.text
    )
    assert trainer.state.global_step == 3
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2, 3]
    assert (half / "trainer_state.json").exists()  # rewritten, complete, by the resumed run
