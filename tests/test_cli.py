"""The `trl-ranking` command line (`pro`, `dove`, `eval`) and the `examples/` recipes, on tiny local models and data.

Commands run in-process through `trl_ranking.cli.main([...])` (one subprocess checks the installed console script),
on a tiny random Llama-shaped model saved with the real GPT-2 tokenizer, and on the real data files in
`tests/fixtures/data` converted to the formats the loaders read.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_models import DOVE_DIR, HH_RLHF_FILE

from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm, make_tiny_reward_model
from trl_ranking.cli import main, make_parser
from trl_ranking.scripts.utils import DataArguments, detect_format, load_dataset_by_format


REPO = Path(__file__).resolve().parents[1]
# Settings every training command gets on CPU: fp32, no checkpointing, short rows, no saving of checkpoints
CPU_FLAGS = [
    "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no",
    "--logging_steps", "1", "--max_length", "64", "--max_prompt_length", "40", "--per_device_train_batch_size", "2",
    "--per_device_eval_batch_size", "2", "--dataloader_num_workers", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model_dir(workdir) -> str:
    """A tiny causal LM saved with its tokenizer, as a hub checkpoint is."""
    path = make_tiny_causal_lm(workdir / "tiny-model")
    load_bundled_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir_4bit(workdir) -> str:
    """The same with hidden size 64: bitsandbytes' CPU inference kernel needs 4-bit layers of >= 64 inputs (its
    block size), so evaluation and generation in 4 bits fail on the 32-wide model (training works)."""
    path = make_tiny_causal_lm(workdir / "tiny-model-64", hidden_size=64, intermediate_size=128)
    load_bundled_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reward_model_dir(workdir) -> str:
    return make_tiny_reward_model(workdir / "tiny-reward-model")


def _hh_lines(count: int, start: int = 0) -> list[str]:
    with gzip.open(HH_RLHF_FILE, "rt", encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    return lines[start : start + count]


@pytest.fixture(scope="module")
def pro_jsonl(workdir) -> Path:
    """Rankings of three in the PRO paper's format (written by `save_pro_jsonl`), from real HH-RLHF pairs; the third
    candidate is the chosen answer of the next row."""
    from datasets import Dataset

    from trl_ranking.data import load_hh_rlhf, save_pro_jsonl

    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=13)
    rows = [
        {
            "prompt": pairs[i]["prompt"],
            "completions": [pairs[i]["chosen"], pairs[i]["rejected"], pairs[i + 1]["chosen"]],
            "rewards": [1.5, 0.2, -1.0],
        }
        for i in range(12)
    ]
    path = workdir / "pro_train.json"
    save_pro_jsonl(Dataset.from_list(rows), path)
    return path


@pytest.fixture(scope="module")
def dove_joint_jsonl(workdir) -> Path:
    """Joint pairs (different instructions) in the DOVE paper's format, from the real DOVE instruction-response rows."""
    rows = [json.loads(line) for line in (DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl").open()][:16]
    path = workdir / "dove_joint.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for a, b in zip(rows[0::2], rows[1::2]):
            record = {"i_chosen": a["instruction"], "r_chosen": a["response"]}
            record.update({"i_reject": b["instruction"], "r_reject": b["response"]})
            handle.write(json.dumps(record) + "\n")
    return path


def _log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def _logged(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


# ----------------------------------------------------------------------------------------------------------------------
# Parsing and help
# ----------------------------------------------------------------------------------------------------------------------
def test_console_script_is_installed():
    executable = shutil.which("trl-ranking")
    command = [executable] if executable else [sys.executable, "-m", "trl_ranking.cli"]
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("pro", "dove", "eval"):
        assert name in result.stdout


def test_command_help_has_trl_and_paper_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pro", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--sft_weight", "--first_stage_only", "--dynamic_temperature", "--learning_rate", "--use_peft",
                 "--lora_r", "--load_in_4bit", "--dataset_name", "--dataset_format", "--test_split_size"):  # fmt: skip
        assert flag in text
    with pytest.raises(SystemExit):
        main(["dove", "--help"])
    assert "--joint" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--reward_model_name_or_path" in capsys.readouterr().out
    assert main([]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["not-a-command"])
    assert exit_info.value.code == 2


def test_unknown_arguments_go_to_accelerate_launch(monkeypatch):
    """As `trl dpo`: arguments no dataclass knows are `accelerate launch` arguments, and relaunch the command."""
    import accelerate.commands.launch

    launched = []

    def fake_launch_command(args):
        launched.append((args, os.environ.get("TRL_RANKING_LAUNCHED")))

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", fake_launch_command)
    monkeypatch.delenv("TRL_RANKING_LAUNCHED", raising=False)
    argv = ["pro", "--model_name_or_path", "m", "--num_processes", "2", "--bf16", "false", "--output_dir", "o"]
    assert main(argv) == 0
    ((args, launched_env),) = launched
    assert args.num_processes == 2 and args.module and args.training_script == "trl_ranking.cli"
    # The command line goes on whole: the relaunched parser leaves the launch arguments aside again
    assert args.training_script_args == ["pro", *argv[1:]]
    assert launched_env == "1" and "TRL_RANKING_LAUNCHED" not in os.environ  # set for the relaunched processes only

    with pytest.raises(SystemExit, match="--not_a_flag.*trl-ranking pro --help"):
        main(["pro", "--model_name_or_path", "m", "--bf16", "false", "--not_a_flag", "1"])
    with pytest.raises(SystemExit, match="--num_processes"):  # evaluation runs in one process
        main(["eval", "--model_name_or_path", "m", "--num_processes", "2"])


def test_missing_model_or_eval_set_is_a_clear_error(workdir, dove_joint_jsonl):
    with pytest.raises(SystemExit, match="^trl-ranking dove: error: `--model_name_or_path` is required"):
        main(["dove", "--dataset_name", str(dove_joint_jsonl), "--output_dir", str(workdir / "x"), *CPU_FLAGS])
    with pytest.raises(SystemExit, match="needs an evaluation set"):
        main(["dove", "--model_name_or_path", "unused", "--dataset_name", str(dove_joint_jsonl),
              "--eval_strategy", "steps", "--output_dir", str(workdir / "x"), *CPU_FLAGS])  # fmt: skip


def test_pro_help_hides_rejected_dpo_flags_and_marks_the_model_required(capsys):
    with pytest.raises(SystemExit):
        main(["pro", "--help"])
    pro_help = capsys.readouterr().out
    for flag in ("--label_smoothing", "--ld_alpha", "--f_divergence_type", "--truncation_mode"):
        assert re.search(rf"{flag}[\s\]]", pro_help) is None, flag  # (`--label_smoothing_factor` is TRL's)
    assert "--sft_weight" in pro_help
    assert re.search(r"\n  --model_name_or_path [^\n]*\n\s+Required\.", pro_help)
    # `--loss_type` is PRO's own (the listwise family), shown with PRO's losses, not DPO's
    loss_help = pro_help[pro_help.index("\n  --loss_type") + 3 :].split("\n  --", 1)[0]
    assert "'listmle'" in loss_help and "'ipo'" not in loss_help
    # Hidden flags are still parsed, so that PRO rejects a value with its reason (one line, see below)
    with pytest.raises(SystemExit, match=r"`ld_alpha=0\.5` is a DPO loss option with no meaning for PRO"):
        main(["pro", "--model_name_or_path", "m", "--bf16", "false", "--ld_alpha", "0.5"])
    # A DPO loss name given to PRO is named as unknown, with PRO's losses listed
    with pytest.raises(SystemExit, match=r"`loss_type` has unknown losses \['ipo'\]: PROTrainer's losses are"):
        main(["pro", "--model_name_or_path", "m", "--bf16", "false", "--loss_type", "ipo"])
    with pytest.raises(SystemExit):
        main(["dove", "--help"])
    assert "--loss_type" in capsys.readouterr().out  # DOVE runs every DPO loss


def test_user_errors_are_one_line_with_a_non_zero_exit(workdir, model_dir, dove_joint_jsonl):
    # A local path that does not exist is not looked up on the Hub
    with pytest.raises(SystemExit, match=r"^trl-ranking pro: error: \./no-such-file\.jsonl: no such file or folder"):
        main(["pro", "--model_name_or_path", model_dir, "--dataset_name", "./no-such-file.jsonl", *CPU_FLAGS])
    # A DOVE file given to `pro`: rejected by name instead of training on an empty prompt
    with pytest.raises(SystemExit, match=r"^trl-ranking pro: error: Row 0, field 'chosen_prompt': a per-side"):
        main(["pro", "--model_name_or_path", model_dir, "--dataset_name", str(dove_joint_jsonl),
              "--output_dir", str(workdir / "pro-on-dove"), *CPU_FLAGS])  # fmt: skip
    # The installed entry point: exit status 1, one line on stderr, no traceback
    result = subprocess.run(
        [sys.executable, "-m", "trl_ranking.cli", "pro", "--model_name_or_path", "m", "--bf16", "false",
         "--sft_weight", "nan"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "trl-ranking pro: error: `sft_weight` must be a finite number, got nan. "
        "(TRL_RANKING_DEBUG=1 shows the traceback)"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------
def test_detect_format_skips_a_utf8_byte_order_mark(workdir, pro_jsonl):
    bom = workdir / "bom_pro.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + pro_jsonl.read_bytes())
    assert detect_format(bom) == "pro_jsonl"


def test_detect_format(workdir, pro_jsonl, dove_joint_jsonl):
    from datasets import Dataset

    assert detect_format(HH_RLHF_FILE) == "hh_rlhf"
    assert detect_format(pro_jsonl) == "pro_jsonl"
    assert detect_format(dove_joint_jsonl) == "dove_jsonl"
    assert detect_format(DOVE_DIR / "anthropic_helpful" / "val_conditional_pref.jsonl") == "dove_jsonl"
    assert detect_format(DOVE_DIR.parent / "sparse-feedback") == "sparse_feedback"
    assert detect_format(DOVE_DIR / "anthropic_helpful" / "test.jsonl") == "hf"
    parquet = workdir / "rankings.parquet"
    Dataset.from_list([{"prompt": "p", "completions": [" a", " b"]}]).to_parquet(parquet)
    assert detect_format(parquet) == "hf"


def test_load_dataset_by_format(workdir, monkeypatch):
    from datasets import Dataset

    # A folder in a paper format, one subfolder per configuration, split files by name (the HH-RLHF hub layout)
    subset = workdir / "hh-layout" / "harmless-base"
    subset.mkdir(parents=True)
    for split, lines in (("train", _hh_lines(6)), ("test", _hh_lines(3, start=6))):
        with gzip.open(subset / f"{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(lines)
    loaded = load_dataset_by_format(str(workdir / "hh-layout"), DataArguments(), config="harmless-base")
    assert sorted(loaded) == ["test", "train"] and len(loaded["test"]) == 3
    assert loaded["train"].column_names == ["prompt", "chosen", "rejected"]
    assert loaded["train"][0]["prompt"].endswith("\n\nAssistant:")
    conversational = load_dataset_by_format(str(subset / "test.jsonl.gz"), DataArguments(dataset_conversational=True))
    assert conversational["train"][0]["chosen"][0]["role"] == "assistant"

    # A hub dataset in a paper format: its json files are downloaded, then read like the local folder
    import huggingface_hub

    downloads = []

    def fake_snapshot_download(repo_id, repo_type, allow_patterns):
        downloads.append((repo_id, repo_type, allow_patterns))
        return str(workdir / "hh-layout")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    hub = load_dataset_by_format("Anthropic/hh-rlhf", DataArguments(dataset_format="hh_rlhf"), config="harmless-base")
    assert downloads[0][:2] == ("Anthropic/hh-rlhf", "dataset") and "harmless-base/*.jsonl.gz" in downloads[0][2]
    assert hub["test"][0] == loaded["test"][0]

    # TRL formats: a parquet file, a folder saved with `save_to_disk`
    rows = Dataset.from_list([{"prompt": "The sky is", "completions": [" blue.", " green.", " loud."]}] * 4)
    rows.to_parquet(workdir / "rows.parquet")
    assert load_dataset_by_format(str(workdir / "rows.parquet"), DataArguments())["train"][0] == rows[0]
    rows.save_to_disk(workdir / "rows-on-disk")
    assert load_dataset_by_format(str(workdir / "rows-on-disk"), DataArguments())["train"][0] == rows[0]

    # The DOVE jsonl with the official template
    loaded = load_dataset_by_format(
        str(DOVE_DIR / "anthropic_helpful" / "val_conditional_pref.jsonl"), DataArguments(prompt_template="dove")
    )["train"]
    assert loaded[0]["chosen_prompt"].startswith("### Instructions: ")


# ----------------------------------------------------------------------------------------------------------------------
# Training and evaluation commands
# ----------------------------------------------------------------------------------------------------------------------
def test_pro_command_qlora_from_yaml_config(workdir, model_dir_4bit, pro_jsonl):
    """`trl-ranking pro --config file.yaml` with the LoRA and 4-bit flags, on rankings of three in the PRO format."""
    pytest.importorskip("bitsandbytes")
    output_dir = workdir / "pro-qlora"
    config = workdir / "pro.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": model_dir_4bit,
                "dataset_name": str(pro_jsonl),
                "output_dir": str(output_dir),
                "max_steps": 3,
                "learning_rate": 0.01,
                "sft_weight": 0.0,
                "eval_strategy": "steps",
                "eval_steps": 3,
                "test_split_size": 2,
                "env": {"TRL_RANKING_TEST_ENV": "from-yaml"},
            }
        )
    )
    lora = ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]
    assert main(["pro", "--config", str(config), "--load_in_4bit", *lora, *CPU_FLAGS]) == 0
    assert os.environ.pop("TRL_RANKING_TEST_ENV") == "from-yaml"

    assert (output_dir / "adapter_config.json").exists() and (output_dir / "tokenizer.json").exists()
    assert json.loads((output_dir / "adapter_config.json").read_text())["r"] == 4
    history = _log_history(output_dir)
    assert len(_logged(history, "loss")) == 3 and all(math.isfinite(x) for x in _logged(history, "loss"))
    assert _logged(history, "num_candidates") == [3.0, 3.0, 3.0]
    assert _logged(history, "loss/sft") == [0.0, 0.0, 0.0]  # sft_weight from the YAML file
    for key in ("loss/ranking", "ranking/accuracy", "ranking/kendall_tau", "scores/rank_3", "eval_ranking/accuracy"):
        assert _logged(history, key), key
    assert (output_dir / "train_results.json").exists() and (output_dir / "eval_results.json").exists()

    # The adapter learned: LoRA's B matrices start at zero
    from safetensors.torch import load_file

    weights = load_file(output_dir / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())


def test_pro_command_hh_rlhf_full_finetune(workdir, model_dir):
    """Raw HH-RLHF transcripts (format recognised), full fine-tuning, the model and its card saved."""
    output_dir = workdir / "pro-full"
    argv = ["pro", "--model_name_or_path", model_dir, "--dataset_name", str(HH_RLHF_FILE), "--max_train_samples", "8",
            "--max_steps", "2", "--learning_rate", "1e-3", "--output_dir", str(output_dir), *CPU_FLAGS]  # fmt: skip
    assert main(argv) == 0
    assert (output_dir / "model.safetensors").exists()
    assert "Preference Ranking Optimization" in (output_dir / "README.md").read_text()
    history = _log_history(output_dir)
    assert _logged(history, "num_candidates") == [2.0, 2.0]
    assert len(_logged(history, "loss/ranking")) == 2 and _logged(history, "loss/sft")[0] > 0


def test_dove_command_joint_pairs(workdir, model_dir, dove_joint_jsonl):
    output_dir = workdir / "dove"
    argv = ["dove", "--model_name_or_path", model_dir, "--dataset_name", str(dove_joint_jsonl),
            "--prompt_template", "dove", "--eval_dataset_name", str(DOVE_DIR / "anthropic_helpful" /
            "val_conditional_pref.jsonl"), "--max_eval_samples", "2", "--eval_strategy", "steps", "--eval_steps", "2",
            "--max_steps", "2", "--learning_rate", "1e-3", "--beta", "0.1", "--output_dir", str(output_dir),
            *CPU_FLAGS]  # fmt: skip
    assert main(argv) == 0
    assert (output_dir / "model.safetensors").exists()
    history = _log_history(output_dir)
    assert _logged(history, "joint/different_instructions") == [1.0, 1.0]  # every training pair is a joint pair
    # evaluated at step 2 and once more at the end, on conditional pairs
    assert _logged(history, "eval_joint/different_instructions") == [0.0, 0.0]
    for key in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "joint/logps_chosen_instruction"):
        assert len(_logged(history, key)) == 2 and all(math.isfinite(x) for x in _logged(history, key)), key


def test_eval_command_writes_json(workdir, model_dir, reward_model_dir):
    output_file = workdir / "eval" / "results.json"
    argv = ["eval", "--model_name_or_path", model_dir, "--reward_model_name_or_path", reward_model_dir,
            "--dataset_name", str(HH_RLHF_FILE), "--max_eval_samples", "3", "--max_new_tokens", "4",
            "--batch_size", "2", "--save_predictions", "--output_file", str(output_file)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(output_file.read_text())
    subset = results["subsets"]["harmless-base-test"]
    assert subset["num_examples"] == 3 and 0.0 <= subset["bleu"] <= 100.0 and 0.0 < subset["reward"] < 100.0
    assert len(results["predictions"]["harmless-base-test"]) == 3
    assert results["model"] == model_dir and results["reward_model"] == reward_model_dir


def test_eval_command_dove_test_file(workdir, model_dir, reward_model_dir):
    """The DOVE test files: `instruction` prompts in the official template, `gold_response` references."""
    output_file = workdir / "eval-dove.json"
    argv = ["eval", "--model_name_or_path", model_dir, "--reward_model_name_or_path", reward_model_dir,
            "--dataset_name", str(DOVE_DIR / "anthropic_helpful" / "test.jsonl"), "--subset_names", "helpful",
            "--prompt_column", "instruction", "--reference_column", "gold_response", "--prompt_template", "dove",
            "--max_eval_samples", "2", "--max_new_tokens", "4", "--output_file", str(output_file)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(output_file.read_text())
    assert list(results["subsets"]) == ["helpful"] and results["total"]["num_examples"] == 2


def test_eval_command_dove_mode_and_pro_file_order(workdir, model_dir, reward_model_dir, tmp_path):
    """`--eval_mode dove`: the DOVE paper's win rates against gold per temperature; PRO files keep their order."""
    output_file = workdir / "eval-dove-mode.json"
    argv = ["eval", "--eval_mode", "dove", "--model_name_or_path", model_dir, "--reward_model_name_or_path",
            reward_model_dir, "--dataset_name", str(DOVE_DIR / "anthropic_helpful" / "test.jsonl"),
            "--subset_names", "helpful", "--prompt_column", "instruction", "--prompt_template", "dove",
            "--max_eval_samples", "3", "--max_new_tokens", "4", "--temperatures", "0.001", "1.0",
            "--output_file", str(output_file)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(output_file.read_text())["subsets"]["helpful"]["temperatures"]
    assert [row["temperature"] for row in rows] == [0.001, 1.0]
    for row in rows:
        assert row["num_judged"] + row["failed"] == 3
        assert row["win_rate"] == pytest.approx(100 * (row["win"] + row["tie"] / 2))

    # A PRO-format test file whose rewards disagree with the file order: the reference stays the file's first
    pro_file = tmp_path / "helpful_base.json"
    record = {"prefix": [["<|prompter|>Hi", "<|assistant|>"]] * 2, "suffix": ["Hello there friend.", "Go."],
              "reward": [-1.0, 2.0], "sft_index": 0}  # fmt: skip
    pro_file.write_text(json.dumps(record) + "\n")
    output_file = workdir / "eval-pro-order.json"
    argv = ["eval", "--model_name_or_path", model_dir, "--reward_model_name_or_path", reward_model_dir,
            "--dataset_name", str(pro_file), "--max_new_tokens", "4", "--output_file", str(output_file)]  # fmt: skip
    captured = {}
    import trl_ranking.evaluation.pro_table as pro_table

    original = pro_table._references

    def spy(dataset, subset, reference_column):
        captured["references"] = original(dataset, subset, reference_column)
        return captured["references"]

    pro_table._references = spy
    try:
        assert main(argv) == 0
    finally:
        pro_table._references = original
    assert captured["references"] == ["Hello there friend."]


# ----------------------------------------------------------------------------------------------------------------------
# examples/
# ----------------------------------------------------------------------------------------------------------------------
def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, recipe, config", [("pro_hh_rlhf", "PRO_HH_RLHF_RECIPE", "pro_hh_rlhf"), ("dove_qlora", "DOVE_QLORA_RECIPE", "dove_qlora")]
)  # fmt: skip
def test_example_recipes_match_yaml_configs(name, recipe, config):
    recipe = getattr(_load_example(name), recipe)
    assert yaml.safe_load((REPO / "examples" / "configs" / f"{config}.yaml").read_text()) == recipe


def test_example_recipes_are_the_papers():
    from trl import get_peft_config, get_quantization_config

    parser = make_parser("dove")
    parser.set_defaults(**_load_example("dove_qlora").DOVE_QLORA_RECIPE)
    _, args, model_args, _, _ = parser.parse_args_and_config(["--model_name_or_path", "m", "--bf16", "false"])
    assert (args.beta, args.learning_rate, args.lr_scheduler_type, args.warmup_steps) == (0.1, 5e-5, "cosine", 100)
    assert args.joint is True
    lora = get_peft_config(model_args)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 16, 0.05)
    assert get_quantization_config(model_args).load_in_4bit

    parser = make_parser("pro")
    parser.set_defaults(**_load_example("pro_hh_rlhf").PRO_HH_RLHF_RECIPE)
    script, args, *_ = parser.parse_args_and_config(["--model_name_or_path", "m", "--bf16", "false"])
    assert (args.learning_rate, args.lr_scheduler_type, args.num_train_epochs, args.max_grad_norm) == (
        5e-6, "constant", 2, 1.0)  # fmt: skip
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 112
    assert (args.max_length, args.max_prompt_length, args.sft_weight) == (512, 384, 0.05)
    assert (script.dataset_name, script.dataset_train_split) == ("Anthropic/hh-rlhf", "train")


def test_pro_example_ranks_the_pairs_with_the_reward_model_first(workdir, reward_model_dir, caplog):
    """Step 1 of the PRO recipe: pairs ordered by the reward model in the oasst format, its scores as rewards."""
    from trl_ranking.assets import load_bundled_tokenizer
    from trl_ranking.data import load_hh_rlhf
    from trl_ranking.rewards import RewardModelScorer

    example = _load_example("pro_hh_rlhf")
    output_file = workdir / "hh_ranked.jsonl"
    tokenizer = load_bundled_tokenizer()
    ranked = example.rank_hh_rlhf(
        str(output_file), dataset_name=str(HH_RLHF_FILE), reward_model=reward_model_dir, tokenizer=tokenizer,
        max_rows=6, batch_size=4,
    )  # fmt: skip
    # Independent: score both answers of each pair in the oasst format, order by score
    pairs = load_hh_rlhf(HH_RLHF_FILE, max_rows=6)
    scorer = RewardModelScorer(reward_model_dir, tokenizer, input_format="oasst", max_length=1024)
    chosen, rejected = scorer(pairs["prompt"], pairs["chosen"]), scorer(pairs["prompt"], pairs["rejected"])
    flipped = 0
    for row, pair, c, r in zip(ranked, pairs, chosen, rejected):
        expected = [(pair["chosen"], c), (pair["rejected"], r)]
        expected.sort(key=lambda item: -item[1])
        assert row["completions"] == [text for text, _ in expected]
        assert row["rewards"] == pytest.approx([score for _, score in expected], abs=1e-5)
        flipped += c < r
    assert 0 < flipped < 6, "the random reward model reorders some pairs and not others"
    written = [json.loads(line) for line in output_file.read_text().splitlines()]
    assert [row["completions"] for row in written] == ranked["completions"]
    # The training step reads the ranked file with its rewards, and warns on raw pairs (the "-T" ablation)
    with caplog.at_level(logging.WARNING):
        called = {}
        original = example.train_pro
        example.train_pro = lambda *parsed: called.setdefault("data_args", parsed[-1])
        try:
            example.main(["--model_name_or_path", "m", "--dataset_name", str(output_file), "--bf16", "false"])
            assert called["data_args"].dataset_format == "auto" and "-T" not in caplog.text
            called.clear()
            example.main(["--model_name_or_path", "m", "--bf16", "false"])
            assert called["data_args"].dataset_format == "hh_rlhf" and "'-T' ablation" in caplog.text
        finally:
            example.train_pro = original


def test_dove_example_trains_tiny_model(workdir, model_dir, dove_joint_jsonl):
    """The DOVE example with its QLoRA defaults (4-bit, LoRA, paged AdamW), overriding only sizes and CPU settings."""
    pytest.importorskip("bitsandbytes")
    output_dir = workdir / "dove-example"
    argv = ["--model_name_or_path", model_dir, "--dataset_name", str(dove_joint_jsonl), "--dtype", "float32",
            "--max_steps", "1", "--gradient_accumulation_steps", "1", "--output_dir", str(output_dir),
            *CPU_FLAGS]  # fmt: skip
    trainer = _load_example("dove_qlora").main(argv)
    assert trainer.model.get_base_model().is_loaded_in_4bit
    assert trainer.args.lr_scheduler_type == "cosine" and trainer.args.warmup_steps == 100
    assert (output_dir / "adapter_config.json").exists()
    assert _logged(_log_history(output_dir), "rewards/accuracies")
