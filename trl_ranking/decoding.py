"""A slot decoder: batched greedy or sampled decoding that keeps its batch full.

`model.generate` decodes a fixed batch until its longest row ends, grows its key/value cache by concatenation (every
step copies the whole cache) and, on CPU, runs SDPA's flash kernel for one query token at a time, which is slow. For a
small model on a CPU the step is bound by that overhead, not by arithmetic. This decoder keeps the model's own forward
pass (any causal LM of `transformers`) and changes only what is around it:

- **Slots.** A fixed number of rows decode together; a row that ends (EOS, a stop string, `max_new_tokens`) frees
  its slot, and the next prompts are prefilled and put in the free slots, so the batch stays full until the last
  prompts.
- **One contiguous cache that grows in chunks.** Keys and values live in one `[slots, kv_heads, columns, dim]`
  buffer per layer, written in place at a shared column; the decode attention reads the whole buffer (contiguous, so
  the matrix kernels need no copy), masked per row. When the buffer is full it is rebuilt `spare` columns longer,
  dropping the leading columns no live row reads any more: one copy every `spare` steps instead of `generate`'s one
  per step. A refilled row's prompt is placed so that it ends at the write column.
- **Eager attention arithmetic for one query token.** The heads that share a key/value head are stacked as rows of
  one matrix product (no `repeat_kv` copy); scores in the model's dtype, softmax in float32, as `transformers`' eager
  attention computes them. (SDPA's CPU flash kernel costs 2-9 ms per layer for one query token in bf16.)

Greedy decoding picks the same token as `model.generate` whenever the two best logits differ by more than the float
rounding of a different summation order: in float32 the answers are token-identical (tested; and 16 of 16 SmolLM2
answers of 64 tokens). In bfloat16 greedy decoding is not batch-invariant even within `model.generate` (its own answers
at batch 16 and batch 4 agree on 7 of 16 prompts), so neither path is "the" bf16 answer;
`benchmarks/bench_generation.py` reports the agreement.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


# The attention function registered under this name in `transformers.AttentionInterface` while the decoder runs
DECODE_ATTENTION = "trl_ranking_decode"


def _decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of `[batch, heads, q, dim]` queries on `[batch, kv_heads, keys, dim]` keys and values.

    One query token (decoding): the heads that share a key/value head are stacked as the rows of one matrix product,
    so keys and values are read once per group, with no `repeat_kv` copy; the arithmetic is `transformers`' eager
    attention's (scores in the model's dtype, softmax in float32). Longer queries (prefill) go to SDPA.
    `attention_mask` is boolean (`True` = attend) or additive, broadcastable to `[batch, 1, q, keys]`.
    """
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    scaling = dim**-0.5 if scaling is None else scaling
    if q_len != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    groups = heads // kv_heads
    q = query.reshape(batch * kv_heads, groups, dim)
    # [batch * kv_heads, groups, keys]; `bmm` on the flattened contiguous buffers (`matmul` would copy them)
    scores = torch.bmm(q, key.flatten(0, 1).transpose(1, 2)) * scaling
    scores = scores.view(batch, kv_heads, groups, -1)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :]  # [batch, 1, 1, keys]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype).flatten(0, 1)
    output = torch.bmm(probs, value.flatten(0, 1))  # [batch * kv_heads, groups, dim]: head h uses kv head h // groups
    return output.reshape(batch, 1, heads, dim), None  # `[batch, q, heads, dim]`, as transformers' functions return


class _SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot: `[slots, kv_heads, columns, dim]` buffers, written in place.

    `update` (decoding: one new token per slot) writes at the shared write column and returns the whole buffers; the
    columns a row does not read (before its prompt, after the write column) are masked.
    """

    def __init__(self, state: _Window):
        super().__init__()
        self.state = state

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        shape = (self.state.slots, key_states.shape[1], self.state.columns)
        self.keys = torch.zeros(*shape, key_states.shape[-1], dtype=key_states.dtype, device=self.device)
        self.values = torch.zeros(*shape, value_states.shape[-1], dtype=value_states.dtype, device=self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if key_states.shape[-2] != 1:  # prompts are prefilled in a cache of their own (`SlotDecoder._prefill`)
            raise RuntimeError("the slot cache decodes one token per slot at a time")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.state.end
        self.keys[:, :, end] = key_states[:, :, 0]
        self.values[:, :, end] = value_states[:, :, 0]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.state.end

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.state.columns, 0

    def get_max_length(self) -> int:
        return self.state.columns

    def rebuild(self, source: slice, offset: int, columns: int) -> None:
        """New buffers of `columns` columns holding the old columns `source` from column `offset` on."""
        if not self.is_initialized:
            return
        width = source.stop - source.start
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[0], old.shape[1], columns, old.shape[3])
            new[:, :, offset : offset + width] = old[:, :, source]
            setattr(self, name, new)

    def write_rows(
        self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, end: int, padding: torch.Tensor
    ) -> None:
        """Write prefilled `[rows, kv_heads, width, dim]` states into `slots`, ending at column `end`.

        Padding columns (`padding`, `[rows, width]`, `True` = pad) are written as zeros: a fully masked padding query
        may have produced non-finite states, and a masked key's value still meets a zero attention weight in the
        product (`0 * nan = nan`).
        """
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        width = keys.shape[-2]
        keep = ~padding[:, None, :, None]
        self.keys[slots, :, end - width : end] = torch.where(keep, keys, 0).to(self.keys.dtype)
        self.values[slots, :, end - width : end] = torch.where(keep, values, 0).to(self.values.dtype)


@dataclass
class _Window:
    slots: int
    columns: int  # of the buffers
    end: int = 0  # the next write column


class _SlotCache(Cache):
    """A `transformers` cache of `_SlotLayer`s sharing one window."""

    def __init__(self, num_layers: int, slots: int, columns: int):
        self.window = _Window(slots=slots, columns=columns)
        super().__init__(layers=[_SlotLayer(self.window) for _ in range(num_layers)])

    def rebuild(self, first_column: torch.Tensor, live: list[int], offset: int, spare: int) -> None:
        """Drop the columns before the first one a live row reads, move the rest to start at `offset`, and leave
        `spare` free columns after the write column."""
        window = self.window
        trim = int(first_column[live].min()) if live else window.end
        trim = min(trim, window.end)
        for layer in self.layers:
            layer.rebuild(slice(trim, window.end), offset, offset + window.end - trim + spare)
        first_column += offset - trim
        window.end = offset + window.end - trim
        window.columns = window.end + spare


@dataclass
class _Request:
    index: int  # the position of the answer in the output
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)


@dataclass
class DecodeSettings:
    """What the slot decoder needs to know to stop and to pick tokens."""

    max_new_tokens: int
    eos_token_ids: frozenset[int]
    pad_token_id: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_new_tokens: int = 0
    stop: Callable[[list[int]], bool] | None = None  # a row's tokens -> whether a stop string has appeared


# `generate` keyword arguments the slot decoder implements; any other makes `generate_responses` use `model.generate`
SUPPORTED_GENERATION_KWARGS = frozenset(
    {"do_sample", "temperature", "top_k", "top_p", "num_return_sequences", "pad_token_id", "min_new_tokens"}
)


@contextlib.contextmanager
def _decode_attention_active(model: torch.nn.Module) -> Iterator[None]:
    """Route the model's attention through `_decode_attention` (registered once) while decoding."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, _decode_attention)
    # The prefill's masks are SDPA's (boolean); without a mask function registered, transformers builds no mask at all
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    configs = [module.config for module in model.modules() if hasattr(getattr(module, "config", None), "_attn_implementation")]
    saved = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = DECODE_ATTENTION
        yield
    finally:
        for config, implementation in zip(configs, saved):
            config._attn_implementation = implementation


def _text_config(model: torch.nn.Module) -> Any:
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def supports_slot_decoding(model: torch.nn.Module) -> bool:
    """Whether the slot decoder can drive `model`: a decoder-only LM whose layers are all full attention."""
    config = _text_config(model)
    if getattr(config, "is_encoder_decoder", False) or not hasattr(config, "num_hidden_layers"):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(kind != "full_attention" for kind in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class SlotDecoder:
    """Decode many prompts through a fixed number of slots (see the module docstring).

    Args:
        model: A decoder-only causal LM (PEFT-wrapped works), in eval mode.
        slots: Rows decoded together.
        settings: Stopping and sampling settings.
        prefill_batch: Most prompts prefilled in one forward pass when slots free up (default: `slots`).
        spare: Free columns the cache buffers get each time they are rebuilt: a rebuild (one copy of the live
            window) every `spare` steps, and on average `spare / 2` masked columns read per step.
        progress_bar: Show a `tqdm` bar over finished answers.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        slots: int,
        settings: DecodeSettings,
        prefill_batch: int | None = None,
        spare: int = 32,
        progress_bar: bool = False,
    ):
        if slots < 1 or spare < 1:
            raise ValueError(f"slots and spare must be positive, got {slots} and {spare}")
        self.model = model
        self.slots = slots
        self.settings = settings
        self.prefill_batch = prefill_batch or slots
        self.spare = spare
        self.progress_bar = progress_bar
        self.device = next(model.parameters()).device
        self.num_layers = _text_config(model).num_hidden_layers
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers >= 5.2x names the cache argument `cache` (and warns on `past_key_values`)
        self.cache_argument = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.generated_tokens = 0  # tokens kept in answers, for throughput figures
        self.rebuilds = 0

    def _pick(self, logits: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        settings = self.settings
        logits = logits.float()
        if settings.min_new_tokens and settings.eos_token_ids:
            young = [row for row, n in enumerate(lengths) if n < settings.min_new_tokens]
            if young:
                eos = torch.tensor(sorted(settings.eos_token_ids), device=logits.device)
                rows = torch.tensor(young, device=logits.device)
                logits[rows[:, None], eos[None, :]] = float("-inf")
        if not settings.do_sample:
            return logits.argmax(dim=-1)
        if settings.temperature != 1.0:
            logits = logits / settings.temperature
        if settings.top_k:
            kth = torch.topk(logits, min(settings.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if settings.top_p is not None and settings.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= (1 - settings.top_p)
            remove[:, -1] = False  # keep at least the most likely token
            logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
        return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(1)

    def _finished(self, request: _Request) -> bool:
        settings = self.settings
        if request.tokens[-1] in settings.eos_token_ids or len(request.tokens) >= settings.max_new_tokens:
            return True
        return settings.stop is not None and settings.stop(request.tokens)

    @torch.no_grad()
    def run(self, requests: Sequence[_Request]) -> list[list[int]]:
        """Decode every request; returns each request's new tokens (EOS included, as `generate` returns them)."""
        queue = list(requests)
        cache = _SlotCache(self.num_layers, self.slots, columns=max(len(r.prompt_ids) for r in queue) + self.spare)
        active: list[_Request | None] = [None] * self.slots
        first_column = torch.zeros(self.slots, dtype=torch.long, device=self.device)  # a row's first live column
        positions = torch.zeros(self.slots, dtype=torch.long, device=self.device)  # the next token's position id
        next_tokens = torch.full((self.slots,), self.settings.pad_token_id, dtype=torch.long, device=self.device)
        results: dict[int, list[int]] = {}
        self._bar = tqdm(total=len(queue), desc="Generating", unit="answer", disable=not self.progress_bar)
        try:
            self._loop(queue, cache, active, first_column, positions, next_tokens, results)
        finally:
            self._bar.close()
        return [results[request.index] for request in requests]

    def _finish(self, request: _Request, results: dict[int, list[int]]) -> None:
        results[request.index] = request.tokens
        self.generated_tokens += len(request.tokens)
        self._bar.update(1)

    def _loop(self, queue, cache, active, first_column, positions, next_tokens, results) -> None:
        window = cache.window
        taken = 0  # requests taken from the queue
        while True:
            free = [slot for slot, request in enumerate(active) if request is None]
            # Refill when a quarter of the slots are free (a prefill per freed row would cost more than the steps it
            # saves), or when nothing is running
            if free and taken < len(queue) and (len(free) >= max(1, self.slots // 4) or len(free) == self.slots):
                batch = queue[taken : taken + min(len(free), self.prefill_batch)]
                taken += len(batch)
                self._prefill(batch, free[: len(batch)], cache, active, first_column, positions, next_tokens, results)
                continue
            live = [slot for slot, request in enumerate(active) if request is not None]
            if not live:
                break
            if window.end >= window.columns:
                cache.rebuild(first_column, live, offset=0, spare=self.spare)
                self.rebuilds += 1
            # A free slot computes a dummy row that attends to its own token only (finite, and never read)
            starts = first_column.clone()
            starts[free] = window.end
            columns = torch.arange(window.columns, device=self.device)
            mask = (columns[None, :] >= starts[:, None]) & (columns[None, :] <= window.end)
            output = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=mask[:, None, None, :],
                position_ids=positions[:, None],
                use_cache=True,
                **{self.cache_argument: cache},
                logits_to_keep=1,
            )
            window.end += 1
            positions += 1
            lengths = [len(request.tokens) if request is not None else 0 for request in active]
            next_tokens = self._pick(output.logits[:, -1, :], lengths)
            picked = next_tokens.tolist()
            for slot in live:
                request = active[slot]
                request.tokens.append(picked[slot])
                if self._finished(request):
                    self._finish(request, results)
                    active[slot] = None

    def _prefill(self, batch, slots, cache, active, first_column, positions, next_tokens, results) -> None:
        """Prefill `batch` (left-padded among themselves, in a cache of their own) and put each in its slot, its
        prompt ending at the write column; its first new token is picked from the prefill's logits."""
        window = cache.window
        width = max(len(request.prompt_ids) for request in batch)
        rows = torch.full((len(batch), width), self.settings.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, request in enumerate(batch):
            rows[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention[row, width - len(request.prompt_ids) :] = 1
        rows, attention = rows.to(self.device), attention.to(self.device)
        prefill_cache = DynamicCache(config=self.model.config)
        output = self.model(
            input_ids=rows,
            attention_mask=attention,
            position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            **{self.cache_argument: prefill_cache},
            logits_to_keep=1,
        )
        live = [slot for slot, request in enumerate(active) if request is not None]
        if window.end < width or window.end >= window.columns:
            # Room for the prompts before the write column (the live rows move right if they must)
            live_width = window.end - int(first_column[live].min()) if live else 0
            cache.rebuild(first_column, live, offset=max(0, width - live_width), spare=self.spare)
            self.rebuilds += 1
        end = window.end
        padding = (attention == 0).to(self.device)
        slot_index = torch.tensor(slots, device=self.device)
        for layer, prefilled in zip(cache.layers, prefill_cache.layers):
            layer.write_rows(slot_index, prefilled.keys, prefilled.values, end, padding)
        picked = self._pick(output.logits[:, -1, :], [0] * len(batch)).tolist()
        for row, (request, slot) in enumerate(zip(batch, slots)):
            request.tokens.append(picked[row])
            first_column[slot] = end - len(request.prompt_ids)
            positions[slot] = len(request.prompt_ids)
            next_tokens[slot] = picked[row]
            if self._finished(request):
                self._finish(request, results)
            else:
                active[slot] = request


def slot_decode(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    settings: DecodeSettings,
    slots: int,
    num_return_sequences: int = 1,
    spare: int = 32,
    progress_bar: bool = False,
) -> tuple[list[list[int]], int]:
    """Decode `num_return_sequences` answers per prompt; returns the new tokens per answer (grouped by prompt) and the
    number of tokens generated."""
    requests = [
        _Request(index=prompt * num_return_sequences + copy, prompt_ids=list(ids))
        for prompt, ids in enumerate(prompt_ids)
        for copy in range(num_return_sequences)
    ]
    # Longest prompts first, as `generate_responses` batches them: the window then shrinks as the run goes
    requests.sort(key=lambda request: -len(request.prompt_ids))
    decoder = SlotDecoder(model, slots=min(slots, len(requests)), settings=settings, spare=spare, progress_bar=progress_bar)
    with _decode_attention_active(model):
        outputs = decoder.run(requests)
    ordered: list[list[int]] = [[] for _ in requests]
    for request, tokens in zip(requests, outputs):
        ordered[request.index] = tokens
    return ordered, decoder.generated_tokens
