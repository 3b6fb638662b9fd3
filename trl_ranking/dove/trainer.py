from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from datasets import Dataset, IterableDataset
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
from trl.data_utils import extract_prompt
from trl.trainer.utils import global_then_local_main_first

from ..collators import DataCollatorForJointPreference
from ..scoring import dpo_fused_outputs
from ..tokenization import (
    chat_template_kwargs_of,
    is_conversational_value,
    is_empty_text,
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
    resolve_tokenizer,
    trainer_config,
)
from ..validation import check_implicit_prompt_sides, check_text, first_row
from .config import DOVEConfig


logger = logging.getLogger(__name__)

# Columns the prepared dataset keeps for the collator (`Trainer` drops the others when `remove_unused_columns`).
# `prompt_ids` is there for datasets already tokenized the DPO way (one shared prompt).
_PREPARED_COLUMNS = [
    "chosen_prompt_ids",
    "chosen_ids",
    "rejected_prompt_ids",
    "rejected_ids",
    "prompt_ids",
    "ref_chosen_logps",
    "ref_rejected_logps",
]
# Keys `DataCollatorForJointPreference(return_instruction_info=True)` adds for the DOVE metrics. `DPOTrainer` passes
# every batch key it does not know to the model, so they are removed before its loss and reference code run.
_INSTRUCTION_INFO_KEYS = ("prompt_mask", "different_instruction")


class JointPair(NamedTuple):
    """One validated row: each side's instruction and response, and the fields the instructions came from."""

    chosen_prompt: Any
    chosen: Any
    rejected_prompt: Any
    rejected: Any
    chosen_prompt_field: str
    rejected_prompt_field: str


def to_joint_pair(example: dict[str, Any], index: int) -> JointPair:
    """Read one row as a `JointPair`, validating it.

    Accepts joint rows (`chosen_prompt`, `chosen`, `rejected_prompt`, `rejected`), conditional rows with one shared
    `prompt`, and DPO rows with an implicit prompt (extracted as `DPOTrainer` does, with `trl.extract_prompt`). A
    dataset mixing joint and conditional rows holds `None` in the columns a row does not use. When a row has both
    `chosen_prompt`/`rejected_prompt` and `prompt`, the per-side prompts are used.

    Raises:
        ValueError: naming the row and the field, for a missing or empty instruction or response, a row with only one
            of `chosen_prompt`/`rejected_prompt`, or a side mixing conversational and standard text.
    """
    where = f"Row {index}"
    for name in ("completions", "rewards"):
        if example.get(name) is not None:
            raise ValueError(
                f"{where}, field '{name}': a ranking of completions is the format of `PROTrainer`; DOVE trains on "
                "pairs (columns 'chosen_prompt', 'chosen', 'rejected_prompt', 'rejected', or one shared 'prompt'). "
                "Train this dataset with `PROTrainer` (`trl-ranking pro`), or turn each ranking into pairs first."
            )
    for name in ("chosen", "rejected"):
        if example.get(name) is None:
            raise ValueError(
                f"{where}, field '{name}': missing. A joint preference row needs 'chosen_prompt', 'chosen', "
                f"'rejected_prompt' and 'rejected' (or one shared 'prompt'). Got columns {sorted(example)}."
            )
    chosen, rejected = example["chosen"], example["rejected"]
    chosen_prompt, rejected_prompt = example.get("chosen_prompt"), example.get("rejected_prompt")
    for name in ("chosen_prompt", "rejected_prompt", "prompt", "chosen", "rejected"):
        if example.get(name) is not None:
            check_text(example[name], where, name, completion=False)  # types and roles (completion roles below)
    if chosen_prompt is not None or rejected_prompt is not None:
        for name, value in (("chosen_prompt", chosen_prompt), ("rejected_prompt", rejected_prompt)):
            if value is None:
                raise ValueError(
                    f"{where}, field '{name}': missing. A joint row needs both 'chosen_prompt' and 'rejected_prompt' "
                    "(use one 'prompt' column for a conditional pair)."
                )
        prompt_fields = ("chosen_prompt", "rejected_prompt")
    elif example.get("prompt") is not None:
        chosen_prompt = rejected_prompt = example["prompt"]
        prompt_fields = ("prompt", "prompt")
    else:
        check_implicit_prompt_sides(where, [("chosen", chosen), ("rejected", rejected)])
        extracted = extract_prompt({"chosen": chosen, "rejected": rejected})
        if is_empty_text(extracted["prompt"]):
            raise ValueError(
                f"{where}: 'chosen' and 'rejected' share no first message (or no start), so no implicit prompt can "
                "be split off. Give an explicit 'prompt' column (or 'chosen_prompt' and 'rejected_prompt')."
            )
        chosen_prompt = rejected_prompt = extracted["prompt"]
        chosen, rejected = extracted["chosen"], extracted["rejected"]
        prompt_fields = ("prompt (implicit in 'chosen' and 'rejected')",) * 2
    sides = (
        (prompt_fields[0], chosen_prompt, "chosen", chosen),
        (prompt_fields[1], rejected_prompt, "rejected", rejected),
    )
    for prompt_field, prompt, response_field, response in sides:
        if is_empty_text(prompt):
            raise ValueError(f"{where}, field '{prompt_field}': the instruction is empty.")
        if is_empty_text(response):
            raise ValueError(f"{where}, field '{response_field}': the response is empty.")
        if is_conversational_value(prompt) != is_conversational_value(response):
            raise ValueError(
                f"{where}, field '{response_field}': the instruction and the response mix conversational and "
                "standard text."
            )
        check_text(response, where, response_field, completion=is_conversational_value(prompt))
    if is_conversational_value(chosen) != is_conversational_value(rejected):
        raise ValueError(f"{where}, field 'rejected': the two sides mix conversational and standard text.")
    return JointPair(chosen_prompt, chosen, rejected_prompt, rejected, *prompt_fields)


def _tokenize_sides(processing_class, pair: JointPair, eos_token: str, template_kwargs: dict[str, Any]):
    """`(chosen_prompt_ids, chosen_ids, rejected_prompt_ids, rejected_ids)` of a pair, each side templated on its own.

    One shared prompt is tokenized once for both sides, exactly as `DPOTrainer` does (same prompt cut).
    """
    if pair.chosen_prompt == pair.rejected_prompt:
        prompt_ids, (chosen_ids, rejected_ids) = tokenize_prompt_completions(
            processing_class, pair.chosen_prompt, [pair.chosen, pair.rejected], eos_token=eos_token, **template_kwargs
        )
        return prompt_ids, chosen_ids, prompt_ids, rejected_ids
    chosen_prompt_ids, (chosen_ids,) = tokenize_prompt_completions(
        processing_class, pair.chosen_prompt, [pair.chosen], eos_token=eos_token, **template_kwargs
    )
    rejected_prompt_ids, (rejected_ids,) = tokenize_prompt_completions(
        processing_class, pair.rejected_prompt, [pair.rejected], eos_token=eos_token, **template_kwargs
    )
    return chosen_prompt_ids, chosen_ids, rejected_prompt_ids, rejected_ids


def _pop_layout(inputs: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """Take the packed layout (`DataCollatorForJointPreference`'s `packed_*` keys) out of `inputs`, unprefixed."""
    prefix = DataCollatorForJointPreference.PACKED_PREFIX
    keys = [key for key in inputs if key.startswith(prefix)]
    if not keys:
        return None
    return {key[len(prefix) :]: inputs.pop(key) for key in keys}


class _ScoredModel:
    """The model as DPO's loss and reference code call it, scored through `trl_ranking.scoring`.

    DPO calls `model(**padded_inputs, labels=labels, fused_lm_head=True)` and reads per-token outputs of the padded
    rows. This stand-in answers that call with `trl_ranking.scoring.dpo_fused_outputs`: the LM head on the scored
    positions only, and the packed rows of the same batch when the batch has a packed `layout`, re-laid out as the
    padded rows' outputs. So DPO's loss (every `loss_type`, `ld_alpha`, `use_weighting`), its reference log-probs and
    its metrics read the padded layout's values, up to float rounding. The outputs of the first fused call (the policy
    forward of `_compute_loss`) are kept for the DOVE metrics.
    """

    def __init__(self, model: torch.nn.Module, layout: dict[str, torch.Tensor] | None = None):
        self.model = model
        self.layout = layout
        self.outputs = None

    def __call__(
        self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, use_cache=None, **kwargs
    ):
        if not fused_lm_head:
            # DPO's `return_outputs=True` path recomputes the logits of the padded rows: run those rows as they are
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        outputs = dpo_fused_outputs(self.model, inputs, labels, self.layout, **kwargs)
        if self.outputs is None:
            self.outputs = outputs
        return outputs

    def __getattr__(self, name: str):
        return getattr(self.model, name)


class DOVETrainer(PackedLayoutMixin, DPOTrainerFixesMixin, DPOTrainer):
    """
    Trainer for joint preference optimization (DOVE), from the paper [Comparing Bad Apples to Good Oranges: Aligning
    Large Language Models via Joint Preference Optimization](https://huggingface.co/papers/2404.00530) (Bansal et al.,
    2024).

    DOVE learns from preferences between two instruction-response pairs `(I_w, R_w) > (I_l, R_l)` whose instructions
    may differ. Its loss (Eq. 2) is DPO's, computed on joint log-probabilities `log p(I, R)`: the sum over every token
    of the (templated) instruction and of the response, EOS included, except the first token of the row and padding,
    for the policy and the reference alike. With equal instructions the instruction terms cancel in the log-ratio
    difference and DOVE equals DPO (the paper's Appendix D). `DOVEConfig(joint=False)` scores `log p(R | I)` instead.

    This class subclasses `trl.DPOTrainer` and takes the same arguments; only the dataset tokenization and the
    collator change (the collator marks the instruction tokens as scored), so every DPO `loss_type` working on
    chosen/rejected log-ratios, the reference model, the PEFT adapter switched off as reference and
    `precompute_ref_log_probs` work as in DPO. A DPO dataset trains unchanged as conditional pairs.

    Each shared prompt is processed once by default (`DOVEConfig.prefix_sharing`, wherever that is exact), and
    `DOVEConfig.padding_free=True` packs a whole batch into one row with no padding; the policy and the reference run
    on the same packed rows, and the loss, gradients and metrics are those of the padded layout (see
    `trl_ranking.packing`).

    Logged metrics are DPO's (there `logps/*` and `rewards/*` are joint: they include the instruction), plus
    `joint/different_instructions`, the fraction of pairs whose two tokenized instructions differ, and, with
    `joint=True`, `joint/logps_chosen_instruction` and `joint/logps_rejected_instruction`, the policy's mean `log p(I)`
    term of each side.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from trl_ranking import DOVEConfig, DOVETrainer
    >>> from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm

    >>> tokenizer = load_bundled_tokenizer()
    >>> model_path = make_tiny_causal_lm("tiny-model")  # any causal LM id or path works the same way
    >>> dataset = Dataset.from_list(
    ...     [
    ...         # a joint pair: the two instructions differ
    ...         {"prompt": None, "chosen_prompt": "Name a color.", "chosen": " Blue.",
    ...          "rejected_prompt": "What is 2+2?", "rejected": " 5."},
    ...         # a conditional pair: one shared prompt (a DPO row)
    ...         {"prompt": "The sky is", "chosen_prompt": None, "chosen": " blue.",
    ...          "rejected_prompt": None, "rejected": " made of cheese."},
    ...     ]
    ... )
    >>> trainer = DOVETrainer(
    ...     model=model_path,
    ...     args=DOVEConfig(output_dir="dove-model", max_steps=2, report_to="none", bf16=False),  # bf16=True on a GPU
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
            Reference model (the SFT model). If `None`, TRL's default applies: the PEFT adapter switched off (the
            paper's setting), or a copy of the initial model, or precomputed log-probs.
        args (`DOVEConfig`, *optional*):
            Configuration. If `None`, a default `DOVEConfig` is used.
        data_collator (`DataCollator`, *optional*):
            Defaults to `DataCollatorForJointPreference` with `joint=args.joint`.
        train_dataset (`datasets.Dataset` or `datasets.IterableDataset`):
            Joint rows `chosen_prompt`, `chosen`, `rejected_prompt`, `rejected`; conditional rows with one shared
            `prompt` (DPO rows, explicit or implicit prompt); or a mix (`None` in the columns a row does not use).
            Standard or conversational: conversational rows put each side's own prompt through the chat template.
        eval_dataset: Same format as `train_dataset`, or a dict of such datasets.
        processing_class (`transformers.PreTrainedTokenizerBase`, *optional*):
            Tokenizer. If `None`, loaded from the model. `pad_token` defaults to `eos_token`.
        compute_metrics, callbacks, optimizers: As in `trl.DPOTrainer`.
        quantization_config (`transformers.BitsAndBytesConfig`, *optional*):
            Quantization used when `model` is a model id or path. Combine with `peft_config` for QLoRA (the paper's
            recipe: 4-bit base, LoRA r=8, alpha=16, dropout 0.05, beta=0.1).
        peft_config (`peft.PeftConfig`, *optional*):
            PEFT configuration used to wrap the model.
    """

    _tag_names = ["trl", "trl-ranking", "dpo", "dove"]
    _name = "DOVE"
    _paper = {
        "title": "Comparing Bad Apples to Good Oranges: Aligning Large Language Models via Joint Preference Optimization",
        "id": "2404.00530",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{bansal2024comparing,
                title        = {{Comparing Bad Apples to Good Oranges: Aligning Large Language Models via Joint Preference Optimization}},
                author       = {Hritik Bansal and Ashima Suvarna and Gantavya Bhatt and Nanyun Peng and Kai-Wei Chang and Aditya Grover},
                year         = 2024,
                journal      = {arXiv preprint arXiv:2404.00530},
            }"""),
    }

    def __init__(
        self,
        model: str | PreTrainedModel,
        ref_model: PreTrainedModel | None = None,
        args: DOVEConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        quantization_config: BitsAndBytesConfig | None = None,
        peft_config=None,
    ):
        args = trainer_config(args, DOVEConfig, model, "DOVE")
        if train_dataset is not None:
            sample = first_row(train_dataset, "train")
            if "image" in sample or "images" in sample:
                raise ValueError(
                    "DOVETrainer supports text datasets only; this one has an 'image' or 'images' column."
                )

        processing_class, tokenizer = resolve_tokenizer(model, processing_class, args)
        # The layout (prefix sharing, padding-free) is set on the default collator once the models are loaded
        # (`PackedLayoutMixin._resolve_layout`); a collator passed in decides the layout itself
        default_collator = None
        if data_collator is None:
            data_collator = default_collator = DataCollatorForJointPreference(
                pad_token_id=tokenizer.pad_token_id,
                joint=args.joint,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of,
                return_instruction_info=True,
            )
        self._init_layout(default_collator, args)
        # DOVE implements `padding_free`; DPOTrainer would switch it off with a warning
        with overridden_config(args, padding_free=False):
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
        self._resolve_layout()

    # ------------------------------------------------------------------------------------------------------------------
    # Data. Replaces `DPOTrainer._prepare_dataset` (one shared prompt, rows whose prompt fills `max_length` silently
    # dropped) with per-side tokenization of joint rows and errors naming the row and the field.
    # ------------------------------------------------------------------------------------------------------------------
    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin,
        args: DOVEConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        first_example = first_row(dataset, dataset_name)
        tokenized = "chosen_prompt_ids" in first_example or "prompt_ids" in first_example
        if tokenized and "chosen_ids" in first_example and "rejected_ids" in first_example:
            return dataset  # already tokenized (e.g. a dataset passed again to `evaluate`, or DPO's tokenization)
        if first_example.get("completions") is not None or first_example.get("rewards") is not None:
            to_joint_pair(first_example, 0)  # raises: the PRO ranking format, named
        if "chosen" not in first_example or "rejected" not in first_example:
            raise ValueError(
                f"The {dataset_name} dataset is missing columns: a joint preference dataset needs 'chosen_prompt', "
                "'chosen', 'rejected_prompt' and 'rejected' (or one shared 'prompt', or a prompt implicit in 'chosen' "
                f"and 'rejected'). Got columns {sorted(first_example)}."
            )
        eos_token = self._tokenizer.eos_token
        max_length, max_prompt_length = args.max_length, args.max_prompt_length
        check_length = max_length is not None and args.truncation_mode == "keep_start"
        special_ids = leading_special_ids(self._tokenizer)  # kept in front when a prompt is left-truncated (e.g. BOS)
        # The official DOVE code prepends BOS to every row, so the first instruction token is scored (joint mode)
        bos_id = self._tokenizer.bos_token_id
        add_bos = args.joint and args.prepend_bos and bos_id is not None
        if args.joint and args.prepend_bos and bos_id is None:
            logger.warning(
                "`prepend_bos=True`, but the tokenizer has no BOS token: the first instruction token is not scored."
            )

        def tokenize_row(example: dict[str, Any], index: int, scoring: dict[str, Any]) -> dict[str, Any]:
            pair = to_joint_pair(example, index)
            chosen_prompt_ids, chosen_ids, rejected_prompt_ids, rejected_ids = _tokenize_sides(
                processing_class, pair, eos_token, chat_template_kwargs_of(example)
            )
            if add_bos:
                if not is_conversational_value(pair.chosen_prompt) and chosen_prompt_ids[:1] != [bos_id]:
                    chosen_prompt_ids = [bos_id, *chosen_prompt_ids]
                if not is_conversational_value(pair.rejected_prompt) and rejected_prompt_ids[:1] != [bos_id]:
                    rejected_prompt_ids = [bos_id, *rejected_prompt_ids]
            output: dict[str, Any] = {"prompt_truncated": 0}
            for side, prompt_field, prompt_ids, response_ids in (
                ("chosen", pair.chosen_prompt_field, chosen_prompt_ids, chosen_ids),
                ("rejected", pair.rejected_prompt_field, rejected_prompt_ids, rejected_ids),
            ):
                if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
                    prompt_ids = left_truncate_prompt(prompt_ids, max_prompt_length, special_ids)
                    output["prompt_truncated"] += 1
                if not response_ids:
                    raise ValueError(f"Row {index}, field '{side}': the response has no token.")
                if check_length and len(prompt_ids) >= max_length:
                    raise ValueError(
                        f"Row {index}, field '{prompt_field}': the instruction has {len(prompt_ids)} tokens, which "
                        f"leaves no response token under `max_length={max_length}`. Raise `max_length`, set "
                        "`max_prompt_length` to left-truncate long instructions, or remove the row."
                    )
                output[f"{side}_prompt_ids"] = prompt_ids
                output[f"{side}_ids"] = response_ids
            # Counted for the log: sides the collator cuts at `max_length`, and pairs whose two sides are identical
            # (no gradient)
            output["response_truncated"] = (
                0
                if max_length is None
                else sum(
                    len(output[f"{side}_prompt_ids"]) + len(output[f"{side}_ids"]) > max_length
                    for side in ("chosen", "rejected")
                )
            )
            output["identical_sides"] = (
                output["chosen_prompt_ids"] == output["rejected_prompt_ids"]
                and output["chosen_ids"] == output["rejected_ids"]
            )
            return output

        # The reference log-probs that `_precompute_ref_logps` caches are keyed on the dataset fingerprint, and the
        # scored tokens depend on these options: passing them to `map` folds them into the fingerprint, so that a
        # joint and a conditional run never share a cache.
        scoring = {"joint": args.joint, "max_length": max_length, "truncation_mode": args.truncation_mode}
        scoring["prepend_bos"] = add_bos
        map_kwargs: dict[str, Any] = {"with_indices": True, "fn_kwargs": {"scoring": scoring}}
        if isinstance(dataset, Dataset):
            map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Tokenizing {dataset_name} joint pairs")
        with global_then_local_main_first():
            dataset = dataset.map(tokenize_row, **map_kwargs)
        if isinstance(dataset, Dataset):
            self._log_dataset_counts(dataset, dataset_name, args)
        return dataset

    def _log_dataset_counts(self, dataset: Dataset, dataset_name: str, args: DOVEConfig) -> None:
        """Log what `_prepare_dataset` counted: truncated instructions, sides cut at `max_length`, identical pairs."""
        max_length, max_prompt_length = args.max_length, args.max_prompt_length
        num_truncated = sum(dataset["prompt_truncated"])
        log_truncated_prompts(num_truncated, 2 * len(dataset), dataset_name, max_prompt_length, "instructions")
        num_cut = sum(dataset["response_truncated"])
        if num_cut:
            lost = (
                "the end of the response and its EOS token are"
                if args.truncation_mode == "keep_start"
                else "the start of the instruction is"
            )
            logger.warning(
                "%d of %d sides (instruction + response) of the %s dataset are longer than `max_length=%d` tokens "
                "and are cut by the collator: %s not trained. Raise `max_length` or set `max_prompt_length`.",
                num_cut,
                2 * len(dataset),
                dataset_name,
                max_length,
                lost,
            )
        num_identical = sum(dataset["identical_sides"])
        if num_identical:
            logger.warning(
                "%d of %d pairs of the %s dataset have identical chosen and rejected sides: they give no gradient.",
                num_identical,
                len(dataset),
                dataset_name,
            )

    def _set_signature_columns_if_needed(self):
        # Replaces DPO's `prompt_ids`/`chosen_ids`/`rejected_ids` with the per-side prompt columns
        if self._signature_columns is None:
            self._signature_columns = list(_PREPARED_COLUMNS)

    # ------------------------------------------------------------------------------------------------------------------
    # Reference and loss: DPO's, unchanged. One route for both layouts: the overrides take the DOVE metric keys and the
    # packed layout out of the batch (DPO passes every key it does not know to the model), hand DPO's code the model as
    # a `_ScoredModel` (scored through `trl_ranking.scoring`), and log the DOVE metrics from the policy forward DPO
    # already runs.
    # ------------------------------------------------------------------------------------------------------------------
    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        self._resolve_layout()  # runs inside `DPOTrainer.__init__`: the reference forwards use the training layout
        # DPO shares the precomputed values through a cache file next to the dataset. An in-memory dataset has a
        # per-process temporary cache dir, so on several processes each process adds the gathered values itself.
        if isinstance(dataset, IterableDataset) or dataset.cache_files or self.accelerator.num_processes == 1:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        chosen, rejected = [], []
        for model, batch in reference_batches(self, dataset, batch_size, name):
            ref_chosen, ref_rejected = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
            chosen.extend(ref_chosen.cpu().tolist())
            rejected.extend(ref_rejected.cpu().tolist())
        return dataset.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

    def compute_ref_log_probs(self, model, inputs):
        # Replaces nothing of DPO's computation: removes the metric keys that DPO would forward to the model, and runs
        # the batch's rows (packed, when the batch has a layout) through `_ScoredModel`; DPO then sums the per-token
        # log-probs it returns as for padded rows
        inputs = {key: value for key, value in inputs.items() if key not in _INSTRUCTION_INFO_KEYS}
        layout = _pop_layout(inputs)
        return super().compute_ref_log_probs(_ScoredModel(model, layout), inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        # DPO's `_compute_loss` on the collated joint batch, plus the DOVE metrics.
        inputs = dict(inputs)
        prompt_mask = inputs.pop("prompt_mask", None)
        different_instruction = inputs.pop("different_instruction", None)
        layout = _pop_layout(inputs)
        if not self.precompute_ref_logps:
            # DPO's inline reference forward calls `self.ref_model` (or `self.model` with the adapter off) on the padded
            # rows, which no stand-in passed to `_compute_loss` reaches. The same forward runs here instead, through
            # DPO's `compute_ref_log_probs` (same model choice, adapter switch, no-grad, `ld_alpha`) on the batch's
            # layout, and DPO's loss takes it from the batch as it takes precomputed values.
            ref_model = self.ref_model if self.ref_model is not None else self.model
            reference = super().compute_ref_log_probs(_ScoredModel(ref_model, layout), inputs)
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = reference
        policy = _ScoredModel(model, layout)
        with overridden_config(self, precompute_ref_logps=True):  # the reference values are in the batch
            result = super()._compute_loss(policy, inputs, return_outputs)
        self._log_joint_metrics(policy.outputs, prompt_mask, different_instruction)
        return result

    def _log_joint_metrics(self, outputs, prompt_mask, different_instruction) -> None:
        """Log `joint/different_instructions` and, with `joint=True`, the policy's `log p(I)` term of each side."""
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        if different_instruction is not None:
            different = self.accelerator.gather_for_metrics(different_instruction.float())
            metrics["joint/different_instructions"].append(different.mean().item())
        if prompt_mask is not None and self.args.joint and outputs is not None:
            # With `joint=True` the instruction tokens are labelled, so their log-probabilities are in the outputs
            shift_prompt_mask = prompt_mask[:, 1:]
            per_token = outputs.log_probs[:, -shift_prompt_mask.size(1) :].detach()
            instruction_logps = (per_token * shift_prompt_mask).sum(dim=1)
            chosen, rejected = self.accelerator.gather_for_metrics(instruction_logps.chunk(2, dim=0))
            metrics["joint/logps_chosen_instruction"].append(chosen.mean().item())
            metrics["joint/logps_rejected_instruction"].append(rejected.mean().item())
