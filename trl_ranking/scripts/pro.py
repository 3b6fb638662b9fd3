"""`trl-ranking pro`: train with Preference Ranking Optimization (`PROTrainer`), built like TRL's `trl/scripts/dpo.py`.

```bash
trl-ranking pro --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name rankings.jsonl --output_dir out-pro
python -m trl_ranking.scripts.pro --config recipe.yaml      # the same script, run directly
```
"""

from __future__ import annotations

from .utils import TrainDataArguments, make_script_parser, run_training


HELP = "Train with Preference Ranking Optimization (PROTrainer)"

# DPO options that `PROConfig` rejects (or that only tune an option it rejects): not shown in `trl-ranking pro --help`.
# (`loss_type` and `loss_weights` are PRO's own: they select the losses of the listwise family.)
HIDDEN_FLAGS = (
    "ld_alpha",
    "f_divergence_type",
    "f_alpha_divergence_coef",
    "label_smoothing",
    "use_weighting",
    "discopop_tau",
    "truncation_mode",
)


def main(script_args, training_args, model_args, dataset_args, data_args):
    """Run PRO training with the parsed arguments of `make_parser`; returns the trainer."""
    from ..pro import PROTrainer

    return run_training(PROTrainer, script_args, training_args, model_args, dataset_args, data_args)


def make_parser(subparsers=None, prog: str | None = None):
    """The parser of `trl-ranking pro`: `(ScriptArguments, PROConfig, ModelConfig, DatasetMixtureConfig,
    TrainDataArguments)`. Call `parser.set_defaults(...)` to change defaults (the `examples/` scripts set the papers'
    recipes this way); a `--config` file and the command line still override them."""
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    from ..pro import PROConfig

    dataclass_types = (ScriptArguments, PROConfig, ModelConfig, DatasetMixtureConfig, TrainDataArguments)
    return make_script_parser("pro", dataclass_types, HELP, subparsers, prog, hidden=HIDDEN_FLAGS)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
