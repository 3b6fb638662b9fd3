"""Worker for the interrupted-checkpoint test: trains PRO with a checkpoint every step, and blocks while writing
the step-2 checkpoint, after its model and optimizer files but before its `trainer_state.json`, so that the test
can kill it with a real signal at that point.

Usage: python checkpoint_worker.py MODEL_PATH OUTPUT_DIR MARKER_FILE
Writes MARKER_FILE when it blocks; blocks at most 300 s (the test kills it long before).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    model_path, output_dir, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    os.environ.setdefault("TQDM_DISABLE", "1")
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerState

    from trl_ranking import PROConfig, PROTrainer

    save_to_json = TrainerState.save_to_json

    def blocking_save_to_json(self, json_path):
        if f"checkpoint-2{os.sep}" in json_path:
            marker.write_text("saving checkpoint-2")
            time.sleep(300)
        save_to_json(self, json_path)

    TrainerState.save_to_json = blocking_save_to_json
    rows = [{"prompt": f"Q{i}:", "completions": [" yes", " no"], "rewards": [1.0, 0.0]} for i in range(8)]
    args = PROConfig(
        output_dir=output_dir,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="steps",
        save_steps=1,
        logging_steps=1,
        max_steps=3,
        per_device_train_batch_size=2,
        max_length=32,
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)  # the small-vocabulary tokenizer saved with the model
    tokenizer.pad_token = tokenizer.eos_token
    trainer = PROTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()


if __name__ == "__main__":
    main()
