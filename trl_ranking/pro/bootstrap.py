"""Self-bootstrapping PRO: the paper's Algorithm 1 (arXiv 2306.17492, section 3.2 and footnote 6) in one training run.

Before training on each of `bootstrap_chunks` chunks, responses sampled from the current policy join the chunk's
rankings, which a reward model re-ranks with the original top candidate kept first (footnote 6). `PROTrainer` drives a
`SelfBootstrapper` through four hooks (train dataloader, training step, start of training, checkpoint). The design
(chunks and sampler, lazy augmentation in `training_step`, generation, re-ranking rules, resuming, logged metrics,
what is not supported) is in `docs/bootstrap.md`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader, Sampler
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import DPOTrainer
from trl.models.utils import unwrap_model_for_generation

from ..generation import generate_responses
from ..rewards import RewardModelScorer
from ..tokenization import is_conversational_value as is_messages
from ..trainer_utils import keep_4bit_training_layout
from ..validation import check_reward, scorer_output
from .rows import dataset_has_rewards, to_ranking


logger = logging.getLogger(__name__)

BOOTSTRAP_STATE_NAME = "bootstrap_state.json"
"""File of a checkpoint folder holding the augmented rows of the rounds in use and the per-round history."""

KEYS_COLUMN = "bootstrap_keys"
"""Key of the train dataloader's batches in bootstrap mode: `round * num_rows + index` of each row."""

Scorer = Callable[[list[Any], list[Any]], Sequence[float]]


# ----------------------------------------------------------------------------------------------------------------------
# Pure pieces: the reward scorer, the footnote-6 re-ranking, the chunk sampler
# ----------------------------------------------------------------------------------------------------------------------
def make_reward_scorer(
    reward_model: Any,
    reward_processing_class: Any = None,
    *,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> Scorer:
    """Turn `PROTrainer`'s `reward_model` argument into a scorer `scorer(prompts, completions) -> list[float]`.

    A `trl_ranking.rewards.RewardModelScorer` or any other callable is used as it is. A sequence-classification
    model (`num_labels=1`), or a path to one, is wrapped with `RewardModelScorer` (its tokenizer is
    `reward_processing_class`, or loaded from the path), on `device` unless the model is quantized or dispatched with a
    `device_map`.
    """
    if isinstance(reward_model, RewardModelScorer):
        return reward_model
    if isinstance(reward_model, (str, torch.nn.Module)):
        if isinstance(reward_model, torch.nn.Module):
            if reward_processing_class is None:
                raise ValueError(
                    "A sequence-classification `reward_model` needs its tokenizer: pass `reward_processing_class`."
                )
            placed = getattr(reward_model, "hf_device_map", None) is not None or any(
                getattr(reward_model, flag, False) for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit")
            )
            if placed:
                device = None
        return RewardModelScorer(reward_model, reward_processing_class, batch_size=batch_size, device=device)
    if callable(reward_model):
        if reward_processing_class is not None:
            raise ValueError(
                "`reward_processing_class` is only used with a sequence-classification `reward_model`; a scorer "
                "callable tokenizes its inputs itself."
            )
        return reward_model
    raise TypeError(
        "`reward_model` must be a scorer callable `scorer(prompts, completions) -> list[float]`, a "
        f"sequence-classification model or a path to one; got {type(reward_model).__name__}."
    )


RERANK_RULES = ("raise_top", "sort_rewards")


def rerank_keeping_top(
    completions: Sequence[Any], rewards: Sequence[float], is_sample: Sequence[bool], rule: str = "raise_top"
) -> tuple[list[Any], list[float], list[bool], bool]:
    """Re-rank a ranking extended with sampled responses, the sample never first (the PRO paper's footnote 6).

    `completions[0]` is the original top candidate and `rewards` are the reward model's scores of every candidate.
    The top candidate stays first; the others follow in descending reward order (a stable sort: ties keep their input
    order). With `rule="raise_top"` (the default) the rewards keep the reward model's values in that order, except
    the top's, raised to the best other reward when that one is higher (`r_1 = max(r_1, r_2)`), so that the rewards
    stay descending as the dynamic temperature needs (`docs/bootstrap.md` says why this rule). With
    `rule="sort_rewards"` (footnote 6's other reading) the reward values are sorted in descending order and assigned
    by position: the top gets the highest value, the second the next, and so on.

    Returns:
        `(completions, rewards, is_sample, sample_would_lead)`: the new ranking, its descending rewards, which
        candidates are samples, and whether a sample outscored the original top (it would have ranked first without
        the rule).

    Example:

    ```python
    >>> rerank_keeping_top(["top", "b", "sample"], [0.1, 0.5, 0.9], [False, False, True])
    (['top', 'sample', 'b'], [0.9, 0.9, 0.5], [False, True, False], True)
    >>> rerank_keeping_top(["top", "b", "sample"], [0.1, 0.5, 0.9], [False, False, True], rule="sort_rewards")
    (['top', 'sample', 'b'], [0.9, 0.5, 0.1], [False, True, False], True)
    ```
    """
    if rule not in RERANK_RULES:
        raise ValueError(f"rule must be one of {RERANK_RULES}, got {rule!r}")
    if not (len(completions) == len(rewards) == len(is_sample)):
        raise ValueError(
            f"{len(completions)} completions, {len(rewards)} rewards and {len(is_sample)} sample flags: they must match"
        )
    if not completions:
        raise ValueError("a ranking needs at least one completion")
    if is_sample[0]:
        raise ValueError("the first completion must be the original top candidate, not a sample")
    rest = sorted(range(1, len(completions)), key=lambda i: -rewards[i])
    order = [0, *rest]
    if rule == "sort_rewards":
        new_rewards = sorted((float(reward) for reward in rewards), reverse=True)
    else:
        new_rewards = [float(rewards[i]) for i in order]
        if len(new_rewards) > 1:
            new_rewards[0] = max(new_rewards[0], new_rewards[1])
    sample_would_lead = any(flag and reward > rewards[0] for flag, reward in zip(is_sample, rewards))
    return [completions[i] for i in order], new_rewards, [bool(is_sample[i]) for i in order], sample_would_lead


def chunk_bounds(num_rows: int, num_chunks: int) -> list[tuple[int, int]]:
    """`[start, end)` of each of `num_chunks` contiguous chunks of `num_rows` rows, in order, sizes differing by <= 1."""
    return [(chunk * num_rows // num_chunks, (chunk + 1) * num_rows // num_chunks) for chunk in range(num_chunks)]


class ChunkSampler(Sampler[int]):
    """Sampler of the bootstrap train dataloader: chunk after chunk in dataset order, shuffled within each chunk.

    It yields keys `round * num_rows + index` (`round = epoch * num_chunks + chunk`; decode with `divmod(key,
    num_rows)`), each chunk `passes_per_chunk` times (reshuffled each time) before the next. The order depends only on
    `seed` and the epoch (`set_epoch`). With `pad_to_multiple_of`, the epoch is padded with rows of its last chunk to
    a multiple of the global batch, so that accelerate never completes the last batch of a process with rows from the
    start of the epoch (an earlier chunk).
    """

    def __init__(
        self,
        num_rows: int,
        num_chunks: int,
        passes_per_chunk: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        pad_to_multiple_of: int = 1,
    ):
        if not 1 <= num_chunks <= num_rows:
            raise ValueError(f"num_chunks must be between 1 and num_rows={num_rows}, got {num_chunks}")
        self.num_rows = num_rows
        self.num_chunks = num_chunks
        self.passes_per_chunk = passes_per_chunk
        self.shuffle = shuffle
        self.seed = seed
        self.pad_to_multiple_of = max(1, pad_to_multiple_of)
        self.bounds = chunk_bounds(num_rows, num_chunks)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        total = self.num_rows * self.passes_per_chunk
        return math.ceil(total / self.pad_to_multiple_of) * self.pad_to_multiple_of

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        keys: list[int] = []
        last_pass: list[int] = []
        for chunk, (start, end) in enumerate(self.bounds):
            offset = (self.epoch * self.num_chunks + chunk) * self.num_rows
            for _ in range(self.passes_per_chunk):
                order = (
                    torch.randperm(end - start, generator=generator).tolist() if self.shuffle else range(end - start)
                )
                last_pass = [offset + start + i for i in order]
                keys.extend(last_pass)
        padding = len(self) - len(keys)
        keys.extend(last_pass[i % len(last_pass)] for i in range(padding))
        return iter(keys)


class _KeyDataset(torch.utils.data.Dataset):
    """The bootstrap train dataloader's dataset: an item is its own key (the rows live in the bootstrapper)."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int) -> int:
        return key


def _collate_keys(keys: list[int]) -> dict[str, torch.Tensor]:
    return {KEYS_COLUMN: torch.tensor(keys, dtype=torch.long)}


class _EpochCallback(TrainerCallback):
    """Sets the sampler's epoch at each epoch start (accelerate's `set_epoch` misses it when several processes resume
    mid-epoch, where the skipping batch sampler hides ours)."""

    def __init__(self, bootstrapper: SelfBootstrapper):
        self.bootstrapper = bootstrapper

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.bootstrapper.sampler is not None:
            self.bootstrapper.sampler.set_epoch(math.floor(state.epoch or 0))


@dataclass
class _Round:
    """One augmented chunk: its text rows (for checkpoints) and the same rows prepared for the collator."""

    round: int
    rows: list[dict[str, Any]]
    prepared: Dataset
    position: dict[int, int]


# ----------------------------------------------------------------------------------------------------------------------
# The machinery PROTrainer drives
# ----------------------------------------------------------------------------------------------------------------------
class SelfBootstrapper:
    """Runs Algorithm 1 of the PRO paper inside a `PROTrainer` run (the design is in `docs/bootstrap.md`).

    The trainer hands over four hooks: `train_dataloader` (its `get_train_dataloader`), `training_step`, `start`
    (called by `train` with `resume_from_checkpoint`) and `save_checkpoint` (called by `_save_checkpoint`).

    Args:
        trainer (`PROTrainer`): The trainer, once `DPOTrainer.__init__` has run.
        raw_dataset (`datasets.Dataset`): The training rows as given (text), in order.
        reward_model: A scorer callable, a sequence-classification model or a path (see `make_reward_scorer`).
        reward_processing_class: The reward model's tokenizer, for a model instance.
    """

    def __init__(self, trainer: DPOTrainer, raw_dataset: Dataset, reward_model: Any, reward_processing_class=None):
        args = trainer.args
        if isinstance(raw_dataset, IterableDataset) or not isinstance(raw_dataset, Dataset):
            raise ValueError(
                "`self_bootstrap=True` needs a map-style `datasets.Dataset` (the chunks need its length and random "
                f"access); got {type(raw_dataset).__name__}."
            )
        if args.bootstrap_chunks > len(raw_dataset):
            raise ValueError(
                f"`bootstrap_chunks={args.bootstrap_chunks}` is larger than the training set ({len(raw_dataset)} rows)."
            )
        if args.train_sampling_strategy not in ("random", "sequential"):
            raise ValueError(
                f"`train_sampling_strategy={args.train_sampling_strategy!r}` cannot be combined with "
                "`self_bootstrap=True`, which walks the chunks in order: use 'random' (shuffled within each chunk) or "
                "'sequential'."
            )
        if trainer.is_fsdp_enabled:
            raise ValueError(
                "`self_bootstrap=True` does not support FSDP: each process samples for its own rows, and sharded "
                "generation would need every process to run the same number of forward passes. Use DDP or ZeRO."
            )
        self.trainer = trainer
        self.raw_dataset = raw_dataset
        self.num_rows = len(raw_dataset)
        self.num_chunks = args.bootstrap_chunks
        self.passes_per_chunk = args.bootstrap_passes_per_chunk
        self.bounds = chunk_bounds(self.num_rows, self.num_chunks)
        # Same rule as `PROTrainer._prepare_dataset`: the dataset's rewards (all rows or none) decide which original
        # candidate is on top
        self.with_rewards = dataset_has_rewards(raw_dataset, raw_dataset[0], "train")
        self.batch_size = args.bootstrap_batch_size or args.per_device_eval_batch_size
        self.scorer = make_reward_scorer(
            reward_model, reward_processing_class, batch_size=self.batch_size, device=trainer.accelerator.device
        )
        self.sampler: ChunkSampler | None = None
        self.history: list[dict[str, Any]] = []
        self._rounds: dict[int, _Round] = {}
        # Augmented rows of each chunk as first sampled, reused by later epochs unless `bootstrap_resample_each_epoch`
        self._sampled: dict[int, list[dict[str, Any]]] = {}
        trainer.add_callback(_EpochCallback(self))

    # -- dataloader ----------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """The train dataloader of bootstrap mode: batches of keys from a `ChunkSampler`, prepared by accelerate."""
        trainer, args = self.trainer, self.trainer.args
        world = trainer.accelerator.num_processes
        batch_size = trainer._train_batch_size
        pad = batch_size * world if world > 1 and not args.dataloader_drop_last else 1
        self.sampler = ChunkSampler(
            self.num_rows,
            self.num_chunks,
            self.passes_per_chunk,
            shuffle=args.train_sampling_strategy == "random",
            seed=args.data_seed if args.data_seed is not None else args.seed,
            pad_to_multiple_of=pad,
        )
        # No worker processes: a batch of keys costs nothing; the rows are tokenized once per round
        loader = DataLoader(
            _KeyDataset(len(self.sampler)),
            batch_size=batch_size,
            sampler=self.sampler,
            collate_fn=_collate_keys,
            drop_last=args.dataloader_drop_last,
        )
        return trainer.accelerator.prepare(loader)

    # -- training step -------------------------------------------------------------------------------------------------
    def training_step(self, step_fn: Callable, model, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        """Augment the round(s) the batch starts, swap the keys for the collated rows (in place), run `step_fn`.

        `inputs` is modified in place so that the `Trainer` loop, which counts tokens and FLOPs on the object it
        passed in, sees the real batch.
        """
        if KEYS_COLUMN not in inputs:  # a real batch (e.g. passed by hand): nothing to do
            return step_fn(model, inputs, num_items_in_batch)
        start = time.perf_counter()
        keys = inputs[KEYS_COLUMN].tolist()
        located = [divmod(key, self.num_rows) for key in keys]
        self._ensure_rounds(model, [round_id for round_id, _ in located])
        rows = [self._row(round_id, index) for round_id, index in located]
        batch = self.trainer.data_collator(rows)
        inputs.clear()
        inputs.update(batch)
        loss = step_fn(model, inputs, num_items_in_batch)
        record = self.history[-1] if self.history else None
        if record is not None:
            record["step_seconds"] += time.perf_counter() - start
            metrics = self.trainer._metrics["train"]
            total = max(record["step_seconds"], 1e-12)
            metrics["bootstrap/generation_share"] = [record["generation_seconds"] / total]
            metrics["bootstrap/overhead_share"] = [record["overhead_seconds"] / total]
        return loss

    def _ensure_rounds(self, model, local_rounds: list[int]) -> None:
        accelerator = self.trainer.accelerator
        low, high = min(local_rounds), max(local_rounds)
        if accelerator.num_processes > 1:
            bounds = torch.tensor([[-low, high]], device=accelerator.device)
            bounds = accelerator.gather(bounds).view(-1, 2).max(dim=0).values.tolist()
            low, high = -bounds[0], bounds[1]
        # The key stream is monotonic in the round: rounds before the lowest of this global batch are done with
        for round_id in [r for r in self._rounds if r < low]:
            del self._rounds[round_id]
        for round_id in range(low, high + 1):
            if round_id not in self._rounds:
                if self._rounds and round_id < max(self._rounds):
                    raise RuntimeError(f"bootstrap round {round_id} is needed after a later round was sampled")
                self._augment(model, round_id)

    def _row(self, round_id: int, index: int) -> dict[str, Any]:
        return self._rounds[round_id].prepared[self._rounds[round_id].position[index]]

    # -- one round of Algorithm 1 --------------------------------------------------------------------------------------
    def _view(self, index: int) -> tuple[Any, list[Any], dict[str, Any]]:
        example = self.raw_dataset[index]
        prompt, completions, _ = to_ranking(example, index, self.with_rewards)
        extras = {key: example[key] for key in ("tools", "chat_template_kwargs") if example.get(key) is not None}
        return prompt, completions, extras

    def _generate(self, model, prompts: list[Any]) -> list[str]:
        trainer, args = self.trainer, self.trainer.args
        progress_bar = not args.disable_tqdm and trainer.accelerator.is_local_main_process
        with (
            unwrap_model_for_generation(
                model, trainer.accelerator, gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs
            ) as unwrapped,
            trainer.accelerator.autocast(),
            keep_4bit_training_layout(unwrapped),
        ):
            return generate_responses(
                unwrapped,
                trainer._tokenizer,
                prompts,
                max_new_tokens=args.bootstrap_max_new_tokens,
                batch_size=self.batch_size,
                max_prompt_length=args.max_prompt_length,
                progress_bar=progress_bar,
                do_sample=True,
                temperature=args.bootstrap_temperature,
                top_p=args.bootstrap_top_p,
                top_k=args.bootstrap_top_k,
                num_return_sequences=args.bootstrap_num_samples,
            )

    def _score(self, prompts: list[Any], completions: list[Any], owners: list[tuple[int, int, bool]], chunk: int):
        scores = scorer_output(self.scorer(prompts, completions), len(completions), f"Bootstrap chunk {chunk}")
        checked = []
        for score, (index, position, sampled) in zip(scores, owners):
            kind = "a sampled response" if sampled else f"original candidate {position}"
            checked.append(
                check_reward(score, f"Bootstrap chunk {chunk}, row {index}, {kind} (the reward model's score)")
            )
        return checked

    def _augment(self, model, round_id: int) -> None:
        """One round of Algorithm 1: sample, re-rank, gather (every process holds the whole chunk), record."""
        args = self.trainer.args
        epoch, chunk = divmod(round_id, self.num_chunks)
        if not args.bootstrap_resample_each_epoch and chunk in self._sampled:
            # Algorithm 1 samples each chunk once: a later epoch trains on the rankings of the first
            self._rounds[round_id] = self._build_round(round_id, self._sampled[chunk])
            logger.info(
                "Bootstrap round %d (epoch %d, chunk %d): reusing the chunk's first samples", round_id, epoch, chunk
            )
            return
        began = time.perf_counter()
        mine, views, candidates, num_empty = self._sample(model, chunk)
        generated = time.perf_counter()
        local_rows = self._rerank(mine, views, candidates, chunk)
        scored = time.perf_counter()
        timings = {"generation_seconds": generated - began, "reward_seconds": scored - generated}
        rows, payload = self._gather(chunk, local_rows, num_empty, timings)
        stats = [row.pop("_stats") for row in rows]
        self._rounds[round_id] = self._build_round(round_id, rows)
        if not args.bootstrap_resample_each_epoch:
            self._sampled[chunk] = rows
        self._record(round_id, rows, stats, payload, began)

    def _sample(self, model, chunk: int):
        """This process's rows of `chunk` (`index % world_size == rank`), their text, and each row's candidates:
        `(indices, views, [(candidates, is_sample flags)], number of empty samples dropped)`."""
        accelerator = self.trainer.accelerator
        start, end = self.bounds[chunk]
        world, rank = accelerator.num_processes, accelerator.process_index
        mine = [index for index in range(start, end) if index % world == rank]
        views = [self._view(index) for index in mine]
        num_samples = self.trainer.args.bootstrap_num_samples
        responses = self._generate(model, [prompt for prompt, _, _ in views]) if views else []
        candidates, num_empty = [], 0
        for position, (prompt, originals, _) in enumerate(views):
            drawn = responses[position * num_samples : (position + 1) * num_samples]
            samples = [text for text in drawn if text.strip()]
            num_empty += num_samples - len(samples)
            if is_messages(prompt):
                samples = [[{"role": "assistant", "content": text}] for text in samples]
            candidates.append(([*originals, *samples], [False] * len(originals) + [True] * len(samples)))
        return mine, views, candidates, num_empty

    def _rerank(self, mine: list[int], views: list, candidates: list, chunk: int) -> list[dict[str, Any]]:
        """Score every candidate with the reward model and re-rank each row (footnote 6, `rerank_keeping_top`)."""
        prompts, completions, owners = [], [], []
        for index, (prompt, _, _), (row_candidates, flags) in zip(mine, views, candidates):
            for j, (candidate, flag) in enumerate(zip(row_candidates, flags)):
                prompts.append(prompt)
                completions.append(candidate)
                owners.append((index, j, flag))
        scores = self._score(prompts, completions, owners, chunk) if completions else []
        local_rows, offset = [], 0
        for index, (prompt, _, extras), (row_candidates, flags) in zip(mine, views, candidates):
            rewards = scores[offset : offset + len(row_candidates)]
            offset += len(row_candidates)
            ranked, ranked_rewards, ranked_flags, sample_would_lead = rerank_keeping_top(
                row_candidates, rewards, flags, rule=self.trainer.args.bootstrap_rerank
            )
            local_rows.append(
                {
                    "index": index,
                    "prompt": prompt,
                    "completions": ranked,
                    "rewards": ranked_rewards,
                    "is_sample": ranked_flags,
                    **extras,
                    "_stats": {
                        "top_reward": rewards[0],
                        "original_rewards": [r for r, f in zip(rewards, flags) if not f],
                        "sample_rewards": [r for r, f in zip(rewards, flags) if f],
                        "sample_would_lead": sample_would_lead,
                    },
                }
            )
        return local_rows

    def _gather(self, chunk: int, local_rows: list, num_empty: int, timings: dict[str, float]):
        """The re-ranked rows of every process, in dataset order, and each process's counts and timings."""
        accelerator = self.trainer.accelerator
        payload = [{"rows": local_rows, "num_empty": num_empty, **timings}]
        if accelerator.num_processes > 1:
            payload = gather_object(payload)
        rows = sorted((row for part in payload for row in part["rows"]), key=lambda row: row["index"])
        start, end = self.bounds[chunk]
        if [row["index"] for row in rows] != list(range(start, end)):
            raise RuntimeError(f"bootstrap chunk {chunk}: the gathered rows do not cover rows {start}-{end - 1}")
        return rows, payload

    def _record(self, round_id: int, rows: list, stats: list, payload: list, began: float) -> None:
        """Append the round's record to `history`, its `bootstrap/*` metrics to the next log, and log a line."""
        trainer = self.trainer
        epoch, chunk = divmod(round_id, self.num_chunks)
        sample_rewards = [r for s in stats for r in s["sample_rewards"]]
        num_drawn = len(rows) * trainer.args.bootstrap_num_samples
        record = {
            "round": round_id,
            "epoch": epoch,
            "chunk": chunk,
            "global_step": trainer.state.global_step,
            "num_rows": len(rows),
            "num_samples": len(sample_rewards),
            "sample_reward": _mean(sample_rewards),
            "top_reward": sum(s["top_reward"] for s in stats) / len(stats),
            "original_reward": _mean([r for s in stats for r in s["original_rewards"]]),
            "sample_first_rate": sum(s["sample_would_lead"] for s in stats) / len(stats),
            "empty_sample_rate": sum(part["num_empty"] for part in payload) / num_drawn,
            "generation_seconds": max(part["generation_seconds"] for part in payload),
            "reward_seconds": max(part["reward_seconds"] for part in payload),
            "overhead_seconds": time.perf_counter() - began,
            "step_seconds": 0.0,
        }
        self.history.append(record)
        metrics = trainer._metrics["train"]
        for name in ("chunk", "sample_reward", "top_reward", "sample_first_rate", "empty_sample_rate"):
            if record[name] is not None:
                metrics[f"bootstrap/{name}"].append(float(record[name]))
        metrics["bootstrap/generation_seconds"].append(record["generation_seconds"])
        metrics["bootstrap/reward_seconds"].append(record["reward_seconds"])
        logger.info(
            "Bootstrap round %d (epoch %d, chunk %d, step %d): %d rows, mean sampled reward %s, a sample outscored "
            "the top in %.1f%% of the rankings, %.1f s generating",
            round_id,
            epoch,
            chunk,
            record["global_step"],
            len(rows),
            "n/a" if record["sample_reward"] is None else f"{record['sample_reward']:.4f}",
            100 * record["sample_first_rate"],
            record["generation_seconds"],
        )

    def _build_round(self, round_id: int, rows: list[dict[str, Any]]) -> _Round:
        """Tokenize a round's text rows with the trainer's own dataset preparation, keeping the collator's columns."""
        trainer = self.trainer
        chunk = round_id % self.num_chunks
        text = Dataset.from_list([{k: v for k, v in row.items() if k not in ("index", "is_sample")} for row in rows])
        prepared = trainer._prepare_dataset(text, trainer.processing_class, trainer.args, f"bootstrap chunk {chunk}")
        trainer._set_signature_columns_if_needed()
        columns = [name for name in trainer._signature_columns if name in prepared.column_names]
        prepared = prepared.select_columns(columns)
        return _Round(round_id, rows, prepared, {row["index"]: position for position, row in enumerate(rows)})

    # -- checkpoints ---------------------------------------------------------------------------------------------------
    def start(self, resume_from_checkpoint: str | bool | None) -> None:
        """Reset at the start of `train`; when resuming, load the augmented rows saved in the checkpoint."""
        self._rounds = {}
        self._sampled = {}
        self.history = []
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.trainer.args.output_dir)
        if not checkpoint:
            return
        path = os.path.join(checkpoint, BOOTSTRAP_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning(
                "The checkpoint %s has no %s: the bootstrap chunk in progress is sampled again, with the resumed policy.",
                checkpoint,
                BOOTSTRAP_STATE_NAME,
            )
            return
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        layout = (self.num_rows, self.num_chunks, self.passes_per_chunk)
        saved = (state["num_rows"], state["num_chunks"], state["passes_per_chunk"])
        if saved != layout:
            logger.warning(
                "The checkpoint's bootstrap chunks (rows, chunks, passes %s) differ from this run's %s: its augmented "
                "rows are not reused.",
                saved,
                layout,
            )
            return
        self.history = state["history"]
        self._sampled = {int(chunk): rows for chunk, rows in state.get("sampled", {}).items()}
        for entry in state["rounds"]:
            self._rounds[entry["round"]] = self._build_round(entry["round"], entry["rows"])

    def save_checkpoint(self, trial=None) -> None:
        """Write the augmented rows of the rounds in use and the history into the checkpoint folder being saved."""
        trainer = self.trainer
        if not trainer.args.should_save:
            return
        folder = os.path.join(
            trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
        )
        os.makedirs(folder, exist_ok=True)
        state = {
            "num_rows": self.num_rows,
            "num_chunks": self.num_chunks,
            "passes_per_chunk": self.passes_per_chunk,
            "rounds": [{"round": r, "rows": self._rounds[r].rows} for r in sorted(self._rounds)],
            "sampled": {str(chunk): rows for chunk, rows in self._sampled.items()},
            "history": self.history,
        }
        with open(os.path.join(folder, BOOTSTRAP_STATE_NAME), "w", encoding="utf-8") as handle:
            json.dump(state, handle)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


__all__ = [
    "BOOTSTRAP_STATE_NAME",
    "ChunkSampler",
    "SelfBootstrapper",
    "RERANK_RULES",
    "chunk_bounds",
    "make_reward_scorer",
    "rerank_keeping_top",
]
