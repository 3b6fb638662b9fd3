"""`trl-ranking dove`: train with joint preference optimization (`DOVETrainer`), built like TRL's
`trl/scripts/dpo.py`.

```bash
trl-ranking dove --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name pairs.jsonl --output_dir out-dove \\
    --load_in_4bit --use_peft --lora_r 8 --lora_alpha 16 --lora_target_modules all-linear
python -m trl_ranking.scripts.dove --config recipe.yaml      # the same script, run directly
```
"""

from __future__ import annotations

from .utils import TrainDataArguments, make_script_parser, run_training


HELP = "Train with joint preference optimization (DOVETrainer)"


def main(script_args, training_args, model_args, dataset_args, data_args):
    """Run DOVE training with the parsed arguments of `make_parser`; returns the trainer."""
    from ..dove import DOVETrainer

    return run_training(DOVETrainer, script_args, training_args, model_args, dataset_args, data_args)


def make_parser(subparsers=None, prog: str | None = None):
    """The parser of `trl-ranking dove`: `(ScriptArguments, DOVEConfig, ModelConfig, DatasetMixtureConfig,
    TrainDataArguments)`; `parser.set_defaults(...)` changes defaults, as with `pro`."""
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    from ..dove import DOVEConfig

    dataclass_types = (ScriptArguments, DOVEConfig, ModelConfig, DatasetMixtureConfig, TrainDataArguments)
    return make_script_parser("dove", dataclass_types, HELP, subparsers, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
