"""The losses added to the family (issue 26) and the loss table's fixes, through `PROTrainer` on tiny models and real
HH-RLHF rows, against independent computations (plain forwards and loops over Python floats)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from datasets import Dataset
from test_listwise_losses import (
    log_sigmoid,
    naive_approx_ndcg,
    naive_lipo_variants,
    naive_minmax,
    naive_neural_ndcg,
    naive_softmax_ce,
    naive_topk_listmle,
)
from test_listwise_trainer import (
    BETA,
    collate_all,
    independent_logps,
    last_metrics,
    make_config,
    ranking_rows,
    short_dpo_rows,
)
from tiny_models import cpu_test_config, sorted_ranking
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from trl_ranking import PROConfig, PROTrainer


# The tiny models and tokenizer with the 4,096-token vocabulary (conftest's fixtures), as in test_listwise_trainer.py
SMALL_VOCABULARY = True
NEW = ["listmle", "lipo_lambda", "lipo_softmax", "hinge", "neural_ndcg", "approx_ndcg", "simpo_listmle", "simpo_pairs",
       "best_of_n_sft"]  # fmt: skip
OPTIONS = dict(
    listmle_top_k=2,
    listmle_ties="keep",
    lipo_lambda_idcg=True,
    lipo_lambda_reduction="mean",
    neural_ndcg_temperature=0.5,
    approx_ndcg_alpha=2.0,
    simpo_gamma=0.3,
    pair_selection="sweet_spot",
    best_of_n_sft_pooling="token",
)


def sweet_spot_pair(psi):
    n = len(psi)
    mean = sum(psi) / n
    sigma = math.sqrt(sum((v - mean) ** 2 for v in psi) / n)
    rejected = min(range(n), key=lambda i: (abs(psi[i] - (mean - 2 * sigma)), i))
    return [(0, rejected)] if psi[0] > psi[rejected] else []


@pytest.mark.parametrize("with_rewards", [False, True])
def test_new_losses_match_independent_computation(
    tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs, with_rewards
):
    rows = ranking_rows(hh_pairs, with_rewards)
    trainer = PROTrainer(
        model=tiny_model_path,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),  # differs from the policy: s != 0
        args=make_config(tmp_path, loss_type=NEW, loss_weights=[1.0 + 0.25 * i for i in range(len(NEW))], **OPTIONS),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    batch = collate_all(trainer)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    metrics = last_metrics(trainer)

    parts: dict[str, list[float]] = {}
    nll_total, token_total = 0.0, 0
    for row in rows:
        completions, rewards = sorted_ranking(row)
        n = len(completions)
        policy = [independent_logps(trainer.model, tokenizer, row["prompt"], c) for c in completions]
        reference = [independent_logps(trainer.ref_model, tokenizer, row["prompt"], c)[0] for c in completions]
        sums, counts = [p[0] for p in policy], [p[1] for p in policy]
        psi = list(rewards) if rewards is not None else [float(n - 1 - i) for i in range(n)]
        gains = naive_minmax(psi)
        s = [BETA * (lp - lr) for lp, lr in zip(sums, reference, strict=True)]
        simpo = [BETA * lp / c for lp, c in zip(sums, counts, strict=True)]
        pairs = [(i, j) for i in range(n) for j in range(n) if psi[i] > psi[j]]
        sweet = sweet_spot_pair(psi)
        add = {
            "loss/listmle": naive_topk_listmle(s, top_k=2),
            "loss/lipo_lambda": naive_lipo_variants(s, gains, idcg=True, reduction="mean"),
            "loss/lipo_softmax": naive_softmax_ce(s, gains),
            "loss/hinge": sum(max(0.0, 1 - (s[i] - s[j])) for i, j in pairs),
            "loss/neural_ndcg": naive_neural_ndcg(s, gains, 0.5),
            "loss/approx_ndcg": naive_approx_ndcg(s, gains, 2.0),
            "loss/simpo_listmle": naive_topk_listmle(simpo, top_k=2, margin=0.3),
            "loss/simpo_pairs": (
                sum(-log_sigmoid(simpo[i] - simpo[j] - 0.3) for i, j in sweet) / len(sweet) if sweet else 0.0
            ),
        }
        for name, value in add.items():
            parts.setdefault(name, []).append(value)
        nll_total += -sums[0]
        token_total += counts[0]
    expected = {name: sum(values) / len(values) for name, values in parts.items()}
    expected["loss/best_of_n_sft"] = nll_total / token_total  # TRL's `sft`: the batch's tokens pooled
    for name, value in expected.items():
        # float32 scores: differences of log-probs near -10 carry ~1e-6 absolute error
        assert metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name
    weights = trainer.args.loss_weights
    assert loss == pytest.approx(sum(w * expected[f"loss/{n}"] for n, w in zip(NEW, weights, strict=True)), rel=1e-5)
    assert expected["loss/hinge"] > 0 and expected["loss/simpo_pairs"] > 0


def test_new_losses_train_a_step(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """Each new loss runs through `train()`: finite loss, a gradient, its metrics logged."""
    names = ["lipo_softmax", "hinge", "neural_ndcg", "approx_ndcg", "simpo_listmle", "simpo_pairs"]
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type=names, max_steps=1, learning_rate=1e-3, pair_selection="threshold"),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    output = trainer.train()
    assert math.isfinite(output.training_loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True))
    logged = trainer.state.log_history[0]
    assert {f"loss/{name}" for name in names} <= set(logged)


def test_hinge_at_two_candidates_equals_dpo_trainer_hinge(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer,
                                                          hh_pairs):  # fmt: skip
    """At n = 2 `"hinge"` is TRL's own `DPOTrainer(loss_type="hinge")`: same loss and gradients on the same scores."""
    dataset = Dataset.from_list(short_dpo_rows(hh_pairs, tokenizer))
    common = dict(beta=BETA, max_length=128, per_device_train_batch_size=3, per_device_eval_batch_size=3)
    pro = PROTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        args=cpu_test_config(PROConfig, tmp_path / "pro", loss_type="hinge", prefix_sharing=False, **common),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        args=cpu_test_config(DPOConfig, tmp_path / "dpo", loss_type="hinge", **common),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    results = []
    for trainer in (pro, dpo):
        rows = trainer.train_dataset
        batch = trainer.data_collator([rows[i] for i in range(len(rows))])
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (pro_loss, pro_grads), (dpo_loss, dpo_grads) = results
    assert abs(pro_loss.item() - 1.0) > 1e-3  # the reference differs from the policy
    torch.testing.assert_close(pro_loss, dpo_loss, rtol=1e-5, atol=1e-6)
    assert pro_grads.keys() == dpo_grads.keys() and len(pro_grads) > 0
    for name in pro_grads:
        torch.testing.assert_close(pro_grads[name], dpo_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_top1_accuracy_at_step_zero_is_chance_not_perfect(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """With the reference a copy of the policy every score is 0 at step 0: each ranking of n counts 1/n."""
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type="listmle"),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, False)),
        processing_class=tokenizer,
    )
    with torch.no_grad():
        trainer.compute_loss(trainer.model, collate_all(trainer))
    assert last_metrics(trainer)["ranking/top1_accuracy"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 3) / 3, rel=1e-6)


def test_listmle_shuffles_tied_answers_per_step(tmp_path, tiny_model_path, tiny_qwen2_path, tokenizer, hh_pairs):
    """`listmle_ties="shuffle"`: the same step draws the same order (every layout, every rerun), other steps others."""
    trainer = PROTrainer(
        model=tiny_model_path,
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_qwen2_path),
        args=make_config(tmp_path, loss_type="listmle"),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),  # two rankings with tied rewards
        processing_class=tokenizer,
    )
    batch = collate_all(trainer)
    losses = {}
    with torch.no_grad():
        for step in (0, 0, 1, 2, 3, 4, 5):
            trainer.state.global_step = step
            value = trainer.compute_loss(trainer.model, batch).item()
            assert losses.setdefault(step, value) == value
    assert len(set(losses.values())) > 1


def test_degenerate_warning_says_what_each_loss_does(tmp_path, tiny_model_path, tokenizer, caplog):
    rows = Dataset.from_list(
        [
            {"prompt": "Hi", "completions": [" a", " b", " c"], "rewards": [1.0, 1.0, 1.0]},
            {"prompt": "Yo", "completions": [" x", " x"]},
            {"prompt": "Ok", "completions": [" d", " e"], "rewards": [1.0, 0.0]},
        ]
    )
    with caplog.at_level(logging.WARNING, logger="trl_ranking.pro.trainer"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, loss_type=["pro", "listmle", "dpo_pairs", "slic"]),
            train_dataset=rows.select([0, 2]),
            processing_class=tokenizer,
        )
    text = caplog.text
    assert "1 of 2 rankings of the train dataset are degenerate: 1 with all rewards tied" in text
    assert "pro: with the dynamic temperature" in text and "only the SFT term" in text
    assert "listmle: the tied answers are shuffled at each step" in text
    assert "dpo_pairs: no pair: contributes 0, no gradient" in text
    assert "slic: no pair and so no regulariser" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_ranking.pro.trainer"):
        PROTrainer(
            model=tiny_model_path,
            args=make_config(tmp_path, loss_type="rrhf"),
            train_dataset=Dataset.from_list([{"prompt": "Yo", "completions": [" x", " x"]}] * 2),
            processing_class=tokenizer,
        )
    assert "2 of 2 rankings of the train dataset are degenerate: 2 with all candidates identical" in caplog.text


def test_preference_rows_whose_scores_reverse_their_labels_are_counted(tmp_path, tiny_model_path, tokenizer, caplog):
    rows = Dataset.from_list(
        [
            {"prompt": "Hi", "chosen": " yes", "rejected": " no", "score_chosen": 0.2, "score_rejected": 0.9},
            {"prompt": "Yo", "chosen": " a", "rejected": " b", "score_chosen": 1.0, "score_rejected": 0.0},
            {"prompt": "Ok", "chosen": " c", "rejected": " d", "score_chosen": -1.0, "score_rejected": 3.0},
        ]
    )
    with caplog.at_level(logging.WARNING, logger="trl_ranking.pro.trainer"):
        trainer = PROTrainer(
            model=tiny_model_path, args=make_config(tmp_path), train_dataset=rows, processing_class=tokenizer
        )
    assert "2 of 3 preference rows of the train dataset have `score_rejected > score_chosen`" in caplog.text
    # The rule: ranked by the scores, so the 'rejected' answer of those rows is first
    assert trainer.train_dataset[0]["rewards"] == pytest.approx([0.9, 0.2])


def test_model_card_tags_the_run_by_its_losses(tmp_path, tiny_model_path, tokenizer, hh_pairs):
    trainer = PROTrainer(
        model=tiny_model_path,
        args=make_config(tmp_path, loss_type="lipo_lambda"),
        train_dataset=Dataset.from_list(ranking_rows(hh_pairs, True)),
        processing_class=tokenizer,
    )
    trainer.create_model_card(model_name="lipo")
    metadata = (tmp_path / "out" / "README.md").read_text().split("---")[1]
    assert "- lipo" in metadata and "- trl-ranking" in metadata
    assert "- pro\n" not in metadata  # a pure LiPO run is not tagged PRO
    assert trainer._tag_names == ["trl", "trl-ranking", "lipo"] and PROTrainer._tag_names[-1] == "pro"
