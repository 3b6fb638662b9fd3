"""The one scoring core: masked sums of token log-probabilities, through TRL's fused log-prob head.

PRO, DOVE and DPO all score sequences with masked sums of token log-probabilities; they differ only in which tokens
count (the completion for PRO and DPO, the instruction and the response for DOVE) and in how the scores are
compared. The forward pass goes through the fused LM head that `DPOTrainer` installs (`add_fused_lm_head`), which
returns per-token log-probabilities without materialising the `[batch, seq, vocab]` logits. The head is applied to
the scored positions only (`scored_forward`): TRL's head skips unlabelled positions on Triton devices alone, and
elsewhere (CPU, ...) projects every position of the batch, prompt and padding included, onto the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


# Per-token fields of TRL's `FusedCausalLMOutput`
FUSED_PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _base_model(model):
    """The `PreTrainedModel` under PEFT / accelerate wrappers."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def scored_forward(model, inputs: dict[str, Any], shift_labels: torch.Tensor, **model_kwargs):
    """Run `model` with TRL's fused LM head on the positions whose label is not -100 only, on every device.

    The backbone runs on the whole batch; a forward hook on it keeps the hidden states of the labelled positions alone
    (`[1, scored, hidden]`), so the head projects those and nothing else, with its own temperature, logit scaling,
    soft-capping and fp32 cast. The outputs are laid back out as `shift_labels` (`[rows, length]`, zero where not
    labelled), exactly as TRL's head returns them, so callers read them unchanged.

    Args:
        model: a causal LM patched with `trl.trainer.utils.add_fused_lm_head` (possibly wrapped by PEFT/accelerate).
        inputs: the model inputs (`input_ids`, `attention_mask`, `position_ids`, ...).
        shift_labels: `[rows, length]`, the label each position predicts (-100 where nothing is scored): position `j`
            of the row holds the label of its hidden state `j`. `length` is the sequence length (packed layouts) or
            the sequence length minus one (next-token labels of padded rows, `labels[:, 1:]`).
        **model_kwargs: extra keyword arguments for the forward (e.g. `output_router_logits`).
    """
    mask = shift_labels != -100
    rows, length = mask.shape
    index = mask.reshape(-1).nonzero().squeeze(1)
    if index.numel() == 0:  # nothing scored: one unlabelled position keeps the outputs connected to the graph
        index = index.new_zeros(1)
    sequence_length = inputs["input_ids"].shape[1]

    def keep_scored(module, args, output):
        hidden = output.last_hidden_state
        # Prompt-learning PEFT methods prepend virtual tokens: keep the positions of the real tokens
        hidden = hidden[:, hidden.size(1) - sequence_length :][:, :length]
        output.last_hidden_state = hidden.reshape(rows * length, -1)[index.to(hidden.device)].unsqueeze(0)
        return output

    # The fused head reads the backbone as `base_model` on each call (FSDP and PEFT may have replaced it)
    handle = _base_model(model).base_model.register_forward_hook(keep_scored)
    try:
        compact = model(
            **inputs,
            **model_kwargs,
            shift_labels=shift_labels.reshape(1, -1)[:, index],
            fused_lm_head=True,
            use_cache=False,
        )
    finally:
        handle.remove()
    fields = {}
    for name in FUSED_PER_TOKEN_FIELDS:
        value = getattr(compact, name, None)
        if value is not None:
            mask_here = mask.to(value.device)
            value = value.new_zeros(mask.shape).masked_scatter(mask_here, value.reshape(-1))
        fields[name] = value
    fields["label_mask"] = mask.to(compact.log_probs.device)
    return type(compact)(loss=compact.loss, aux_loss=getattr(compact, "aux_loss", None), **fields)


@dataclass
class TokenLogProbs:
    """Per-token log-probabilities of the scored tokens, aligned with `input_ids[:, 1:]` (0 where not scored)."""

    per_token: torch.Tensor  # [rows, seq - 1]
    mask: torch.Tensor  # [rows, seq - 1], 1 where the token is scored
    outputs: Any  # the model's `FusedCausalLMOutput` (entropy, is_top1, ... when requested)

    @property
    def sums(self) -> torch.Tensor:
        """Summed log-probability of the scored tokens of each row, `[rows]`."""
        return (self.per_token * self.mask).sum(dim=1)

    @property
    def counts(self) -> torch.Tensor:
        """Number of scored tokens of each row, `[rows]`."""
        return self.mask.sum(dim=1)

    @property
    def means(self) -> torch.Tensor:
        """Mean log-probability of the scored tokens of each row (PRO's score, Eq. 6), `[rows]`."""
        return self.sums / self.counts.clamp(min=1)


def token_log_probs(model, inputs: dict[str, torch.Tensor], score_mask: torch.Tensor, **model_kwargs) -> TokenLogProbs:
    """Run `model` with the fused LM head and return the log-probabilities of the tokens where `score_mask` is 1.

    Args:
        model: a causal LM patched with `trl.trainer.utils.add_fused_lm_head` (possibly wrapped by PEFT/accelerate).
        inputs: the model inputs (`input_ids`, `attention_mask`, and `position_ids` for packed layouts).
        score_mask: `[rows, seq]`, 1 for the tokens whose log-probability counts. The first token of a row has no
            prediction and is never scored.
        **model_kwargs: extra keyword arguments for the forward (e.g. `output_router_logits`).
    """
    input_ids = inputs["input_ids"]
    labels = input_ids.masked_fill(score_mask == 0, -100)
    outputs = scored_forward(model, inputs, labels[:, 1:], **model_kwargs)
    shift_mask = score_mask[:, 1:]
    per_token = outputs.log_probs
    return TokenLogProbs(per_token=per_token, mask=shift_mask.to(per_token.dtype), outputs=outputs)


def rows_to_rankings(values: torch.Tensor, num_candidates: torch.Tensor, fill_value: float = 0.0) -> torch.Tensor:
    """Scatter per-row values (rows ordered example by example, candidates best first) to `[batch, n_max]`."""
    n_max = int(num_candidates.max().item())
    positions = torch.arange(n_max, device=values.device)
    mask = positions.unsqueeze(0) < num_candidates.to(values.device).unsqueeze(1)
    out = values.new_full((num_candidates.shape[0], n_max), fill_value)
    return out.masked_scatter(mask, values)
