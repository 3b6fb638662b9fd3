"""The listwise family through `PROTrainer` on tiny models and real HH-RLHF rows, against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from test_listwise_losses import log_sigmoid, naive_lipo, naive_listmle, naive_minmax, naive_pairs
from tiny_models import (
    LAYOUTS,
    assert_same_gradient,
    completion_log_probs,
    cpu_test_config,
    hh_rankings,
    loss_and_grad,
    sorted_ranking,
)
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from trl_ranking import PROConfig, PROTrainer
from trl_ranking.collators import DataCollatorForRanking
from trl_ranking.packing import is_packed


# Trainer mechanics and losses, not GPT-2's tokenization: conftest's fixtures give the tiny models and tokenizer
# with the 4,096-token vocabulary, whose LM head costs a twelfth of GPT-2's
SMALL_VOCABULARY = True


MAX_LENGTH = 64
MAX_PROMPT_LENGTH = 40
BETA = 0.5
FAMILY = ["pro", "listmle", "lipo_lambda", "rrhf", "slic", "best_of_n_sft", "dpo_pairs"]
WEIGHTS = [1.0, 0.5, 2.0, 0.25, 0.1, 1.5, 3.0]


def make_config(tmp_path, **overrides) -> PROConfig:
    values = dict(
        per_device_train_batch_size=3,
        per_device_eval_batch_size=3,
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_PROMPT_LENGTH,
        prefix_sharing=False,
        beta=BETA,
    )
    values.update(overrides)
    return cpu_test_config(PROConfig, tmp_path, **values)


def ranking_rows(hh_pairs, with_rewards: bool) -> list[dict]:
    """Rankings of 2, 4 and 3 real HH-RLHF responses; the rewards (given out of order) tie within two rankings."""
    return hh_rankings(
        hh_pairs, 30, 300, [[0.5, 2.0], [0.5, 2.0, 0.5, -1.0], [0.0, 1.0, 0.0]] if with_rewards else None
    )


def independent_logps(model, tokenizer, prompt: str, completion: str) -> tuple[float, int]:
    """Summed log-prob and token count of `completion + EOS` after the left-truncated prompt, one plain forward."""
    logps = completion_log_probs(model, tokenizer, prompt, completion, MAX_PROMPT_LENGTH, MAX_LENGTH)
    return logps.sum().item(), logps.numel()


def collate_all(trainer, layout: dict | None = None):
    collator = DataCollatorForRanking(
        pad_token_id=trainer.processing_class.pad_token_id, max_length=MAX_LENGTH, **(layout or {})
    )
    return collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def last_metrics(trainer) -> dict[str, float]:
    mode = "train" if trainer.model.training else "eval"
    return {name: values[-1] for name, values in trainer._metrics[mode].items() if values}


def expected_parts(trainer, tokenizer, rows, pair_selection: str) -> dict[str, float]:
    """Every loss part of the family, per example and averaged over the batch, from plain forwards and loops."""
    args = trainer.args
    parts: dict[str, list[float]] = {}
    for row in rows:
        completions, rewards = sorted_ranking(row)
        n = len(completions)
        policy = [independent_logps(trainer.model, tokenizer, row["prompt"], c) for c in completions]
        reference = [independent_logps(trainer.ref_model, tokenizer, row["prompt"], c)[0] for c in completions]
        sums = [p[0] for p in policy]
        counts = [p[1] for p in policy]
        psi = list(rewards) if rewards is not None else [float(n - 1 - i) for i in range(n)]
        s = [BETA * (lp - lr) for lp, lr in zip(sums, reference, strict=True)]
        means = [lp / c for lp, c in zip(sums, counts, strict=True)]
        pairs = [(i, j) for i in range(n) for j in range(n) if psi[i] > psi[j]]

        # PRO (reference-free, dynamic temperature with rewards, eps inside the log, SFT on the summed NLL)
        ranking = 0.0
        for k in range(n - 1):
            w = [psi[k] - psi[i] for i in range(k + 1, n)] if rewards is not None else [1.0] * (n - k - 1)
            wk = max(w)
            denominator = (
                1e-10 + math.exp(means[k] * wk) + sum(math.exp(means[i] * wi) for i, wi in zip(range(k + 1, n), w))
            )
            ranking += math.log(denominator) - means[k] * wk
        add = {
            "loss/ranking": ranking,
            "loss/sft": args.sft_weight * (n - 1) ** 2 * -sums[0],
            "loss/listmle": naive_listmle(s),
            "loss/lipo_lambda": naive_lipo(s, naive_minmax(psi)),
            "loss/rrhf/ranking": args.rrhf_weight * sum(max(0.0, means[j] - means[i]) for i, j in pairs),
            "loss/rrhf/sft": -means[0],
            "loss/slic/calibration": sum(max(0.0, args.slic_delta - sums[i] + sums[j]) for i, j in pairs),
            "loss/slic/regularization": len(pairs) * args.slic_regularization_weight * -sums[0],
            "loss/best_of_n_sft": -means[0],
        }
        chosen = naive_pairs(n, psi, pair_selection)
        add["loss/dpo_pairs"] = sum(-log_sigmoid(s[i] - s[j]) for i, j in chosen) / len(chosen) if chosen else 0.0
        for name, value in add.items():
            parts.setdefault(name, []).append(value)
    return {name: sum(values) / len(values) for name, values in parts.items()}


def total_loss(parts: dict[str, float], args) -> float:
    per_loss = {
        "pro": parts["loss/ranking"] + parts["loss/sft"],
        "listmle": parts["loss/listmle"],
        "lipo_lambda": parts["loss/lipo_lambda"],
        "rrhf": parts["loss/rrhf/ranking"] + parts["loss/rrhf/sft"],  # the parts are logged as added (weighted)
        "slic": parts["loss/slic/calibration"] + parts["loss/slic/regularization"],
        "best_of_n_sft": parts["loss/best_of_n_sft"],
        "dpo_pairs": parts["loss/dpo_pairs"],
    }
    return sum(w * per_loss[name] for name, w in zip(args.loss_type, args.loss_weights, strict=True))


@pytest.mark.parametrize("with_rewards", [False, True])
def test_every_loss_matches_independent_computation(
    tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs, with_rewards
):
    rows = ranking_rows(hh_pairs, with_rewards)
    trainer = PROTrainer(
        model=tiny_model_path,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),  # differs from the policy: s != 0
        args=make_config(
            tmp_path, loss_type=FAMILY, loss_weights=WEIGHTS, rrhf_weight=3.0, slic_delta=40.0, listmle_ties="keep"
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = collate_all(trainer)
    assert batch["num_candidates"].tolist() == [2, 4, 3]
    trainer.model.eval()
    for pair_selection in ["best_worst", "best_rest", "adjacent", "all"]:
        trainer.args.pair_selection = pair_selection
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch).item()
        expected = expected_parts(trainer, tokenizer, rows, pair_selection)
        metrics = last_metrics(trainer)
        for name, value in expected.items():
            # float32 scores: differences of log-probs near -10 carry ~1e-6 absolute error
            assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-5), (pair_selection, name)
        assert loss == pytest.approx(total_loss(expected, trainer.args), rel=1e-5)
    # Every hinge and pair term is exercised by these numbers (not all zero)
    assert expected["loss/rrhf/ranking"] > 0 and expected["loss/slic/calibration"] > 0
    assert 0 <= metrics["ranking/top1_accuracy"] <= 1


@pytest.mark.parametrize("with_rewards", [False, True])
def test_every_layout_gives_the_padded_loss_and_gradients(
    tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs, with_rewards
):
    trainer = PROTrainer(
        model=tiny_model_path,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        args=make_config(tmp_path, loss_type=FAMILY, loss_weights=WEIGHTS, pair_selection="all", slic_delta=40.0),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, with_rewards)),
        processing_class=tokenizer,
    )

    def loss_grad_parts(batch):
        return (*loss_and_grad(trainer, batch), last_metrics(trainer))

    padded = collate_all(trainer)
    loss, grad, parts = loss_grad_parts(padded)
    assert grad.abs().sum() > 0
    for name, layout in LAYOUTS.items():
        batch = collate_all(trainer, layout)
        assert is_packed(batch)
        packed_loss, packed_grad, packed_parts = loss_grad_parts(batch)
        assert packed_loss == pytest.approx(loss, rel=1e-5), name
        assert_same_gradient(packed_grad, grad, name)
        for part in [p for p in parts if p.startswith(("loss/", "ranking/", "dpo_pairs/", "lipo_lambda/"))]:
            assert packed_parts[part] == pytest.approx(parts[part], rel=1e-5, abs=1e-5), (name, part)


@pytest.mark.parametrize("loss_type", ["listmle", "lipo_lambda"])
def test_precomputed_reference_equals_on_the_fly(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs,
                                                 loss_type):  # fmt: skip
    dataset = Dataset.from_list(ranking_rows(hh_pairs, with_rewards=True))

    def build(precompute):
        return PROTrainer(
            model=tiny_model_path,
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
            args=make_config(tmp_path, loss_type=loss_type, precompute_ref_log_probs=precompute),
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    precomputed, on_the_fly = build(True), build(False)
    with torch.no_grad():
        expected = on_the_fly.compute_loss(on_the_fly.model, collate_all(on_the_fly)).item()
        got = precomputed.compute_loss(precomputed.model, collate_all(precomputed)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def count_loads(monkeypatch) -> list:
    import trl.trainer.dpo_trainer as dpo_module

    loads = []
    original = dpo_module.create_model_from_path
    monkeypatch.setattr(dpo_module, "create_model_from_path", lambda *a, **k: loads.append(a) or original(*a, **k))
    return loads


def test_reference_free_losses_never_load_a_reference(tmp_path, tiny_model_path, tokenizer, hh_pairs, monkeypatch):
    loads = count_loads(monkeypatch)
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type=["pro", "rrhf", "slic", "best_of_n_sft"]),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
    )
    assert len(loads) == 1  # the policy only
    assert trainer.ref_model is None and "ref_logps" not in trainer.train_dataset.column_names
    trainer.compute_loss(trainer.model, collate_all(trainer)).backward()


@pytest.mark.parametrize("loss_type", ["listmle", "lipo_lambda", "dpo_pairs"])
def test_reference_losses_use_the_initial_model_by_default(tmp_path, tiny_model_path, tokenizer, hh_pairs,
                                                           monkeypatch, loss_type):  # fmt: skip
    loads = count_loads(monkeypatch)
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type=loss_type),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, False)),
        processing_class=tokenizer,
    )
    assert len(loads) == 2 and trainer.ref_model is not None  # the policy and its reference copy
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, collate_all(trainer)).item()
    # At step 0 every s_i = 0: ListMLE costs sum_k log(n - k); LiPO's pairs each log 2 times Delta (rank labels,
    # tau by index); DPO pairs log 2
    if loss_type == "listmle":
        expected = sum(sum(math.log(n - k) for k in range(n - 1)) for n in [2, 4, 3]) / 3
    elif loss_type == "lipo_lambda":
        expected = (
            sum(naive_lipo([0.0] * n, naive_minmax([float(n - 1 - i) for i in range(n)])) for n in [2, 4, 3]) / 3
        )
    else:
        expected = math.log(2)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_reference_loss_with_lora_uses_the_adapter_switched_off(tmp_path, tiny_model_path, tokenizer, hh_pairs,
                                                                monkeypatch):  # fmt: skip
    from peft import LoraConfig

    loads = count_loads(monkeypatch)
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type="listmle", max_steps=2, learning_rate=1e-2),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert len(loads) == 1 and trainer.ref_model is None
    trainer.train()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, collate_all(trainer))
    # After training the adapter the scores beta * (logp - ref) are no longer all 0: the reference is the base model
    assert abs(last_metrics(trainer)["scores/rank_1"]) > 0


def short_dpo_rows(hh_pairs, tokenizer, count=3, max_tokens=60) -> list[dict]:
    rows = []
    for row in hh_pairs:
        lengths = [len(tokenizer(row["prompt"] + row[k])["input_ids"]) for k in ("chosen", "rejected")]
        if max(lengths) <= max_tokens:
            rows.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
        if len(rows) == count:
            return rows
    raise AssertionError("not enough short rows")


@pytest.mark.parametrize("loss_type", ["dpo_pairs", "listmle"])
def test_two_candidates_equal_dpo_trainer(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs,
                                          loss_type):  # fmt: skip
    """At n = 2, `dpo_pairs` (best_worst) and ListMLE are DPO's sigmoid loss: same loss and gradients as DPOTrainer."""
    dataset = Dataset.from_list(short_dpo_rows(hh_pairs, tokenizer))
    common = dict(beta=BETA, max_length=128, per_device_train_batch_size=3, per_device_eval_batch_size=3)
    pro = PROTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        # DPOTrainer's padded layout (the packed layouts equal it to float32 rounding, tested above)
        args=cpu_test_config(PROConfig, tmp_path / "pro", loss_type=loss_type, prefix_sharing=False, **common),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        args=cpu_test_config(DPOConfig, tmp_path / "dpo", **common),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    results = []
    for trainer in (pro, dpo):
        dataset_rows = trainer.train_dataset
        batch = trainer.data_collator([dataset_rows[i] for i in range(len(dataset_rows))])
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (pro_loss, pro_grads), (dpo_loss, dpo_grads) = results
    assert abs(pro_loss.item() - math.log(2)) > 1e-3  # the reference differs from the policy
    torch.testing.assert_close(pro_loss, dpo_loss, rtol=1e-5, atol=1e-6)
    assert pro_grads.keys() == dpo_grads.keys() and len(pro_grads) > 0
    for name in pro_grads:
        torch.testing.assert_close(pro_grads[name], dpo_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_model_card_cites_the_paper_of_each_loss(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type=["lipo_lambda", "rrhf", "best_of_n_sft"], loss_weights=[1.0, 0.5, 0.1]),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
    )
    trainer.create_model_card(model_name="listwise")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "LiPO-lambda + RRHF + best-of-n SFT (RAFT)" in card
    assert "2402.01878" in card  # the first loss's paper in the intro
    for key in ("liu2024lipo", "yuan2023rrhf", "dong2023raft"):
        assert key in card
    assert "song2024preference" not in card  # PRO's loss is not used


def test_bad_loss_options(tmp_path, tiny_model_path, tokenizer):
    rows = Dataset.from_list([{"prompt": "Hi", "completions": [" a", " b"]}])
    with pytest.raises(ValueError, match="unknown losses \\['ipo'\\]"):
        make_config(tmp_path, loss_type=["pro", "ipo"])
    with pytest.raises(ValueError, match="`loss_weights` must have the same length"):
        make_config(tmp_path, loss_type=["pro", "rrhf"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="pair_selection"):
        make_config(tmp_path, loss_type="dpo_pairs", pair_selection="best_second")
    with pytest.raises(ValueError, match="reference_normalized=True` changes the score of the `'pro'` loss only"):
        make_config(tmp_path, loss_type="listmle", reference_normalized=True)
    with pytest.raises(ValueError, match="precompute_ref_log_probs=True` needs .*reference-based `loss_type`"):
        make_config(tmp_path, loss_type=["rrhf", "slic"], precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="ref_model.*loss_type=\\['slic'\\]` is reference-free"):
        PROTrainer(
            model=tiny_model_path,
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
            args=make_config(tmp_path, loss_type="slic"),
            train_dataset=rows,
            processing_class=tokenizer,
        )


@pytest.mark.parametrize("loss_type", ["listmle", "lipo_lambda", "rrhf", "slic", "best_of_n_sft", "dpo_pairs"])
def test_each_loss_learns_the_training_rankings(tmp_path, tiny_model_path, tokenizer, hh_pairs, loss_type):
    """Learning, not just no crash: the loss falls and the ranking metric of the loss's own score rises."""
    rows = [
        {"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"], hh_pairs[200 + i]["rejected"]]}
        for i, r in enumerate(hh_pairs.select(range(12)))
    ]
    dataset = Dataset.from_list(rows)
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(
            tmp_path,
            loss_type=loss_type,
            num_train_epochs=5,
            per_device_train_batch_size=6,
            per_device_eval_batch_size=12,
            learning_rate=2e-3,
            lr_scheduler_type="constant",
            beta=1.0,
        ),
        train_dataset=dataset,
        eval_dataset=dataset,
        processing_class=tokenizer,
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"]
    if loss_type == "best_of_n_sft":  # trains the top candidate only: its likelihood rises
        assert after["eval_scores/rank_1"] > before["eval_scores/rank_1"]
    else:
        assert after["eval_ranking/kendall_tau"] > before["eval_ranking/kendall_tau"] + 0.2
