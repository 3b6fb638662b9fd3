"""The `trl-ranking` command line: `pro`, `dove` and `eval`.

```bash
trl-ranking pro  --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name data.jsonl --output_dir out-pro
trl-ranking dove --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name pairs.jsonl --output_dir out-dove \\
    --load_in_4bit --use_peft --lora_r 8 --lora_alpha 16 --lora_target_modules all-linear
trl-ranking eval --model_name_or_path out-pro --reward_model_name_or_path path/to/rm --dataset_name test.jsonl.gz
trl-ranking pro  --config recipe.yaml            # a YAML file of any of the flags, as with `trl dpo --config`
```

`pro` and `dove` are built like TRL's own `trl dpo` script: the arguments are parsed by `trl.TrlParser` into
`trl.ScriptArguments`, `PROConfig` or `DOVEConfig` (every field of `DPOConfig` and `TrainingArguments`),
`trl.ModelConfig` (`--use_peft --lora_r ... --load_in_4bit ...`, turned into a `LoraConfig` and a
`BitsAndBytesConfig` by `get_peft_config` and `get_quantization_config`) and `trl.DatasetMixtureConfig` (the
`datasets:` list of a YAML config), plus `DataArguments` for the dataset formats of the papers.

Arguments that none of these dataclasses know are handed to `accelerate launch` (as `trl dpo` does): e.g.
`trl-ranking pro --num_processes 2 ...` or `--accelerate_config zero2` (a file, or one of the configs shipped with
TRL) relaunches the command under `accelerate launch -m trl_ranking.cli`. Without such arguments the command runs in
the current process (one process; `accelerate launch -m trl_ranking.cli pro ...` works too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

DATASET_FORMATS = ["auto", "hf", "hh_rlhf", "pro_jsonl", "dove_jsonl", "sparse_feedback"]
COMMANDS = {
    "pro": "Train with Preference Ranking Optimization (PROTrainer)",
    "dove": "Train with joint preference optimization (DOVETrainer)",
    "eval": "Generate on test sets and report BLEU and reward (the PRO paper's table)",
}
# Set in the environment of a command relaunched under `accelerate launch`, so that it runs instead of relaunching
_LAUNCHED_ENV = "TRL_RANKING_LAUNCHED"
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
        eval_split_size (`float`, *optional*):
            When the dataset has no `dataset_test_split` and no `eval_dataset_name` is given, hold out this fraction
            (below 1) or this number of training rows (seeded with `--seed`) for evaluation.
    """

    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first rows of the training set."}
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "A separate evaluation set (hub name or local path), read with the same format."},
    )
    eval_split_size: float | None = field(
        default=None,
        metadata={
            "help": "Without a test split or `--eval_dataset_name`: hold out this fraction (<1) or number (>=1) of "
            "training rows for evaluation."
        },
    )


@dataclass
class EvalArguments:
    """
    Arguments of `trl-ranking eval`: the PRO paper's automatic evaluation (BLEU against the chosen response and the
    mean sigmoid reward of a reward model) on one or more test sets, saved as JSON.

    Parameters:
        dataset_name (`list[str]`):
            One or more test sets (hub names or local paths). Each is one row of the table.
        subset_names (`list[str]`, *optional*):
            A name per test set; by default the file or dataset name.
        dataset_config (`str`, *optional*):
            Dataset configuration name (`datasets.load_dataset`'s `name`, or a subfolder for paper formats).
        dataset_split (`str`, *optional*, defaults to `"test"`):
            Split to evaluate on; a dataset with a single split (a local file) uses it whatever its name.
        reward_model_name_or_path (`str`):
            The reward model (`AutoModelForSequenceClassification` with one label), id or path.
        reward_max_length (`int`, *optional*, defaults to `1024`):
            Maximum tokens of a (prompt, response) pair for the reward model.
        reward_batch_size (`int`, *optional*, defaults to `8`):
            Pairs per reward-model forward pass.
        output_file (`str`, *optional*, defaults to `"eval_results.json"`):
            Where to write the results.
        max_new_tokens (`int`, *optional*):
            Maximum new tokens per response; by default 128 in `pro` mode (greedy) and 400 in `dove` mode (sampled),
            the papers' values.
        batch_size (`int`, *optional*, defaults to `8`):
            Prompts per `generate` call.
        max_prompt_length (`int`, *optional*):
            Left-truncate prompts to this many tokens; by default 384 (512 - 128, the PRO paper) in `pro` mode and
            no truncation in `dove` mode.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column of the prompts, e.g. `instruction` for the DOVE test files (`--reference_column gold_response`).
            With `--prompt_template` (e.g. `dove`), the prompts are formatted with it.
        reference_column (`str`, *optional*):
            Column of the reference response; by default `chosen`, or the first of `completions`.
        save_predictions (`bool`, *optional*, defaults to `False`):
            Also store the generated responses in the JSON file.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Passed to `from_pretrained`.
        seed (`int`, *optional*, defaults to `0`):
            Random seed (generation is greedy; this only fixes any sampling you turn on).

        > Paper evaluation modes

        eval_mode (`str`, *optional*, defaults to `"pro"`):
            `pro`: the PRO paper's table (BLEU as the paper computes it, sacreBLEU, reward x100). `dove`: the DOVE
            paper's table: win rate against the gold response (ties 1/2) at each of `--temperatures`, judged by
            `--judge`; the reference column defaults to `gold_response`.
        reward_input_format (`str`, *optional*, defaults to `"default"`):
            How the reward model reads a pair (`RewardModelScorer(input_format=...)`): `default`, or `oasst`
            (`<|prompter|>...<|endoftext|><|assistant|>...<|endoftext|>`, the PRO paper's reward model).
        rerank_references (`list[str]`, *optional*):
            Subsets (by `--subset_names`) whose BLEU reference is the candidate the reward model prefers, as in the
            official harmless-base test file; the others use the first candidate, in file order.
        temperatures (`list[float]`, *optional*, defaults to `[0.001, 0.5, 1.0]`):
            DOVE mode: the sampling temperatures.
        judge (`str`, *optional*, defaults to `"reward_model"`):
            DOVE mode: `reward_model` (a `RewardModelJudge` on `--reward_model_name_or_path`) or `openai` (an
            `OpenAIChatJudge` on `--judge_base_url` and `--judge_model`, key from `OPENAI_API_KEY`; the paper used
            GPT-3.5-turbo).
        judge_base_url (`str`, *optional*, defaults to `"https://api.openai.com/v1"`):
            DOVE mode with `--judge openai`: the API root.
        judge_model (`str`, *optional*):
            DOVE mode with `--judge openai`: the chat model (e.g. `gpt-3.5-turbo-0125`).
    """

    dataset_name: list[str] = field(
        default=None,
        metadata={"help": "One or more test sets (hub names or local paths); each is one row of the table."},
    )
    subset_names: list[str] | None = field(
        default=None, metadata={"help": "A name per test set (default: the file or dataset name)."}
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Dataset configuration name (or subfolder for the papers' formats)."}
    )
    dataset_split: str = field(
        default="test", metadata={"help": "Split to evaluate on (a single-split dataset uses its only split)."}
    )
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reward model (sequence classifier with one label), id or path."}
    )
    reward_max_length: int = field(
        default=1024, metadata={"help": "Maximum tokens of a (prompt, response) pair for the reward model."}
    )
    reward_batch_size: int = field(default=8, metadata={"help": "Pairs per reward-model forward pass."})
    output_file: str = field(default="eval_results.json", metadata={"help": "Where to write the results (JSON)."})
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Maximum new tokens per response (default: 128 in pro mode, 400 in dove mode)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Left-truncate prompts to this many tokens (default: 384 = 512 - 128 in pro mode, none in dove)."
        },
    )
    prompt_column: str = field(
        default="prompt",
        metadata={
            "help": "Column of the prompts (e.g. `instruction` for the DOVE test files); `--prompt_template` "
            "formats them when given."
        },
    )
    reference_column: str | None = field(
        default=None, metadata={"help": "Column of the reference response (default: `chosen` or `completions[0]`)."}
    )
    save_predictions: bool = field(default=False, metadata={"help": "Also store the generated responses."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Passed to `from_pretrained`."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    eval_mode: str = field(
        default="pro",
        metadata={
            "help": "pro: the PRO paper's BLEU/reward table; dove: the DOVE paper's win rates.",
            "choices": ["pro", "dove"],
        },
    )
    reward_input_format: str = field(
        default="default",
        metadata={
            "help": "How the reward model reads a pair: default, or oasst (the PRO paper's reward model).",
            "choices": ["default", "oasst"],
        },
    )
    rerank_references: list[str] | None = field(
        default=None, metadata={"help": "Subsets whose BLEU reference is the reward model's favourite candidate."}
    )
    temperatures: list[float] = field(
        default_factory=lambda: [0.001, 0.5, 1.0], metadata={"help": "DOVE mode: the sampling temperatures."}
    )
    judge: str = field(
        default="reward_model",
        metadata={"help": "DOVE mode: the judge, reward_model or openai.", "choices": ["reward_model", "openai"]},
    )
    judge_base_url: str = field(
        default="https://api.openai.com/v1", metadata={"help": "DOVE mode: the judge API root."}
    )
    judge_model: str | None = field(default=None, metadata={"help": "DOVE mode: the judge chat model."})


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
    from .data import load_dove_jsonl, load_hh_rlhf, load_pro_jsonl

    conversational = data_args.dataset_conversational
    if dataset_format == "hh_rlhf":
        return load_hh_rlhf(path, conversational=conversational)
    if dataset_format == "pro_jsonl":
        return load_pro_jsonl(path, conversational=conversational, sort_by_reward=sort_by_reward)
    if dataset_format == "dove_jsonl":
        return load_dove_jsonl(path, prompt_template=_template(data_args), conversational=conversational)
    raise ValueError(f"Unknown dataset format {dataset_format!r}; expected one of {DATASET_FORMATS}.")


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
            return datasets.load_dataset(builder, data_files=str(path), streaming=streaming)
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        return datasets.load_dataset(str(path) if path.exists() else name, name=config, streaming=streaming)

    if dataset_format == "sparse_feedback":
        from .data import load_sparse_feedback_rankings

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


def _take(dataset, count: int | None):
    if count is None:
        return dataset
    if hasattr(dataset, "select"):
        return dataset.select(range(min(count, len(dataset))))
    return dataset.take(count)  # IterableDataset


def _only_or(dataset_dict, split: str, name: str):
    if split in dataset_dict:
        return dataset_dict[split]
    if len(dataset_dict) == 1:
        return next(iter(dataset_dict.values()))
    raise ValueError(f"{name} has no split {split!r} (splits: {list(dataset_dict)}).")


def _training_datasets(script_args, training_args, dataset_args, data_args: TrainDataArguments):
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
        eval_dataset = _only_or(eval_dict, script_args.dataset_test_split, data_args.eval_dataset_name)
    elif script_args.dataset_test_split in dataset and script_args.dataset_test_split != train_split:
        eval_dataset = dataset[script_args.dataset_test_split]
    elif data_args.eval_split_size and training_args.eval_strategy != "no":
        size = data_args.eval_split_size
        size = int(size) if size >= 1 else size
        split = train_dataset.train_test_split(test_size=size, seed=training_args.seed)
        train_dataset, eval_dataset = split["train"], split["test"]

    train_dataset = _take(train_dataset, data_args.max_train_samples)
    if training_args.eval_strategy == "no":
        if data_args.eval_dataset_name or data_args.eval_split_size:
            logger.warning("An evaluation set was given but `--eval_strategy` is 'no': it is not used.")
        eval_dataset = None
    elif eval_dataset is None:
        raise ValueError(
            f"`--eval_strategy {training_args.eval_strategy}` needs an evaluation set: the dataset has no "
            f"{script_args.dataset_test_split!r} split; pass `--eval_dataset_name` or `--eval_split_size`."
        )
    else:
        eval_dataset = _take(eval_dataset, data_args.max_eval_samples)
    return train_dataset, eval_dataset


# ----------------------------------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------------------------------
def _dataclass_types(command: str) -> tuple:
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    if command == "pro":
        from .pro import PROConfig

        return (ScriptArguments, PROConfig, ModelConfig, DatasetMixtureConfig, TrainDataArguments)
    if command == "dove":
        from .dove import DOVEConfig

        return (ScriptArguments, DOVEConfig, ModelConfig, DatasetMixtureConfig, TrainDataArguments)
    if command == "eval":
        return (EvalArguments, ModelConfig, DataArguments)
    raise ValueError(f"Unknown command {command!r}; expected one of {sorted(COMMANDS)}.")


def make_parser(command: str, prog: str | None = None):
    """The `trl.TrlParser` of a command (`pro`, `dove` or `eval`).

    `pro` parses into `(ScriptArguments, PROConfig, ModelConfig, DatasetMixtureConfig, TrainDataArguments)`, `dove`
    into the same with `DOVEConfig`, `eval` into `(EvalArguments, ModelConfig, DataArguments)`. Call
    `parser.set_defaults(...)` to change defaults (the `examples/` scripts set the papers' recipes this way); a
    `--config` file and the command line still override them.
    """
    from trl import TrlParser

    parser = TrlParser(
        _dataclass_types(command),
        prog=prog or f"trl-ranking {command}",
        description=COMMANDS[command],
    )
    hidden = _PRO_HIDDEN_FLAGS if command == "pro" else ()
    for action in parser._actions:
        if action.dest in hidden:
            action.help = argparse.SUPPRESS  # still parsed, so that `PROConfig` can reject a value with a reason
        elif action.dest == "model_name_or_path":
            action.help = f"Required. {action.help or ''}".strip()
    return parser


# DPO options that `PROConfig` rejects (or that only tune an option it rejects): not shown in `trl-ranking pro --help`.
# (`loss_type` and `loss_weights` are PRO's own: they select the losses of the listwise family.)
_PRO_HIDDEN_FLAGS = (
    "ld_alpha",
    "f_divergence_type",
    "f_alpha_divergence_coef",
    "label_smoothing",
    "use_weighting",
    "discopop_tau",
    "truncation_mode",
)


# ----------------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------------
def _load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def run_training(command: str, script_args, training_args, model_args, dataset_args, data_args):
    """Run `pro` or `dove` training with parsed arguments, as TRL's `trl/scripts/dpo.py` runs DPO.

    Loads the datasets, builds the trainer with `quantization_config=get_quantization_config(model_args)` and
    `peft_config=get_peft_config(model_args)`, trains, and saves the model (with its tokenizer and model card), the trainer state
    (`trainer_state.json`, which holds every logged metric) and the train/eval metrics (`*_results.json`) to
    `output_dir`. Returns the trainer.
    """
    import transformers
    from packaging.version import Version
    from trl import get_peft_config, get_quantization_config

    if command == "pro":
        from .pro import PROTrainer as trainer_cls
    elif command == "dove":
        from .dove import DOVETrainer as trainer_cls
    else:
        raise ValueError(f"`run_training` runs `pro` or `dove`, not {command!r}.")
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

    train_dataset, eval_dataset = _training_datasets(script_args, training_args, dataset_args, data_args)
    tokenizer = _load_tokenizer(
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


def _subset_name(name: str) -> str:
    base = Path(name).name or name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv", ".arrow"):
        base = base.removesuffix(suffix)
    return base


def _adapter_config(name_or_path: str, revision: str | None):
    """The `PeftConfig` when `name_or_path` holds a PEFT adapter (as `--use_peft` training saves), else `None`."""
    try:
        from peft import PeftConfig
    except ImportError:
        return None
    local = Path(name_or_path)
    if local.is_dir() and not (local / "adapter_config.json").exists():
        return None
    try:
        return PeftConfig.from_pretrained(name_or_path, revision=revision)
    except Exception:  # not an adapter (or unreachable): load it as a full model
        return None


def _load_policy(name_or_path: str, model_kwargs: dict[str, Any]):
    """A causal LM, or a base model with the PEFT adapter saved at `name_or_path`, loaded as the trainers load it."""
    from trl.trainer.utils import create_model_from_path

    adapter = _adapter_config(name_or_path, model_kwargs.get("revision"))
    if adapter is None:
        return create_model_from_path(name_or_path, **model_kwargs)
    from peft import PeftModel

    base_kwargs = {key: value for key, value in model_kwargs.items() if key != "revision"}
    base = create_model_from_path(adapter.base_model_name_or_path, **base_kwargs)
    return PeftModel.from_pretrained(base, name_or_path, revision=model_kwargs.get("revision"))


def _template(data_args: DataArguments) -> str | None:
    from .data import DOVE_PROMPT_TEMPLATE, DOVE_TLDR_PROMPT_TEMPLATE

    names = {"dove": DOVE_PROMPT_TEMPLATE, "dove_tldr": DOVE_TLDR_PROMPT_TEMPLATE}
    return names.get(data_args.prompt_template, data_args.prompt_template)


def _prompts_for_eval(dataset, prompt_column: str, data_args: DataArguments, name: str):
    """Put the prompts of a test set in a `prompt` column, formatted with `--prompt_template` when one is given."""
    if prompt_column not in dataset.column_names:
        raise ValueError(
            f"{name}: no prompt column {prompt_column!r} (columns: {dataset.column_names}); set `--prompt_column`."
        )
    if prompt_column != "prompt":
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        dataset = dataset.rename_column(prompt_column, "prompt")
    template = _template(data_args)
    if template is not None and data_args.dataset_format != "dove_jsonl":
        if "{instruction}" not in template:
            raise ValueError(f"`--prompt_template` must contain '{{instruction}}', got {template!r}.")
        dataset = dataset.map(lambda row: {"prompt": template.replace("{instruction}", row["prompt"])})
    return dataset


def run_eval(eval_args: EvalArguments, model_args, data_args: DataArguments) -> dict[str, Any]:
    """Run `trl-ranking eval`: `evaluate_pro_table_row` on each test set, results written to `output_file`.

    The policy is loaded as the trainers load it (`--dtype`, `--attn_implementation`, `--load_in_4bit`; a folder
    saved by `trl-ranking pro --use_peft` holds a LoRA adapter and loads with its base model), the reward model with
    `RewardModelScorer`. Returns the results.
    """
    import torch
    from transformers import set_seed
    from trl import get_quantization_config

    from .evaluation import evaluate_pro_table_row
    from .rewards import RewardModelScorer

    if not model_args.model_name_or_path:
        raise ValueError("`--model_name_or_path` is required.")
    if not eval_args.dataset_name:
        raise ValueError("`--dataset_name` is required: one or more test sets.")
    dove = eval_args.eval_mode == "dove"
    if eval_args.eval_mode not in ("pro", "dove"):
        raise ValueError(f"`--eval_mode` must be 'pro' or 'dove', got {eval_args.eval_mode!r}.")
    if not eval_args.reward_model_name_or_path and not (dove and eval_args.judge == "openai"):
        raise ValueError("`--reward_model_name_or_path` is required: the reward model scores the responses.")
    if dove and eval_args.judge == "openai" and not eval_args.judge_model:
        raise ValueError("`--judge openai` needs `--judge_model` (e.g. gpt-3.5-turbo-0125).")
    names = eval_args.subset_names or [_subset_name(name) for name in eval_args.dataset_name]
    if len(names) != len(eval_args.dataset_name) or len(set(names)) != len(names):
        raise ValueError(f"`--subset_names` must give one distinct name per test set, got {names}.")
    set_seed(eval_args.seed)

    test_sets = {}
    for subset, name in zip(names, eval_args.dataset_name):
        # PRO-format test files keep their candidate order: the official BLEU reference is the file's first candidate
        dataset_dict = load_dataset_by_format(name, data_args, config=eval_args.dataset_config, sort_by_reward=False)
        dataset = _take(_only_or(dataset_dict, eval_args.dataset_split, name), data_args.max_eval_samples)
        test_sets[subset] = _prompts_for_eval(dataset, eval_args.prompt_column, data_args, name)

    model_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=eval_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        model_kwargs["quantization_config"] = quantization_config
    model = _load_policy(model_args.model_name_or_path, model_kwargs).eval()
    tokenizer = _load_tokenizer(
        data_args.tokenizer_name_or_path or model_args.model_name_or_path,
        trust_remote_code=eval_args.trust_remote_code,
    )
    device = "cuda" if torch.cuda.is_available() else None
    scorer = None
    if eval_args.reward_model_name_or_path:
        scorer = RewardModelScorer(
            eval_args.reward_model_name_or_path,
            batch_size=eval_args.reward_batch_size,
            max_length=eval_args.reward_max_length,
            device=device,
            model_init_kwargs={"trust_remote_code": eval_args.trust_remote_code},
            input_format=eval_args.reward_input_format,
        )
    if dove:
        return _run_dove_eval(eval_args, model_args, model, tokenizer, scorer, test_sets)
    results = evaluate_pro_table_row(
        model,
        tokenizer,
        test_sets,
        scorer,
        max_new_tokens=eval_args.max_new_tokens or 128,
        batch_size=eval_args.batch_size,
        max_prompt_length=eval_args.max_prompt_length or 384,
        reference_column=eval_args.reference_column,
        rerank_references=eval_args.rerank_references or (),
        save_predictions=eval_args.save_predictions,
        print_table=True,
        progress_bar=not os.environ.get("TQDM_DISABLE"),
    )
    results["model"] = model_args.model_name_or_path
    results["reward_model"] = eval_args.reward_model_name_or_path
    results["test_sets"] = dict(zip(names, eval_args.dataset_name))
    output = Path(eval_args.output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"Results written to {output}.")
    return results


def _run_dove_eval(eval_args: EvalArguments, model_args, model, tokenizer, scorer, test_sets) -> dict[str, Any]:
    """`trl-ranking eval --eval_mode dove`: `evaluate_dove_win_rates` on each test set, results in `output_file`."""
    from .evaluation import evaluate_dove_win_rates
    from .judges import OpenAIChatJudge, RewardModelJudge

    if eval_args.judge == "openai":
        judge = OpenAIChatJudge(eval_args.judge_base_url, eval_args.judge_model)
    else:
        judge = RewardModelJudge(scorer)
    results: dict[str, Any] = {"subsets": {}}
    for subset, dataset in test_sets.items():
        column = eval_args.reference_column or "gold_response"
        if column not in dataset.column_names:
            raise ValueError(
                f"{subset}: no gold-response column {column!r} (columns: {dataset.column_names}); set "
                "`--reference_column`."
            )
        print(f"{subset}:")
        results["subsets"][subset] = evaluate_dove_win_rates(
            model,
            tokenizer,
            dataset["prompt"],
            dataset[column],
            judge,
            temperatures=eval_args.temperatures,
            max_new_tokens=eval_args.max_new_tokens or 400,
            batch_size=eval_args.batch_size,
            max_prompt_length=eval_args.max_prompt_length,
            seed=eval_args.seed,
            save_predictions=eval_args.save_predictions,
            progress_bar=not os.environ.get("TQDM_DISABLE"),
        )
    results["model"] = model_args.model_name_or_path
    results["judge"] = eval_args.judge_model if eval_args.judge == "openai" else eval_args.reward_model_name_or_path
    results["test_sets"] = dict(zip(test_sets, eval_args.dataset_name))
    output = Path(eval_args.output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"Results written to {output}.")
    return results


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` without the ordered `subsequence` (as TRL's CLI separates launch arguments from script arguments)."""
    remaining, iterator = [], iter(subsequence)
    current = next(iterator, None)
    for item in items:
        if current is not None and item == current:
            current = next(iterator, None)
        else:
            remaining.append(item)
    return remaining


def _launch_with_accelerate(command: str, launch_args: list[str], script_args: list[str], launch_command_fn=None):
    """Relaunch `trl-ranking <command> <script_args>` under `accelerate launch <launch_args> -m trl_ranking.cli`."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    launch_args = resolve_accelerate_config_argument(launch_args)
    parser = launch_command_parser()
    known = set(parser._option_string_actions)
    unknown = [arg for arg in launch_args if arg.startswith("-") and arg.split("=", 1)[0] not in known]
    if unknown:
        raise SystemExit(
            f"trl-ranking {command}: unrecognized arguments {unknown} (neither a training argument nor an "
            f"`accelerate launch` argument). See `trl-ranking {command} --help`."
        )
    accelerate_args = parser.parse_args([*launch_args, "-m", "trl_ranking.cli", command, *script_args])
    # The relaunched processes inherit this and run the command instead of relaunching it
    previous = os.environ.get(_LAUNCHED_ENV)
    os.environ[_LAUNCHED_ENV] = "1"
    try:
        (launch_command_fn or launch_command)(accelerate_args)
    finally:
        if previous is None:
            os.environ.pop(_LAUNCHED_ENV, None)
        else:
            os.environ[_LAUNCHED_ENV] = previous


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `trl-ranking` console script (also `python -m trl_ranking.cli`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="trl-ranking",
        description="PRO and DOVE training, and the PRO paper's evaluation, on top of TRL.",
        allow_abbrev=False,
    )
    subparsers = top.add_subparsers(dest="command", metavar="{pro,dove,eval}")
    for name, help_text in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    args, _ = top.parse_known_args(argv[:1])
    if args.command is None:
        top.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2

    command, rest = args.command, argv[1:]
    try:
        return _run_command(command, rest)
    except _USER_ERRORS as error:
        if os.environ.get("TRL_RANKING_DEBUG"):
            raise
        # An error the user can fix (bad data, option, path, or a non-finite run): one line, not a traceback
        message = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, (OSError, ImportError, FloatingPointError)) and not isinstance(error, FileNotFoundError):
            message = f"{type(error).__name__}: {message}"
        raise SystemExit(
            f"trl-ranking {command}: error: {message} (TRL_RANKING_DEBUG=1 shows the traceback)"
        ) from None


# Errors a user causes (data, options, paths, missing extras, a diverging run) get one line and exit status 1
_USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)


def _run_command(command: str, rest: list[str]) -> int:
    parser = make_parser(command)
    if os.environ.get(_LAUNCHED_ENV):
        # Already relaunched by `accelerate launch`: the launch arguments were consumed there
        parsed = parser.parse_args_and_config(rest, fail_with_unknown_args=False)
    else:
        *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
            rest, return_remaining_strings=True, separate_remaining_strings=True
        )
        if (config_remaining or cli_remaining) and command == "eval":
            raise SystemExit(f"trl-ranking eval: unrecognized arguments {config_remaining + cli_remaining}.")
        if config_remaining or cli_remaining:
            _launch_with_accelerate(
                command, config_remaining + cli_remaining, _subtract_subsequence(rest, cli_remaining)
            )
            return 0
    if command == "eval":
        run_eval(*parsed)
    else:
        run_training(command, *parsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
