"""DOVETrainer: the joint loss against an independent computation, DOVE == DPO on shared prompts, conversational
rows, precomputed reference log-probs, the `joint=False` ablation, and bad input.

The independent computations tokenize the raw text themselves and score it with a plain forward
(`model(input_ids).logits` + `log_softmax`), not with the trainer's tokenization, collator or fused LM head.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_models import make_small_vocab_causal_lm
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from trl_ranking.dove import DOVEConfig, DOVETrainer


# Trainer mechanics and losses, not GPT-2's tokenization: conftest's fixtures give the tiny models and tokenizer
# with the 4,096-token vocabulary, whose LM head costs a twelfth of GPT-2's
SMALL_VOCABULARY = True


DOVE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "dove" / "anthropic_helpful"
TEMPLATE = "### Instructions: {}\n\n### Response:"  # the DOVE paper's instruction template (its model outputs)
BETA = 0.1


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def num_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


@pytest.fixture(scope="module")
def sft_rows(tokenizer) -> list[dict]:
    """Real short instruction/response rows (DOVE's Anthropic-helpful val_sft), templated."""
    rows = []
    for row in read_jsonl(DOVE_DATA / "val_sft.jsonl"):
        prompt, response = TEMPLATE.format(row["instruction"]), " " + row["response"].strip()
        if num_tokens(tokenizer, prompt + response) <= 60:
            rows.append({"prompt": prompt, "response": response})
    return rows


@pytest.fixture(scope="module")
def joint_rows(sft_rows) -> list[dict]:
    """Four joint pairs (different instructions) built from consecutive real rows."""
    rows = []
    for a, b in zip(sft_rows[0:8:2], sft_rows[1:8:2]):
        rows.append(
            {
                "chosen_prompt": a["prompt"],
                "chosen": a["response"],
                "rejected_prompt": b["prompt"],
                "rejected": b["response"],
            }
        )
    return rows


@pytest.fixture(scope="module")
def conditional_rows(tokenizer) -> list[dict]:
    """Four real conditional pairs (shared instruction) from DOVE's val_conditional_pref, as DPO rows."""
    rows = []
    for row in read_jsonl(DOVE_DATA / "val_conditional_pref.jsonl"):
        assert row["i_chosen"] == row["i_reject"]
        prompt = TEMPLATE.format(row["i_chosen"])
        chosen, rejected = " " + row["r_chosen"].strip(), " " + row["r_reject"].strip()
        if max(num_tokens(tokenizer, prompt + chosen), num_tokens(tokenizer, prompt + rejected)) <= 70:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(rows) == 4:
            return rows
    raise AssertionError("not enough short conditional rows")


@pytest.fixture(scope="module")
def ref_model_path(tmp_path_factory) -> str:
    """A second tiny model with other random weights: a reference that differs from the policy."""
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-llama-ref"), seed=1)


def load(path: str):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def make_args(cls, tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        bf16=False,
        beta=BETA,
        max_length=128,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        save_strategy="no",
        disable_tqdm=True,
    )
    defaults.update(kwargs)
    return cls(**defaults)


def whole_batch(trainer):
    dataset = trainer.train_dataset
    return trainer.data_collator([dataset[i] for i in range(len(dataset))])


def last_metric(trainer, name: str) -> float:
    return trainer._metrics["eval"][name][-1]


# ---------------------------------------------------------------------------------------------------------------------
# Independent computation
# ---------------------------------------------------------------------------------------------------------------------
def seq_logp(model, ids: list[int], first_scored: int) -> torch.Tensor:
    """Sum of log p(ids[t] | ids[:t]) for t >= max(first_scored, 1), with a plain forward and log_softmax."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()
    logps = logits[0, :-1].log_softmax(-1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)
    return logps[max(first_scored, 1) - 1 :].sum()


def side_ids(tokenizer, prompt, response) -> tuple[list[int], int]:
    """Token ids of instruction + response (+EOS, or through the chat template) and the instruction's length."""
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt + response, tokenize=False)
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    else:
        text, prompt_text = prompt + response + tokenizer.eos_token, prompt
    ids, prompt_len = tokenizer(text)["input_ids"], num_tokens(tokenizer, prompt_text)
    assert ids[:prompt_len] == tokenizer(prompt_text)["input_ids"]  # the rows used here split cleanly
    return ids, prompt_len


def expected_dove(tokenizer, policy, ref, rows, joint=True, bos=None) -> dict[str, torch.Tensor]:
    """Eq. 2 by hand: -logsigmoid(beta * ([log p(I_w,R_w) - ref] - [log p(I_l,R_l) - ref])), mean over pairs.

    With `bos`, a standard-text row that does not start with it gets it in front, as the official DOVE code does, so
    that the first instruction token is scored.
    """
    out = {key: [] for key in ("chosen", "rejected", "ref_chosen", "ref_rejected", "instr_chosen", "instr_rejected")}
    for row in rows:
        for side in ("chosen", "rejected"):
            prompt = row.get(f"{side}_prompt") or row["prompt"]
            ids, prompt_len = side_ids(tokenizer, prompt, row[side])
            if bos is not None and isinstance(prompt, str) and ids[0] != bos:
                ids, prompt_len = [bos, *ids], prompt_len + 1
            first = 1 if joint else prompt_len
            out[side].append(seq_logp(policy, ids, first))
            out[f"ref_{side}"].append(seq_logp(ref, ids, first))
            out[f"instr_{side}"].append(seq_logp(policy, ids[:prompt_len], 1))
    out = {key: torch.stack(value) for key, value in out.items()}
    margin = (out["chosen"] - out["ref_chosen"]) - (out["rejected"] - out["ref_rejected"])
    out["loss"] = -F.logsigmoid(BETA * margin).mean()
    out["margin"] = BETA * margin.mean()
    return out


@pytest.mark.parametrize(
    ("joint", "prepend_bos"),
    [(True, True), (True, False), (False, True)],
    ids=["joint", "joint-without-bos", "conditional-ablation"],
)
def test_loss_matches_independent_computation(tmp_path, tokenizer, tiny_model_path, ref_model_path, joint_rows,
                                              conditional_rows, joint, prepend_bos):  # fmt: skip
    """Joint and conditional real rows mixed in one dataset; an explicit reference with other weights.

    The tokenizer (GPT-2's BPE) adds no BOS: with `prepend_bos` (the default) the joint rows start with its BOS token, as the
    official code builds them, so the first instruction token is scored; without it, scoring starts at the second.
    """
    rows = [{"prompt": None, **row} for row in joint_rows[:2]] + [
        {"chosen_prompt": None, "rejected_prompt": None, **row} for row in conditional_rows[:2]
    ]
    trainer = DOVETrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DOVEConfig, tmp_path, joint=joint, prepend_bos=prepend_bos),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    first = trainer.train_dataset[0]
    assert (first["chosen_prompt_ids"][0] == tokenizer.bos_token_id) == (joint and prepend_bos)
    loss = trainer.compute_loss(trainer.model, whole_batch(trainer))
    bos = tokenizer.bos_token_id if joint and prepend_bos else None
    expected = expected_dove(tokenizer, load(tiny_model_path), load(ref_model_path), rows, joint=joint, bos=bos)
    torch.testing.assert_close(loss.detach(), expected["loss"], rtol=1e-5, atol=1e-5)
    assert abs(last_metric(trainer, "rewards/margins") - expected["margin"].item()) < 1e-4
    assert abs(last_metric(trainer, "logps/chosen") - expected["chosen"].mean().item()) < 1e-3
    assert abs(last_metric(trainer, "logps/rejected") - expected["rejected"].mean().item()) < 1e-3
    assert last_metric(trainer, "joint/different_instructions") == 0.5
    if joint:
        # The instruction term log p(I) of each side, from the same policy forward
        instr_chosen = last_metric(trainer, "joint/logps_chosen_instruction")
        assert abs(instr_chosen - expected["instr_chosen"].mean().item()) < 1e-3
        instr_rejected = last_metric(trainer, "joint/logps_rejected_instruction")
        assert abs(instr_rejected - expected["instr_rejected"].mean().item()) < 1e-3
    else:
        assert "joint/logps_chosen_instruction" not in trainer._metrics["eval"]


def test_conversational_rows(tmp_path, chat_tokenizer, tiny_model_path, ref_model_path, joint_rows):
    """Each side's own instruction goes through the chat template; the joint loss matches the hand computation."""

    def messages(role, text):
        return [{"role": role, "content": text.removeprefix("### Instructions: ").removesuffix("\n\n### Response:")}]

    rows = [
        {
            "chosen_prompt": messages("user", row["chosen_prompt"]),
            "chosen": messages("assistant", row["chosen"].strip()),
            "rejected_prompt": messages("user", row["rejected_prompt"]),
            "rejected": messages("assistant", row["rejected"].strip()),
        }
        for row in joint_rows
    ]
    trainer = DOVETrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DOVEConfig, tmp_path),
        train_dataset=Dataset.from_list(rows),
        processing_class=chat_tokenizer,
    )
    first = trainer.train_dataset[0]
    assert chat_tokenizer.decode(first["rejected_prompt_ids"]) == chat_tokenizer.apply_chat_template(
        rows[0]["rejected_prompt"], tokenize=False, add_generation_prompt=True
    )
    assert chat_tokenizer.decode(first["chosen_ids"]).startswith(rows[0]["chosen"][0]["content"])
    loss = trainer.compute_loss(trainer.model, whole_batch(trainer))
    expected = expected_dove(chat_tokenizer, load(tiny_model_path), load(ref_model_path), rows)
    torch.testing.assert_close(loss.detach(), expected["loss"], rtol=1e-5, atol=1e-5)
    assert last_metric(trainer, "joint/different_instructions") == 1.0


def _loss_and_grads(trainer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, whole_batch(trainer))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge"])
def test_dove_equals_dpo_on_shared_prompts(tmp_path, tokenizer, tiny_model_path, ref_model_path, conditional_rows,
                                           loss_type):  # fmt: skip
    """The paper's Appendix D: with I_w = I_l the log p(I) terms cancel in (policy - reference) and DOVE is DPO.

    The reference differs from the policy, so the instruction terms are nonzero on each side and only cancel in the
    difference of the log-ratios.
    """
    dataset = Dataset.from_list(conditional_rows)
    dove = DOVETrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        # The same tokens as DPO's (no BOS prepended), so that the equivalence is exact
        args=make_args(DOVEConfig, tmp_path / "dove", loss_type=loss_type, prepend_bos=False),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    dpo = DPOTrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DPOConfig, tmp_path / "dpo", loss_type=loss_type),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    dove_loss, dove_grads = _loss_and_grads(dove)
    dpo_loss, dpo_grads = _loss_and_grads(dpo)
    assert dove_loss.item() > 0.0
    torch.testing.assert_close(dove_loss, dpo_loss, rtol=1e-5, atol=1e-6)
    assert dove_grads.keys() == dpo_grads.keys() and len(dove_grads) > 0
    for name in dove_grads:
        torch.testing.assert_close(dove_grads[name], dpo_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert abs(last_metric(dove, "rewards/margins") - last_metric(dpo, "rewards/margins")) < 1e-5
    # ...while the joint scores themselves include the instruction and differ from DPO's conditional ones
    assert last_metric(dove, "logps/chosen") < last_metric(dpo, "logps/chosen") - 1.0
    assert last_metric(dove, "joint/different_instructions") == 0.0


def test_conditional_ablation_equals_dpo(tmp_path, tokenizer, tiny_model_path, ref_model_path, conditional_rows):
    """`joint=False` on a DPO dataset (implicit prompt here) is DPO: same tokens, same loss, same log-probs."""
    implicit = Dataset.from_list(
        [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in conditional_rows]
    )
    dove = DOVETrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DOVEConfig, tmp_path / "dove", joint=False),
        train_dataset=implicit,
        processing_class=tokenizer,
    )
    dpo = DPOTrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DPOConfig, tmp_path / "dpo"),
        train_dataset=implicit,
        processing_class=tokenizer,
    )
    for i in range(len(implicit)):
        assert dove.train_dataset[i]["chosen_prompt_ids"] == dpo.train_dataset[i]["prompt_ids"]
        assert dove.train_dataset[i]["rejected_ids"] == dpo.train_dataset[i]["rejected_ids"]
    dove_loss = dove.compute_loss(dove.model, whole_batch(dove))
    dpo_loss = dpo.compute_loss(dpo.model, whole_batch(dpo))
    torch.testing.assert_close(dove_loss, dpo_loss, rtol=1e-6, atol=1e-7)
    for name in ("logps/chosen", "logps/rejected", "rewards/margins"):
        assert last_metric(dove, name) == pytest.approx(last_metric(dpo, name), abs=1e-5)


def test_precomputed_reference_equals_on_the_fly(tmp_path, tokenizer, tiny_model_path, ref_model_path, joint_rows):
    rows = Dataset.from_list(joint_rows)
    on_the_fly = DOVETrainer(
        model=load(tiny_model_path),
        ref_model=load(ref_model_path),
        args=make_args(DOVEConfig, tmp_path / "otf"),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    batch = whole_batch(on_the_fly)
    ref_chosen, ref_rejected = on_the_fly.compute_ref_log_probs(on_the_fly.ref_model, batch)
    expected_loss = on_the_fly.compute_loss(on_the_fly.model, batch)

    precomputed = {}
    for joint in (True, False):  # same raw dataset: the two runs must not share the reference cache
        trainer = DOVETrainer(
            model=load(tiny_model_path),
            ref_model=load(ref_model_path),
            args=make_args(
                DOVEConfig, tmp_path / f"pre-{joint}", joint=joint, precompute_ref_log_probs=True,
                precompute_ref_batch_size=3,
            ),
            train_dataset=rows,
            processing_class=tokenizer,
        )  # fmt: skip
        precomputed[joint] = trainer
    pre = precomputed[True]
    torch.testing.assert_close(torch.tensor(pre.train_dataset["ref_chosen_logps"]), ref_chosen, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        torch.tensor(pre.train_dataset["ref_rejected_logps"]), ref_rejected, rtol=1e-5, atol=1e-4
    )
    pre_batch = whole_batch(pre)
    assert "ref_chosen_logps" in pre_batch
    torch.testing.assert_close(pre.compute_loss(pre.model, pre_batch), expected_loss, rtol=1e-5, atol=1e-6)
    # The conditional ablation's reference log-probs cover the response only: larger (less negative)
    conditional = torch.tensor(precomputed[False].train_dataset["ref_chosen_logps"])
    assert (conditional > ref_chosen + 1.0).all()


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bare_trainer(tmp_path_factory, tokenizer, tiny_model_path):
    """A trainer whose `_prepare_dataset` the bad-input tests call directly."""
    good = [{"chosen_prompt": "Name a color.", "chosen": " Blue.", "rejected_prompt": "Add 2+2.", "rejected": " 5."}]
    return DOVETrainer(
        model=load(tiny_model_path),
        args=make_args(DOVEConfig, tmp_path_factory.mktemp("bare"), max_length=64),
        train_dataset=Dataset.from_list(good),
        processing_class=tokenizer,
    )


GOOD = {"chosen_prompt": "Name a color.", "chosen": " Blue.", "rejected_prompt": "Add 2+2.", "rejected": " 5."}
USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"chosen_prompt": "  "}, "Row 1, field 'chosen_prompt': the instruction is empty"),
        ({"rejected": ""}, "Row 1, field 'rejected': the response is empty"),
        ({"rejected_prompt": None}, "Row 1, field 'rejected_prompt': missing"),
        ({"chosen": None}, "Row 1, field 'chosen': missing"),
        (
            {"chosen_prompt": "word " * 80},
            r"Row 1, field 'chosen_prompt': the instruction has \d+ tokens.*max_length=64",
        ),
        (
            {"chosen_prompt": None, "rejected_prompt": None, "prompt": " "},
            "Row 1, field 'prompt': the instruction is empty",
        ),
        (
            {"chosen_prompt": None, "rejected_prompt": None, "prompt": "word " * 80},
            r"Row 1, field 'prompt': the instruction has \d+ tokens",
        ),
    ],
    ids=[
        "empty-instruction",
        "empty-response",
        "missing-prompt",
        "missing-response",
        "too-long",
        "shared",
        "shared-long",
    ],
)
def test_bad_rows_raise_naming_row_and_field(bare_trainer, tokenizer, bad, match):
    rows = [{"prompt": None, **GOOD}, {"prompt": None, **GOOD, **bad}]
    with pytest.raises(ValueError, match=match):
        bare_trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, bare_trainer.args, "train")


def test_mixed_conversational_and_standard_raises(bare_trainer, tokenizer):
    row = {**GOOD, "chosen_prompt": USER, "rejected_prompt": USER}  # conversational prompts, standard responses
    with pytest.raises(ValueError, match="Row 0, field 'chosen': the instruction and the response mix conversational"):
        bare_trainer._prepare_dataset(Dataset.from_list([row]), tokenizer, bare_trainer.args, "train")


def test_bad_dataset_and_config(tmp_path, bare_trainer, tokenizer, tiny_model_path):
    with pytest.raises(ValueError, match="missing columns"):
        bare_trainer._prepare_dataset(
            Dataset.from_list([{"prompt": "a", "chosen": " b"}]), tokenizer, bare_trainer.args, "train"
        )
    with pytest.raises(ValueError, match="max_prompt_length"):
        make_args(DOVEConfig, tmp_path, max_length=64, max_prompt_length=64)
    with pytest.raises(TypeError, match="DOVEConfig"):
        DOVETrainer(
            model=tiny_model_path, args=make_args(DPOConfig, tmp_path), train_dataset=Dataset.from_list([GOOD])
        )
    # Raised from the constructor too, not dropped as DPO drops prompts that fill `max_length`
    long_row = {**GOOD, "rejected_prompt": "word " * 80}
    with pytest.raises(ValueError, match="Row 0, field 'rejected_prompt'"):
        DOVETrainer(
            model=tiny_model_path,
            args=make_args(DOVEConfig, tmp_path, max_length=64),
            train_dataset=Dataset.from_list([long_row]),
            processing_class=tokenizer,
        )


@pytest.mark.parametrize(
    "row, match",
    [
        # A PRO ranking row: it used to fail deep in the stack or train as something else
        (
            {"prompt": "Q:", "completions": [" a", " b"], "rewards": [1.0, 0.0]},
            r"Row 0, field 'completions': a ranking of completions is the format of `PROTrainer`",
        ),
        ({**GOOD, "chosen": 7}, r"Row 0, field 'chosen': expected a string .* got int"),
        ({**GOOD, "rejected_prompt": 3}, r"Row 0, field 'rejected_prompt': expected a string .* got int"),
        (
            {
                "prompt": [{"role": "user"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            r"Row 0, field 'prompt\[0\]': the message has no 'content'",
        ),
        (
            {
                "prompt": [{"role": "human", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            r"Row 0, field 'prompt\[0\]': the role 'human' is not allowed",
        ),
        (
            {
                "prompt": USER,
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "b"}],
            },
            r"Row 0, field 'rejected\[0\]': the role 'user' is not allowed for a completion's messages",
        ),
    ],
    ids=["pro-row", "int-response", "int-instruction", "no-content", "unknown-role", "user-completion"],
)
def test_wrong_types_roles_and_formats_are_named(bare_trainer, tokenizer, row, match):
    with pytest.raises(ValueError, match=match):
        bare_trainer._prepare_dataset(Dataset.from_list([row]), tokenizer, bare_trainer.args, "train")


def test_empty_datasets_are_named(tmp_path, bare_trainer, tokenizer, tiny_model_path):
    from datasets import IterableDataset

    def nothing():
        yield from []

    for empty in (Dataset.from_dict({"chosen": [], "rejected": []}), IterableDataset.from_generator(nothing)):
        with pytest.raises(ValueError, match="The train dataset is empty"):
            DOVETrainer(
                model=tiny_model_path,
                args=make_args(DOVEConfig, tmp_path, max_length=64, max_steps=1),
                train_dataset=empty,
                processing_class=tokenizer,
            )
    with pytest.raises(ValueError, match="The eval dataset is empty"):
        bare_trainer._prepare_dataset(
            Dataset.from_dict({"chosen": [], "rejected": []}), tokenizer, bare_trainer.args, "eval"
        )


@pytest.mark.parametrize("option", ["beta", "label_smoothing", "learning_rate"])
def test_non_finite_config_floats_are_rejected(tmp_path, option):
    with pytest.raises(ValueError, match=rf"`{option}` must be a finite number, got nan"):
        make_args(DOVEConfig, tmp_path, **{option: float("nan")})


def test_truncated_sides_and_identical_pairs_are_counted(bare_trainer, tokenizer, caplog):
    long = " word" * 80
    rows = [
        {**GOOD, "chosen": long},  # cut by the collator at max_length=64: its EOS is lost
        {**GOOD, "rejected_prompt": GOOD["chosen_prompt"], "rejected": GOOD["chosen"]},  # identical sides
        GOOD,
    ]
    with caplog.at_level("WARNING", logger="trl_ranking.dove.trainer"):
        bare_trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, bare_trainer.args, "train")
    assert "1 of 6 sides (instruction + response) of the train dataset are longer than `max_length=64`" in caplog.text
    assert "the end of the response and its EOS token are not trained" in caplog.text
    assert "1 of 3 pairs of the train dataset have identical chosen and rejected sides" in caplog.text


def test_max_prompt_length_left_truncates(bare_trainer, tokenizer):
    args = make_args(DOVEConfig, bare_trainer.args.output_dir, max_length=64, max_prompt_length=16)
    long_row = {**GOOD, "chosen_prompt": "word " * 80 + "Name a color."}
    dataset = bare_trainer._prepare_dataset(Dataset.from_list([long_row]), tokenizer, args, "train")
    row = dataset[0]
    assert len(row["chosen_prompt_ids"]) == 16
    assert tokenizer.decode(row["chosen_prompt_ids"]).endswith("Name a color.")
    # `prepend_bos` (the default) puts BOS first, and left-truncation keeps it there
    bos = tokenizer.bos_token_id
    assert (
        row["chosen_prompt_ids"][0] == bos
        and row["chosen_prompt_ids"][1:] == tokenizer(long_row["chosen_prompt"])["input_ids"][-15:]
    )
    assert row["rejected_prompt_ids"] == [bos, *tokenizer("Add 2+2.")["input_ids"]]
    assert row["prompt_truncated"] == 1


def test_reference_log_ratio_is_zero_at_start(tmp_path, tokenizer, tiny_model_path, joint_rows):
    """Without `ref_model` the reference is the initial policy (DPO's copy): every reward is 0, the loss log 2."""
    trainer = DOVETrainer(
        model=tiny_model_path,
        args=make_args(DOVEConfig, tmp_path),
        train_dataset=Dataset.from_list(joint_rows),
        processing_class=tokenizer,
    )
    loss = trainer.compute_loss(trainer.model, whole_batch(trainer))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
