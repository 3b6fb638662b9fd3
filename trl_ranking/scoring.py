"""The one scoring core: masked sums of token log-probabilities, through TRL's fused log-prob head.

PRO, DOVE and DPO all score sequences with masked sums of token log-probabilities; they differ only in which tokens
count (the completion for PRO and DPO, the instruction and the response for DOVE) and in how the scores are
compared. The forward pass goes through the fused LM head that `DPOTrainer` installs (`add_fused_lm_head`), which
returns per-token log-probabilities without materialising the `[batch, seq, vocab]` logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
    outputs = model(**inputs, **model_kwargs, labels=labels, fused_lm_head=True, use_cache=False)
    shift_mask = score_mask[:, 1:]
    # Prompt-learning PEFT methods prepend virtual tokens to the outputs: keep the positions of the real tokens
    per_token = outputs.log_probs[:, -shift_mask.size(1) :]
    return TokenLogProbs(per_token=per_token, mask=shift_mask.to(per_token.dtype), outputs=outputs)


def rows_to_rankings(values: torch.Tensor, num_candidates: torch.Tensor, fill_value: float = 0.0) -> torch.Tensor:
    """Scatter per-row values (rows ordered example by example, candidates best first) to `[batch, n_max]`."""
    n_max = int(num_candidates.max().item())
    positions = torch.arange(n_max, device=values.device)
    mask = positions.unsqueeze(0) < num_candidates.to(values.device).unsqueeze(1)
    out = values.new_full((num_candidates.shape[0], n_max), fill_value)
    return out.masked_scatter(mask, values)
