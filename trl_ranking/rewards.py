"""Score (prompt, completion) pairs with a sequence-classification reward model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from trl.trainer.utils import pad

from .tokenization import is_conversational_value


logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]
PromptLike = str | Messages
INPUT_FORMATS = ("default", "oasst")



def _check_local_model_path(name: str) -> None:
    """A name that can only be a local path (it starts like one, or has more than one '/') and does not exist is a
    typo to report, not a Hub repository (whose id check would fail with "Repo id must be in the form ...")."""
    import os

    if os.path.exists(os.path.expanduser(name)):
        return
    looks_local = name.startswith((".", "/", "~", "\\")) or name.endswith(("/", "\\")) or name.count("/") > 1
    if looks_local or (len(name) > 1 and name[1] == ":"):
        raise FileNotFoundError(
            f"{name}: no such reward-model folder (the path does not exist). Give the folder of a saved reward model "
            "or a Hub id such as 'OpenAssistant/reward-model-deberta-v3-large-v2'."
        )


class RewardModelScorer:
    """Wrap an `AutoModelForSequenceClassification` reward model (`num_labels=1`) as a batched scorer callable.

    `scorer(prompts, completions)` returns one float per (prompt, completion) pair: the model's scalar logit at the
    last token of the pair. Inputs are either both standard text (`str`) or conversational (a prompt as a list of
    `{"role", "content"}` messages and a completion as a list of assistant messages, or a plain string taken as one
    assistant message); conversational pairs go through the tokenizer's chat template.

    How a pair becomes tokens:

    - The prompt and the completion are tokenized separately (as TRL's `DPOTrainer` does) and concatenated, so the
      boundary between them is exact. Standard text gets the tokenizer's special tokens on the prompt side (e.g. a
      BOS token); conversational text already carries them through the template.
    - Truncation keeps the completion: when the pair is longer than `max_length`, the prompt is left-truncated (its
      oldest tokens are dropped, keeping a leading BOS token if there is one) so the completion survives whole. A
      completion longer than `max_length` on its own is right-truncated to `max_length` tokens and the prompt is
      dropped; a warning is logged the first time.
    - Pairs are right-padded with the pad token and sorted by length inside the scorer; the model pools the
      rightmost non-pad token (as `transformers` sequence classifiers do), so padding does not change a score:
      batched scores equal one-by-one scores.

    The model is put in eval mode, run under `torch.no_grad()`, and inputs are moved to the model's device (or to
    `device`, where the model is moved first). A tokenizer without a pad token gets `pad_token = eos_token`, and the
    model's `config.pad_token_id` is set from the tokenizer when missing.

    Args:
        model (`str` or `PreTrainedModel`):
            The reward model, or a path/name loaded with `AutoModelForSequenceClassification.from_pretrained`.
        tokenizer (`PreTrainedTokenizerBase` or `str`, *optional*):
            The tokenizer, or a path to load; defaults to the model path when `model` is a string.
        batch_size (`int`, defaults to `8`):
            Number of pairs per forward pass.
        max_length (`int` or `None`, defaults to `1024`):
            Maximum number of tokens of a (prompt, completion) pair; `None` disables truncation.
        device (`str` or `torch.device`, *optional*):
            Device to move the model to; by default the model stays where it is.
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for `from_pretrained` when `model` is a string (e.g. `{"dtype": torch.bfloat16}`).
        input_format (`str`, defaults to `"default"`):
            How a pair becomes text. `"default"`: as described above. `"oasst"`: the OpenAssistant reward models'
            format, which the PRO paper's official evaluation feeds its reward model (`PRO/eval/metrics2.py`,
            `create_reward_fn_2`): every turn of the dialogue is `<|prompter|>text` or `<|assistant|>text` followed
            by the EOS token, and the response closes the last assistant turn:
            `<|prompter|>Hi<|endoftext|><|assistant|>Hello!<|endoftext|>`. The prompt must be an HH-RLHF transcript
            (`"\\n\\nHuman: ...\\n\\nAssistant:"`) or a list of user/assistant messages; turn texts and the
            response are stripped, as the official preprocessing and generation strip them.
        progress_bar (`bool`, defaults to `True`): Show a progress bar when a call scores more than one batch.

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> from trl_ranking.rewards import RewardModelScorer

    >>> scorer = RewardModelScorer("path/to/reward-model", batch_size=16, max_length=512)
    >>> scorer(["What is 2+2?", "What is 2+2?"], [" 4", " 5"])
    [1.73, -0.42]
    >>> chat = [{"role": "user", "content": "What is 2+2?"}]
    >>> scorer([chat], [[{"role": "assistant", "content": "4"}]])
    [1.81]
    ```

    Because extra keyword arguments are ignored, the scorer can also be passed as a reward function to TRL trainers
    that call `reward_func(prompts=..., completions=..., **columns)`.
    """

    def __init__(
        self,
        model: str | Any,
        tokenizer: Any | None = None,
        batch_size: int = 8,
        max_length: int | None = 1024,
        device: str | torch.device | None = None,
        model_init_kwargs: dict[str, Any] | None = None,
        input_format: str = "default",
        progress_bar: bool = True,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")

        if isinstance(model, str):
            model_path = model
            _check_local_model_path(model_path)
            model = AutoModelForSequenceClassification.from_pretrained(model_path, **(model_init_kwargs or {}))
            if tokenizer is None:
                tokenizer = model_path
        elif model_init_kwargs:
            raise ValueError("model_init_kwargs is only used when `model` is a path; the model is already built")
        if tokenizer is None:
            raise ValueError("a tokenizer is required when `model` is a model instance rather than a path")
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)

        num_labels = getattr(model.config, "num_labels", None)
        if num_labels != 1:
            raise ValueError(
                f"the reward model must have a single output (config.num_labels == 1), got num_labels={num_labels}"
            )

        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with; set one")
            tokenizer.pad_token = tokenizer.eos_token
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        if text_config.pad_token_id is None:
            text_config.pad_token_id = tokenizer.pad_token_id
            if text_config is not model.config:
                model.config.pad_token_id = tokenizer.pad_token_id

        if device is not None:
            model = model.to(device)
        model.eval()

        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.input_format = input_format
        self.progress_bar = progress_bar
        self.pad_token_id = text_config.pad_token_id
        self._warned_long_completion = False
        # Reward functions in TRL trainers are logged under their `__name__`
        self.__name__ = "reward_model_scorer"

    @property
    def device(self) -> torch.device:
        """The device the model (and so every batch) is on."""
        try:
            return next(self.model.parameters()).device
        except StopIteration:  # pragma: no cover - a model without parameters
            return torch.device("cpu")

    def _render_oasst(self, prompt: PromptLike, completion: PromptLike, index: int) -> tuple[str, str, bool]:
        """The OpenAssistant format: `<|prompter|>...<eos><|assistant|>...<eos>` (special tokens are in the text)."""
        from .data.pro_format import _prompt_to_turns

        where = f"pair {index}"
        turns = _prompt_to_turns(prompt, where)
        if turns is None:
            raise ValueError(
                f"{where}: input_format='oasst' needs a dialogue prompt (an HH-RLHF transcript or user/assistant "
                "messages), got plain text"
            )
        if is_conversational_value(completion):
            completion = "".join(str(message.get("content", "")) for message in completion)
        if not isinstance(completion, str):
            raise ValueError(f"{where}: field 'completion' must be a string or assistant messages")
        eos = self.tokenizer.eos_token
        prompt_text = "".join(turn.strip() + eos for turn in turns[:-1]) + turns[-1]
        # The official scorer tokenizes the whole text with the tokenizer's default special tokens
        return prompt_text, completion.strip() + eos, False

    def _render(self, prompt: PromptLike, completion: PromptLike, index: int) -> tuple[str, str, bool]:
        """Return (prompt_text, completion_text, conversational) for one pair."""
        if self.input_format == "oasst":
            return self._render_oasst(prompt, completion, index)
        if isinstance(prompt, str):
            if not isinstance(completion, str):
                raise ValueError(
                    f"pair {index}: field 'completion' is {type(completion).__name__} but the prompt is a string; "
                    "use a string completion with a string prompt, or messages for both"
                )
            return prompt, completion, False
        if not is_conversational_value(prompt):
            raise ValueError(
                f"pair {index}: field 'prompt' must be a string or a list of {{'role', 'content'}} messages, "
                f"got {type(prompt).__name__}"
            )
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        elif not is_conversational_value(completion):
            raise ValueError(
                f"pair {index}: field 'completion' must be a string or a list of {{'role', 'content'}} messages, "
                f"got {type(completion).__name__}"
            )
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"pair {index}: conversational input needs a tokenizer with a chat template, and this one has none"
            )
        prompt, completion = list(prompt), list(completion)
        prompt_text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_text = self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if not full_text.startswith(prompt_text):
            # Templates that render the generation prompt differently from a finished turn: fall back to the
            # template without the generation prompt as the boundary.
            prompt_text = self.tokenizer.apply_chat_template(prompt, tokenize=False)
            if not full_text.startswith(prompt_text):
                raise ValueError(
                    f"pair {index}: the chat template renders the prompt differently alone and followed by the "
                    "completion, so the two cannot be separated for truncation"
                )
        return prompt_text, full_text[len(prompt_text) :], True

    def _encode(self, prompt: PromptLike, completion: PromptLike, index: int) -> list[int]:
        prompt_text, completion_text, conversational = self._render(prompt, completion, index)
        prompt_ids = self.tokenizer(prompt_text, add_special_tokens=not conversational)["input_ids"]
        completion_ids = self.tokenizer(completion_text, add_special_tokens=False)["input_ids"]
        if not prompt_ids and not completion_ids:
            raise ValueError(f"pair {index}: the prompt and the completion are both empty; there is nothing to score")
        max_length = self.max_length
        if max_length is None or len(prompt_ids) + len(completion_ids) <= max_length:
            return list(prompt_ids) + list(completion_ids)
        if len(completion_ids) >= max_length:
            if not self._warned_long_completion:
                logger.warning(
                    "pair %d: the completion alone has %d tokens, more than max_length=%d; it is right-truncated "
                    "and scored without its prompt (further cases are not logged)",
                    index,
                    len(completion_ids),
                    max_length,
                )
                self._warned_long_completion = True
            return list(completion_ids[:max_length])
        budget = max_length - len(completion_ids)
        bos = self.tokenizer.bos_token_id
        if bos is not None and prompt_ids and prompt_ids[0] == bos and budget >= 2:
            kept = [bos] + list(prompt_ids[len(prompt_ids) - budget + 1 :])
        else:
            kept = list(prompt_ids[len(prompt_ids) - budget :])
        return kept + list(completion_ids)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[PromptLike], completions: Sequence[PromptLike], **kwargs: Any) -> list[float]:
        """Score each (prompt, completion) pair; extra keyword arguments are ignored.

        Args:
            prompts (`list[str]` or `list[list[dict]]`): The prompts.
            completions (`list[str]` or `list[list[dict]]`): The completions, one per prompt.

        Returns:
            `list[float]`: One reward per pair, in input order.
        """
        if isinstance(prompts, str) or isinstance(completions, str):
            raise ValueError("prompts and completions must be lists (of strings or of message lists), not a string")
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions; they must match")
        encoded = [
            self._encode(prompt, completion, i) for i, (prompt, completion) in enumerate(zip(prompts, completions))
        ]
        # Longest first: similar lengths share a batch (less padding), and a memory error shows on the first batch
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        scores: list[float] = [0.0] * len(encoded)
        was_training = self.model.training
        self.model.eval()
        device = self.device
        try:
            starts = range(0, len(order), self.batch_size)
            # A bar for more than one batch only: TRL calls reward functions on every step's few completions
            disable = not self.progress_bar or len(starts) < 2
            for start in tqdm(starts, desc="Scoring", unit="batch", leave=False, disable=disable):
                batch_indices = order[start : start + self.batch_size]
                rows = [torch.tensor(encoded[i], dtype=torch.long) for i in batch_indices]
                input_ids = pad(rows, padding_value=self.pad_token_id, padding_side="right")
                attention_mask = pad([torch.ones_like(row) for row in rows], padding_side="right")
                output = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
                values = output.logits[:, 0].float().cpu().tolist()
                for i, value in zip(batch_indices, values):
                    scores[i] = value
        finally:
            if was_training:
                self.model.train()
        return scores

    def score(self, prompt: PromptLike, completion: PromptLike) -> float:
        """Score one (prompt, completion) pair.

        Example:

        ```python
        >>> scorer.score("What is 2+2?", " 4")
        1.73
        ```
        """
        return self([prompt], [completion])[0]

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return (
            f"RewardModelScorer(model={name!r}, batch_size={self.batch_size}, max_length={self.max_length}, "
            f"input_format={self.input_format!r})"
        )
