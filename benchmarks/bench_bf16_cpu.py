"""PRO training steps in float32 and in bf16 autocast (`bf16=True, use_cpu=True`), side by side, on the CPU.

Two `PROTrainer`s on the same checkpoint, the same batches (real HH-RLHF rankings of 4 candidates) and the same
seed, one with `bf16=False` and one with `bf16=True`; their steps are interleaved (step k of each, then step k + 1)
so that a change of machine load hits both alike. Reported: the median step time of each, the speed-up, and the
losses of each step (the same batch in both precisions, so they differ by the rounding alone).

    python benchmarks/bench_bf16_cpu.py --model-path ~/.cache/trl_ranking/smollm2-135m-instruct-q4_1
    python benchmarks/bench_bf16_cpu.py --model-path ... --lora-r 16 --steps 5

bf16 pays off only where the CPU computes bf16 natively (AMX or AVX512-BF16, `trl_ranking.precision`); elsewhere
it is emulated and slower than float32. The flags found are printed with the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
HH_FILE = REPO / "tests" / "fixtures" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def ranking_rows(count: int, n: int) -> list[dict]:
    """`count` rankings of `n` real HH-RLHF responses: a row's chosen and rejected, then rejected ones of other rows."""
    from trl_ranking.data import load_hh_rlhf

    pairs = load_hh_rlhf(HH_FILE)
    rows = []
    for i in range(count):
        base = pairs[i]
        extras = [pairs[500 + 7 * i + j]["rejected"] for j in range(n - 2)]
        rows.append({"prompt": base["prompt"], "completions": [base["chosen"], base["rejected"], *extras]})
    return rows


def build(bf16: bool, args, rows):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from trl_ranking import PROConfig, PROTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    config = PROConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        max_prompt_length=args.max_length // 2,
        learning_rate=1e-6,
        bf16=bf16,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = PROTrainer(
        model=args.model_path,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    # What `Trainer.train` does before its first step: accelerate wraps the forward in autocast (bf16=True)
    trainer.model = trainer.accelerator.prepare_model(trainer.model)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by `Trainer.train`'s loop
    batches = list(trainer.get_train_dataloader())
    return trainer, batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="checkpoint directory with its tokenizer")
    parser.add_argument("--batch-size", type=int, default=2, help="rankings per step")
    parser.add_argument("--n", type=int, default=4, help="candidates per ranking")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from trl_ranking.precision import cpu_bf16_flags

    rows = ranking_rows(args.batch_size * (args.warmup + args.steps), args.n)
    runs = {"fp32": build(False, args, rows), "bf16": build(True, args, rows)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.warmup + args.steps):
        for name, (trainer, batches) in runs.items():
            batch = trainer._prepare_inputs(batches[step])
            start = time.perf_counter()
            loss = trainer.training_step(trainer.model, batch)
            elapsed = time.perf_counter() - start
            trainer.model.zero_grad()
            losses[name].append(loss.item())
            if step >= args.warmup:
                times[name].append(elapsed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{Path(args.model_path).name}, {'LoRA r=' + str(args.lora_r) if args.lora_r else 'full fine-tuning'}, "
        f"{args.batch_size} rankings x {args.n} candidates, max_length {args.max_length}, padded layout default rule; "
        f"{args.steps} timed steps after {args.warmup} warm-up, interleaved"
    )
    print(
        f"CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, load {load:.2f}"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in runs:
        print(f"{name}: median step {medians[name]:.2f} s (steps: {', '.join(f'{t:.2f}' for t in times[name])})")
        print(f"{name}: losses {', '.join(f'{x:.5f}' for x in losses[name])}")
    print(f"bf16 speed-up: {medians['fp32'] / medians['bf16']:.2f}x")
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses["bf16"], losses["fp32"]))
    print(f"largest relative loss difference bf16 vs fp32: {worst:.1e}")


if __name__ == "__main__":
    sys.exit(main())
