"""The `trl-ranking` command line: a thin dispatcher to the scripts `pro`, `dove` and `eval` (`trl_ranking.scripts`).

```bash
trl-ranking pro  --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name data.jsonl --output_dir out-pro
trl-ranking dove --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name pairs.jsonl --output_dir out-dove \\
    --load_in_4bit --use_peft --lora_r 8 --lora_alpha 16 --lora_target_modules all-linear
trl-ranking eval --model_name_or_path out-pro --reward_model_name_or_path path/to/rm --dataset_name test.jsonl.gz
trl-ranking eval --eval_mode ifeval --model_name_or_path out-pro --ifeval_limit 50   # IFEval, official scoring
trl-ranking pro  --config recipe.yaml            # a YAML file of any of the flags, as with `trl dpo --config`
```

As in TRL's own CLI, each command is a script module with `make_parser()` and `main()` (`trl_ranking.scripts.pro`,
`.dove`, `.eval`, shaped like `trl/scripts/dpo.py`): the arguments are parsed by `trl.TrlParser` into
`trl.ScriptArguments`, `PROConfig` or `DOVEConfig` (every field of `DPOConfig` and `TrainingArguments`),
`trl.ModelConfig` (`--use_peft --lora_r ... --load_in_4bit ...`) and `trl.DatasetMixtureConfig` (the
`datasets:` list of a YAML config, and `--test_split_size`), plus `TrainDataArguments` for the papers' formats.

Arguments that none of these dataclasses know are handed to `accelerate launch` (as `trl dpo` does): e.g.
`trl-ranking pro --num_processes 2 ...` or `--accelerate_config zero2` (a file, or one of the configs shipped with
TRL) relaunches the command under `accelerate launch -m trl_ranking.cli`. Without such arguments the command runs in
the current process (one process; `accelerate launch -m trl_ranking.cli pro ...` works too).
"""

from __future__ import annotations

import argparse
import os
import sys

from .scripts import dove, pro
from .scripts import eval as eval_script


SCRIPTS = {"pro": pro, "dove": dove, "eval": eval_script}
COMMANDS = {name: script.HELP for name, script in SCRIPTS.items()}
# Set in the environment of a command relaunched under `accelerate launch`, so that it runs instead of relaunching
_LAUNCHED_ENV = "TRL_RANKING_LAUNCHED"
# Errors a user causes (data, options, paths, missing extras, a diverging run) get one line and exit status 1
_USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)


def _script(command: str):
    if command not in SCRIPTS:
        raise ValueError(f"Unknown command {command!r}; expected one of {sorted(SCRIPTS)}.")
    return SCRIPTS[command]


def make_parser(command: str, prog: str | None = None):
    """The `trl.TrlParser` of a command (`pro`, `dove` or `eval`): `trl_ranking.scripts.<command>.make_parser`."""
    return _script(command).make_parser(prog=prog or f"trl-ranking {command}")


def _launch_with_accelerate(command: str, launch_args: list[str], argv: list[str], launch_command_fn=None):
    """Relaunch `trl-ranking <command> <argv>` under `accelerate launch <launch_args> -m trl_ranking.cli`.

    `argv` is passed on whole: the relaunched command parses it with the same parser, which leaves the launch
    arguments aside again (`fail_with_unknown_args=False`), so they need not be cut out of it.
    """
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
    accelerate_args = parser.parse_args([*launch_args, "-m", "trl_ranking.cli", command, *argv])
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


def _run_command(command: str, argv: list[str]) -> int:
    parser = make_parser(command)
    if os.environ.get(_LAUNCHED_ENV):
        # Already relaunched by `accelerate launch`: the launch arguments were consumed there
        parsed = parser.parse_args_and_config(argv, fail_with_unknown_args=False)
    else:
        *parsed, config_remaining, cli_remaining = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
        if config_remaining or cli_remaining:
            if command == "eval":
                raise SystemExit(f"trl-ranking eval: unrecognized arguments {config_remaining + cli_remaining}.")
            _launch_with_accelerate(command, config_remaining + cli_remaining, argv)
            return 0
    _script(command).main(*parsed)
    return 0


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

    try:
        return _run_command(args.command, argv[1:])
    except _USER_ERRORS as error:
        if os.environ.get("TRL_RANKING_DEBUG"):
            raise
        # An error the user can fix (bad data, option, path, or a non-finite run): one line, not a traceback
        message = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, (OSError, ImportError, FloatingPointError)) and not isinstance(error, FileNotFoundError):
            message = f"{type(error).__name__}: {message}"
        raise SystemExit(
            f"trl-ranking {args.command}: error: {message} (TRL_RANKING_DEBUG=1 shows the traceback)"
        ) from None


if __name__ == "__main__":
    raise SystemExit(main())
