"""The slot decoder (`trl_ranking.decoding`, `generate_responses(engine="slots")`) against `model.generate`.

Greedy answers must be token-identical to `model.generate` at the same dtype (float32 here) through everything the
decoder does differently: refilling freed slots mid-run, rows that end at different steps, the window moving back to
the buffer's start, grouped-query heads, a PEFT adapter, stop strings.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import HH_RLHF_FILE, move_lora_away_from_zero, tiny_causal_lm
from transformers import AutoModelForCausalLM, LlamaConfig

from trl_ranking.data import load_hh_rlhf
from trl_ranking.decoding import DecodeSettings, slot_decode, supports_slot_decoding
from trl_ranking.generation import generate_responses


@pytest.fixture(scope="module")
def prompts():
    # Real HH prompts of many lengths (the slots refill with prompts of other lengths than the ones that ended)
    rows = [p for p in load_hh_rlhf(HH_RLHF_FILE, max_rows=80)["prompt"] if len(p) < 500]
    return rows[:10]


@pytest.fixture(scope="module")
def gqa_model():
    """A tiny Llama with grouped-query attention (6 heads sharing 2 key/value heads), GPT-2 vocabulary."""
    config = LlamaConfig(
        vocab_size=50257, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=1024, bos_token_id=50256, eos_token_id=50256, pad_token_id=50256,
    )
    torch.manual_seed(3)
    return AutoModelForCausalLM.from_config(config).eval()


def _eos_mid_answer(model, tokenizer, prompts, max_new_tokens):
    """A token that greedy decoding emits early in some answers and not in others, to use as an extra EOS: rows then
    end at different steps and their slots are refilled mid-run."""
    answers = generate_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens, engine="generate",
                                 stop_strings=None)
    counts: dict[int, int] = {}
    for answer in answers:
        for token in set(tokenizer(answer, add_special_tokens=False)["input_ids"][: max_new_tokens // 2]):
            counts[token] = counts.get(token, 0) + 1
    # emitted in some answers but not all
    return next(token for token, count in sorted(counts.items(), key=lambda item: -item[1]) if count < len(answers))


@pytest.mark.parametrize("slots", [1, 3, 10])
def test_greedy_slots_equal_generate(tokenizer, tiny_model_path, prompts, slots):
    model = tiny_causal_lm(tiny_model_path)
    expected = generate_responses(model, tokenizer, prompts, max_new_tokens=10, batch_size=4, engine="generate")
    got = generate_responses(model, tokenizer, prompts, max_new_tokens=10, batch_size=slots, engine="slots")
    assert got == expected


def _generate_tokens(model, encoded, max_new_tokens, eos_ids, pad_id):
    """`model.generate`'s greedy new tokens per prompt (one prompt at a time: no padding), up to and with the first
    EOS."""
    answers = []
    for ids in encoded:
        output = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=sorted(eos_ids), pad_token_id=pad_id)
        new = output[0, len(ids):].tolist()
        end = next((i + 1 for i, token in enumerate(new) if token in eos_ids), len(new))
        answers.append(new[:end])
    return answers


def test_rows_ending_at_different_steps_refill_their_slots(tokenizer, gqa_model, prompts):
    """An extra EOS ends some rows early: their slots take the next prompts while the other rows go on."""
    model = gqa_model
    eos_ids = frozenset({tokenizer.eos_token_id, _eos_mid_answer(model, tokenizer, prompts, max_new_tokens=16)})
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    expected = _generate_tokens(model, encoded, 16, eos_ids, tokenizer.eos_token_id)
    settings = DecodeSettings(max_new_tokens=16, eos_token_ids=eos_ids, pad_token_id=tokenizer.eos_token_id)
    # Two spare columns: the cache buffers are rebuilt every other step (trimmed, moved, grown)
    tokens, generated = slot_decode(model, encoded, settings, slots=3, spare=2)
    lengths = [len(row) for row in tokens]
    assert min(lengths) < 16 <= max(lengths), "some rows end early, some run to max_new_tokens"
    assert generated == sum(lengths)
    assert tokens == expected
    with pytest.raises(ValueError, match="positive"):
        slot_decode(model, encoded, settings, slots=3, spare=0)


def test_stop_strings_and_conversational_prompts(tokenizer, chat_tokenizer, tiny_model_path, prompts):
    model = tiny_causal_lm(tiny_model_path)
    full = generate_responses(model, tokenizer, prompts[:4], max_new_tokens=10, stop_strings=None, engine="generate")
    stop = tokenizer.decode(tokenizer(full[0], add_special_tokens=False)["input_ids"][4:6])
    for engine_kwargs in ({"stop_strings": [stop]}, {"stop_strings": None}):
        expected = generate_responses(model, tokenizer, prompts[:4], max_new_tokens=10, engine="generate",
                                      **engine_kwargs)
        assert generate_responses(model, tokenizer, prompts[:4], max_new_tokens=10, engine="slots",
                                  batch_size=2, **engine_kwargs) == expected
    assert stop in full[0] and stop not in generate_responses(
        model, tokenizer, prompts[:1], max_new_tokens=10, stop_strings=[stop], engine="slots")[0]
    messages = [[{"role": "user", "content": p[-200:]}] for p in prompts[:3]]
    assert generate_responses(model, chat_tokenizer, messages, max_new_tokens=6, engine="slots") == generate_responses(
        model, chat_tokenizer, messages, max_new_tokens=6, engine="generate")


def test_peft_adapter_and_min_new_tokens(tokenizer, tiny_model_path, prompts):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    move_lora_away_from_zero(model, std=0.3)
    model.eval()
    kwargs = dict(max_new_tokens=8, min_new_tokens=8, batch_size=3, stop_strings=None)
    assert generate_responses(model, tokenizer, prompts, engine="slots", **kwargs) == generate_responses(
        model, tokenizer, prompts, engine="generate", **kwargs)


def test_sampling(tokenizer, tiny_model_path, prompts):
    model = tiny_causal_lm(tiny_model_path)
    model.train()
    torch.manual_seed(0)
    samples = generate_responses(model, tokenizer, prompts[:3], max_new_tokens=6, do_sample=True,
                                 num_return_sequences=2, batch_size=4, engine="slots", temperature=1.5)
    assert len(samples) == 6 and len(set(samples)) > 3, "six samples, and not all alike"
    assert model.training, "the training mode is restored"
    greedy = generate_responses(model, tokenizer, prompts[:3], max_new_tokens=6, engine="slots")
    # top_k=1 leaves one token to sample: the greedy answer
    top1 = generate_responses(model, tokenizer, prompts[:3], max_new_tokens=6, do_sample=True, top_k=1, engine="slots")
    assert top1 == greedy
    # top_p near 0 keeps only the most likely token too
    assert generate_responses(model, tokenizer, prompts[:3], max_new_tokens=6, do_sample=True, top_p=1e-6,
                              engine="slots") == greedy


def test_dtype_copy_leaves_the_model_alone(tokenizer, tiny_model_path, prompts):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    before = {name: param.clone() for name, param in model.state_dict().items()}
    answers = generate_responses(model, tokenizer, prompts[:3], max_new_tokens=4, dtype=torch.bfloat16)
    assert len(answers) == 3
    assert next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[name], param) for name, param in model.state_dict().items())
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.bfloat16)
    assert answers == generate_responses(bf16, tokenizer, prompts[:3], max_new_tokens=4)


def test_engine_choice(tokenizer, tiny_model_path, prompts, monkeypatch):
    model = tiny_causal_lm(tiny_model_path)
    assert supports_slot_decoding(model)
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda **kwargs: calls.append(kwargs) or original(**kwargs))
    generate_responses(model, tokenizer, prompts[:2], max_new_tokens=2)
    assert not calls, "auto takes the slot decoder"
    generate_responses(model, tokenizer, prompts[:2], max_new_tokens=2, repetition_penalty=1.3)
    assert calls and calls[-1]["repetition_penalty"] == 1.3, "an argument it does not implement: model.generate"
    from transformers import StoppingCriteriaList

    generate_responses(model, tokenizer, prompts[:2], max_new_tokens=2, stopping_criteria=StoppingCriteriaList())
    assert "stopping_criteria" in calls[-1], "a user's own stopping criteria are model.generate's, not dropped"
    with pytest.raises(ValueError, match="does not implement"):
        generate_responses(model, tokenizer, prompts[:2], max_new_tokens=2, repetition_penalty=1.3, engine="slots")
    with pytest.raises(ValueError, match="engine must be"):
        generate_responses(model, tokenizer, prompts[:2], engine="vllm")
    sliding = LlamaConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=8, layer_types=["sliding_attention"], sliding_window=4)
    assert not supports_slot_decoding(AutoModelForCausalLM.from_config(sliding))
