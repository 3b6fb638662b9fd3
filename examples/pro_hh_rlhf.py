"""PRO on HH-RLHF with the paper's recipe as defaults (Song et al., 2023, arXiv 2306.17492).

The defaults are the official HH-RLHF run (AlibabaResearch/DAMO-ConvAI, `PRO/train/train_hh.sh` and `ds_config.yaml`):
a full fine-tune (LLaMA-7B in the paper) with AdamW at a constant learning rate of 5e-6, 2 epochs, an effective batch
of 112 rankings (7 GPUs x 2 per device x 8 accumulation steps there; 2 x 56 on one GPU here), blocks of 512 tokens
with the prompt left-truncated to 512 - 128 = 384 tokens, gradient clipping at 1.0, bf16, seed 42, and
`sft_weight=0.05` (the paper's beta = 0.05 (n-1)^2). The dataset defaults to the raw HH-RLHF transcripts on the Hub
read with `load_hh_rlhf` (rankings of two: every `train*` file of every subset). Every flag of `trl-ranking pro`
overrides a default, and so does a `--config` YAML file:

    python examples/pro_hh_rlhf.py --model_name_or_path huggyllama/llama-7b --output_dir llama-7b-pro-hh
    python examples/pro_hh_rlhf.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_config harmless-base \\
        --load_in_4bit --use_peft --lora_target_modules all-linear --learning_rate 5e-5     # QLoRA on one GPU
    accelerate launch --num_processes 7 examples/pro_hh_rlhf.py --model_name_or_path ... \\
        --gradient_accumulation_steps 8                                                    # the paper's layout

Longer rankings (the paper's HH-RLHF_{LLM,i} sets) are built by sampling extra candidates and ranking them with a
reward model: `trl_ranking.data.add_completions` and `rank_completions` (see notebooks/pro_qlora_hh_rlhf.ipynb);
save the result as jsonl or parquet and pass it with `--dataset_name`. The same recipe as a YAML file for the
`trl-ranking` command: examples/configs/pro_hh_rlhf.yaml.
"""

from __future__ import annotations

from trl_ranking.cli import make_parser, run_training


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


def main(argv: list[str] | None = None):
    parser = make_parser("pro", prog="python examples/pro_hh_rlhf.py")
    parser.set_defaults(**PRO_HH_RLHF_RECIPE)
    return run_training("pro", *parser.parse_args_and_config(argv))


if __name__ == "__main__":
    main()
