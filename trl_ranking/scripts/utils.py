"""Pieces shared by the `trl-ranking` scripts (`pro`, `dove`, `eval`), as `trl/scripts/utils.py` is for TRL's.

`DataArguments` and `TrainDataArguments` add the papers' dataset formats to TRL's `ScriptArguments`;
`load_dataset_by_format` reads a hub name, a local file or a local folder in any of them; `run_training` is the
body of `trl-ranking pro` and `trl-ranking dove` (TRL's `trl/scripts/dpo.py` with a ranking trainer).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

DATASET_FORMATS = ["auto", "hf", "hh_rlhf", "pro_jsonl", "dove_jsonl", "sparse_feedback"]
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


@dataclass
class DataArguments:
    """
    How to read a dataset given by `--dataset_name` (a hub name, a local file or a local folder).

    Parameters:
        dataset_format (`str`, *optional*, defaults to `"auto"`):
            `hf`: `datasets.load_dataset` (a hub name, a folder of data files or one saved with `save_to_disk`, or a
            `.json`/`.jsonl`/`.parquet`/`.csv` file) with the rows used as they are (TRL's formats). `hh_rlhf`: raw
            HH-RLHF transcripts (`load_hh_rlhf`). `pro_jsonl`: the PRO paper's jsonl (`load_pro_jsonl`).
            `dove_jsonl`: the DOVE paper's jsonl (`load_dove_jsonl`). `sparse_feedback`: a folder of the
            sparse-feedback ratings (`load_sparse_feedback_rankings`). `auto` recognises the papers' formats in local
            files by their fields and reads everything else as `hf`. A hub name with a paper format is downloaded
            with `huggingface_hub.snapshot_download` and read like a local folder.
        dataset_conversational (`bool`, *optional*, defaults to `False`):
            With a paper format, return TRL messages instead of text (the tokenizer's chat template then formats
            them).
        prompt_template (`str`, *optional*):
            With `dove_jsonl`: format each instruction with this template (`{instruction}` marks the place), or
            `dove` / `dove_tldr` for the official templates.
        tokenizer_name_or_path (`str`, *optional*):
            Tokenizer to use; by default the model's own.
        max_eval_samples (`int`, *optional*):
            Keep only the first rows of each evaluation set.
    """

    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "How to read `--dataset_name`: `hf` (datasets.load_dataset, TRL's formats), `hh_rlhf` (raw "
            "HH-RLHF transcripts), `pro_jsonl` (the PRO paper's jsonl), `dove_jsonl` (the DOVE paper's jsonl), "
            "`sparse_feedback` (a folder of sparse-feedback ratings), or `auto` (the papers' formats recognised in "
            "local files by their fields, everything else as `hf`).",
            "choices": DATASET_FORMATS,
        },
    )
    dataset_conversational: bool = field(
        default=False,
        metadata={"help": "With a paper format: return TRL messages (for a chat template) instead of text."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "With `dove_jsonl`: a template for the instructions, with `{instruction}` in it, or `dove` / "
            "`dove_tldr` for the official DOVE templates."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer id or path; by default the model's own."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first rows of each evaluation set."}
    )


@dataclass
class TrainDataArguments(DataArguments):
    """
    `DataArguments` plus the choice of the training and evaluation rows.

    Parameters:
        max_train_samples (`int`, *optional*):
            Keep only the first rows of the training set.
        eval_dataset_name (`str`, *optional*):
            A separate evaluation set (hub name or local path, read with the same format). Its `dataset_test_split`
            is used, or its only split.

    Without a test split and without `eval_dataset_name`, TRL's `--test_split_size` (of `DatasetMixtureConfig`) holds
    out this fraction (below 1) or this number of training rows (seeded with `--seed`) for evaluation.
    """

    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first rows of the training set."}
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "A separate evaluation set (hub name or local path), read with the same format."},
    )


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------
def _is_json_file(path: Path) -> bool:
    return path.name.endswith(_JSON_SUFFIXES)


def _first_record(path: Path) -> dict[str, Any] | None:
    """The first JSON object of a json/jsonl file (gzipped or not), or `None` for a JSON array or unreadable file."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as handle:  # a byte-order mark is not part of the record
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    return record if isinstance(record, dict) else None
    except (ValueError, OSError):
        return None
    return None


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of a local file or folder: one of the papers' formats, or `hf` for everything else.

    A json/jsonl file whose first record has `prefix` and `suffix` is `pro_jsonl`; `i_chosen` and `r_chosen`,
    `dove_jsonl`; exactly `chosen` and `rejected` holding `"\\n\\nHuman: ..."` transcripts, `hh_rlhf`. A folder holding
    `sample_generation.json` and a ratings csv is `sparse_feedback`; a folder of such json files, the format of its
    first one.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "sample_generation.json").exists() and any(path.glob("*ratings*.csv")):
            return "sparse_feedback"
        files = sorted(p for p in path.rglob("*") if p.is_file() and _is_json_file(p))
        return detect_format(files[0]) if files else "hf"
    if not _is_json_file(path):
        return "hf"
    record = _first_record(path)
    if record is None:
        return "hf"
    if "prefix" in record and "suffix" in record:
        return "pro_jsonl"
    if "i_chosen" in record and "r_chosen" in record:
        return "dove_jsonl"
    if (
        set(record) == {"chosen", "rejected"}
        and isinstance(record["chosen"], str)
        and record["chosen"].lstrip().startswith("Human:")
        and "\n\nAssistant:" in record["chosen"]
    ):
        return "hh_rlhf"
    return "hf"


_DATA_SUFFIXES = (*_JSON_SUFFIXES, ".parquet", ".csv", ".arrow", ".csv.gz")


def _looks_local(name: str) -> bool:
    """Whether a dataset name is a local path (not a hub id such as `org/name`): it starts like a path, or names a
    data file. Such a name that does not exist is a typo to report, not a hub dataset to look for."""
    return (
        name.startswith((".", "/", "~", "\\")) or (len(name) > 1 and name[1] == ":") or name.endswith(_DATA_SUFFIXES)
    )


def _split_files(folder: Path, split: str | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_json_file(p))
    if split is None:
        return files
    return [p for p in files if p.name.startswith(split)]


def _load_paper_format(path: Path, dataset_format: str, data_args: DataArguments, sort_by_reward: bool = True):
    """Read one file with the loader of a paper format (PRO files keep their order with `sort_by_reward=False`)."""
    from ..data import load_dove_jsonl, load_hh_rlhf, load_pro_jsonl

    conversational = data_args.dataset_conversational
    if dataset_format == "hh_rlhf":
        return load_hh_rlhf(path, conversational=conversational)
    if dataset_format == "pro_jsonl":
        return load_pro_jsonl(path, conversational=conversational, sort_by_reward=sort_by_reward)
    if dataset_format == "dove_jsonl":
        return load_dove_jsonl(path, prompt_template=prompt_template(data_args), conversational=conversational)
    raise ValueError(f"Unknown dataset format {dataset_format!r}; expected one of {DATASET_FORMATS}.")


def _load_local_json(path: Path, streaming: bool):
    """`datasets.load_dataset("json")` on a local file, its failures named by file and line: `datasets` reports a
    syntax error by byte position or with a long traceback, and an empty file as a bare `StopIteration`."""
    import datasets

    from ..data.jsonl import check_jsonl

    try:
        return datasets.load_dataset("json", data_files=str(path), streaming=streaming)
    except Exception as error:  # noqa: BLE001 - DatasetGenerationError, StopIteration, pyarrow's errors...
        record = _first_record(path)
        # JSON lines (not one JSON document such as an array): the line reader names the bad line
        if record is not None or ".jsonl" in path.name or not path.stat().st_size or not _has_text(path):
            check_jsonl(path)
        cause = error.__cause__ or error
        raise ValueError(f"{path}: `datasets` could not read it as JSON ({type(cause).__name__}: {cause}).") from error


def _has_text(path: Path) -> bool:
    """Whether a (possibly gzipped) file holds anything but whitespace."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return any(line.strip() for line in handle)
    except (OSError, EOFError):
        return True  # a corrupt file: let the reader name it


def load_dataset_by_format(
    name: str,
    data_args: DataArguments,
    config: str | None = None,
    streaming: bool = False,
    sort_by_reward: bool = True,
):
    """Load `name` (a hub name, a local file or a local folder) as a `DatasetDict`, reading the papers' formats.

    `sort_by_reward=False` keeps the candidate order of PRO-format files (the evaluation's reference is the first).

    A single file, or a paper-format folder without split-named files, gives one `train` split. A folder in a paper
    format gives one split per prefix of its file names among `train`, `test`, `validation`, `dev` (e.g.
    `harmless-base/train.jsonl.gz` and `harmless-base/test.jsonl.gz`); `config` selects a subfolder. The training
    commands use `--dataset_train_split` and `--dataset_test_split` of that dict, as `trl dpo` does.
    """
    import datasets

    dataset_format = data_args.dataset_format
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"--dataset_format must be one of {DATASET_FORMATS}, got {dataset_format!r}.")
    path = Path(name).expanduser()
    if not path.exists() and _looks_local(name):
        raise FileNotFoundError(f"{name}: no such file or folder.")
    if not path.exists() and dataset_format not in ("auto", "hf"):
        # A hub dataset in a paper format: download its json files and read them like a local folder
        from huggingface_hub import snapshot_download

        prefix = f"{config}/" if config else ""
        patterns = [f"{prefix}*{suffix}" for suffix in _JSON_SUFFIXES]
        path = Path(snapshot_download(repo_id=name, repo_type="dataset", allow_patterns=patterns))
    if path.exists() and dataset_format == "auto":
        dataset_format = detect_format(path)
        logger.info("Dataset format of %s: %s", name, dataset_format)

    if dataset_format in ("auto", "hf"):
        if path.is_file():
            suffixes = [s for s in path.suffixes if s != ".gz"]
            builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
            builder = builder.get(suffixes[-1] if suffixes else "")
            if builder is None:
                raise ValueError(f"{name}: unknown file type; use a .json, .jsonl, .parquet, .csv or .arrow file.")
            if builder == "json":
                return _load_local_json(path, streaming)
            return datasets.load_dataset(builder, data_files=str(path), streaming=streaming)
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        return datasets.load_dataset(str(path) if path.exists() else name, name=config, streaming=streaming)

    if dataset_format == "sparse_feedback":
        from ..data import load_sparse_feedback_rankings

        folder = path / config if config else path
        return datasets.DatasetDict({"train": load_sparse_feedback_rankings(folder)})
    if path.is_file():
        return datasets.DatasetDict({"train": _load_paper_format(path, dataset_format, data_args, sort_by_reward)})
    folder = path / config if config else path
    splits = {}
    for split in ("train", "test", "validation", "dev"):
        files = _split_files(folder, split)
        if files:
            splits[split] = datasets.concatenate_datasets(
                [_load_paper_format(file, dataset_format, data_args, sort_by_reward) for file in files]
            )
    if not splits:
        files = _split_files(folder, None)
        if not files:
            raise ValueError(f"{name}: no .json/.jsonl(.gz) file found in {folder}.")
        splits["train"] = datasets.concatenate_datasets(
            [_load_paper_format(file, dataset_format, data_args, sort_by_reward) for file in files]
        )
    return datasets.DatasetDict(splits)


def prompt_template(data_args: DataArguments) -> str | None:
    """`--prompt_template`, with the names `dove` and `dove_tldr` resolved to the official DOVE templates."""
    from ..data import DOVE_PROMPT_TEMPLATE, DOVE_TLDR_PROMPT_TEMPLATE

    names = {"dove": DOVE_PROMPT_TEMPLATE, "dove_tldr": DOVE_TLDR_PROMPT_TEMPLATE}
    return names.get(data_args.prompt_template, data_args.prompt_template)


def take_rows(dataset, count: int | None):
    if count is None:
        return dataset
    if hasattr(dataset, "select"):
        return dataset.select(range(min(count, len(dataset))))
    return dataset.take(count)  # IterableDataset


def only_split(dataset_dict, split: str, name: str):
    if split in dataset_dict:
        return dataset_dict[split]
    if len(dataset_dict) == 1:
        return next(iter(dataset_dict.values()))
    raise ValueError(f"{name} has no split {split!r} (splits: {list(dataset_dict)}).")


def training_datasets(script_args, training_args, dataset_args, data_args: TrainDataArguments):
    """The train and eval datasets, chosen as `trl dpo` chooses them, plus the paper formats and a held-out split."""
    from trl import get_dataset

    if dataset_args.datasets:
        if script_args.dataset_name:
            logger.warning("Both `datasets` and `dataset_name` are given: `datasets` is used, `dataset_name` ignored.")
        dataset = get_dataset(dataset_args)
    elif script_args.dataset_name:
        dataset = load_dataset_by_format(
            script_args.dataset_name,
            data_args,
            config=script_args.dataset_config,
            streaming=script_args.dataset_streaming,
        )
    else:
        raise ValueError("Either `--dataset_name` or a `datasets:` list in the `--config` file must be given.")

    train_split = script_args.dataset_train_split
    if train_split not in dataset:
        if len(dataset) != 1:
            raise ValueError(f"The dataset has no split {train_split!r} (splits: {list(dataset)}).")
        train_split = next(iter(dataset))
    train_dataset = dataset[train_split]
    eval_dataset = None
    if data_args.eval_dataset_name:
        eval_dict = load_dataset_by_format(
            data_args.eval_dataset_name, data_args, streaming=script_args.dataset_streaming
        )
        eval_dataset = only_split(eval_dict, script_args.dataset_test_split, data_args.eval_dataset_name)
    elif script_args.dataset_test_split in dataset and script_args.dataset_test_split != train_split:
        eval_dataset = dataset[script_args.dataset_test_split]
    elif dataset_args.test_split_size and training_args.eval_strategy != "no":
        # TRL's `--test_split_size`, applied to `--dataset_name` too (`get_dataset` applies it to a mixture)
        size = dataset_args.test_split_size
        size = int(size) if size >= 1 else size
        split = train_dataset.train_test_split(test_size=size, seed=training_args.seed)
        train_dataset, eval_dataset = split["train"], split["test"]

    train_dataset = take_rows(train_dataset, data_args.max_train_samples)
    if training_args.eval_strategy == "no":
        if data_args.eval_dataset_name or dataset_args.test_split_size:
            logger.warning("An evaluation set was given but `--eval_strategy` is 'no': it is not used.")
        eval_dataset = None
    elif eval_dataset is None:
        raise ValueError(
            f"`--eval_strategy {training_args.eval_strategy}` needs an evaluation set: the dataset has no "
            f"{script_args.dataset_test_split!r} split; pass `--eval_dataset_name` or `--test_split_size`."
        )
    else:
        eval_dataset = take_rows(eval_dataset, data_args.max_eval_samples)
    return train_dataset, eval_dataset


# ----------------------------------------------------------------------------------------------------------------------
# Models and training
# ----------------------------------------------------------------------------------------------------------------------
def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    """`AutoTokenizer.from_pretrained`, with the EOS token as pad token when the tokenizer has none."""
    from transformers import AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def run_training(trainer_cls, script_args, training_args, model_args, dataset_args, data_args):
    """Train `trainer_cls` (`PROTrainer` or `DOVETrainer`) with parsed arguments, as TRL's `trl/scripts/dpo.py` runs
    DPO.

    Loads the datasets, builds the trainer with `quantization_config=get_quantization_config(model_args)` and
    `peft_config=get_peft_config(model_args)`, trains, and saves the model (with its tokenizer and model card), the
    trainer state (`trainer_state.json`, which holds every logged metric) and the train/eval metrics
    (`*_results.json`) to `output_dir`. Returns the trainer.
    """
    import transformers
    from packaging.version import Version
    from trl import get_peft_config, get_quantization_config

    if not model_args.model_name_or_path:
        raise ValueError("`--model_name_or_path` is required.")

    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = model_init_kwargs

    train_dataset, eval_dataset = training_datasets(script_args, training_args, dataset_args, data_args)
    tokenizer = load_tokenizer(
        data_args.tokenizer_name_or_path or model_args.model_name_or_path,
        trust_remote_code=training_args.trust_remote_code,
        revision=None if data_args.tokenizer_name_or_path else model_args.model_revision,
    )

    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    if script_args.ignore_bias_buffers:
        import torch

        # torch distributed hack, as in `trl dpo`
        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]

    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() == "true":
        resume = True  # `--resume_from_checkpoint true`: the last complete checkpoint of `output_dir`
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.accelerator.print("Training completed.")
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_state()  # trainer_state.json: every logged metric, the final evaluation included
    trainer.save_model(training_args.output_dir)
    # The model card (paper, citation, base model), as `DPOTrainer` writes it with each checkpoint
    hub_dataset = (
        script_args.dataset_name if script_args.dataset_name and not Path(script_args.dataset_name).exists() else None
    )
    trainer.create_model_card(model_name=Path(training_args.output_dir).name, dataset_name=hub_dataset)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Model pushed to the Hub in https://huggingface.co/{trainer.hub_model_id}.")
    if Version(transformers.__version__) >= Version("5.18.0") and hasattr(trainer, "end"):
        trainer.end()
    return trainer


def make_script_parser(name: str, dataclass_types: tuple, help_text: str, subparsers=None, prog=None, hidden=()):
    """The `trl.TrlParser` of a script, built as TRL's `make_parser` builds it (a sub-command of `subparsers` when
    given), with `--model_name_or_path` marked as required in the help and the flags named in `hidden` left out of it
    (still parsed, so that the config can reject a value with its reason)."""
    import argparse

    from trl import TrlParser

    if subparsers is not None:
        parser = subparsers.add_parser(name, help=help_text, dataclass_types=dataclass_types)
    else:
        parser = TrlParser(dataclass_types, prog=prog or f"trl-ranking {name}", description=help_text)
    for action in parser._actions:
        if action.dest in hidden:
            action.help = argparse.SUPPRESS
        elif action.dest == "model_name_or_path":
            action.help = f"Required. {action.help or ''}".strip()
    return parser
