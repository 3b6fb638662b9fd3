"""`generate_responses`: batching with left padding, stop strings, truncation, modes, against a hand-written decoder."""

from __future__ import annotations

import pytest
import torch
from tiny_models import HH_RLHF_FILE, record_generate_calls, tiny_causal_lm
from transformers import StopStringCriteria

from trl_ranking.data import load_hh_rlhf
from trl_ranking.evaluation import HH_STOP_STRINGS, generate_responses, is_hh_prompt, truncate_at_stop_strings


@pytest.fixture(scope="module")
def hh_prompts():
    # Real HH prompts of different lengths, short enough for a fast CPU test
    prompts = [p for p in load_hh_rlhf(HH_RLHF_FILE, max_rows=60)["prompt"] if len(p) < 400]
    return prompts[:5]


def greedy_by_hand(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding without `generate`, padding or a cache: argmax of the full forward pass, token by token."""
    ids = tokenizer(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new)


def test_batched_generation_matches_hand_decoding(tokenizer, tiny_model_path, hh_prompts):
    model = tiny_causal_lm(tiny_model_path)
    assert len({len(tokenizer(p)["input_ids"]) for p in hh_prompts}) > 1, "prompts of different lengths get padded"
    batched = generate_responses(model, tokenizer, hh_prompts, max_new_tokens=6, batch_size=3, stop_strings=None)
    assert batched == [greedy_by_hand(model, tokenizer, prompt, 6) for prompt in hh_prompts]
    assert batched == generate_responses(
        model, tokenizer, hh_prompts, max_new_tokens=6, batch_size=1, stop_strings=None
    )


def test_stop_strings_end_and_cut_the_response(tokenizer, tiny_model_path, hh_prompts):
    model = tiny_causal_lm(tiny_model_path)
    prompt = hh_prompts[0]
    full = generate_responses(model, tokenizer, [prompt], max_new_tokens=8, stop_strings=None)[0]
    new_tokens = tokenizer(full, add_special_tokens=False)["input_ids"]
    stop = tokenizer.decode(new_tokens[3:5])  # a string the model produces mid-response
    assert stop and stop in full
    cut = generate_responses(model, tokenizer, [prompt], max_new_tokens=8, stop_strings=[stop])[0]
    assert cut == full[: full.index(stop)]
    assert truncate_at_stop_strings(" Sure.\n\nHuman: thanks\n\nHuman: x", HH_STOP_STRINGS) == " Sure."


def test_auto_stop_strings_and_prompt_truncation(tokenizer, tiny_model_path, hh_prompts, monkeypatch):
    model = tiny_causal_lm(tiny_model_path)
    calls = record_generate_calls(model, monkeypatch)
    assert all(is_hh_prompt(p) for p in hh_prompts) and not is_hh_prompt("Translate: chat")
    generate_responses(model, tokenizer, hh_prompts[:2], max_new_tokens=2, max_prompt_length=16, engine="generate")
    (criterion,) = calls[-1]["stopping_criteria"]
    assert isinstance(criterion, StopStringCriteria) and criterion.stop_strings == HH_STOP_STRINGS
    assert calls[-1]["do_sample"] is False
    input_ids = calls[-1]["input_ids"]
    assert input_ids.shape[1] == 16  # left-truncated: the end of the prompt is kept
    kept = {tuple(row.tolist()) for row in input_ids}
    assert {tuple(tokenizer(p)["input_ids"][-16:]) for p in hh_prompts[:2]} == kept
    generate_responses(model, tokenizer, ["Translate to French: cat ->"], max_new_tokens=2, engine="generate")
    assert "stopping_criteria" not in calls[-1]


def test_sampling_modes_and_conversational(tokenizer, chat_tokenizer, tiny_model_path, hh_prompts):
    model = tiny_causal_lm(tiny_model_path)
    model.train()
    torch.manual_seed(0)
    samples = generate_responses(
        model, tokenizer, hh_prompts[:3], max_new_tokens=3, do_sample=True, num_return_sequences=2, batch_size=2
    )
    assert len(samples) == 6 and all(isinstance(s, str) for s in samples)
    assert model.training, "the training mode is restored"
    model.eval()
    messages = [[{"role": "user", "content": "Hi there"}], [{"role": "user", "content": "What is 2+2?"}]]
    assert len(generate_responses(model, chat_tokenizer, messages, max_new_tokens=3)) == 2


def test_bad_input(tokenizer, tiny_model_path):
    model = tiny_causal_lm(tiny_model_path)
    with pytest.raises(ValueError, match="prompts is empty"):
        generate_responses(model, tokenizer, [])
    with pytest.raises(ValueError, match="mix standard text and conversational"):
        generate_responses(model, tokenizer, ["a", [{"role": "user", "content": "b"}]])
    with pytest.raises(ValueError, match="chat template"):
        generate_responses(model, tokenizer, [[{"role": "user", "content": "b"}]])
    with pytest.raises(ValueError, match="stop_strings"):
        generate_responses(model, tokenizer, ["a"], stop_strings="\n\nHuman:")
