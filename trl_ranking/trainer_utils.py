"""Pieces shared by the PRO and DOVE trainers."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import warnings
from pathlib import Path

import torch
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.trainer.utils import get_config_model_id

from .model_card import ModelCardMixin
from .packing import choose_layout


logger = logging.getLogger(__name__)


class DPOTrainerFixesMixin(ModelCardMixin):
    """Fixes to `DPOTrainer` behaviour that the PRO and DOVE trainers share. Put it before `DPOTrainer` in the bases.

    - `log` adds the averaged metrics itself before `DPOTrainer.log` (which it still calls, with the metrics already
      taken): `DPOTrainer.log` prefixes them with `eval_` whatever the `metric_key_prefix`, so with a dict of eval
      datasets (`eval_train_loss`, `eval_held_out_loss`, ...) every split's metrics would land under the same
      `eval_*` names and the last split would overwrite the others. The prefix is read off the `<prefix>_loss` entry
      that `Trainer.evaluate` logs for the split.
    - `prediction_step` keeps 4-bit layers trainable after an evaluation on CPU (see `keep_4bit_training_layout`).
    - `train(resume_from_checkpoint=True)` resumes from the last complete checkpoint (see
      `resolve_resume_checkpoint`).
    - `create_model_card` (`ModelCardMixin`) names trl-ranking and its version beside TRL in the model card.
    - `training_step` and `_get_grad_norm` stop training with a `FloatingPointError` naming the step when the loss or
      the gradient norm is NaN or infinite (or, with `args.skip_nonfinite_steps`, drop that step's update). Without
      this a NaN step trains NaN weights that are then saved, while the logged loss reads 0.0: `Trainer` replaces a
      non-finite step loss by the mean of the losses logged since the last log (`logging_nan_inf_filter=True`),
      which is 0 when every step since then was NaN.
    """

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        # `resume_from_checkpoint=True` resumes from the last *complete* checkpoint: a kill while a checkpoint was
        # being written leaves a folder that `Trainer` (which takes the highest step) would pick and fail on
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            if not getattr(self.args, "skip_nonfinite_steps", False):
                raise FloatingPointError(
                    f"Step {step}: the training loss is {loss.item()}. Training stopped so that no NaN weights are "
                    "trained or saved. Check the data (rewards, empty or extreme rows) and the learning rate; set "
                    "`skip_nonfinite_steps=True` to skip such steps instead."
                )
            self._nonfinite_step = True  # its update is dropped in `_get_grad_norm`
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # Extends `Trainer._get_grad_norm`, which runs after the backward passes of a step and before its optimizer
        # update: the last point where a non-finite step can be stopped or dropped
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        nonfinite_loss = getattr(self, "_nonfinite_step", False)
        self._nonfinite_step = False
        if grad_norm is not None and math.isfinite(float(grad_norm)) and not nonfinite_loss:
            return grad_norm
        step = self.state.global_step + 1
        what = "loss" if nonfinite_loss else f"gradient norm ({float(grad_norm)})"
        if not getattr(self.args, "skip_nonfinite_steps", False):
            raise FloatingPointError(
                f"Step {step}: the {what} is not finite. Training stopped so that no NaN weights are trained or "
                "saved. Check the data (rewards, empty or extreme rows) and the learning rate; set "
                "`skip_nonfinite_steps=True` to skip such steps instead."
            )
        logger.warning("Step %d: the %s is not finite; the step's update is skipped.", step, what)
        model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
        self._nonfinite_steps = getattr(self, "_nonfinite_steps", 0) + 1
        self._metrics["train"]["nonfinite_steps"] = [float(self._nonfinite_steps)]  # a running count, not a mean
        return grad_norm

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if mode == "eval":
            prefix = next((key[: -len("_loss")] for key in logs if key.endswith("_loss")), "eval")
            metrics = {f"{prefix}_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        # Emptied before `DPOTrainer.log` runs, so that it adds no `eval_*` copies of these metrics, while whatever
        # else it adds to `logs` still reaches `Trainer.log`
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with keep_4bit_training_layout(model):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether a checkpoint folder was written to the end: `Trainer._save_checkpoint` writes `trainer_state.json` last
    (after the model, optimizer, scheduler and RNG states), so a readable one marks a complete checkpoint."""
    state = Path(path) / TRAINER_STATE_NAME
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def resolve_resume_checkpoint(resume_from_checkpoint, output_dir: str | os.PathLike):
    """`resume_from_checkpoint` as `Trainer.train` takes it, with `True` replaced by the last complete checkpoint of
    `output_dir` (incomplete ones, left by a kill during a save, are skipped with a warning naming them)."""
    if not (isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint):
        return resume_from_checkpoint
    folder = Path(output_dir)
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    checkpoints = sorted(
        (path for path in (folder.iterdir() if folder.is_dir() else []) if path.is_dir() and pattern.match(path.name)),
        key=lambda path: int(pattern.match(path.name).group(1)),
        reverse=True,
    )
    incomplete = []
    for path in checkpoints:
        if is_complete_checkpoint(path):
            if incomplete:
                logger.warning(
                    "Skipping incomplete checkpoint(s) %s (no readable %s: the run was stopped while saving); "
                    "resuming from %s.",
                    ", ".join(p.name for p in incomplete),
                    TRAINER_STATE_NAME,
                    path.name,
                )
            return str(path)
        incomplete.append(path)
    found = f" (incomplete: {', '.join(p.name for p in incomplete)})" if incomplete else ""
    raise ValueError(f"`resume_from_checkpoint=True`: no complete checkpoint in {folder}{found}.")


@contextlib.contextmanager
def keep_4bit_training_layout(model: torch.nn.Module):
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during an eval-mode, no-grad forward.

    On a CPU with AVX512-BF16, a bitsandbytes `Linear4bit` run in eval mode without gradients converts its weight, once
    and for good, to a packed inference layout whose kernel has no autograd: training after that silently gets no
    gradient (bitsandbytes 0.50). Evaluating, or generating from the policy, in the middle of training is such a run,
    so the conversion is switched off for its duration. No effect on GPUs or on models without 4-bit layers.
    """
    layers = [m for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    try:
        yield
    finally:
        for layer in layers:
            layer.support_avx512bf16_for_cpu = True


def reference_batches(trainer, dataset, batch_size: int, name: str):
    """Yield `(model, batch)` for a reference pass over `dataset`, as `DPOTrainer._precompute_ref_logps` runs it.

    The dataset is sharded across processes by accelerate (callers gather the results with `gather_for_metrics`,
    which restores dataset order), the model is the explicit reference or else the policy (whose PEFT adapter the
    caller switches off), and under DeepSpeed one inference engine is built and reused, as TRL does.
    """
    import os

    from accelerate.utils import tqdm
    from torch.utils.data import DataLoader

    loader = trainer.accelerator.prepare(
        DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=trainer.data_collator,
            num_workers=trainer.args.dataloader_num_workers,
            shuffle=False,
        )
    )
    model = trainer.ref_model or trainer.model
    if trainer.ref_model is None and trainer.is_deepspeed_enabled:
        from trl.models import prepare_deepspeed

        if trainer._precompute_engine is None:
            trainer._precompute_engine = prepare_deepspeed(trainer.model, trainer.accelerator)
        model = trainer._precompute_engine
    for batch in tqdm(
        loader,
        desc=f"Computing reference log probs for {name} dataset",
        disable=bool(os.environ.get("TQDM_DISABLE", "")),
    ):
        yield model, batch


def trainer_config(args, config_cls: type, model, suffix: str):
    """`args`, or `config_cls`'s defaults named after the model as `DPOTrainer` does, checked to be a `config_cls`."""
    if args is None:
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        return config_cls(f"{model_name.split('/')[-1]}-{suffix}")
    if not isinstance(args, config_cls):
        name = config_cls.__name__
        raise TypeError(
            f"`args` must be a `{name}`, got `{type(args).__name__}`. A `DPOConfig`'s training arguments carry over: "
            f"`{name}(**{{k: v for k, v in dpo_args.to_dict().items() if k in {name}.__dataclass_fields__}})`."
        )
    return args


def resolve_tokenizer(model, processing_class, args):
    """The processing class (loaded from the model when `None`) and its tokenizer, with a pad token set.

    The collators need the pad token id before `DPOTrainer.__init__` runs, so this resolves, ahead of it, what
    `DPOTrainer` would: `args.pad_token`, else the tokenizer's, else its EOS token.
    """
    from transformers import AutoProcessor, ProcessorMixin

    if processing_class is None:
        model_id = model if isinstance(model, str) else get_config_model_id(model.config)
        processing_class = AutoProcessor.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
    tokenizer = processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class
    pad_token = args.pad_token or tokenizer.pad_token or tokenizer.eos_token
    if pad_token is None:  # nothing was specified: say so, rather than "the specified `pad_token` ('None')"
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has neither a pad token nor an EOS token, so batches cannot "
            "be padded. Set one: `pad_token=...` in the config (`--pad_token` on the command line) naming a token of "
            "its vocabulary, or `tokenizer.pad_token = ...` before passing it as `processing_class`."
        )
    if pad_token not in tokenizer.get_vocab():
        raise ValueError(
            f"The specified `pad_token` ('{pad_token}') is not found in the vocabulary of the given "
            f"`processing_class` ({type(processing_class).__name__})."
        )
    tokenizer.pad_token = pad_token
    return processing_class, tokenizer


@contextlib.contextmanager
def overridden_config(args, **values):
    """Set fields of `args` for the duration of the block (`DPOTrainer.__init__`), then restore them.

    Used to keep `DPOTrainer.__init__` from acting on flags that the subclass implements itself: `padding_free`,
    which it would switch off with a warning, and, for reference-free PRO, `precompute_ref_log_probs=True`, the one
    condition under which it does not load a copy of the policy as reference model.
    """
    saved = {name: getattr(args, name) for name in values}
    for name, value in values.items():
        setattr(args, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(args, name, value)


class PackedLayoutMixin:
    """The batch layout (prefix sharing, padding-free) of the PRO and DOVE trainers. Put it before `DPOTrainer`.

    The layout is an option of the trainer's default collator (`DataCollatorForRanking`,
    `DataCollatorForJointPreference`), set once the models exist, to what is exact for them
    (`trl_ranking.packing.choose_layout`). A `data_collator` passed in decides the layout itself: its batches are scored
    in whatever layout they hold (padded, or packed when the collator packs them), `trainer.prefix_sharing` and
    `trainer.padding_free` report the collator's own flags (`False` where it has none), and asking for
    `prefix_sharing=True` or `padding_free=True` in the config then only warns that the config does not apply.
    """

    def _init_layout(self, default_collator, args) -> None:
        """Before `DPOTrainer.__init__`: the default collator (`None` when one was passed in) and the layout asked for."""
        self._layout_collator = default_collator
        self._layout_resolved = False
        # `DPOTrainer.__init__` would switch `padding_free` off with a warning: the subclass passes it `False` and
        # keeps the request here
        self._padding_free_requested = args.padding_free
        self.prefix_sharing = False

    def _resolve_layout(self) -> None:
        """Choose prefix sharing / padding-free for the models at hand and set them on the default collator.

        Called once the models exist: at the end of `__init__`, or earlier by the reference precompute, which runs
        inside `DPOTrainer.__init__` (so the precomputed reference log-probs come from the training layout). The models
        are the policy and, where one is kept, the reference model.
        """
        if self._layout_resolved:
            return
        self._layout_resolved = True
        args = self.args
        collator = self._layout_collator
        if collator is None:
            if args.prefix_sharing or self._padding_free_requested:
                warnings.warn(
                    "`prefix_sharing`/`padding_free` are options of the default collator; with a `data_collator` "
                    "passed in, the batches keep the layout that collator gives them.",
                    UserWarning,
                    stacklevel=3,
                )
            self.prefix_sharing = bool(getattr(self.data_collator, "prefix_sharing", False))
            self.padding_free = bool(getattr(self.data_collator, "padding_free", False))
            return
        models = [self.model] + ([self.ref_model] if self.ref_model is not None else [])
        prefix_sharing, padding_free = choose_layout(
            models, args.prefix_sharing, self._padding_free_requested, self.aux_loss_enabled, stacklevel=4
        )
        collator.prefix_sharing = self.prefix_sharing = prefix_sharing
        collator.padding_free = self.padding_free = padding_free


def log_truncated_prompts(num_truncated: int, num_prompts: int, dataset_name: str, max_prompt_length, what: str):
    """Log how many prompts (or `what`) of a dataset were left-truncated to `max_prompt_length` (nothing if none)."""
    if num_truncated:
        logger.warning(
            "%d of %d %s of the %s dataset were left-truncated to `max_prompt_length=%d` tokens.",
            num_truncated,
            num_prompts,
            what,
            dataset_name,
            max_prompt_length,
        )
