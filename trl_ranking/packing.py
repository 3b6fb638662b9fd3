"""Packed layouts: each prompt processed once (prefix sharing) and no padding (padding-free), scored exactly.

The padded layout of TRL repeats the prompt in every row `[prompt][candidate]` and pads each row to the longest. A
packed layout instead holds each *group* of sequences that share a prefix as a tree: the shared prefix once, then
one *branch* per sequence. Every token carries four ids:

- `position_ids`: its position in its own sequence, so each branch restarts where the shared prefix ends;
- `document_ids`: the group it belongs to (-1 for padding);
- `branch_ids`: 0 for the shared prefix, `k >= 1` for the branch of the group's k-th sequence.

A query token sees a key token iff both are in the same document, the key is not later in the row, and the key is
in the shared prefix or in the query's own branch (plus, for sliding-window layers, `position(q) - position(k) <
window`). Each token then has the same keys, the same positions and so (up to float rounding) the same hidden state
as in its own padded row.

The prediction of a branch's first token comes from the *last* token of the shared prefix, which is adjacent to one
branch only. So the shared part of a group is the prefix minus its last token, and every branch starts with its own
copy of that last prefix token (same token, same position): the copy's hidden state equals the original's, and it
predicts the branch's first token. That costs one token per sequence and keeps the plain per-position scoring of
TRL's fused LM head: the collator writes, at every position, the label that position predicts (`shift_labels`,
passed to the head unshifted), and the pairs `(score_sequence, score_position)` say which sequence each scored
position counts for. A position of the shared prefix can count for several sequences (DOVE scores the instruction
tokens of both sequences of a pair when the instructions are equal).

With `padding_free=True` every group of the batch goes into one row (documents side by side, a block-diagonal
mask); otherwise each group is its own row, right-padded. Without prefix sharing each sequence is its own group,
which is TRL's padding-free layout.

The layout is built on the CPU by the collator (`build_packed_layout`, from `PackedGroup`s) and carries only 1D/2D
integer tensors; the attention mask is built on the model's device at forward time (`packed_attention_mask`), in the
form the model's attention implementation takes: an additive float 4D mask for eager attention, a boolean 4D mask
for SDPA, a `BlockMask` for flex attention (whose kernels skip the masked blocks). Flash-attention's varlen kernels
take each sequence as one contiguous run of tokens (`cu_seqlens`) and cannot let several branches attend to one
shared prefix: they support the padding-free layout without prefix sharing (given by the position ids alone) and
nothing else.

This module holds the layouts and their masks only; the forward and the gathering of the scored log-probabilities are
`trl_ranking.scoring`'s (`packed_token_log_probs`), the one scoring path of every trainer.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch


logger = logging.getLogger(__name__)

_MASKED_ATTENTION = ("eager", "sdpa", "flex_attention")


def _base_model(model):
    """The `PreTrainedModel` under PEFT / accelerate wrappers."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


@dataclass
class PackedGroup:
    """Sequences that start with the same `prefix_length` tokens (a prompt), and which of their tokens are scored.

    Args:
        sequences: the token ids of each sequence, already truncated.
        scored: for each sequence, a 0/1 flag per token: 1 if its log-probability counts in the sequence's score. The
            first token of a sequence has no prediction and is never scored, as in the padded layout.
        prefix_length: how many leading tokens every sequence shares (the prompt length before truncation). Capped
            at the shortest sequence; 0 or 1 share nothing.
    """

    sequences: list[list[int]]
    scored: list[list[int]]
    prefix_length: int = 0


def is_packed(batch: dict[str, Any]) -> bool:
    """Whether a collated batch holds a packed layout."""
    return "score_position" in batch


def build_packed_layout(
    groups: list[PackedGroup],
    share_prefix: bool = True,
    padding_free: bool = False,
    pad_token_id: int = 0,
    pad_to_multiple_of: int | None = None,
    return_token_index: bool = False,
) -> dict[str, torch.Tensor]:
    """Lay `groups` out as rows (see the module docstring) and return the packed batch tensors.

    Sequences are numbered in order, group by group (so a ranking batch keeps the row order of the padded layout).
    Returns `input_ids`, `attention_mask` (1 for real tokens, 0 for padding: not what the model is given, see
    `packed_attention_mask`), `position_ids`, `document_ids`, `branch_ids`, `shift_labels` (`[rows, seq]`),
    `score_sequence` and `score_position` (`[scored tokens]`: the sequence and the flat position `row * seq + column`
    of each scored token) and `num_sequences` (`[1]`). With `return_token_index=True`, also `score_token`
    (`[scored tokens]`: the index of each scored token in its own sequence, so that `(sequence, score_token - 1)` is
    where its log-probability sits in the padded layout's `log_probs`; see `scatter_to_padded`).

    Examples:
    ```python
    >>> from trl_ranking.packing import PackedGroup, build_packed_layout

    >>> group = PackedGroup(sequences=[[1, 2, 3, 4], [1, 2, 5]], scored=[[0, 0, 1, 1], [0, 0, 1]], prefix_length=2)
    >>> layout = build_packed_layout([group])
    >>> layout["input_ids"]  # the prompt [1, 2] once; each branch starts with a copy of its last token
    tensor([[1, 2, 3, 4, 2, 5]])
    >>> layout["position_ids"]
    tensor([[0, 1, 2, 3, 1, 2]])
    >>> layout["branch_ids"]
    tensor([[0, 1, 1, 1, 2, 2]])
    >>> layout["shift_labels"]  # what each position predicts, where it is scored
    tensor([[-100,    3,    4, -100,    5, -100]])
    >>> layout["score_sequence"], layout["score_position"]
    (tensor([0, 0, 1]), tensor([1, 2, 4]))

    ```
    """
    if share_prefix:
        units = groups
    else:  # every sequence its own group: TRL's padding-free layout
        units = [PackedGroup([s], [m], 0) for g in groups for s, m in zip(g.sequences, g.scored, strict=True)]

    rows: list[dict[str, list[int]]] = []
    scores: list[tuple[int, int, int]] = []  # (sequence, row, column)
    token_index: list[int] = []  # index of each scored token in its own sequence
    sequence_index = 0
    for document, group in enumerate(units):
        if padding_free and rows:
            row_index = 0
        else:
            rows.append({"ids": [], "pos": [], "doc": [], "branch": [], "labels": []})
            row_index = len(rows) - 1
        row = rows[row_index]
        sequences = [list(s) for s in group.sequences]
        if not sequences:
            continue
        shared = min(group.prefix_length, *(len(s) for s in sequences))
        first = sequences[0]
        for s in sequences[1:]:
            if s[:shared] != first[:shared]:
                raise ValueError("The sequences of a group must start with the same `prefix_length` tokens.")
        root_length = max(shared - 1, 0)
        start = len(row["ids"])
        row["ids"] += first[:root_length]
        row["pos"] += list(range(root_length))
        row["doc"] += [document] * root_length
        row["branch"] += [0] * root_length
        row["labels"] += [-100] * root_length
        for branch, (sequence, scored) in enumerate(zip(sequences, group.scored, strict=True), start=1):
            if len(scored) != len(sequence):
                raise ValueError("`scored` must hold one flag per token of its sequence.")
            branch_start = len(row["ids"])
            tail = sequence[root_length:]
            row["ids"] += tail
            row["pos"] += list(range(root_length, len(sequence)))
            row["doc"] += [document] * len(tail)
            row["branch"] += [branch] * len(tail)
            row["labels"] += [-100] * len(tail)
            for j in range(1, len(sequence)):
                if not scored[j]:
                    continue
                # Token j is predicted at the position of token j - 1, in the shared part or in this branch
                column = start + j - 1 if j - 1 < root_length else branch_start + j - 1 - root_length
                row["labels"][column] = sequence[j]
                scores.append((sequence_index, row_index, column))
                token_index.append(j)
            sequence_index += 1

    length = max((len(row["ids"]) for row in rows), default=0)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    length = max(length, 1)

    def tensor(key: str, fill: int) -> torch.Tensor:
        return torch.tensor([row[key] + [fill] * (length - len(row[key])) for row in rows], dtype=torch.long)

    document_ids = tensor("doc", -1)
    output = {
        "input_ids": tensor("ids", pad_token_id),
        "attention_mask": (document_ids >= 0).long(),
        "position_ids": tensor("pos", 0),
        "document_ids": document_ids,
        "branch_ids": tensor("branch", 0),
        "shift_labels": tensor("labels", -100),
        "score_sequence": torch.tensor([s for s, _, _ in scores], dtype=torch.long),
        "score_position": torch.tensor([r * length + c for _, r, c in scores], dtype=torch.long),
        "num_sequences": torch.tensor([sequence_index], dtype=torch.long),
    }
    if return_token_index:
        output["score_token"] = torch.tensor(token_index, dtype=torch.long)
    return output


# ----------------------------------------------------------------------------------------------------------------------
# Which models can take a packed layout
# ----------------------------------------------------------------------------------------------------------------------
def attention_implementation(model) -> str:
    implementation = getattr(_base_model(model).config, "_attn_implementation", None) or "eager"
    return "sdpa" if implementation == RANKING_SDPA else implementation


# ----------------------------------------------------------------------------------------------------------------------
# Per-ranking attention: a padding-free row holds several rankings side by side, and a token never sees another
# ranking's tokens. SDPA on the whole row computes (and on CPU stores) the attention of every token to every other token
# of the row, quadratic in the batch; run per ranking it is quadratic in each ranking, the work there is.
# ----------------------------------------------------------------------------------------------------------------------
RANKING_SDPA = "trl_ranking_sdpa"


def ranking_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """Transformers' SDPA attention, run on each independent segment of a packed row on its own.

    The segments (`(start, end)` column ranges no query sees across) are attached by `packed_attention_mask` to the
    boolean mask it builds (`mask.ranking_segments`); every other mask (padded rows, generation) goes to SDPA as is.
    Each query keeps exactly the keys it had, so the result is the whole-row SDPA's up to float rounding.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segments = getattr(attention_mask, "ranking_segments", None)
    if segments is None or query.shape[2] != attention_mask.shape[-2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            attention_mask[..., start:end, start:end],
            **kwargs,
        )[0]
        for start, end in segments
    ]
    return torch.cat(outputs, dim=1), None


def use_ranking_attention(model) -> bool:
    """Give an SDPA `model` the per-ranking attention (`ranking_sdpa_attention`), registered in transformers'
    attention-function registry. It behaves as SDPA on every other input. Returns whether the model now uses it."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    config = _base_model(model).config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", RANKING_SDPA):
        return False
    if RANKING_SDPA not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(RANKING_SDPA, ranking_sdpa_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(RANKING_SDPA, sdpa_mask)
    config._attn_implementation = RANKING_SDPA
    return True


def _segments(layout: dict[str, torch.Tensor]) -> list[tuple[int, int]] | None:
    """Column ranges of a one-row layout that no query sees across: its documents (trailing padding joins the last)."""
    document = layout["document_ids"]
    if document.shape[0] != 1:
        return None
    starts = (torch.nonzero(document[0, 1:] != document[0, :-1]).squeeze(1) + 1).tolist()
    length = document.shape[1]
    bounds = [0] + [start for start in starts if int(document[0, start]) >= 0] + [length]
    segments = list(zip(bounds[:-1], bounds[1:]))
    return segments if len(segments) > 1 else None


def packing_unsupported_reason(model, prefix_sharing: bool) -> str | None:
    """Why `model` cannot score a packed layout exactly (`None` if it can).

    `prefix_sharing=False` asks about the padding-free layout alone (one sequence per document).
    """
    from accelerate.utils import is_peft_model

    unwrapped = getattr(model, "module", model)
    if is_peft_model(unwrapped) and unwrapped.active_peft_config.is_prompt_learning:
        return (
            "prompt-learning PEFT methods (prompt/prefix/p-tuning) prepend virtual tokens to every row, which a "
            "packed row would share between sequences"
        )
    base = _base_model(model)
    config = base.config
    text_config = config.get_text_config()
    if text_config is not config:
        return "vision-language models place image tokens and multimodal position ids that the layout does not handle"
    implementation = attention_implementation(model)
    if implementation.startswith("flash") or "flash" in implementation:
        if prefix_sharing:
            return (
                f"`attn_implementation={implementation!r}`: flash-attention's varlen kernels take each sequence as one "
                "contiguous run of tokens (`cu_seqlens`), so several candidates cannot attend to one shared prefix. "
                "Use 'sdpa' or 'flex_attention'"
            )
    elif implementation not in _MASKED_ATTENTION:
        return f"`attn_implementation={implementation!r}` takes no custom attention mask"
    if not getattr(text_config, "is_causal", True):
        return "the model is not causal"
    layer_types = set(getattr(text_config, "layer_types", None) or [])
    if layer_types - {"full_attention", "sliding_attention"}:
        return (
            f"layers of type {sorted(layer_types - {'full_attention', 'sliding_attention'})} (recurrent, linear or "
            "chunked attention) carry state or masks along the row that a custom attention mask does not govern"
        )
    if "position_ids" not in inspect.signature(type(base).forward).parameters:
        return "the model takes no `position_ids` (e.g. ALiBi models derive positions from the padding mask)"
    return None


def choose_layout(
    models: list,
    prefix_sharing: bool | None,
    padding_free: bool,
    aux_loss_enabled: bool = False,
    stacklevel: int = 3,
) -> tuple[bool, bool]:
    """`(prefix_sharing, padding_free)` to use with `models` (all the models that score a batch: policy, reference).

    `prefix_sharing=None` turns prefix sharing on wherever it is exact (quietly off otherwise), `True` asks for it
    and falls back with a warning where it is not exact, `False` keeps it off; `padding_free=True` falls back with a
    warning where it is not exact. With the MoE router auxiliary loss (`aux_loss_enabled`) neither is exact: that loss
    is computed over every token of every padded row. This is the rule both trainers apply. With padding-free rows,
    SDPA models get the per-ranking attention (`use_ranking_attention`).
    """

    def unsupported(share: bool) -> str | None:
        if aux_loss_enabled:
            return (
                "the Mixture-of-Experts router auxiliary loss is computed over every token of every padded row "
                "(a shared prompt would count once), so it would change"
            )
        for model in models:
            reason = packing_unsupported_reason(model, prefix_sharing=share)
            if reason is not None:
                return reason
        return None

    share = prefix_sharing is not False
    if share and (reason := unsupported(True)) is not None:
        share = False
        if prefix_sharing:
            warnings.warn(
                f"`prefix_sharing=True` is not exact for this model and falls back to the padded layout: {reason}.",
                UserWarning,
                stacklevel=stacklevel,
            )
        else:
            logger.info("Prefix sharing is off (padded layout): %s.", reason)
    if padding_free and (reason := unsupported(share)) is not None:
        padding_free = False
        warnings.warn(
            f"`padding_free=True` is not exact for this model and falls back to padded rows: {reason}.",
            UserWarning,
            stacklevel=stacklevel,
        )
    if padding_free:  # several rankings in one row: with SDPA, attention per ranking (`ranking_sdpa_attention`)
        for model in models:
            use_ranking_attention(model)
    return share, padding_free


def _sliding_windows(model) -> tuple[int | None, bool]:
    """`(window, mixed)`: the sliding window of the model's sliding layers, and whether full layers exist too."""
    config = _base_model(model).config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        if "sliding_attention" not in layer_types:
            return None, False
        return window, "full_attention" in layer_types
    return window, False


# ----------------------------------------------------------------------------------------------------------------------
# Attention masks, built on the device at forward time
# ----------------------------------------------------------------------------------------------------------------------
def _visible(layout: dict[str, torch.Tensor], window: int | None) -> torch.Tensor:
    """Boolean `[rows, seq, seq]`: query token q (dim 1) sees key token k (dim 2)."""
    document, branch, position = layout["document_ids"], layout["branch_ids"], layout["position_ids"]
    index = torch.arange(document.shape[1], device=document.device)
    visible = index.view(1, -1, 1) >= index.view(1, 1, -1)
    visible = visible & (document.unsqueeze(2) == document.unsqueeze(1))
    visible = visible & ((branch.unsqueeze(1) == 0) | (branch.unsqueeze(2) == branch.unsqueeze(1)))
    if window is not None:
        visible = visible & (position.unsqueeze(2) - position.unsqueeze(1) < window)
    return visible


def _block_mask(layout: dict[str, torch.Tensor], window: int | None):
    from torch.nn.attention.flex_attention import create_block_mask

    document, branch, position = layout["document_ids"], layout["branch_ids"], layout["position_ids"]

    def mask_mod(b, h, q, k):
        visible = (
            (q >= k) & (document[b, q] == document[b, k]) & ((branch[b, k] == 0) | (branch[b, q] == branch[b, k]))
        )
        if window is not None:
            visible = visible & (position[b, q] - position[b, k] < window)
        return visible

    rows, length = document.shape
    return create_block_mask(mask_mod, rows, None, length, length, device=document.device)


def packed_attention_mask(model, layout: dict[str, torch.Tensor]):
    """The attention mask of `layout` in the form `model`'s attention implementation takes.

    A float additive `[rows, 1, seq, seq]` mask for eager attention, a boolean one for SDPA (both are used as given by
    `transformers.masking_utils`), a `BlockMask` for flex attention, and `None` for flash attention (padding-free
    without prefix sharing only: the kernels read the sequence boundaries off `position_ids`). For models mixing
    full and sliding-window layers a dict `{"full_attention": ..., "sliding_attention": ...}`.
    """
    implementation = attention_implementation(model)
    if "flash" in implementation:
        if bool((layout["branch_ids"] > 1).any()):
            raise ValueError(
                f"`attn_implementation={implementation!r}` cannot take a prefix-shared layout (see "
                "`packing_unsupported_reason`)."
            )
        return None
    segments = _segments(layout) if implementation == "sdpa" else None
    window, mixed = _sliding_windows(model)
    if window is not None and int(layout["position_ids"].max()) < window:
        window, mixed = None, False  # no query is that far from any key: the window masks nothing

    def build(window: int | None):
        if implementation == "flex_attention":
            return _block_mask(layout, window)
        visible = _visible(layout, window).unsqueeze(1)
        if implementation == "sdpa":
            visible.ranking_segments = segments  # read by `ranking_sdpa_attention`, if the model uses it
            return visible
        dtype = _base_model(model).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        return mask.masked_fill_(~visible, torch.finfo(dtype).min)

    if mixed:
        return {"full_attention": build(None), "sliding_attention": build(window)}
    return build(window)
