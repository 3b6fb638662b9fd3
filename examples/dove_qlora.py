"""DOVE with the paper's QLoRA recipe as defaults (Bansal et al., 2024, arXiv 2404.00530).

The defaults are those of the official training script (Hritikbansal/dove, `dove/train.py`): the SFT model loaded in
4 bits (NF4, bf16 compute), LoRA r=8, alpha=16, dropout 0.05 on the attention projections, `beta=0.1`, learning rate
5e-5 with a cosine schedule and 100 warmup steps, the paged 32-bit AdamW, 8 pairs per device with 4 accumulation
steps (a batch of 32 pairs), 1,000 steps, prompts up to 512 and rows up to 1,024 tokens, bf16, gradient
checkpointing, and the joint objective (`joint=True`). The official script declares a weight decay of 0.05 but never
passes it to `TrainingArguments`, so its runs used 0: the recipe uses 0 (`--weight_decay 0.05` for the declared
value). The 1,000 steps are the script's default; the paper reports runs of 5 and 10 epochs at batch 32:
`--max_steps -1 --num_train_epochs 5` (or 10) reproduces those. The reference model is the base with the LoRA adapter switched off, as in the
paper. The official script lists `q_proj, v_proj, k_proj, out_proj, fc_in, fc_out, wte` as LoRA targets; on the
paper's Mistral-7B only `q_proj`, `k_proj` and `v_proj` exist, so those are the defaults here. Where the official
code drops rows longer than `max_length`, `DOVETrainer` truncates the instruction (`max_prompt_length`) and raises on
rows that still do not fit.

    python examples/dove_qlora.py --model_name_or_path path/to/sft-model --dataset_name pairs.jsonl \\
        --output_dir dove-qlora
    python examples/dove_qlora.py ... --joint false             # the conditional ablation (DPO on each side)

`--dataset_name` takes joint rows (`chosen_prompt`/`chosen`/`rejected_prompt`/`rejected`), the DOVE jsonl
(`i_chosen`/`r_chosen`/`i_reject`/`r_reject`, with `--prompt_template dove` for the official
`### Instructions: ...` template) or DPO rows; `trl_ranking.data.build_joint_pairs` builds joint pairs with a judge
(see notebooks/dove_joint_preferences.ipynb). The same recipe as a YAML file for the `trl-ranking` command:
examples/configs/dove_qlora.yaml.
"""

from __future__ import annotations

from trl_ranking.scripts.dove import main as train_dove
from trl_ranking.scripts.dove import make_parser


DOVE_QLORA_RECIPE = {
    # model: 4-bit base + LoRA (the reference is the base with the adapter switched off)
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "dtype": "bfloat16",
    "use_peft": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj"],
    # DOVE loss
    "joint": True,
    "beta": 0.1,
    # optimisation (dove/train.py)
    "learning_rate": 5e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 100,
    "weight_decay": 0.0,  # declared as 0.05 in dove/train.py but never passed to TrainingArguments
    "optim": "paged_adamw_32bit",
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 4,
    "max_steps": 1000,  # the script's default; the paper: 5 or 10 epochs (--max_steps -1 --num_train_epochs 5)
    "bf16": True,
    "gradient_checkpointing": True,
    # lengths
    "max_prompt_length": 512,
    "max_length": 1024,
    "logging_steps": 10,
    "save_steps": 300,
}


def main(argv: list[str] | None = None):
    parser = make_parser(prog="python examples/dove_qlora.py")
    parser.set_defaults(**DOVE_QLORA_RECIPE)
    return train_dove(*parser.parse_args_and_config(argv))


if __name__ == "__main__":
    main()
