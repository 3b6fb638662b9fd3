"""Tests for `RewardModelScorer` on a tiny random Llama reward model with the real GPT-2 tokenizer."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from tiny_models import DOVE_DIR
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from trl_ranking.assets import SIMPLE_CHAT_TEMPLATE, bundled_tokenizer_path, make_tiny_reward_model
from trl_ranking.rewards import RewardModelScorer


def make_reward_model(seed: int = 0) -> LlamaForSequenceClassification:
    model = make_tiny_reward_model(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, seed=seed
    )
    return model.train()  # as a freshly built model: the scorer must switch to eval mode itself


@pytest.fixture(scope="module")
def reward_model():
    return make_reward_model()


@pytest.fixture(scope="module")
def sft_rows():
    with open(DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle][:12]


def reference_score(model, tokenizer, prompt: str, completion: str) -> float:
    """Independent score: one unpadded sequence, the logit at its last token."""
    ids = tokenizer(prompt)["input_ids"] + tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_batched_scores_equal_one_by_one(reward_model, tokenizer, sft_rows):
    prompts = [row["instruction"] for row in sft_rows]
    completions = [row["response"] for row in sft_rows]
    scorer = RewardModelScorer(reward_model, tokenizer, batch_size=5, max_length=None)
    batched = scorer(prompts, completions)
    one_by_one = [scorer.score(p, c) for p, c in zip(prompts, completions)]
    independent = [reference_score(reward_model, tokenizer, p, c) for p, c in zip(prompts, completions)]
    assert len(batched) == len(sft_rows)
    assert all(isinstance(value, float) for value in batched)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(one_by_one), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(independent), atol=1e-5, rtol=1e-5)
    # Random weights still give different pairs different scores
    assert len({round(value, 6) for value in batched}) > 1


def test_batch_size_does_not_change_scores(reward_model, tokenizer, sft_rows):
    prompts = [row["instruction"] for row in sft_rows]
    completions = [row["response"] for row in sft_rows]
    by_one = RewardModelScorer(reward_model, tokenizer, batch_size=1)(prompts, completions)
    by_all = RewardModelScorer(reward_model, tokenizer, batch_size=len(prompts))(prompts, completions)
    torch.testing.assert_close(torch.tensor(by_one), torch.tensor(by_all), atol=1e-5, rtol=1e-5)


def test_left_truncation_keeps_the_completion(reward_model, tokenizer):
    prompt = " ".join(f"word{i}" for i in range(200))
    completion = " the completion that must survive truncation"
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    max_length = len(completion_ids) + 10
    scorer = RewardModelScorer(reward_model, tokenizer, max_length=max_length)
    encoded = scorer._encode(prompt, completion, 0)
    assert len(encoded) == max_length
    assert encoded[-len(completion_ids) :] == completion_ids
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert encoded[:10] == prompt_ids[-10:]  # the newest prompt tokens are kept
    # The score is that of the truncated sequence
    with torch.no_grad():
        expected = reward_model(input_ids=torch.tensor([encoded])).logits[0, 0].item()
    assert scorer.score(prompt, completion) == pytest.approx(expected, abs=1e-5)
    # A short pair is untouched
    assert scorer._encode("Hi", " there", 0) == tokenizer("Hi")["input_ids"] + tokenizer(" there")["input_ids"]


def test_completion_longer_than_max_length_is_right_truncated(reward_model, tokenizer, caplog):
    completion = " ".join(f"token{i}" for i in range(100))
    scorer = RewardModelScorer(reward_model, tokenizer, max_length=16)
    with caplog.at_level(logging.WARNING, logger="trl_ranking.rewards"):
        encoded = scorer._encode("A prompt", completion, 3)
    assert encoded == tokenizer(completion)["input_ids"][:16]
    assert "pair 3" in caplog.text and "max_length=16" in caplog.text


def test_conversational_pairs_use_the_chat_template(reward_model):
    chat_tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_path())
    chat_tokenizer.chat_template = SIMPLE_CHAT_TEMPLATE
    scorer = RewardModelScorer(reward_model, chat_tokenizer, batch_size=2)
    prompts = [
        [{"role": "user", "content": "Where can I buy dry ice?"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ],
    ]
    completions = [[{"role": "assistant", "content": "At a grocery store."}], "Goodbye!"]
    scores = scorer(prompts, completions)
    for prompt, completion, value in zip(prompts, completions, scores):
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        text = chat_tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        assert text.endswith("<|im_end|>\n")
        ids = chat_tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            expected = reward_model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        # Separate tokenization of prompt and completion may differ from joint tokenization only at the boundary,
        # which is a newline after "assistant" here: it tokenizes the same way
        assert value == pytest.approx(expected, abs=1e-5)


def test_conversational_without_chat_template_is_a_clear_error(reward_model, tokenizer):
    scorer = RewardModelScorer(reward_model, tokenizer)
    with pytest.raises(ValueError, match="pair 0.*chat template"):
        scorer([[{"role": "user", "content": "Hi"}]], ["Hello"])


def test_model_path_and_missing_pad_token(tmp_path, sft_rows):
    model = make_reward_model(seed=1)
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path)
    raw_tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_path())
    assert raw_tokenizer.pad_token is None
    raw_tokenizer.save_pretrained(tmp_path)

    scorer = RewardModelScorer(str(tmp_path), batch_size=4, device="cpu")
    assert scorer.tokenizer.pad_token == scorer.tokenizer.eos_token
    assert scorer.model.config.pad_token_id == scorer.tokenizer.eos_token_id
    assert not scorer.model.training
    prompts = [row["instruction"] for row in sft_rows[:6]]
    completions = [row["response"] for row in sft_rows[:6]]
    batched = scorer(prompts, completions)
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    singles = [reference_score(scorer.model, loaded_tokenizer, p, c) for p, c in zip(prompts, completions)]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(singles), atol=1e-5, rtol=1e-5)


def test_training_mode_is_restored_and_no_grad(reward_model, tokenizer):
    scorer = RewardModelScorer(reward_model, tokenizer)
    reward_model.train()
    try:
        scores = scorer(["a"], [" b"])
        assert reward_model.training
        assert isinstance(scores[0], float)
    finally:
        reward_model.eval()


def test_extra_keyword_arguments_are_ignored(reward_model, tokenizer):
    scorer = RewardModelScorer(reward_model, tokenizer)
    assert scorer(prompts=["a"], completions=[" b"], completion_ids=[[1]], answer=["x"]) == scorer(["a"], [" b"])
    assert scorer.__name__ == "reward_model_scorer"


def test_bad_inputs(reward_model, tokenizer):
    scorer = RewardModelScorer(reward_model, tokenizer)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        scorer(["a", "b"], [" c"])
    with pytest.raises(ValueError, match="pair 1: the prompt and the completion are both empty"):
        scorer(["a", ""], [" b", ""])
    with pytest.raises(ValueError, match="pair 0: field 'completion'"):
        scorer(["a"], [[{"role": "assistant", "content": "b"}]])
    with pytest.raises(ValueError, match="not a string"):
        scorer("a", " b")
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelScorer(reward_model, tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="tokenizer is required"):
        RewardModelScorer(reward_model)
    two_labels = LlamaForSequenceClassification(LlamaConfig(**{**reward_model.config.to_dict(), "num_labels": 2}))
    with pytest.raises(ValueError, match="num_labels=2"):
        RewardModelScorer(two_labels, tokenizer)


def test_oasst_input_format_matches_the_official_text(reward_model, tokenizer, hh_pairs):
    """`input_format="oasst"` scores the text the PRO paper's evaluation gives its reward model (`PRO/eval/metrics2.py`,
    `create_reward_fn_2`): `"".join(t + eos for t in prefix[:-1] + [prefix[-1] + suffix])`."""
    eos = tokenizer.eos_token
    rows = [
        row
        for row in hh_pairs.select(range(40))
        if all(chunk.startswith(("Human:", "Assistant:")) for chunk in row["prompt"].split("\n\n")[1:])
        and "\n\n" not in row["chosen"]
    ][:6]
    assert len(rows) == 6
    prompts, completions, official = [], [], []
    for row in rows:
        # The official prefix: one "<|prompter|>text" / "<|assistant|>text" turn per message, then the bare tag
        turns = []
        for chunk in row["prompt"].split("\n\n")[1:]:
            speaker, _, text = chunk.partition(":")
            turns.append(("<|prompter|>" if speaker == "Human" else "<|assistant|>") + text.strip())
        prefix = turns[:-1] + ["<|assistant|>"]
        suffix = row["chosen"].strip()
        official.append("".join(t + eos for t in prefix[:-1] + [prefix[-1] + suffix]))
        prompts.append(row["prompt"])
        completions.append(row["chosen"])
    scorer = RewardModelScorer(reward_model, tokenizer, batch_size=4, max_length=None, input_format="oasst")
    assert [scorer._encode(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))] == [
        tokenizer(text)["input_ids"] for text in official
    ]
    with torch.no_grad():
        expected = [
            reward_model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).logits[0, 0].item() for t in official
        ]
    torch.testing.assert_close(
        torch.tensor(scorer(prompts, completions)), torch.tensor(expected), atol=1e-5, rtol=1e-5
    )
    # Conversational prompts give the same text
    messages = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert scorer._render(messages, [{"role": "assistant", "content": " Bye."}], 0)[:2] == (
        f"<|prompter|>Hi there{eos}<|assistant|>Hello!{eos}<|prompter|>Bye{eos}<|assistant|>",
        f"Bye.{eos}",
    )
    with pytest.raises(ValueError, match="pair 0: input_format='oasst' needs a dialogue prompt"):
        scorer(["Translate: cat"], [" chat"])
    with pytest.raises(ValueError, match="input_format must be one of"):
        RewardModelScorer(reward_model, tokenizer, input_format="pythia")


def test_scoring_many_rows_shows_a_progress_bar(reward_model, tokenizer, sft_rows, capsys):
    prompts = [row["instruction"] for row in sft_rows[:6]]
    completions = [row["response"] for row in sft_rows[:6]]
    scores = RewardModelScorer(reward_model, tokenizer, batch_size=2)(prompts, completions)
    assert "Scoring" in capsys.readouterr().err  # three batches
    RewardModelScorer(reward_model, tokenizer, batch_size=6)(prompts, completions)  # one batch: no bar
    quiet = RewardModelScorer(reward_model, tokenizer, batch_size=2, progress_bar=False)(prompts, completions)
    assert "Scoring" not in capsys.readouterr().err
    assert quiet == pytest.approx(scores, abs=1e-5)
