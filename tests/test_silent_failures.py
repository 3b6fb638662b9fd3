"""Issue 27, part two: nothing trains, loads or fails silently wrong, and every error names what is wrong and where
(the config field and its value, the row, the file and its line)."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
from datasets import Dataset

from trl_ranking import DOVEConfig, PROConfig, PROTrainer
from trl_ranking.dove.trainer import to_joint_pair
from trl_ranking.pro.rows import to_ranking


USER = [{"role": "user", "content": "Hi"}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --- configs: values that train the wrong thing, or nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beta": -1.0}, r"`beta` must be > 0, got -1\.0"),
        ({"beta": 0.0}, r"`beta` must be > 0, got 0\.0"),
        ({"beta": -1.0, "loss_type": ["listmle"]}, r"`beta` must be > 0, got -1\.0"),
        ({"beta": -0.5, "reference_normalized": True}, r"`beta` must be > 0, got -0\.5"),
        ({"loss_type": ["pro", "rrhf"], "loss_weights": [0.0, 0.0]}, r"`loss_weights=\[0\.0, 0\.0\]`.*all 0"),
        ({"rrhf_length_penalty": -1.0}, r"`rrhf_length_penalty` must be >= 0, got -1\.0"),
    ],
)
def test_pro_config_rejects_values_that_train_the_wrong_thing(options, message):
    with pytest.raises(ValueError, match=message):
        PROConfig(output_dir="x", bf16=False, report_to="none", **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beta": -1.0}, r"`beta` must be > 0, got -1\.0"),
        ({"beta": 0.0}, r"`beta` must be > 0, got 0\.0"),
        ({"loss_type": ["sigmoid", "hinge"], "loss_weights": [0.0, 0.0]}, r"`loss_weights=\[0\.0, 0\.0\]`.*all 0"),
        ({"loss_type": ["sigmoid", "hinge"], "loss_weights": [1.0, -1.0]}, r"`loss_weights`.*>= 0"),
    ],
)
def test_dove_config_rejects_values_that_train_the_wrong_thing(options, message):
    with pytest.raises(ValueError, match=message):
        DOVEConfig(output_dir="x", bf16=False, report_to="none", **options)


def test_configs_keep_their_valid_values():
    PROConfig(output_dir="x", bf16=False, report_to="none", loss_type=["pro", "rrhf"], loss_weights=[1.0, 0.0])
    PROConfig(output_dir="x", bf16=False, report_to="none", rrhf_length_penalty=0.0)
    DOVEConfig(output_dir="x", bf16=False, report_to="none", beta=0.5)


# --- rows: the implicit prompt, and empty prompts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, message",
    [
        ({"chosen": "Q: a A: x", "rejected": "Q: a A: x"}, r"Row 3, fields 'chosen' and 'rejected': identical"),
        ({"completions": ["same", "same", "same"]}, r"Row 3, field 'completions': .*identical"),
        (
            {"chosen": USER + assistant("x"), "rejected": USER},
            r"Row 3, field 'rejected': .*no message after the shared prompt.*assistant",
        ),
        ({"chosen": "Q: a A: x", "rejected": "Q: a A:"}, r"Row 3, field 'rejected': .*nothing after the shared"),
        ({"prompt": [], "chosen": assistant("x"), "rejected": assistant("y")}, r"Row 3, field 'prompt': .*empty list"),
        ({"prompt": [], "chosen": "x", "rejected": "y"}, r"Row 3, field 'prompt': .*empty list"),
        (
            {"chosen": [{"role": "system", "content": "A"}, *USER, *assistant("x")],
             "rejected": [{"role": "system", "content": "B"}, *USER, *assistant("y")]},
            r"Row 3: .*share no first message.*'prompt'",
        ),
    ],
)  # fmt: skip
def test_pro_rows_say_what_is_wrong_with_the_prompt(row, message):
    with pytest.raises(ValueError, match=message):
        to_ranking(row, 3, with_rewards=False)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"chosen": "Q: a A: x", "rejected": "Q: a A: x"}, r"Row 3, fields 'chosen' and 'rejected': identical"),
        (
            {"chosen": USER + assistant("x"), "rejected": USER},
            r"Row 3, field 'rejected': .*no message after the shared prompt.*assistant",
        ),
        (
            {"chosen": USER, "rejected": USER + assistant("x")},
            r"Row 3, field 'chosen': .*no message after the shared prompt.*assistant",
        ),
        ({"chosen": assistant("x"), "rejected": assistant("y")}, r"Row 3: .*share no first message.*'prompt'"),
    ],
)
def test_dove_rows_say_what_is_wrong_with_the_implicit_prompt(row, message):
    with pytest.raises(ValueError, match=message):
        to_joint_pair(row, 3)


def test_valid_implicit_prompts_still_split():
    assert to_ranking({"chosen": USER + assistant("x"), "rejected": USER + assistant("y")}, 0, False)[0] == USER
    assert to_joint_pair({"chosen": USER + assistant("x"), "rejected": USER + assistant("y")}, 0).chosen_prompt == USER


# --- a tokenizer without pad and EOS tokens; a reward model path that does not exist -------------------------------


def test_tokenizer_without_pad_or_eos_says_so(tmp_path, tiny_model_path):
    from trl_ranking.assets import load_bundled_tokenizer

    tokenizer = load_bundled_tokenizer()
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    args = PROConfig(output_dir=str(tmp_path / "out"), bf16=False, report_to="none", max_length=32)
    rows = Dataset.from_list([{"prompt": "Q:", "completions": [" a", " b"]}])
    with pytest.raises(ValueError, match=r"has neither a pad token nor an EOS token.*pad_token"):
        PROTrainer(model=tiny_model_path, args=args, train_dataset=rows, processing_class=tokenizer)


@pytest.mark.parametrize("name", ["path/to/rm", "./missing-rm", "missing-rm/"])
def test_a_reward_model_path_that_does_not_exist_is_named(tmp_path, monkeypatch, name):
    from trl_ranking.rewards import RewardModelScorer

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{name}: no such reward-model folder"):
        RewardModelScorer(name)


# --- rewards whose size breaks the loss where it uses them -----------------------------------------------------------


def _pro_trainer(tmp_path, model_path, tokenizer, rewards, **config):
    rows = [{"prompt": "Q:", "completions": [" a", " b", " c"], "rewards": list(r)} for r in rewards]
    args = PROConfig(output_dir=str(tmp_path / "out"), max_length=32, report_to="none", bf16=False, **config)
    return PROTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def test_large_rewards_warn_under_the_dynamic_temperature(tmp_path, tiny_model_path, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="trl_ranking"):
        _pro_trainer(tmp_path, tiny_model_path, tokenizer, [[1.0, 0.0, -1.0], [1e6, 0.0, -1e6]])
    assert "1 of 2 rankings of the train dataset have rewards large enough to dominate the loss" in caplog.text
    assert "row 1: the rewards span 2e+06" in caplog.text and "dynamic temperature" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_ranking"):  # without the temperature their size is harmless
        _pro_trainer(tmp_path, tiny_model_path, tokenizer, [[1e6, 0.0, -1e6]], dynamic_temperature=False)
    assert "dominate" not in caplog.text


def test_rewards_that_would_overflow_the_gradient_are_an_error(tmp_path, tiny_model_path, tokenizer):
    with pytest.raises(ValueError, match=r"Row 1, field 'rewards': the rewards span 2e\+30.*dynamic temperature"):
        _pro_trainer(tmp_path, tiny_model_path, tokenizer, [[1.0, 0.0, -1.0], [1e30, 0.0, -1e30]])


def test_lipo_rewards_that_overflow_the_gain_are_an_error(tmp_path, tiny_model_path, tokenizer):
    options = {"loss_type": ["lipo_lambda"], "lipo_label_normalization": "none"}
    with pytest.raises(ValueError, match=r"Row 0, field 'rewards': the reward 130 .*2\^r - 1.*overflows float32"):
        _pro_trainer(tmp_path, tiny_model_path, tokenizer, [[130.0, 1.0, 0.0]], **options)
    # minmax (the default) maps them to [0, 1] first: no problem
    _pro_trainer(tmp_path, tiny_model_path, tokenizer, [[130.0, 1.0, 0.0]], loss_type=["lipo_lambda"])


# --- JSON-lines files: what the line reader loaded loads again, and errors name the file, the line and the field ---


def _write(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_pro_jsonl_whose_prefix_types_vary_loads(tmp_path):
    from trl_ranking.data import load_pro_jsonl

    path = tmp_path / "mixed.jsonl"
    _write(path, [
        json.dumps({"prefix": "Plain prompt", "suffix": ["a", "b"], "reward": [1.0, 0.0]}),
        json.dumps({"prefix": [["<|prompter|>How?"], ["<|prompter|>How?"]], "suffix": ["c", "d"], "reward": [1, 0]}),
        "",  # a file ending in a blank line
        "   ",
    ])  # fmt: skip
    dataset = load_pro_jsonl(path)
    assert len(dataset) == 2 and dataset[0]["prompt"] == "Plain prompt"


def test_jsonl_syntax_errors_name_the_file_and_the_line(tmp_path):
    from trl_ranking.data import load_dove_jsonl, load_hh_rlhf, load_pro_jsonl

    good = {
        "pro": json.dumps({"prefix": "p", "suffix": ["a", "b"]}),
        "dove": json.dumps({"i_chosen": "a", "r_chosen": "b", "i_reject": "c", "r_reject": "d"}),
        "hh": json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}),
    }
    for kind, loader in (("pro", load_pro_jsonl), ("dove", load_dove_jsonl), ("hh", load_hh_rlhf)):
        path = tmp_path / f"{kind}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write("\n".join([good[kind]] * 3 + ["", '{"prefix": "p", oops}', good[kind]]) + "\n")
        with pytest.raises(ValueError, match=rf"{kind}\.jsonl\.gz, line 5: not valid JSON \(.*column"):
            loader(path)
    # Field errors name the row (records from 0) and its line
    path = tmp_path / "broken.jsonl"
    _write(path, [good["dove"], "", json.dumps({"i_chosen": "a", "r_chosen": "b", "i_reject": "c"})])
    with pytest.raises(ValueError, match=r"broken\.jsonl, row 1 \(line 3\): field 'r_reject'"):
        load_dove_jsonl(path)


def _cli_error(command: str, dataset: str, tmp_path, *extra: str) -> str:
    from trl_ranking.cli import main

    flags = ["--bf16", "false", "--report_to", "none", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model_name_or_path", "unused", "--dataset_name", dataset, *flags, *extra])
    message = str(exit_info.value.code)
    assert "\n" not in message and message.startswith(f"trl-ranking {command}: error: ")
    return message


def test_cli_broken_json_names_the_file_and_the_line(tmp_path):
    trl_rows = [json.dumps({"prompt": "Q", "chosen": " a", "rejected": " b"})] * 4 + ['{"prompt": "Q", "chosen": ']
    _write(tmp_path / "trl.jsonl", trl_rows)
    message = _cli_error("pro", str(tmp_path / "trl.jsonl"), tmp_path)
    assert "trl.jsonl, line 5: not valid JSON" in message
    dove_rows = [json.dumps({"i_chosen": "a", "r_chosen": "b", "i_reject": "c", "r_reject": "d"})] * 4 + ["{oops"]
    _write(tmp_path / "dove.jsonl", dove_rows)
    message = _cli_error("dove", str(tmp_path / "dove.jsonl"), tmp_path, "--dataset_format", "dove_jsonl")
    assert "dove.jsonl, line 5: not valid JSON" in message and "position" not in message


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_cli_empty_file_is_named(tmp_path, content):
    (tmp_path / "empty.jsonl").write_text(content, encoding="utf-8")
    message = _cli_error("pro", str(tmp_path / "empty.jsonl"), tmp_path)
    assert "empty.jsonl: the file holds no JSON record (it is empty or blank)" in message
