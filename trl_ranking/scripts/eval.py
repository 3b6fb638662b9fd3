"""`trl-ranking eval`: the papers' automatic evaluation of a trained policy, written as JSON.

`--eval_mode pro` is the PRO paper's table (BLEU against the reference and the mean sigmoid reward of a reward model,
`evaluate_pro_table_row`); `--eval_mode dove` the DOVE paper's win rates against the gold responses
(`evaluate_dove_win_rates`); `--eval_mode ifeval` IFEval's four official metrics on the bundled 541 prompts
(`evaluate_ifeval`, scored exactly as Google's `instruction_following_eval`), with every answer in the JSON file.

```bash
trl-ranking eval --model_name_or_path out-pro --reward_model_name_or_path path/to/rm --dataset_name test.jsonl.gz
trl-ranking eval --eval_mode ifeval --model_name_or_path out-pro --ifeval_limit 50 --output_file ifeval.json
python -m trl_ranking.scripts.eval --model_name_or_path out-pro ...      # the same script, run directly
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .utils import (
    DataArguments,
    load_dataset_by_format,
    load_tokenizer,
    make_script_parser,
    only_split,
    prompt_template,
    take_rows,
)


HELP = "Generate on test sets and report BLEU and reward (the PRO paper's table), DOVE win rates, or IFEval"


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
            the papers' values, and 512 in `ifeval` mode (greedy).
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
            `--judge`; the reference column defaults to `gold_response`. `ifeval`: IFEval's prompt- and
            instruction-level accuracy, strict and loose, on the bundled 541 prompts (no dataset or reward model;
            `evaluate_ifeval`), printed as a table; the JSON file holds the metrics, per-type and per-prompt results
            and every answer.
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
        ifeval_limit (`int`, *optional*):
            IFEval mode: score a sample of this many prompts (drawn with `--seed`) instead of all 541, for a quick run.
        ifeval_input_file (`str`, *optional*):
            IFEval mode: prompts in the format of Google's `input_data.jsonl` instead of the bundled ones.
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
            "help": "pro: the PRO paper's BLEU/reward table; dove: the DOVE paper's win rates; ifeval: IFEval's "
            "four official metrics on the bundled prompts.",
            "choices": ["pro", "dove", "ifeval"],
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
    ifeval_limit: int | None = field(
        default=None, metadata={"help": "IFEval mode: a sample of this many prompts (seeded by --seed), not all 541."}
    )
    ifeval_input_file: str | None = field(
        default=None, metadata={"help": "IFEval mode: prompts in input_data.jsonl format instead of the bundled ones."}
    )


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
    template = prompt_template(data_args)
    if template is not None and data_args.dataset_format != "dove_jsonl":
        if "{instruction}" not in template:
            raise ValueError(f"`--prompt_template` must contain '{{instruction}}', got {template!r}.")
        dataset = dataset.map(lambda row: {"prompt": template.replace("{instruction}", row["prompt"])})
    return dataset


def main(eval_args: EvalArguments, model_args, data_args: DataArguments) -> dict[str, Any]:
    """Run `trl-ranking eval`: `evaluate_pro_table_row` on each test set, results written to `output_file`.

    The policy is loaded as the trainers load it (`--dtype`, `--attn_implementation`, `--load_in_4bit`; a folder
    saved by `trl-ranking pro --use_peft` holds a LoRA adapter and loads with its base model), the reward model with
    `RewardModelScorer`. Returns the results.
    """
    import torch
    from transformers import set_seed

    from ..evaluation import evaluate_pro_table_row
    from ..rewards import RewardModelScorer

    if not model_args.model_name_or_path:
        raise ValueError("`--model_name_or_path` is required.")
    if eval_args.eval_mode == "ifeval":
        return _run_ifeval_eval(eval_args, model_args, data_args)
    if not eval_args.dataset_name:
        raise ValueError("`--dataset_name` is required: one or more test sets.")
    dove = eval_args.eval_mode == "dove"
    if eval_args.eval_mode not in ("pro", "dove"):
        raise ValueError(f"`--eval_mode` must be 'pro', 'dove' or 'ifeval', got {eval_args.eval_mode!r}.")
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
        dataset = take_rows(only_split(dataset_dict, eval_args.dataset_split, name), data_args.max_eval_samples)
        test_sets[subset] = _prompts_for_eval(dataset, eval_args.prompt_column, data_args, name)

    model, tokenizer = _load_policy_and_tokenizer(eval_args, model_args, data_args)
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
    return _write_results(results, eval_args.output_file)


def _load_policy_and_tokenizer(eval_args: EvalArguments, model_args, data_args: DataArguments):
    """The policy (a full model or a PEFT adapter with its base, `_load_policy`) in eval mode, and its tokenizer."""
    from trl import get_quantization_config

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
    tokenizer = load_tokenizer(
        data_args.tokenizer_name_or_path or model_args.model_name_or_path,
        trust_remote_code=eval_args.trust_remote_code,
    )
    return model, tokenizer


def _run_ifeval_eval(eval_args: EvalArguments, model_args, data_args: DataArguments) -> dict[str, Any]:
    """`trl-ranking eval --eval_mode ifeval`: `evaluate_ifeval` (greedy, chat template), the table printed, and the
    metrics, per-type and per-prompt results and every answer written to `output_file`."""
    from transformers import set_seed

    from ..evaluation.ifeval import evaluate_ifeval, format_ifeval_table, load_ifeval_prompts

    set_seed(eval_args.seed)
    prompts = load_ifeval_prompts(eval_args.ifeval_input_file) if eval_args.ifeval_input_file else None
    model, tokenizer = _load_policy_and_tokenizer(eval_args, model_args, data_args)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"IFEval renders each prompt with the tokenizer's chat template, and the tokenizer of "
            f"{data_args.tokenizer_name_or_path or model_args.model_name_or_path!r} has none; pass an instruct model "
            "or `--tokenizer_name_or_path` of a tokenizer that has one."
        )
    result = evaluate_ifeval(
        model,
        tokenizer,
        prompts,
        max_new_tokens=eval_args.max_new_tokens or 512,
        batch_size=eval_args.batch_size,
        limit=eval_args.ifeval_limit,
        seed=eval_args.seed,
        max_prompt_length=eval_args.max_prompt_length,
        progress_bar=not os.environ.get("TQDM_DISABLE"),
    )
    print(format_ifeval_table(result))
    results = {
        "eval_mode": "ifeval",
        "model": model_args.model_name_or_path,
        "prompts": eval_args.ifeval_input_file or "bundled input_data.jsonl (541 prompts)",
        "limit": eval_args.ifeval_limit,
        "seed": eval_args.seed,
        "max_new_tokens": eval_args.max_new_tokens or 512,
        **result.to_dict(),
    }
    return _write_results(results, eval_args.output_file)


def _run_dove_eval(eval_args: EvalArguments, model_args, model, tokenizer, scorer, test_sets) -> dict[str, Any]:
    """`trl-ranking eval --eval_mode dove`: `evaluate_dove_win_rates` on each test set, results in `output_file`."""
    from ..evaluation import evaluate_dove_win_rates
    from ..judges import OpenAIChatJudge, RewardModelJudge

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
    return _write_results(results, eval_args.output_file)


def _write_results(results: dict[str, Any], output_file: str) -> dict[str, Any]:
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"Results written to {output}.")
    return results


def make_parser(subparsers=None, prog: str | None = None):
    """The parser of `trl-ranking eval`: `(EvalArguments, ModelConfig, DataArguments)`."""
    from trl import ModelConfig

    return make_script_parser("eval", (EvalArguments, ModelConfig, DataArguments), HELP, subparsers, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
