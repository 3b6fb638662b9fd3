"""The TRL / transformers surface trl-ranking relies on, checked against the installed versions.

`CONTRACT` lists every `DPOTrainer`/`Trainer` method the trainers override and every private (or undocumented)
TRL/transformers name the package reads or calls, with the parameters it passes. A TRL or transformers upgrade that
renames, removes or re-signs one of them fails here, in one place, instead of deep inside a training run.
`docs/trl-contract.md` explains each entry (why we use it, what breaks if it changes); the two are kept in step by
`test_every_contract_name_is_documented`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import inspect
import re
from pathlib import Path
from typing import NamedTuple

import pytest
from datasets import Dataset
from tiny_models import cpu_test_config
from trl import DPOTrainer

from trl_ranking import DOVETrainer, PROConfig, PROTrainer
from trl_ranking.model_card import TRL_SENTENCE, TRL_VERSION_LINE, ModelCardMixin
from trl_ranking.trainer_utils import DPOTrainerFixesMixin


DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "trl-contract.md"


class Entry(NamedTuple):
    """One name of the contract.

    `kind`: `callable` (a function or method; `params` are the parameters we pass, by name or position, and must be
    named parameters of the installed signature), `attribute` (any object; `params` unused), `instance` (an attribute
    that the class, or a base class, assigns as `self.<attr> = ...` in its source: `name` is `module.Class@attr`),
    `field` (a dataclass field of a config), `template` (a text the file, relative to the package, must contain:
    `name` is `package:path`, `params` the texts).
    """

    name: str
    kind: str = "callable"
    params: tuple[str, ...] = ()


# fmt: off
CONTRACT: list[Entry] = [
    # DPOTrainer / Trainer methods the trainers (or DPOTrainerFixesMixin) override; params: the parent's signature
    # that the override keeps and calls `super()` with
    Entry("trl.DPOTrainer.__init__", params=("model", "ref_model", "args", "data_collator", "train_dataset",
                                             "eval_dataset", "processing_class", "compute_metrics", "callbacks",
                                             "optimizers", "peft_config")),
    Entry("trl.DPOTrainer._prepare_dataset", params=("dataset", "processing_class", "args", "dataset_name")),
    Entry("trl.DPOTrainer._set_signature_columns_if_needed"),
    Entry("trl.DPOTrainer._precompute_ref_logps", params=("dataset", "name", "batch_size")),
    Entry("trl.DPOTrainer.compute_ref_log_probs", params=("model", "inputs")),
    Entry("trl.DPOTrainer._compute_loss", params=("model", "inputs", "return_outputs")),
    Entry("trl.DPOTrainer.log", params=("logs", "start_time")),
    Entry("trl.DPOTrainer.prediction_step", params=("model", "inputs", "prediction_loss_only", "ignore_keys")),
    Entry("trl.DPOTrainer._save_checkpoint", params=("model", "trial")),
    Entry("trl.DPOTrainer.create_model_card", params=("model_name", "dataset_name", "tags")),
    Entry("transformers.Trainer.training_step", params=("model", "inputs", "num_items_in_batch")),
    Entry("transformers.Trainer.train", params=("resume_from_checkpoint",)),
    Entry("transformers.Trainer.get_train_dataloader"),
    Entry("transformers.Trainer._get_grad_norm", params=("model", "grad_norm")),
    # Other private methods we call
    Entry("transformers.Trainer._get_output_dir", params=("trial",)),
    # Attributes DPOTrainer.__init__ (or Trainer's) sets and we read or write
    Entry("trl.DPOTrainer@_metrics", kind="instance"),
    Entry("trl.DPOTrainer@_tokenizer", kind="instance"),
    Entry("trl.DPOTrainer@_signature_columns", kind="instance"),
    Entry("trl.DPOTrainer@_precompute_model_hash", kind="instance"),
    Entry("trl.DPOTrainer@_precompute_engine", kind="instance"),
    Entry("trl.DPOTrainer@_total_train_tokens", kind="instance"),
    Entry("trl.DPOTrainer@_tp_size", kind="instance"),
    Entry("trl.DPOTrainer@precompute_ref_logps", kind="instance"),
    Entry("trl.DPOTrainer@ref_model", kind="instance"),
    Entry("trl.DPOTrainer@aux_loss_enabled", kind="instance"),
    Entry("transformers.Trainer@_train_batch_size", kind="instance"),
    # Model card: the class attributes `create_model_card` reads, and the template text trl-ranking adds its line to
    Entry("trl.DPOTrainer._tag_names", kind="attribute"),
    Entry("trl.DPOTrainer._name", kind="attribute"),
    Entry("trl.DPOTrainer._paper", kind="attribute"),
    Entry("trl:templates/lm_model_card.md", kind="template",
          params=(TRL_SENTENCE, TRL_VERSION_LINE + "{{ trl_version }}")),
    # DPOConfig fields set around `DPOTrainer.__init__` (`overridden_config`) or read by the trainers
    Entry("trl.DPOConfig.padding_free", kind="field"),
    Entry("trl.DPOConfig.precompute_ref_log_probs", kind="field"),
    Entry("trl.DPOConfig.precompute_ref_batch_size", kind="field"),
    Entry("trl.DPOConfig.loss_type", kind="field"),
    Entry("trl.DPOConfig.loss_weights", kind="field"),
    Entry("trl.DPOConfig.max_length", kind="field"),
    Entry("trl.DPOConfig.truncation_mode", kind="field"),
    Entry("trl.DPOConfig.pad_token", kind="field"),
    Entry("trl.DPOConfig.pad_to_multiple_of", kind="field"),
    Entry("trl.DPOConfig.dataset_num_proc", kind="field"),
    Entry("trl.DPOConfig.model_init_kwargs", kind="field"),
    # Private or internal TRL functions
    Entry("trl.data_utils._tokenize", params=("processing_class", "input")),
    Entry("trl.data_utils.common_prefix_length", params=("ids", "other_ids")),
    Entry("trl.data_utils.is_conversational", params=("example",)),
    Entry("trl.data_utils.extract_prompt", params=("example",)),
    Entry("trl.trainer.utils.pad", params=("tensors", "padding_value", "padding_side")),
    Entry("trl.trainer.utils.get_config_model_id", params=("config",)),
    Entry("trl.trainer.utils.global_then_local_main_first"),
    Entry("trl.trainer.utils.use_adapter", params=("model", "adapter_name")),
    Entry("trl.trainer.utils.create_model_from_path", params=("model_id",)),
    Entry("trl.trainer.utils.add_fused_lm_head", params=("model",)),
    Entry("trl.trainer.utils.FusedCausalLMOutput", kind="attribute"),
    Entry("trl.models.utils.disable_gradient_checkpointing", params=("model", "gradient_checkpointing_kwargs")),
    Entry("trl.models.utils.unwrap_model_for_generation", params=("model", "accelerator")),
    Entry("trl.models.prepare_deepspeed", params=("model", "accelerator")),
    Entry("trl.cli.accelerate_config.resolve_accelerate_config_argument", params=("launch_args",)),
    # transformers internals
    Entry("transformers.trainer.TRAINER_STATE_NAME", kind="attribute"),
    Entry("transformers.trainer_utils.PREFIX_CHECKPOINT_DIR", kind="attribute"),
    Entry("transformers.trainer_utils.get_last_checkpoint", params=("folder",)),
    Entry("transformers.integrations.sdpa_attention.sdpa_attention_forward",
          params=("module", "query", "key", "value", "attention_mask")),
    Entry("transformers.masking_utils.sdpa_mask", kind="attribute"),
    Entry("transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS.register", params=("key", "value")),
    Entry("transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS.register", params=("key", "value")),
]
# fmt: on


def resolve(dotted: str):
    """The object named `package.module.Object.attr`: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)  # AttributeError: the name is gone
        return obj
    raise ImportError(f"no module of {dotted!r} can be imported")


def _assigns(cls: type, attr: str) -> bool:
    pattern = re.compile(rf"self\.{re.escape(attr)}\s*(:[^=\n]*)?=[^=]")
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            if pattern.search(inspect.getsource(klass)):
                return True
        except (OSError, TypeError):
            continue
    return False


def contract_problems(entry: Entry) -> list[str]:
    """What is wrong with `entry` in the installed TRL/transformers (an empty list when it holds)."""
    try:
        if entry.kind == "template":
            package, path = entry.name.split(":", 1)
            text = importlib.resources.files(package).joinpath(path).read_text(encoding="utf-8")
            return [f"{entry.name}: no longer contains {piece!r}" for piece in entry.params if piece not in text]
        if entry.kind == "instance":
            owner, attr = entry.name.split("@")
            cls = resolve(owner)
            return [] if _assigns(cls, attr) else [f"{entry.name}: `{owner}` no longer sets `self.{attr}`"]
        if entry.kind == "field":
            owner, name = entry.name.rsplit(".", 1)
            fields = {field.name for field in dataclasses.fields(resolve(owner))}
            return [] if name in fields else [f"{entry.name}: `{owner}` has no field `{name}`"]
        obj = resolve(entry.name)
    except (ImportError, AttributeError, FileNotFoundError, ValueError) as error:
        return [f"{entry.name}: not found ({type(error).__name__}: {error})"]
    if entry.kind == "attribute":
        return []
    if not callable(obj):
        return [f"{entry.name}: is no longer callable"]
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return [f"{entry.name}: has no inspectable signature"]
    named = {name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return [f"{entry.name}: no parameter `{param}` (signature {inspect.signature(obj)})" for param in entry.params
            if param not in named]  # fmt: skip


@pytest.mark.parametrize("entry", CONTRACT, ids=[entry.name for entry in CONTRACT])
def test_contract_holds_for_the_installed_trl(entry):
    assert contract_problems(entry) == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (Entry("trl.DPOTrainer._no_such_method"), "not found"),
        (Entry("trl.no_such_module.thing"), "not found"),
        (Entry("trl.DPOTrainer._compute_loss", params=("model", "batch")), "no parameter `batch`"),
        (Entry("trl.DPOTrainer@_no_such_attribute", kind="instance"), "no longer sets"),
        (Entry("trl.DPOConfig.no_such_field", kind="field"), "has no field"),
        (Entry("trl:templates/lm_model_card.md", kind="template", params=("not in the card",)), "no longer contains"),
        (Entry("transformers.trainer.TRAINER_STATE_NAME", params=("x",)), "no longer callable"),
    ],
)
def test_a_broken_contract_is_reported(entry, expected):
    problems = contract_problems(entry)
    assert len(problems) == 1 and expected in problems[0], problems


def test_every_override_is_in_the_contract():
    """A method the trainers override on `DPOTrainer` (or `Trainer`) must be listed, so that its parent's signature is
    checked: adding an override without a contract entry fails here."""
    listed = {entry.name.rsplit(".", 1)[1] for entry in CONTRACT if entry.kind == "callable"}
    overridden = set()
    for cls in (PROTrainer, DOVETrainer, DPOTrainerFixesMixin, ModelCardMixin):
        for name, value in vars(cls).items():
            if callable(value) and hasattr(DPOTrainer, name) and name not in ("__init_subclass__",):
                overridden.add(name)
    assert overridden, "no override found: the check itself is broken"
    assert sorted(overridden - listed) == []


def test_every_contract_name_is_documented():
    text = DOCS_PAGE.read_text(encoding="utf-8")
    short = {entry.name: re.split(r"[.@:]", entry.name)[-1] for entry in CONTRACT}
    short["trl:templates/lm_model_card.md"] = "lm_model_card.md"
    assert sorted(name for name, word in short.items() if f"`{word}" not in text and f".{word}`" not in text) == []


def test_log_keeps_what_dpo_trainer_log_adds(monkeypatch, tmp_path, tiny_model_path, tokenizer, hh_pairs):
    """`DPOTrainerFixesMixin.log` runs `DPOTrainer.log`: a key it adds to the logs (here a marker standing for what a
    TRL release may add) reaches the log history, in training and in evaluation, while the metrics of each eval split
    keep their own prefix and get no `eval_*` copy."""
    original = DPOTrainer.log

    def log_with_marker(self, logs, start_time=None):
        logs["added_by_dpo_trainer_log"] = 1.0
        return original(self, logs, start_time)

    monkeypatch.setattr(DPOTrainer, "log", log_with_marker)
    rows = Dataset.from_list([dict(hh_pairs[i]) for i in range(4)])
    args = cpu_test_config(
        PROConfig,
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        max_length=64,
        max_prompt_length=40,
    )
    trainer = PROTrainer(
        model=tiny_model_path,
        args=args,
        train_dataset=rows,
        eval_dataset={"first": rows.select(range(2)), "second": rows.select(range(2, 4))},
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.evaluate()
    history = trainer.state.log_history
    train_logs = [logs for logs in history if "loss" in logs]
    eval_logs = [logs for logs in history if any(key.startswith("eval_") for key in logs)]
    assert train_logs and all(logs["added_by_dpo_trainer_log"] == 1.0 for logs in train_logs)
    assert "ranking/accuracy" in train_logs[0]
    assert len(eval_logs) == 2 and all(logs["added_by_dpo_trainer_log"] == 1.0 for logs in eval_logs)
    assert "eval_first_ranking/accuracy" in eval_logs[0] and "eval_second_ranking/accuracy" in eval_logs[1]
    assert not [key for logs in eval_logs for key in logs if key.startswith("eval_ranking/")]
