from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset, IterableDataset, concatenate_datasets
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from transformers import (
    BitsAndBytesConfig,
    DataCollator,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
)
from transformers.trainer_utils import EvalPrediction
from trl import DPOTrainer
from trl.data_utils import is_conversational
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import global_then_local_main_first, use_adapter

from ..collators import DataCollatorForRanking
from ..loss_table import LOSSES, PRO_PAPER, LossBatch, model_card_info, reference_losses
from ..losses import kendall_tau, ranking_accuracy, ranking_labels, top1_accuracy
from ..packing import is_packed
from ..scoring import TokenLogProbs, batch_token_log_probs, packed_inputs, rows_to_rankings
from ..tokenization import (
    chat_template_kwargs_of,
    leading_special_ids,
    left_truncate_prompt,
    tokenize_prompt_completions,
)
from ..trainer_utils import (
    DPOTrainerFixesMixin,
    PackedLayoutMixin,
    log_truncated_prompts,
    overridden_config,
    reference_batches,
    resolve_resume_checkpoint,
    resolve_tokenizer,
    trainer_config,
)
from ..validation import first_row, reward_scale_issue
from .bootstrap import SelfBootstrapper
from .config import PROConfig
from .rows import dataset_has_rewards, to_ranking


logger = logging.getLogger(__name__)

# Columns the prepared dataset keeps for the collator (`Trainer` drops the others when `remove_unused_columns`)
_PREPARED_COLUMNS = ["prompt_ids", "completion_ids", "rewards", "ref_logps"]


class PROTrainer(PackedLayoutMixin, DPOTrainerFixesMixin, DPOTrainer):
    """
    Trainer for Preference Ranking Optimization (PRO), from the paper [Preference Ranking Optimization for Human
    Alignment](https://huggingface.co/papers/2306.17492) (Song et al., 2024).

    PRO learns from a ranking of `n >= 2` responses per prompt: for each position `k` of the ranking, the response at
    `k` should be more likely than every response below it (Eq. 8), with a reward-derived temperature when rewards
    are given (Eqs. 9-11), plus an SFT term on the top response. The score of a response is its mean token
    log-probability under the policy, so no reference model is needed, loaded or run (set
    `PROConfig.reference_normalized=True` for a reference-normalised score).

    `PROConfig.loss_type` chooses another loss of the listwise family, or a weighted sum of several (`loss_weights`):
    every loss of the loss table `trl_ranking.loss_table.LOSSES` (Plackett-Luce DPO, LiPO, OPO's NDCG surrogates,
    RRHF, SLiC-HF, RAFT, DPO and SimPO on pairs of the ranking, ...; see `docs/listwise.md`). Those whose score is a
    log-ratio to the reference (`trl_ranking.loss_table.reference_losses()`) use a reference model.

    This class subclasses `trl.DPOTrainer` and takes the same arguments: a user of `DPOTrainer` changes the class
    and the config. A DPO dataset (`prompt`/`chosen`/`rejected`) trains unchanged as a ranking of two.

    Each prompt is processed once by default (`PROConfig.prefix_sharing`: one row `[prompt][candidate 1]...[candidate
    n]` per ranking with a tree attention mask) wherever that is exact, and `PROConfig.padding_free=True` packs a
    whole batch into one row; the loss and gradients are those of the padded layout (see `trl_ranking.packing`).

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_ranking import PROConfig, PROTrainer
    >>> from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm

    >>> tokenizer = load_bundled_tokenizer()
    >>> model_path = make_tiny_causal_lm("tiny-model")  # any causal LM id or path works the same way
    >>> dataset = Dataset.from_list(
    ...     [
    ...         # rewards are optional, for every row or for none; the trainer sorts by them
    ...         {"prompt": "The sky is", "completions": [" green.", " blue.", " cheese."], "rewards": [0.5, 1.0, 0.0]},
    ...         {"prompt": "Two plus two is", "completions": [" four.", " five."], "rewards": [1.0, 0.0]},
    ...     ]
    ... )
    >>> trainer = PROTrainer(
    ...     model=model_path,
    ...     args=PROConfig(output_dir="pro-model", max_steps=2, report_to="none", bf16=False),  # bf16=True on a GPU
    ...     train_dataset=dataset,
    ...     processing_class=tokenizer,
    ... )
    >>> _ = trainer.train()  # doctest: +ELLIPSIS
    {'train_runtime': ...}

    ```

    Args:
        model (`str` or `transformers.PreTrainedModel` or `peft.PeftModel`):
            Model to train: a model id or path (loaded with `args.model_init_kwargs` and `quantization_config`), or an
            instantiated causal LM.
        ref_model (`transformers.PreTrainedModel`, *optional*):
            Reference model, only with a reference-based `args.loss_type` (`trl_ranking.loss_table.reference_losses()`:
            `"listmle"`, `"lipo_lambda"`, `"dpo_pairs"`, ...) or `args.reference_normalized=True`. If `None` there, TRL's default applies: the PEFT adapter
            switched off, or a copy of the initial model, or precomputed log-probs.
        args (`PROConfig`, *optional*):
            Configuration. If `None`, a default `PROConfig` is used.
        data_collator (`DataCollator`, *optional*):
            Defaults to `DataCollatorForRanking`.
        train_dataset (`datasets.Dataset` or `datasets.IterableDataset`):
            Ranking rows `prompt`, `completions` (best first) and optional `rewards` (one float per completion; the
            ranking is then their descending order), or DPO rows `prompt`/`chosen`/`rejected` with optional
            `score_chosen`/`score_rejected`. Standard or conversational, explicit or implicit prompt.
        eval_dataset: Same format as `train_dataset`, or a dict of such datasets.
        processing_class (`transformers.PreTrainedTokenizerBase`, *optional*):
            Tokenizer. If `None`, loaded from the model. `pad_token` defaults to `eos_token`.
        compute_metrics, callbacks, optimizers: As in `trl.DPOTrainer`.
        quantization_config (`transformers.BitsAndBytesConfig`, *optional*):
            Quantization used when `model` is a model id or path. Combine with `peft_config` for QLoRA.
        peft_config (`peft.PeftConfig`, *optional*):
            PEFT configuration used to wrap the model.
        reward_model (`Callable` or `transformers.PreTrainedModel` or `str`, *optional*):
            Only with `args.self_bootstrap=True` (the paper's Algorithm 1), where it is required: it scores every
            candidate of a chunk, original and sampled, before re-ranking. A scorer callable
            `scorer(prompts, completions) -> list[float]` (one finite score per pair, higher is better), or a
            sequence-classification model with `num_labels=1` (or its path), wrapped with
            `trl_ranking.rewards.RewardModelScorer`.
        reward_processing_class (`transformers.PreTrainedTokenizerBase`, *optional*):
            The reward model's tokenizer, when `reward_model` is a model instance.
    """

    # The defaults for PRO's own loss; `__init__` sets them from the loss table for the losses used
    _tag_names = ["trl", "trl-ranking", "pro"]
    _name = "PRO"
    _paper = PRO_PAPER.as_card()

    def __init__(
        self,
        model: str | PreTrainedModel,
        ref_model: PreTrainedModel | None = None,
        args: PROConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config=None,
        reward_model: Callable | PreTrainedModel | str | None = None,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
    ):
        args = trainer_config(args, PROConfig, model, "PRO")
        if train_dataset is not None:
            first_row(train_dataset, "train")  # DPOTrainer reads the first row and would fail on StopIteration
        if ref_model is not None and not args.uses_reference:
            raise ValueError(
                f"A `ref_model` was passed but `loss_type={args.loss_type}` is reference-free and "
                "`args.reference_normalized` is False. Set `PROConfig(reference_normalized=True)` to score PRO's "
                "candidates against the reference, or choose a reference-based `loss_type` "
                f"({', '.join(map(repr, reference_losses()))})."
            )
        # The model card names the losses used, cites their papers and tags the run by them (TRL reads these)
        self._name, self._paper, self._tag_names = model_card_info(args.loss_type)
        if args.self_bootstrap and reward_model is None:
            raise ValueError(
                "`self_bootstrap=True` needs a `reward_model` to score the sampled responses: pass "
                "`PROTrainer(reward_model=...)`, a scorer callable `scorer(prompts, completions) -> list[float]` or a "
                "sequence-classification model with its `reward_processing_class`."
            )
        if reward_model is not None and not args.self_bootstrap:
            raise ValueError(
                "A `reward_model` was passed but `args.self_bootstrap` is False: PRO uses it only to re-rank "
                "self-bootstrapped samples. Set `PROConfig(self_bootstrap=True)`, or rank the dataset beforehand with "
                "`trl_ranking.data.rank_completions`."
            )
        self.bootstrapper = None

        processing_class, tokenizer = resolve_tokenizer(model, processing_class, args)
        # The layout (prefix sharing, padding-free) is set on the default collator once the models are loaded
        # (`PackedLayoutMixin._resolve_layout`); a collator passed in decides the layout itself
        default_collator = None
        if data_collator is None:
            data_collator = default_collator = DataCollatorForRanking(
                pad_token_id=tokenizer.pad_token_id,
                max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        self._init_layout(default_collator, args)

        # Reference-free losses must not load a reference model. `DPOTrainer.__init__` loads a copy of the policy unless
        # PEFT is used or `precompute_ref_log_probs` is set, so the flag is raised for the duration of the parent
        # constructor (our `_precompute_ref_logps` is then a no-op) and lowered again afterwards.
        uses_peft = peft_config is not None or (not isinstance(model, str) and is_peft_model(model))
        overrides = {"padding_free": False}  # PRO implements it; DPOTrainer would switch it off with a warning
        if not args.uses_reference and not args.precompute_ref_log_probs and not uses_peft:
            overrides["precompute_ref_log_probs"] = True
        with overridden_config(args, **overrides):
            super().__init__(
                model=model,
                ref_model=ref_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                quantization_config=quantization_config,
                peft_config=peft_config,
            )
        self.precompute_ref_logps = args.precompute_ref_log_probs
        if not args.uses_reference:
            self.ref_model = None
        self._resolve_layout()
        # Self-bootstrapping (Algorithm 1) keeps the raw rows: each chunk is tokenized once augmented
        if args.self_bootstrap:
            self.bootstrapper = SelfBootstrapper(self, train_dataset, reward_model, reward_processing_class)

    # ------------------------------------------------------------------------------------------------------------------
    # Self-bootstrapping (`args.self_bootstrap`, see `trl_ranking.pro.bootstrap`). Each hook defers to TRL otherwise.
    # ------------------------------------------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        # Replaces `Trainer.get_train_dataloader` in bootstrap mode: batches of row keys, chunk after chunk
        if self.bootstrapper is not None:
            return self.bootstrapper.train_dataloader()
        return super().get_train_dataloader()

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Wraps `DPOTrainer.training_step` in bootstrap mode: samples a chunk when its first row comes up (with the
        # policy as it is then), then swaps the keys for the collated rows
        if self.bootstrapper is not None:
            return self.bootstrapper.training_step(super().training_step, model, inputs, num_items_in_batch)
        return super().training_step(model, inputs, num_items_in_batch)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        # Resuming mid-chunk reuses the augmented chunk saved in the checkpoint instead of sampling it again
        # (`True` means the last complete checkpoint, see `resolve_resume_checkpoint`)
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        if self.bootstrapper is not None:
            self.bootstrapper.start(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        # Extends `DPOTrainer._save_checkpoint`: the augmented rows of the chunk in progress go into the checkpoint
        if self.bootstrapper is not None:
            self.bootstrapper.save_checkpoint(trial)
        super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------------------------------------------------------------
    # Data. Replaces `DPOTrainer._prepare_dataset` (chosen/rejected tokenization) with ranking tokenization.
    # ------------------------------------------------------------------------------------------------------------------
    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin,
        args: PROConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        first_example = first_row(dataset, dataset_name)
        if "completion_ids" in first_example and "prompt_ids" in first_example:
            return dataset  # already prepared (e.g. a dataset passed again to `evaluate`)
        if "completions" not in first_example and not ("chosen" in first_example and "rejected" in first_example):
            raise ValueError(
                f"The {dataset_name} dataset is missing columns: a ranking dataset needs 'completions' (and 'prompt' "
                "unless it is implicit), a preference dataset 'chosen' and 'rejected'. Got columns "
                f"{sorted(first_example)}."
            )
        with_rewards = dataset_has_rewards(dataset, first_example, dataset_name)
        tokenizer = self._tokenizer
        max_length, max_prompt_length = args.max_length, args.max_prompt_length
        special_ids = leading_special_ids(tokenizer)  # kept in front when a prompt is left-truncated (e.g. BOS)

        dynamic_temperature = "pro" in args.loss_type and args.dynamic_temperature
        lipo_unnormalized = (
            any(LOSSES[name].uses_gains for name in args.loss_type) and args.lipo_label_normalization == "none"
        )

        def tokenize_row(example: dict[str, Any], index: int) -> dict[str, Any]:
            prompt, completions, rewards = to_ranking(example, index, with_rewards)
            # The size of the rewards matters where the loss uses it (the order alone passes `check_rewards`)
            scale_issue = None if rewards is None else reward_scale_issue(rewards, dynamic_temperature, lipo_unnormalized)
            if scale_issue is not None and scale_issue[1]:
                field = "rewards" if "completions" in example else "score_chosen/score_rejected"
                raise ValueError(f"Row {index}, field '{field}': {scale_issue[0]}")
            if is_conversational({"prompt": prompt}) != is_conversational({"prompt": completions[0]}) and prompt:
                raise ValueError(
                    f"Row {index}, field 'prompt': the prompt and the completions mix conversational and standard text."
                )
            prompt_ids, completion_ids = tokenize_prompt_completions(
                processing_class,
                prompt,
                completions,
                eos_token=tokenizer.eos_token,
                **chat_template_kwargs_of(example),
            )
            truncated = max_prompt_length is not None and len(prompt_ids) > max_prompt_length
            if truncated:
                prompt_ids = left_truncate_prompt(prompt_ids, max_prompt_length, special_ids)
            if max_length is not None and len(prompt_ids) >= max_length:
                raise ValueError(
                    f"Row {index}, field 'prompt': the prompt has {len(prompt_ids)} tokens, which leaves no completion "
                    f"token under `max_length={max_length}`. Raise `max_length`, set `max_prompt_length` to "
                    "left-truncate long prompts, or remove the row."
                )
            for i, ids in enumerate(completion_ids):
                if not ids:
                    raise ValueError(f"Row {index}, field 'completions[{i}]': the completion has no token.")
            output = {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "prompt_truncated": truncated}
            output["large_rewards"] = "" if scale_issue is None else scale_issue[0]  # warned about once, with a row
            # Counted for the log: completions the collator cuts at `max_length` (their end and EOS are lost),
            # rankings of identical candidates (no ranking gradient from any loss), rankings whose rewards all tie
            # (what they train depends on the loss), and preference rows whose scores reverse their labels
            output["completion_truncated"] = (
                0 if max_length is None else sum(len(prompt_ids) + len(ids) > max_length for ids in completion_ids)
            )
            output["degenerate"] = all(ids == completion_ids[0] for ids in completion_ids[1:])
            output["tied_rewards"] = not output["degenerate"] and rewards is not None and min(rewards) == max(rewards)
            output["reversed_scores"] = (
                with_rewards
                and "completions" not in example
                and float(example["score_rejected"]) > float(example["score_chosen"])
            )
            if with_rewards:
                output["rewards"] = rewards
            return output

        map_kwargs: dict[str, Any] = {"with_indices": True}
        if isinstance(dataset, Dataset):
            map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Tokenizing {dataset_name} rankings")
        with global_then_local_main_first():
            dataset = dataset.map(tokenize_row, **map_kwargs)
        if isinstance(dataset, Dataset):
            self._log_dataset_counts(dataset, dataset_name, args)
        return dataset

    def _log_dataset_counts(self, dataset: Dataset, dataset_name: str, args: PROConfig) -> None:
        """Log what `_prepare_dataset` counted: truncated prompts, completions cut at `max_length`, degenerate rankings."""
        max_length, max_prompt_length = args.max_length, args.max_prompt_length
        num_truncated = sum(dataset["prompt_truncated"])
        log_truncated_prompts(num_truncated, len(dataset), dataset_name, max_prompt_length, "prompts")
        num_cut = sum(dataset["completion_truncated"])
        if num_cut:
            logger.warning(
                "%d of %d completions of the %s dataset are longer than `max_length=%d` tokens with their prompt: "
                "they are cut (their end and EOS token are not trained). Raise `max_length` or set "
                "`max_prompt_length`.",
                num_cut,
                sum(len(ids) for ids in dataset["completion_ids"]),
                dataset_name,
                max_length,
            )
        large = [(row, issue) for row, issue in enumerate(dataset["large_rewards"]) if issue]
        if large:
            logger.warning(
                "%d of %d rankings of the %s dataset have rewards large enough to dominate the loss (the first, "
                "row %d: %s)",
                len(large),
                len(dataset),
                dataset_name,
                *large[0],
            )
        num_identical = sum(dataset["degenerate"])
        num_tied = sum(dataset["tied_rewards"]) if "tied_rewards" in dataset.column_names else 0
        if num_identical or num_tied:
            kinds = []
            if num_identical:
                kinds.append(
                    f"{num_identical} with all candidates identical (identical scores: no loss gets a ranking "
                    "gradient from them; the SFT terms still train)"
                )
            if num_tied:
                behaviour = "; ".join(f"{name}: {LOSSES[name].tied_behaviour(args)}" for name in args.loss_type)
                kinds.append(f"{num_tied} with all rewards tied (the ranking states no order; per loss: {behaviour})")
            logger.warning(
                "%d of %d rankings of the %s dataset are degenerate: %s.",
                num_identical + num_tied,
                len(dataset),
                dataset_name,
                ", and ".join(kinds),
            )
        num_reversed = sum(dataset["reversed_scores"]) if "reversed_scores" in dataset.column_names else 0
        if num_reversed:
            logger.warning(
                "%d of %d preference rows of the %s dataset have `score_rejected > score_chosen`. PROTrainer ranks a "
                "row by its scores when it has them, so their 'rejected' answer trains as the best (DPOTrainer ignores "
                "the scores and always prefers 'chosen'). Drop or swap the scores if the labels are right.",
                num_reversed,
                len(dataset),
                dataset_name,
            )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(_PREPARED_COLUMNS)

    # ------------------------------------------------------------------------------------------------------------------
    # Reference log-probs (only for a reference-based `loss_type` or `reference_normalized=True`). Reuses TRL's choice
    # of reference: an explicit `ref_model`, else the PEFT adapter switched off (or the "ref" adapter copy), else the
    # initial-model copy.
    # ------------------------------------------------------------------------------------------------------------------
    def _reference_log_probs(self, model, inputs: dict[str, Any]) -> TokenLogProbs:
        adapter_context = contextlib.nullcontext()
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            adapter_context = use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter_context,
        ):
            return batch_token_log_probs(model, inputs)

    def compute_ref_log_probs(self, model, inputs):
        """Summed reference log-probability of every candidate of a collated batch, `[batch, n_max]` (as DPO's).

        PRO's `reference_normalized` score divides it by the candidate's token count (the policy's, the same tokens).
        """
        with self.accelerator.autocast():
            ref = self._reference_log_probs(model, inputs)
        return rows_to_rankings(ref.sums.float(), inputs["num_candidates"])

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        # Replaces DPO's chosen/rejected precompute with one value per candidate (column `ref_logps`)
        if not self.args.uses_reference:
            return dataset  # reference-free losses: nothing to precompute (see `__init__`)
        self._resolve_layout()  # runs inside `DPOTrainer.__init__`: the reference forwards use the training layout
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                "`precompute_ref_log_probs=True` is not supported with an IterableDataset. Use a map-style Dataset or "
                "set `precompute_ref_log_probs=False`."
            )
        fingerprint = [Hasher.hash((dataset._fingerprint, self._precompute_model_hash, "pro-ref-logps"))]
        broadcast_object_list(fingerprint, from_process=0)
        # A dataset backed by cache files caches the values next to them (shared by the processes and by later runs).
        # An in-memory dataset has a per-process temporary cache dir, so its values are added in memory instead:
        # every process holds the gathered values anyway.
        cache_file = dataset._get_cache_file_path(fingerprint[0]) if dataset.cache_files else None
        if cache_file is not None and os.path.exists(cache_file):
            return concatenate_datasets([dataset, Dataset.from_file(cache_file)], axis=1)

        values = self._compute_ref_logps_for(dataset, name, batch_size)
        if cache_file is None:
            return dataset.add_column("ref_logps", values, new_fingerprint=fingerprint[0])
        if self.accelerator.is_main_process:
            Dataset.from_dict({"ref_logps": values}).map(
                new_fingerprint=fingerprint[0], cache_file_name=cache_file, desc="Caching reference log probs"
            )
        self.accelerator.wait_for_everyone()
        return concatenate_datasets([dataset, Dataset.from_file(cache_file)], axis=1)

    def _compute_ref_logps_for(self, dataset: Dataset, name: str, batch_size: int) -> list[list[float]]:
        """Reference scores of every candidate of `dataset`, in dataset order, gathered from all processes."""
        columns = [c for c in dataset.column_names if c in ("prompt_ids", "completion_ids", "rewards")]
        values: list[list[float]] = []
        for model, batch in reference_batches(self, dataset.select_columns(columns), batch_size, name):
            ref = self.compute_ref_log_probs(model, batch)
            counts = batch["num_candidates"]
            # Processes may hold rankings of different sizes: pad before gathering
            ref = self.accelerator.pad_across_processes(ref, dim=1)
            ref, counts = self.accelerator.gather_for_metrics((ref, counts))
            values.extend(row[:count].tolist() for row, count in zip(ref.cpu(), counts.cpu().tolist()))
        return values

    # ------------------------------------------------------------------------------------------------------------------
    # Loss. Replaces `DPOTrainer._compute_loss` (pairwise losses) with the listwise family of `PROConfig.loss_type`
    # (pure functions of `[batch, n]` tensors in `trl_ranking.losses`) and ranking metrics.
    # ------------------------------------------------------------------------------------------------------------------
    def _reference_sum_logps(self, inputs: dict[str, Any], num_candidates: torch.Tensor) -> torch.Tensor:
        """Summed reference log-probs `[batch, n_max]`: precomputed, or a no-grad pass in the policy's layout."""
        if self.precompute_ref_logps:
            return inputs["ref_logps"].float()
        ref_model = self.ref_model if self.ref_model is not None else self.model
        return rows_to_rankings(self._reference_log_probs(ref_model, inputs).sums, num_candidates)

    def _listwise_loss(
        self,
        loss_type: str,
        sum_logps: torch.Tensor,
        token_counts: torch.Tensor,
        ref_sum_logps: torch.Tensor | None,
        rewards: torch.Tensor | None,
        num_candidates: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """One loss of the family, looked up in the loss table (`trl_ranking.loss_table.LOSSES`):
        `(per_example [batch], metric parts {name: [batch]}, the scores it ranks by)`."""
        batch = LossBatch(
            sum_logps=sum_logps,
            token_counts=token_counts,
            num_candidates=num_candidates,
            ref_sum_logps=ref_sum_logps,
            rewards=rewards,
            beta=self.beta,
            step=self.state.global_step,
        )
        return LOSSES[loss_type](batch, self.args)

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        num_candidates = inputs["num_candidates"]
        forward_kwargs = {"output_router_logits": True} if self.aux_loss_enabled else {}
        policy = batch_token_log_probs(model, inputs, **forward_kwargs)

        sum_logps = rows_to_rankings(policy.sums, num_candidates)
        token_counts = rows_to_rankings(policy.counts, num_candidates)
        ref_sum_logps = self._reference_sum_logps(inputs, num_candidates) if self.args.uses_reference else None
        rewards = inputs.get("rewards")

        loss = 0.0
        parts: dict[str, torch.Tensor] = {}
        metric_scores = None
        weights = self.args.loss_weights or [1.0] * len(self.args.loss_type)
        for loss_type, weight in zip(self.args.loss_type, weights, strict=True):
            per_example, loss_parts, scores = self._listwise_loss(
                loss_type, sum_logps, token_counts, ref_sum_logps, rewards, num_candidates
            )
            loss = loss + weight * per_example.mean()
            parts.update(loss_parts)
            if metric_scores is None:  # the ranking metrics rank by the first loss's scores
                metric_scores = scores.detach()

        if self.aux_loss_enabled:
            aux_loss = policy.outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux_loss
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        first_rows = torch.cumsum(num_candidates, dim=0) - num_candidates
        self._log_ranking_metrics(mode, inputs, policy, metric_scores, rewards, parts, first_rows)

        if return_outputs:
            warnings.warn(
                "`return_outputs=True` is deprecated: the fused LM head does not build the logits, so they are "
                "recomputed with an extra forward pass.",
                FutureWarning,
                stacklevel=2,
            )
            if is_packed(inputs):
                model_inputs = packed_inputs(model, inputs)
            else:
                model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
            with torch.no_grad():
                outputs = model(**model_inputs)
            return loss, outputs
        return loss

    def _append_mean(self, metrics, name: str, total: torch.Tensor, count: torch.Tensor) -> None:
        """Append `sum(total) / sum(count)` over all processes to `metrics[name]` (nothing when the count is 0)."""
        total = self.accelerator.gather_for_metrics(total.detach().float().reshape(1)).sum()
        count = self.accelerator.gather_for_metrics(count.detach().float().reshape(1)).sum()
        if count > 0:
            metrics[name].append((total / count).item())

    def _log_ranking_metrics(self, mode, inputs, policy, scores, rewards, parts, first_rows):
        metrics = self._metrics[mode]
        num_candidates = inputs["num_candidates"]
        batch = torch.tensor(float(num_candidates.numel()), device=scores.device)
        # Each loss's parts, per example (e.g. `loss/ranking`, `loss/sft` of PRO, `loss/rrhf/ranking`, `loss/listmle`)
        for name, values in parts.items():
            self._append_mean(metrics, name, values.detach().sum(), batch)
        self._append_mean(metrics, "num_candidates", num_candidates.sum(), batch)

        correct, pairs = ranking_accuracy(scores, num_candidates, rewards)
        self._append_mean(metrics, "ranking/accuracy", correct, pairs)
        tau, valid = kendall_tau(scores, num_candidates, rewards)
        self._append_mean(metrics, "ranking/kendall_tau", (tau * valid).sum(), valid.sum())
        top1 = top1_accuracy(scores, ranking_labels(rewards, num_candidates, scores.shape[1]), num_candidates)
        self._append_mean(metrics, "ranking/top1_accuracy", top1.sum(), batch)

        # Mean score per rank, over the examples that have that rank. Processes may hold different n: pad to gather.
        rank_mask = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0) < num_candidates.unsqueeze(1)
        rank_totals = self.accelerator.pad_across_processes((scores * rank_mask).sum(dim=0), dim=0)
        rank_counts = self.accelerator.pad_across_processes(rank_mask.sum(dim=0).float(), dim=0)
        world = self.accelerator.num_processes
        rank_totals = self.accelerator.gather(rank_totals).view(world, -1).sum(dim=0)
        rank_counts = self.accelerator.gather(rank_counts).view(world, -1).sum(dim=0)
        for rank, (total, count) in enumerate(zip(rank_totals.tolist(), rank_counts.tolist()), start=1):
            if count > 0:
                metrics[f"scores/rank_{rank}"].append(total / count)

        # As DPOTrainer: entropy over scored tokens, token accuracy of the top candidate, tokens seen (the tokens the
        # model processes: with prefix sharing each prompt once)
        self._log_token_metrics(metrics, policy, first_rows)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum().reshape(1)).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

    def _log_token_metrics(self, metrics, policy: TokenLogProbs, first_rows: torch.Tensor) -> None:
        outputs = policy.outputs
        if outputs.entropy is not None:
            entropy = policy.gather(outputs.entropy.detach()).float()
            self._append_mean(metrics, "entropy", entropy.sum(), torch.tensor(entropy.numel(), device=entropy.device))
        if outputs.is_top1 is not None:
            top = torch.isin(policy.sequence, first_rows)
            is_top1 = policy.gather(outputs.is_top1).float()[top]
            self._append_mean(metrics, "mean_token_accuracy", is_top1.sum(), top.sum())
