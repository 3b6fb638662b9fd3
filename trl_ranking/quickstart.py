"""Quick start: a small PRO training run end to end on the bundled defaults, offline.

    python -m trl_ranking.quickstart [--steps 40] [--output-dir outputs/quickstart]

It builds a tiny Llama-shaped model with random weights on the real GPT-2 tokenizer, trains it with `PROTrainer` on
real HH-RLHF preference pairs shipped with the package (rankings of two), and prints the ranking accuracy and the
mean score of each rank on the training rankings and on held-out rankings, before and after training. A tiny
random model cannot learn what makes a response helpful or harmless from a few hundred pairs: what it shows is the
machinery working (the loss falls, the training rankings get ordered), on a laptop CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--train-rows", type=int, default=32, help="HH-RLHF pairs to train on")
    parser.add_argument("--eval-rows", type=int, default=32, help="held-out HH-RLHF pairs")
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args(argv)

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)
    from trl_ranking import PROConfig, PROTrainer
    from trl_ranking.assets import bundled_hh_rlhf_path, load_bundled_tokenizer, make_tiny_causal_lm
    from trl_ranking.data import load_hh_rlhf

    output_dir = Path(args.output_dir)
    tokenizer = load_bundled_tokenizer()
    model_path = make_tiny_causal_lm(output_dir / "tiny-model")
    pairs = load_hh_rlhf(bundled_hh_rlhf_path())
    train = pairs.select(range(args.train_rows))
    held_out = pairs.select(range(len(pairs) - args.eval_rows, len(pairs)))
    print(f"HH-RLHF pairs: {len(train)} for training, {len(held_out)} held out (rankings of n=2, best first)")

    config = PROConfig(
        output_dir=str(output_dir / "pro"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        max_length=args.max_length,
        max_prompt_length=args.max_length - 32,
        gradient_checkpointing=False,
        bf16=False,
        logging_steps=4,
        save_strategy="no",
        disable_tqdm=True,
        report_to="none",
        seed=0,
    )
    trainer = PROTrainer(
        model=model_path,
        args=config,
        train_dataset=train,
        eval_dataset={"train": train, "held_out": held_out},
        processing_class=tokenizer,
    )
    print(f"Reference model loaded: {trainer.ref_model is not None} (PRO is reference-free by default)")
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    trainer.save_model(str(output_dir / "pro"))

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    print(f"\nTraining loss: {losses[0]:.3f} (first log) -> {losses[-1]:.3f} (last log)")
    print(f"{'metric':38s} {'before':>10s} {'after':>10s}")
    keys = [
        "eval_train_ranking/accuracy",
        "eval_train_scores/rank_1",
        "eval_train_scores/rank_2",
        "eval_held_out_ranking/accuracy",
        "eval_held_out_scores/rank_1",
        "eval_held_out_scores/rank_2",
    ]
    for key in keys:
        print(f"{key:38s} {before[key]:10.3f} {after[key]:10.3f}")
    print(f"\nModel and model card saved to {output_dir / 'pro'}")
    return after


if __name__ == "__main__":
    main()
