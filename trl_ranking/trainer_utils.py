"""Pieces shared by the PRO and DOVE trainers."""

from __future__ import annotations

from trl import DPOTrainer


class EvalPrefixLoggingMixin:
    """Logs the trainer's own metrics under the prefix of the evaluation that produced them.

    Replaces `DPOTrainer.log`, which prefixes its metrics with `eval_` whatever the `metric_key_prefix`: with a dict
    of eval datasets (`eval_train_loss`, `eval_held_out_loss`, ...) every split's metrics would land under the same
    `eval_*` names and the last split would overwrite the others. The prefix is read off the `<prefix>_loss` entry
    that `Trainer.evaluate` logs for the split. Put the mixin before `DPOTrainer` in the bases.
    """

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if mode == "eval":
            prefix = next((key[: -len("_loss")] for key in logs if key.endswith("_loss")), "eval")
            metrics = {f"{prefix}_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        super(DPOTrainer, self).log(logs, start_time)  # skip DPOTrainer.log, which would add `eval_*` copies
        self._metrics[mode].clear()


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
