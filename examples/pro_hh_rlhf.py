"""PRO on HH-RLHF with the paper's recipe as defaults (Song et al., 2024, arXiv 2306.17492).

The defaults are the official HH-RLHF run (AlibabaResearch/DAMO-ConvAI, `PRO/train/train_hh.sh` and `ds_config.yaml`):
a full fine-tune (LLaMA-7B in the paper) with AdamW at a constant learning rate of 5e-6, 2 epochs, an effective batch
of 112 rankings (7 GPUs x 2 per device x 8 accumulation steps there; 2 x 56 on one GPU here), blocks of 512 tokens
with the prompt left-truncated to 512 - 128 = 384 tokens, gradient clipping at 1.0, bf16, seed 42, and
`sft_weight=0.05` (the paper's beta = 0.05 (n-1)^2).

The paper's data is ranked by a reward model first: the official preprocessing
(`PRO/train/hh_preprocess_data/step_2_gen_train_data.py`) scores both answers of every HH-RLHF training pair with
OpenAssistant's `oasst-rm-2-pythia-6.9b-epoch-1` (in its `<|prompter|>...<|endoftext|><|assistant|>...` format),
re-orders the pair by that score and trains with the scores as rewards, which the dynamic temperature (Eqs. 9-11)
needs. Trained on the raw pairs instead (human order, no rewards) every temperature is 1: that is the paper's "-T"
ablation, not its main result. So the recipe has two steps:

    # 1. rank: load_hh_rlhf + rank_completions with the official reward model, written as jsonl
    python examples/pro_hh_rlhf.py rank --output_file hh_train_ranked.jsonl
    # 2. train on the ranked rows
    python examples/pro_hh_rlhf.py --model_name_or_path huggyllama/llama-7b --dataset_name hh_train_ranked.jsonl \\
        --output_dir llama-7b-pro-hh
    python examples/pro_hh_rlhf.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name hh_train_ranked.jsonl \\
        --load_in_4bit --use_peft --lora_target_modules all-linear --learning_rate 5e-5     # QLoRA on one GPU
    accelerate launch --num_processes 7 examples/pro_hh_rlhf.py --model_name_or_path ... \\
        --dataset_name hh_train_ranked.jsonl --gradient_accumulation_steps 8               # the paper's layout

`rank` takes `--dataset_name` (default: the raw HH-RLHF transcripts on the Hub, every `train*` file of every subset;
`--dataset_config harmless-base` for one subset), `--reward_model`, `--batch_size` and `--max_rows`. A
`--dataset_name` other than the raw HH-RLHF one is read with `--dataset_format auto` unless you set the format;
without it, training uses the raw pairs (the "-T" ablation) and says so in a warning. Every flag of
`trl-ranking pro` overrides a default, and so does a `--config` YAML file.

Longer rankings (the paper's HH-RLHF_{LLM,i} sets) add responses of other LLMs (ChatGPT, Alpaca, ...) to each pair
and rank all candidates with the reward model: `trl_ranking.data.add_completions` with that other model, then
`rank_completions`; save the result as jsonl or parquet and pass it with `--dataset_name`. (Candidates sampled from
the policy itself help less, the paper's Section 4.8.2; that is what self-bootstrapping does.) The same recipe as a YAML file for the
`trl-ranking` command: examples/configs/pro_hh_rlhf.yaml.
"""

from __future__ import annotations

import argparse
import logging

from trl_ranking.scripts.pro import main as train_pro
from trl_ranking.scripts.pro import make_parser


logger = logging.getLogger(__name__)

PRO_HH_RLHF_REWARD_MODEL = "OpenAssistant/oasst-rm-2-pythia-6.9b-epoch-1"
"""The reward model of the official preprocessing and evaluation (`create_reward_fn_2`)."""


PRO_HH_RLHF_RECIPE = {
    # data: raw HH-RLHF transcripts, the prompt shared by both answers (the paper's filtering)
    "dataset_name": "Anthropic/hh-rlhf",
    "dataset_format": "hh_rlhf",
    # PRO loss
    "sft_weight": 0.05,
    "dynamic_temperature": True,
    # optimisation (train_hh.sh, ds_config.yaml)
    "learning_rate": 5e-6,
    "lr_scheduler_type": "constant",
    "num_train_epochs": 2,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 56,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch",
    "bf16": True,
    "seed": 42,
    # lengths: block size 512, prompt left-truncated to 512 - 128
    "max_length": 512,
    "max_prompt_length": 384,
    "gradient_checkpointing": True,
    "logging_steps": 10,
}


def rank_hh_rlhf(
    output_file: str,
    dataset_name: str = "Anthropic/hh-rlhf",
    dataset_config: str | None = None,
    reward_model: str = PRO_HH_RLHF_REWARD_MODEL,
    tokenizer=None,
    batch_size: int = 16,
    max_rows: int | None = None,
    input_format: str = "oasst",
):
    """Step 1 of the recipe: HH-RLHF training pairs ordered by the reward model, its scores as `rewards`.

    `load_hh_rlhf` reads the pairs, `rank_completions` with `RewardModelScorer(reward_model, input_format="oasst",
    max_length=1024)` sorts each pair by score (the official `reward_model_ranker`), and the rows (`prompt`,
    `completions`, `rewards`) are written to `output_file` as jsonl. Returns the ranked dataset.
    """
    import torch

    from trl_ranking.data import rank_completions
    from trl_ranking.rewards import RewardModelScorer
    from trl_ranking.scripts.utils import DataArguments, load_dataset_by_format, only_split

    pairs = load_dataset_by_format(dataset_name, DataArguments(dataset_format="hh_rlhf"), config=dataset_config)
    pairs = only_split(pairs, "train", dataset_name)
    if max_rows is not None:
        pairs = pairs.select(range(min(max_rows, len(pairs))))
    scorer = RewardModelScorer(
        reward_model,
        tokenizer,
        batch_size=batch_size,
        max_length=1024,
        device="cuda" if torch.cuda.is_available() else None,
        input_format=input_format,
    )
    ranked = rank_completions(pairs, scorer)
    ranked.to_json(output_file)
    logger.info("Ranked %d HH-RLHF pairs with %s into %s", len(ranked), reward_model, output_file)
    return ranked


def _rank_main(argv: list[str]):
    parser = argparse.ArgumentParser(prog="python examples/pro_hh_rlhf.py rank", description=rank_hh_rlhf.__doc__)
    parser.add_argument("--output_file", required=True)
    parser.add_argument("--dataset_name", default="Anthropic/hh-rlhf")
    parser.add_argument("--dataset_config", default=None)
    parser.add_argument("--reward_model", default=PRO_HH_RLHF_REWARD_MODEL)
    parser.add_argument("--input_format", default="oasst", choices=["oasst", "default"])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_rows", type=int, default=None)
    return rank_hh_rlhf(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rank"]:
        return _rank_main(argv[1:])
    parser = make_parser(prog="python examples/pro_hh_rlhf.py")
    parser.set_defaults(**PRO_HH_RLHF_RECIPE)
    parsed = parser.parse_args_and_config(argv)
    script_args, data_args = parsed[0], parsed[-1]
    own_format = any(arg == "--dataset_format" or arg.startswith("--dataset_format=") for arg in argv)
    if script_args.dataset_name != PRO_HH_RLHF_RECIPE["dataset_name"] and not own_format:
        data_args.dataset_format = "auto"  # e.g. the ranked jsonl written by `rank`
    if data_args.dataset_format == "hh_rlhf":
        logger.warning(
            "Training on raw HH-RLHF pairs (%s): human order, no rewards, so the dynamic temperature does nothing and "
            "this is the paper's '-T' ablation. For the paper's run, rank the pairs first with "
            "`python examples/pro_hh_rlhf.py rank --output_file hh_train_ranked.jsonl` and pass "
            "`--dataset_name hh_train_ranked.jsonl --dataset_format auto`.",
            script_args.dataset_name,
        )
    return train_pro(*parsed)


if __name__ == "__main__":
    main()
