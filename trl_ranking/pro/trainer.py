from __future__ import annotations

import contextlib
import logging
import os
import textwrap
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
from ..losses import (
    best_candidate_nll,
    dpo_pairs_loss,
    kendall_tau,
    lipo_lambda_loss,
    listmle_loss,
    normalize_labels,
    pro_ranking_loss,
    pro_sft_loss,
    ranking_accuracy,
    ranking_labels,
    rrhf_loss,
    slic_loss,
    top1_accuracy,
)
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
from ..validation import first_row
from .bootstrap import SelfBootstrapper
from .config import PROConfig
from .rows import dataset_has_rewards, to_ranking


logger = logging.getLogger(__name__)

# Columns the prepared dataset keeps for the collator (`Trainer` drops the others when `remove_unused_columns`)
_PREPARED_COLUMNS = ["prompt_ids", "completion_ids", "rewards", "ref_logps"]

# The paper of each loss of the family (`PROConfig.loss_type`), for the model card: (method name, paper)
# docstyle-ignore
_DPO_CITATION = textwrap.dedent("""\
    @inproceedings{rafailov2023direct,
        title        = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
        author       = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and Chelsea Finn},
        year         = 2023,
        booktitle    = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
    }""")
_DPO_PAPER = {
    "title": "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
    "id": "2305.18290",
    "citation": _DPO_CITATION,
}
_LOSS_PAPERS: dict[str, tuple[str, dict[str, str]]] = {
    "listmle": ("Plackett-Luce DPO (ListMLE)", _DPO_PAPER),
    "lipo_lambda": (
        "LiPO-lambda",
        {
            "title": "LiPO: Listwise Preference Optimization through Learning-to-Rank",
            "id": "2402.01878",
            # docstyle-ignore
            "citation": textwrap.dedent("""\
                @article{liu2024lipo,
                    title        = {{LiPO: Listwise Preference Optimization through Learning-to-Rank}},
                    author       = {Tianqi Liu and Zhen Qin and Junru Wu and Jiaming Shen and Misha Khalman and Rishabh Joshi and Yao Zhao and Mohammad Saleh and Simon Baumgartner and Jialu Liu and Peter J. Liu and Xuanhui Wang},
                    year         = 2024,
                    journal      = {arXiv preprint arXiv:2402.01878},
                }"""),
        },
    ),
    "rrhf": (
        "RRHF",
        {
            "title": "RRHF: Rank Responses to Align Language Models with Human Feedback without tears",
            "id": "2304.05302",
            # docstyle-ignore
            "citation": textwrap.dedent("""\
                @inproceedings{yuan2023rrhf,
                    title        = {{RRHF: Rank Responses to Align Language Models with Human Feedback}},
                    author       = {Zheng Yuan and Hongyi Yuan and Chuanqi Tan and Wei Wang and Songfang Huang and Fei Huang},
                    year         = 2023,
                    booktitle    = {Advances in Neural Information Processing Systems 36 (NeurIPS 2023)},
                }"""),
        },
    ),
    "slic": (
        "SLiC-HF",
        {
            "title": "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
            "id": "2305.10425",
            # docstyle-ignore
            "citation": textwrap.dedent("""\
                @article{zhao2023slic,
                    title        = {{SLiC-HF: Sequence Likelihood Calibration with Human Feedback}},
                    author       = {Yao Zhao and Rishabh Joshi and Tianqi Liu and Misha Khalman and Mohammad Saleh and Peter J. Liu},
                    year         = 2023,
                    journal      = {arXiv preprint arXiv:2305.10425},
                }"""),
        },
    ),
    "best_of_n_sft": (
        "best-of-n SFT (RAFT)",
        {
            "title": "RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment",
            "id": "2304.06767",
            # docstyle-ignore
            "citation": textwrap.dedent("""\
                @article{dong2023raft,
                    title        = {{RAFT: Reward rAnked FineTuning for Generative Foundation Model Alignment}},
                    author       = {Hanze Dong and Wei Xiong and Deepanshu Goyal and Yihan Zhang and Winnie Chow and Rui Pan and Shizhe Diao and Jipeng Zhang and Kashun Shum and Tong Zhang},
                    year         = 2023,
                    journal      = {Transactions on Machine Learning Research},
                }"""),
        },
    ),
    "dpo_pairs": ("DPO on pairs of the ranking", _DPO_PAPER),
}


class PROTrainer(PackedLayoutMixin, DPOTrainerFixesMixin, DPOTrainer):
    """
    Trainer for Preference Ranking Optimization (PRO), from the paper [Preference Ranking Optimization for Human
    Alignment](https://huggingface.co/papers/2306.17492) (Song et al., AAAI 2024).

    PRO learns from a ranking of `n >= 2` responses per prompt: for each position `k` of the ranking, the response at
    `k` should be more likely than every response below it (Eq. 8), with a reward-derived temperature when rewards
    are given (Eqs. 9-11), plus an SFT term on the top response. The score of a response is its mean token
    log-probability under the policy, so no reference model is needed, loaded or run (set
    `PROConfig.reference_normalized=True` for a reference-normalised score).

    `PROConfig.loss_type` chooses another loss of the listwise family, or a weighted sum of several (`loss_weights`):
    `"listmle"` (Plackett-Luce DPO), `"lipo_lambda"` (LiPO-lambda), `"rrhf"`, `"slic"` (SLiC-HF), `"best_of_n_sft"`
    (RAFT) and `"dpo_pairs"` (DPO on pairs of the ranking); see `trl_ranking.losses` and `docs/listwise.md`. Only
    `"listmle"`, `"lipo_lambda"` and `"dpo_pairs"` use a reference model.

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
            Reference model, only with a reference-based `args.loss_type` (`"listmle"`, `"lipo_lambda"`,
            `"dpo_pairs"`) or `args.reference_normalized=True`. If `None` there, TRL's default applies: the PEFT adapter
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

    _tag_names = ["trl", "trl-ranking", "pro"]
    _name = "PRO"
    _paper = {
        "title": "Preference Ranking Optimization for Human Alignment",
        "id": "2306.17492",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{song2024preference,
                title        = {{Preference Ranking Optimization for Human Alignment}},
                author       = {Feifan Song and Bowen Yu and Minghao Li and Haiyang Yu and Fei Huang and Yongbin Li and Houfeng Wang},
                year         = 2024,
                booktitle    = {Thirty-Eighth AAAI Conference on Artificial Intelligence, AAAI 2024},
                pages        = {18990--18998},
                doi          = {10.1609/AAAI.V38I17.29865},
            }"""),
    }

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
                "candidates against the reference, or choose a reference-based `loss_type` ('listmle', 'lipo_lambda', "
                "'dpo_pairs')."
            )
        self._name, self._paper = self._model_card_paper(args.loss_type)
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

        def tokenize_row(example: dict[str, Any], index: int) -> dict[str, Any]:
            prompt, completions, rewards = to_ranking(example, index, with_rewards)
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
            # Counted for the log: completions the collator cuts at `max_length` (their end and EOS are lost), and
            # rankings that give no ranking gradient (identical candidates, or all rewards tied)
            output["completion_truncated"] = (
                0 if max_length is None else sum(len(prompt_ids) + len(ids) > max_length for ids in completion_ids)
            )
            output["degenerate"] = all(ids == completion_ids[0] for ids in completion_ids[1:]) or (
                rewards is not None and min(rewards) == max(rewards)
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
        num_degenerate = sum(dataset["degenerate"])
        if num_degenerate:
            logger.warning(
                "%d of %d rankings of the %s dataset are degenerate (all candidates identical, or all rewards "
                "tied): they give no ranking gradient, only the SFT term.",
                num_degenerate,
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
    @staticmethod
    def _model_card_paper(loss_types: list[str]) -> tuple[str, dict[str, str]]:
        """The method name and paper (all citations) of the model card, for the losses used."""
        if loss_types == ["pro"]:
            return PROTrainer._name, PROTrainer._paper
        entries = [
            (PROTrainer._name, PROTrainer._paper) if name == "pro" else _LOSS_PAPERS[name] for name in loss_types
        ]
        citations = list(dict.fromkeys(paper["citation"] for _, paper in entries))
        paper = dict(entries[0][1], citation="\n\n".join(citations))
        return " + ".join(name for name, _ in entries), paper

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
        """One loss of the family: `(per_example [batch], metric parts {name: [batch]}, the scores it ranks by)`."""
        args = self.args
        n_max = sum_logps.shape[1]
        mean_logps = sum_logps / token_counts.clamp(min=1)
        labels = ranking_labels(rewards, num_candidates, n_max)
        if loss_type in ("listmle", "lipo_lambda", "dpo_pairs"):
            scores = self.beta * (sum_logps - ref_sum_logps.to(sum_logps.dtype))
        if loss_type == "pro":
            if args.reference_normalized:
                scores = self.beta * (mean_logps - ref_sum_logps.to(sum_logps.dtype) / token_counts.clamp(min=1))
            else:
                scores = mean_logps
            ranking, _, _ = pro_ranking_loss(
                scores,
                num_candidates,
                rewards=rewards,
                dynamic_temperature=args.dynamic_temperature,
                first_stage_only=args.first_stage_only,
                eps=args.ranking_eps,
            )
            sft = pro_sft_loss(-sum_logps[:, 0], num_candidates, args.sft_weight)
            return ranking + sft, {"loss/ranking": ranking, "loss/sft": sft}, scores
        if loss_type == "listmle":
            per_example = listmle_loss(scores, num_candidates)
            return per_example, {"loss/listmle": per_example}, scores
        if loss_type == "lipo_lambda":
            labels = normalize_labels(labels, num_candidates, args.lipo_label_normalization)
            per_example, pairs, delta = lipo_lambda_loss(scores, labels, num_candidates)
            mean_delta = (delta * pairs).sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1)
            return per_example, {"loss/lipo_lambda": per_example, "lipo_lambda/mean_delta": mean_delta}, scores
        if loss_type == "rrhf":
            per_example, ranking, sft = rrhf_loss(
                sum_logps, token_counts, labels, num_candidates, args.rrhf_weight, args.rrhf_length_penalty
            )
            scores = sum_logps / token_counts.clamp(min=1) ** args.rrhf_length_penalty
            return per_example, {"loss/rrhf/ranking": ranking, "loss/rrhf/sft": sft}, scores
        if loss_type == "slic":
            per_example, calibration, regularization = slic_loss(
                sum_logps, labels, num_candidates, args.slic_delta, args.slic_regularization_weight
            )
            parts = {"loss/slic/calibration": calibration, "loss/slic/regularization": regularization}
            return per_example, parts, sum_logps
        if loss_type == "best_of_n_sft":
            per_example = best_candidate_nll(sum_logps, token_counts, per_token=True)
            return per_example, {"loss/best_of_n_sft": per_example}, mean_logps
        if loss_type == "dpo_pairs":
            per_example, pairs = dpo_pairs_loss(scores, labels, num_candidates, args.pair_selection)
            margins = scores.unsqueeze(2) - scores.unsqueeze(1)
            num_pairs = pairs.sum(dim=(1, 2)).clamp(min=1)
            parts = {
                "loss/dpo_pairs": per_example,
                "dpo_pairs/accuracy": ((margins > 0) & pairs).sum(dim=(1, 2)) / num_pairs,
                "dpo_pairs/margin": (margins * pairs).sum(dim=(1, 2)) / num_pairs,
            }
            return per_example, parts, scores
        raise ValueError(f"Unknown loss_type {loss_type!r}.")  # unreachable: `PROConfig` checks the names

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
