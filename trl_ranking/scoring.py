"""The one scoring path: masked sums of token log-probabilities, through TRL's fused log-prob head.

PRO, DOVE and DPO all score sequences with masked sums of token log-probabilities; they differ only in which tokens
count (the completion for PRO and DPO, the instruction and the response for DOVE) and in how the scores are
compared. Every trainer scores through this module, on both layouts of a batch (`trl_ranking.packing` builds the
packed layouts and their attention masks):

| Trainer | Layout | Function (this module) | Attention mask | Where the LM head runs |
|---|---|---|---|---|
| PRO | padded | `batch_token_log_probs` -> `token_log_probs` | the collator's 2D padding mask | `scored_forward`: scored positions only |
| PRO | packed | `batch_token_log_probs` -> `packed_token_log_probs` | `packing.packed_attention_mask` (tree / block-diagonal) | `scored_forward`: scored positions only |
| DOVE | padded | `dpo_fused_outputs` (called by DPO's loss and reference code) | the collator's 2D padding mask | `scored_forward`: scored positions only |
| DOVE | packed | `dpo_fused_outputs` -> `packed_token_log_probs` -> `scatter_to_padded` | `packing.packed_attention_mask` | `scored_forward` on the packed rows, re-laid out as the padded rows |

PRO reads the per-sequence sums of a `TokenLogProbs` (one result type for both layouts). DOVE keeps DPO's loss: DPO
calls the model and reads per-token outputs of the padded rows, so `dpo_fused_outputs` returns the fused head's
outputs in the padded rows' places whichever layout the batch was run in.

The forward pass goes through the fused LM head that `DPOTrainer` installs (`add_fused_lm_head`), which returns
per-token log-probabilities without materialising the `[batch, seq, vocab]` logits. The head is applied to the scored
positions only (`scored_forward`): TRL's head skips unlabelled positions on Triton devices alone, and elsewhere (CPU,
...) projects every position of the batch, prompt and padding included, onto the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .packing import _base_model, is_packed, packed_attention_mask


# Per-token fields of TRL's `FusedCausalLMOutput`
FUSED_PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


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
    """Log-probabilities of the scored tokens of a batch, padded or packed: one entry per `(sequence, position)` pair.

    Sequences are numbered as the padded rows (example by example, candidates in order). `position` indexes the
    flattened per-position outputs of the forward (`outputs.log_probs.reshape(-1)`), so `gather` reads any per-token
    field of the fused head (entropy, top-1 flag) at the scored tokens, whatever the layout.
    """

    values: torch.Tensor  # [scored tokens]
    sequence: torch.Tensor  # [scored tokens], the sequence each value counts for
    position: torch.Tensor  # [scored tokens], its flat position in the forward's per-position outputs
    num_sequences: int
    outputs: Any  # the model's `FusedCausalLMOutput`
    # Padded rows (one sequence per row): the row length of the per-position outputs. Sums then run along each row in
    # the order `DPOTrainer` sums them, so a padded PRO score is bitwise DPO's (an `index_add` rounds differently)
    row_length: int | None = None

    def gather(self, per_position: torch.Tensor) -> torch.Tensor:
        """Values of a per-position model output (e.g. `outputs.entropy`) at the scored tokens, `[scored tokens]`."""
        return per_position.reshape(-1)[self.position]

    def sum_per_sequence(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of per-scored-token `values` within each sequence, `[num_sequences]`."""
        if self.row_length is not None:
            dense = values.new_zeros(self.num_sequences * self.row_length).index_put((self.position,), values)
            return dense.view(self.num_sequences, self.row_length).sum(dim=1)
        out = values.new_zeros(self.num_sequences)
        return out.index_add(0, self.sequence, values)

    @property
    def sums(self) -> torch.Tensor:
        """Summed log-probability of the scored tokens of each sequence, `[num_sequences]`."""
        return self.sum_per_sequence(self.values)

    @property
    def counts(self) -> torch.Tensor:
        """Number of scored tokens of each sequence, `[num_sequences]`."""
        return self.sum_per_sequence(torch.ones_like(self.values))

    @property
    def means(self) -> torch.Tensor:
        """Mean log-probability of the scored tokens of each sequence (PRO's score, Eq. 6), `[num_sequences]`."""
        return self.sums / self.counts.clamp(min=1)


def token_log_probs(model, inputs: dict[str, torch.Tensor], score_mask: torch.Tensor, **model_kwargs) -> TokenLogProbs:
    """Score padded rows: the log-probabilities of the tokens where `score_mask` is 1 (one sequence per row).

    Args:
        model: a causal LM patched with `trl.trainer.utils.add_fused_lm_head` (possibly wrapped by PEFT/accelerate).
        inputs: the model inputs (`input_ids`, `attention_mask`).
        score_mask: `[rows, seq]`, 1 for the tokens whose log-probability counts. The first token of a row has no
            prediction and is never scored.
        **model_kwargs: extra keyword arguments for the forward (e.g. `output_router_logits`).
    """
    shift_labels = inputs["input_ids"].masked_fill(score_mask == 0, -100)[:, 1:]
    outputs = scored_forward(model, inputs, shift_labels, **model_kwargs)
    position = (shift_labels != -100).reshape(-1).nonzero().squeeze(1).to(outputs.log_probs.device)
    return TokenLogProbs(
        values=outputs.log_probs.reshape(-1)[position],
        sequence=position // shift_labels.shape[1],
        position=position,
        num_sequences=shift_labels.shape[0],
        outputs=outputs,
        row_length=shift_labels.shape[1],
    )


def packed_inputs(model, layout: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The model inputs of a packed layout: its tokens and position ids, and its attention mask built for `model`."""
    return {
        "input_ids": layout["input_ids"],
        "attention_mask": packed_attention_mask(model, layout),
        "position_ids": layout["position_ids"],
    }


def packed_token_log_probs(model, layout: dict[str, torch.Tensor], **model_kwargs) -> TokenLogProbs:
    """Score a packed layout (`trl_ranking.packing.build_packed_layout`): the log-probabilities of its scored tokens.

    The per-position labels (`shift_labels`) go to the fused head unshifted, so the head scores each position against
    the label the layout put there, whether or not the next token of the row is in the same branch. A position of a
    shared prefix can count for several sequences (`score_sequence`/`score_position` list it once per sequence).
    """
    outputs = scored_forward(model, packed_inputs(model, layout), layout["shift_labels"], **model_kwargs)
    position = layout["score_position"]
    return TokenLogProbs(
        values=outputs.log_probs.reshape(-1)[position],
        sequence=layout["score_sequence"],
        position=position,
        num_sequences=int(layout["num_sequences"].sum()),
        outputs=outputs,
    )


def batch_token_log_probs(model, batch: dict[str, Any], **model_kwargs) -> TokenLogProbs:
    """Score a collated batch in whichever layout it holds: packed (`is_packed`) or padded rows (`completion_mask`)."""
    if is_packed(batch):
        return packed_token_log_probs(model, batch, **model_kwargs)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return token_log_probs(model, inputs, batch["completion_mask"], **model_kwargs)


def scatter_to_padded(outputs, position: torch.Tensor, row: torch.Tensor, column: torch.Tensor, shape):
    """Re-lay a packed forward's fused-head outputs as the padded layout's: a `FusedCausalLMOutput` of `[rows, seq-1]`.

    `position` is the flat packed position of each scored `(sequence, token)` pair (`score_position`), `row` the
    padded row of its sequence and `column` its token index minus one (`score_token - 1`): where the padded forward
    puts that token's log-probability. Every per-token field is gathered at the scored positions and scattered there,
    zero elsewhere, as the fused head leaves the unlabelled positions of a padded forward; a packed position that
    counts for two sequences (a shared prefix token scored for both) is gathered twice, and its gradient is the sum
    of both uses. `loss` is recomputed over the padded positions (the mean NLL of the scored tokens), `label_mask`
    marks them, `aux_loss` is the packed forward's.
    """
    index = (row, column)
    fields = {}
    for name in FUSED_PER_TOKEN_FIELDS:
        value = getattr(outputs, name, None)
        if value is not None:
            fields[name] = value.new_zeros(shape).index_put(index, value.reshape(-1)[position])
    scored = torch.ones(position.shape, dtype=torch.bool, device=position.device)
    fields["label_mask"] = torch.zeros(shape, dtype=torch.bool, device=position.device).index_put(index, scored)
    fields["loss"] = -fields["log_probs"].sum() / fields["label_mask"].sum().clamp(min=1)
    fields["aux_loss"] = getattr(outputs, "aux_loss", None)
    return type(outputs)(**fields)


def dpo_fused_outputs(
    model, inputs: dict[str, Any], labels: torch.Tensor, layout: dict[str, torch.Tensor] | None = None, **model_kwargs
):
    """The fused-head outputs of DPO's forward of padded rows `[2 * batch, seq]`, as `DPOTrainer` reads them.

    `DPOTrainer` calls `model(**inputs, labels=labels, fused_lm_head=True)` and reads per-token fields of
    `[rows, seq - 1]`. This computes them through `scored_forward`: on the padded rows themselves (`layout=None`), or
    on the packed rows of the same batch (`layout`: the collator's packed layout, with `score_row`/`score_column`)
    and re-laid out in the padded rows' places (`scatter_to_padded`). DPO's loss (every `loss_type`, `ld_alpha`,
    `use_weighting`), its reference log-probs and its metrics then read the padded layout's values.

    Args:
        model: a causal LM patched with TRL's fused LM head.
        inputs: the padded model inputs DPO passes (`input_ids`, `attention_mask`, ...).
        labels: `[rows, seq]`, DPO's labels (the input ids where scored, -100 elsewhere), unshifted.
        layout: the packed layout of the same rows, or `None` to run the padded rows.
        **model_kwargs: extra keyword arguments for the forward (e.g. `output_router_logits`).
    """
    if layout is None:
        return scored_forward(model, inputs, labels[:, 1:], **model_kwargs)
    packed = packed_token_log_probs(model, layout, **model_kwargs)
    shape = (labels.shape[0], labels.shape[1] - 1)
    return scatter_to_padded(packed.outputs, packed.position, layout["score_row"], layout["score_column"], shape)


def rows_to_rankings(values: torch.Tensor, num_candidates: torch.Tensor, fill_value: float = 0.0) -> torch.Tensor:
    """Scatter per-row values (rows ordered example by example, candidates best first) to `[batch, n_max]`."""
    n_max = int(num_candidates.max().item())
    positions = torch.arange(n_max, device=values.device)
    mask = positions.unsqueeze(0) < num_candidates.to(values.device).unsqueeze(1)
    out = values.new_full((num_candidates.shape[0], n_max), fill_value)
    return out.masked_scatter(mask, values)
