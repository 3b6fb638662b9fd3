"""Files bundled with the package (the GPT-2 tokenizer, a real HH-RLHF sample) and a tiny-model factory.

These exist so that the quick start, the examples and the tests run on a fresh machine with no network: no model
or dataset can be downloaded there, so a small causal LM with random weights is built from a config and saved, and
then loaded by path, which is the path a user's model takes.
"""

from __future__ import annotations

from pathlib import Path


ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def bundled_tokenizer_path() -> str:
    """Path of the bundled real GPT-2 tokenizer (50,257 tokens, no chat template, no pad token)."""
    return str(ASSETS_DIR / "gpt2")


def bundled_hh_rlhf_path() -> str:
    """Path of the bundled sample of 400 raw HH-RLHF transcripts (harmless-base test split, MIT)."""
    return str(ASSETS_DIR / "hh_rlhf_harmless_base_sample.jsonl.gz")


# A ChatML-style template for tests and examples with conversational data (GPT-2 ships none).
SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_bundled_tokenizer(chat_template: bool = False):
    """Load the bundled GPT-2 tokenizer with `pad_token = eos_token`, optionally with a simple chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_path())
    tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
    return tokenizer


def _tiny_config(
    model_type: str,
    vocab_size: int,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    intermediate_size: int,
    **extra,
):
    from transformers import LlamaConfig, Qwen2Config

    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[model_type]
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=2048,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        **extra,
    )


def make_tiny_causal_lm(
    output_dir: str | Path,
    vocab_size: int = 50257,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    seed: int = 0,
    model_type: str = "llama",
) -> str:
    """Build a randomly initialised Llama- or Qwen2-shaped causal LM, save it to `output_dir` and return the path.

    The saved folder loads with `AutoModelForCausalLM.from_pretrained(path)` (and so as `model=path` in a trainer),
    with or without a `BitsAndBytesConfig` (bitsandbytes' CPU 4-bit kernels need `hidden_size >= 64` for eval-mode
    forwards and generation).
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = _tiny_config(
        model_type,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(output_dir)
    return str(output_dir)


def make_tiny_reward_model(
    output_dir: str | Path | None = None,
    vocab_size: int = 50257,
    hidden_size: int = 16,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    intermediate_size: int = 32,
    seed: int = 0,
    score_scale: float = 1.0,
):
    """Build a randomly initialised Llama-shaped sequence classifier (`num_labels=1`) standing in for a reward model.

    `score_scale` multiplies the score head (a random head gives rewards of ~1e-2; 100 spreads them like a real
    model's). With `output_dir` the model is saved (with the bundled tokenizer) and its path returned, else the model
    itself is returned, in eval mode.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    config = _tiny_config(
        "llama", vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, num_labels=1
    )
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    if score_scale != 1.0:
        with torch.no_grad():
            model.score.weight.mul_(score_scale)
    if output_dir is None:
        return model.eval()
    model.save_pretrained(output_dir)
    load_bundled_tokenizer().save_pretrained(output_dir)
    return str(output_dir)
