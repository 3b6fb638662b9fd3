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
