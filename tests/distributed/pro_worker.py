"""Worker for the multi-process tests: run under `torchrun --nproc_per_node N` (gloo backend on CPU).

Usage: python -m torch.distributed.run --nproc_per_node 2 pro_worker.py MODEL_PATH OUTPUT_DIR

Runs three phases in one process group and writes `result.json` (rank 0) to OUTPUT_DIR:
- `copies`: copies of one ranking, per-device batch `2 // world_size`, so that the global batch is 2 whatever the
  number of processes; the logged losses must not depend on how the batch is split.
- `mixed`: rankings of n=2 and n=5 alternating, one per process per step, reference-normalised with precomputed
  reference log-probs, `evaluate` on a mixed-n eval set, checkpoints every 2 steps.
- `resume`: the `mixed` run resumed from its step-2 checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import sys

from datasets import Dataset


def main() -> None:
    model_path, output_dir = sys.argv[1], sys.argv[2]
    os.environ.setdefault("TQDM_DISABLE", "1")
    from trl_ranking import PROConfig, PROTrainer
    from trl_ranking.assets import load_bundled_tokenizer
    from trl_ranking.data import load_hh_rlhf

    here = os.path.dirname(os.path.abspath(__file__))
    pairs = load_hh_rlhf(os.path.join(here, "..", "fixtures", "data", "hh-rlhf", "harmless-base-test.jsonl.gz"))
    tokenizer = load_bundled_tokenizer()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))

    def config(name: str, **overrides) -> PROConfig:
        values = dict(
            output_dir=os.path.join(output_dir, name),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            max_length=64,
            max_prompt_length=40,
            report_to="none",
            disable_tqdm=True,
            logging_steps=1,
            save_strategy="no",
            learning_rate=1e-3,
            lr_scheduler_type="constant",
            seed=0,
            data_seed=0,
        )
        values.update(overrides)
        return PROConfig(**values)

    result: dict = {"world_size": world}

    # Phase 1: copies of one ranking (the global batch is the same whatever the number of processes)
    row = pairs[3]
    ranking = {
        "prompt": row["prompt"],
        "completions": [row["chosen"], row["rejected"], pairs[50]["rejected"]],
        "rewards": [1.0, 0.2, -0.5],
    }
    trainer = PROTrainer(
        model=model_path,
        args=config("copies", max_steps=3, per_device_train_batch_size=2 // world),
        train_dataset=Dataset.from_list([ranking] * 12),
        processing_class=tokenizer,
    )
    trainer.train()
    result["copies_losses"] = [log["loss"] for log in trainer.state.log_history if "loss" in log]

    # Phase 2: mixed n across processes, precomputed reference, evaluate, checkpoints
    rows = []
    for i in range(8):
        n = 2 if i % 2 == 0 else 5
        base = pairs[20 + i]
        extras = [pairs[200 + 5 * i + j]["rejected"] for j in range(n - 2)]
        rows.append({"prompt": base["prompt"], "completions": [base["chosen"], base["rejected"], *extras]})
    dataset = Dataset.from_list(rows)
    mixed_args = dict(
        max_steps=4,
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        reference_normalized=True,
        precompute_ref_log_probs=True,
        save_strategy="steps",
        save_steps=2,
    )
    trainer = PROTrainer(
        model=model_path,
        args=config("mixed", **mixed_args),
        train_dataset=dataset,
        eval_dataset=dataset.select(range(4)),
        processing_class=tokenizer,
    )
    result["ref_logps"] = [list(values) for values in trainer.train_dataset["ref_logps"]]
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    result["mixed_num_candidates"] = [log["num_candidates"] for log in train_logs]
    result["mixed_finite"] = all(
        math.isfinite(value) for log in train_logs for key, value in log.items() if isinstance(value, float)
    )
    metrics = trainer.evaluate()
    result["eval"] = {key: value for key, value in metrics.items() if isinstance(value, float)}
    result["final_step"] = trainer.state.global_step

    # Phase 3: resume from the step-2 checkpoint saved by all processes
    resumed = PROTrainer(
        model=model_path,
        args=config("mixed", **mixed_args),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=os.path.join(output_dir, "mixed", "checkpoint-2"))
    result["resumed_step"] = resumed.state.global_step
    result["resumed_losses"] = [log["loss"] for log in resumed.state.log_history if "loss" in log]
    result["mixed_losses"] = [log["loss"] for log in train_logs]

    # Phase 4: DOVE on joint pairs (different instructions), precomputed reference, evaluate
    from trl_ranking import DOVEConfig, DOVETrainer

    joint = Dataset.from_list(
        [
            {
                "chosen_prompt": pairs[30 + i]["prompt"],
                "chosen": pairs[30 + i]["chosen"],
                "rejected_prompt": pairs[60 + i]["prompt"],
                "rejected": pairs[60 + i]["rejected"],
            }
            for i in range(6)
        ]
    )
    dove_args = DOVEConfig(
        output_dir=os.path.join(output_dir, "dove"),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_length=96,
        max_prompt_length=64,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-3,
        max_steps=2,
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        precompute_ref_log_probs=True,
        seed=0,
    )
    dove = DOVETrainer(
        model=model_path,
        args=dove_args,
        train_dataset=joint,
        eval_dataset=joint.select(range(4)),
        processing_class=tokenizer,
    )
    result["dove_ref_chosen"] = list(dove.train_dataset["ref_chosen_logps"])
    dove.train()
    result["dove_losses"] = [log["loss"] for log in dove.state.log_history if "loss" in log]
    result["dove_eval"] = {k: v for k, v in dove.evaluate().items() if isinstance(v, float)}

    if rank == 0:
        with open(os.path.join(output_dir, "result.json"), "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main()
