"""Single-GPU fit of a 7B-shaped model: the largest ranking size n and sequence length that train within a budget.

The model has Llama-7B dimensions with random weights, loaded in 4-bit (NF4, bf16 compute) with LoRA r=16 on every
linear layer and gradient checkpointing, as a QLoRA run would be. A full 32-layer model is not needed: the peak
memory of one training step is measured with a few layers (`--layers 2 4`), fitted as `a + b * layers` for each
(layout, n, length), and extrapolated to the model's depth. The fit is shown (the memory at each measured depth and
the per-layer slope), so it can be checked.

A step is one ranking (per-device batch 1) of n candidates, each `length` tokens long: a prompt of
`prompt_fraction * length` tokens and a completion of the rest (random token ids).

On CUDA the peak is measured (`torch.cuda.max_memory_allocated` over a whole step: forward, backward, optimizer).
CPU has no allocator peak to read, so `--device cpu` *estimates* the GPU peak from measured parts, per layout:
- the model as held on the GPU: 4-bit weights with their quantization constants, the other weights in bf16, the LoRA
  weights in fp32 with their gradients and two Adam moments (read from the loaded modules at each depth);
- the activations: the forward runs without checkpointing and the bytes it saves for the backward are measured at
  each depth (floating-point tensors counted at 2 bytes, as in bf16 compute), which splits into a part outside the
  layers (embeddings, final norm, the head on the scored positions) and a per-layer part;
- gradient checkpointing then holds each layer's input (positions x hidden x 2 bytes) for every layer, plus one
  layer's activations while it is recomputed in the backward.
Estimate = model + outside part + depth x layer input + one layer's activations. Left out: the allocator's caching
and fragmentation, the backward's own transient buffers (gradients of one layer's activations, the logits' gradient),
CUDA context and kernels' workspaces: read it as a lower bound, within a few GiB, until a GPU measures it.

GPU (what the issue asks for; not yet run, see README.md):
    python benchmarks/bench_fit.py --device cuda --layers 2 4 --n 2 4 8 16 --lengths 512 1024 2048 4096
CPU estimate (forward passes of 1- and 2-layer 7B-shaped models in fp32; the command of benchmarks/README.md, whose
activations all scale with the positions, so longer rankings follow from it; larger grids need more than 24 GB):
    python benchmarks/bench_fit.py --device cpu --layers 1 2 --layouts padded prefix+pf --n 4 8 --lengths 512
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layouts import MODEL_CONFIGS, PRO_LAYOUTS, ActivationMeter, make_model_dir  # noqa: E402


def build_trainer(model_dir, layout, args, tokenizer):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from trl_ranking import PROConfig, PROTrainer

    cuda = args.device == "cuda"
    config = PROConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=1,
        max_length=None,
        gradient_checkpointing=cuda,  # on CPU the forward's activations are measured whole (see the docstring)
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        model_init_kwargs={"dtype": torch.bfloat16 if cuda else torch.float32, "attn_implementation": args.attn},
        **PRO_LAYOUTS[layout],
    )
    dataset = Dataset.from_list([{"prompt_ids": [1, 2, 3], "completion_ids": [[4], [5]]}])
    trainer = PROTrainer(
        model=model_dir,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
        ),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def model_bytes(model) -> int:
    """Bytes the model holds on the GPU in a QLoRA run: 4-bit weights (packed, with one fp32 constant per block of
    64), the other frozen weights and buffers in bf16, trainable (LoRA) weights in fp32 with gradient and Adam moments."""
    total = 0
    for parameter in model.parameters():
        quant_state = getattr(parameter, "quant_state", None)
        if quant_state is not None:
            total += parameter.numel() * parameter.element_size() + quant_state.absmax.numel() * 4
        elif parameter.requires_grad:
            total += parameter.numel() * (4 + 4 + 8)
        else:
            total += parameter.numel() * 2
    return total + sum(buffer.numel() * 2 for buffer in model.buffers())


def step_memory(trainer, n: int, length: int, args) -> float | tuple[int, int, int]:
    """CUDA: peak memory of one training step on one ranking, in GiB (`inf` when it runs out of memory).
    CPU: (model bytes, activation bytes of the forward in bf16, positions) for the estimate."""
    generator = torch.Generator().manual_seed(n * 100003 + length)
    prompt_length = max(1, int(length * args.prompt_fraction))
    prompt = torch.randint(100, 30000, (prompt_length,), generator=generator).tolist()
    completions = [
        torch.randint(100, 30000, (length - prompt_length,), generator=generator).tolist() for _ in range(n)
    ]
    batch = trainer.data_collator([{"prompt_ids": prompt, "completion_ids": completions}])
    meter = ActivationMeter(trainer.model)
    if args.device == "cpu":
        with meter.measure():
            loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        del loss
        return model_bytes(trainer.model), meter.bf16_bytes, batch["input_ids"].numel()
    try:
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with meter.measure():
            loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**30
        return meter.bytes / 2**30
    except torch.OutOfMemoryError:
        trainer.optimizer.zero_grad(set_to_none=True)
        return float("inf")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--model-config", default="llama-7b", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--layers", nargs=2, type=int, default=[2, 4], help="two depths to measure")
    parser.add_argument("--layouts", nargs="+", default=["padded", "prefix+pf"])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--n", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--prompt-fraction", type=float, default=0.5)
    parser.add_argument("--budget-gib", type=float, default=46.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")

    from transformers.utils import logging as hf_logging

    from trl_ranking.assets import load_bundled_tokenizer

    hf_logging.set_verbosity_error()
    tokenizer = load_bundled_tokenizer()
    vocab_size = MODEL_CONFIGS[args.model_config]["vocab_size"]
    if tokenizer.pad_token_id >= vocab_size:  # Llama-7B's 32,000 ids: pad with one inside them (ids are random here)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(vocab_size - 1)
    depth = MODEL_CONFIGS[args.model_config]["num_hidden_layers"]
    memory = {}  # (layout, n, length) -> per depth: GiB (CUDA), or (model bytes, activation bytes, positions) (CPU)
    for layers in args.layers:
        with tempfile.TemporaryDirectory() as model_dir:
            make_model_dir(args.model_config, layers, model_dir)
            for layout in args.layouts:
                trainer = build_trainer(model_dir, layout, args, tokenizer)
                for n in args.n:
                    for length in args.lengths:
                        measured = step_memory(trainer, n, length, args)
                        memory.setdefault((layout, n, length), []).append(measured)
                        print(f"layers={layers} {layout} n={n} length={length}: {measured}", flush=True)
                del trainer
                gc.collect()  # the trainer's model sits in reference cycles (accelerate, PEFT): free it before the next
                if args.device == "cuda":
                    torch.cuda.empty_cache()

    if args.device == "cpu":
        cpu_estimate(memory, args, depth)
        return
    low, high = args.layers
    print(
        f"\n| layout | n | length | {low} layers | {high} layers | per layer | {depth} layers (fit) | fits {args.budget_gib} GiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    largest = {}
    for (layout, n, length), (at_low, at_high) in memory.items():
        slope = (at_high - at_low) / (high - low)
        full = at_low + (depth - low) * slope
        fits = full <= args.budget_gib
        if fits:
            largest.setdefault(layout, []).append((n, length))
        print(f"| {layout} | {n} | {length} | {at_low:.2f} | {at_high:.2f} | {slope:.3f} | {full:.2f} | {'yes' if fits else 'no'} |")  # fmt: skip
    print("\n(GiB peak allocated)")
    report_largest(largest)


def report_largest(largest: dict[str, list[tuple[int, int]]]) -> None:
    for layout, fitting in largest.items():
        for n in sorted({n for n, _ in fitting}):
            print(f"{layout}: n={n} fits up to length {max(length for m, length in fitting if m == n)}")


def cpu_estimate(memory, args, depth: int) -> None:
    """The GPU peak estimated from the parts measured on CPU (see the module docstring), per (layout, n, length)."""
    low, high = args.layers
    hidden = MODEL_CONFIGS[args.model_config]["hidden_size"]
    gib = 2**30

    def at_depth(values, layers):  # the straight line through the two measured depths
        slope = (values[1] - values[0]) / (high - low)
        return values[0] + (layers - low) * slope, slope

    print(
        f"\n| layout | n | length | positions | model, {depth} layers | activations outside layers | per layer "
        f"| checkpointed inputs | estimate, checkpointing | estimate, none | fits {args.budget_gib} GiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    largest = {}
    for (layout, n, length), measured in memory.items():
        model, _ = at_depth([m[0] for m in measured], depth)
        outside, per_layer = at_depth([m[1] for m in measured], 0)
        positions = measured[0][2]
        inputs = depth * positions * hidden * 2
        checkpointed = model + outside + inputs + per_layer
        whole = model + outside + depth * per_layer
        fits = checkpointed <= args.budget_gib * gib
        if fits:
            largest.setdefault(layout, []).append((n, length))
        print(
            f"| {layout} | {n} | {length} | {positions:,} | {model / gib:.2f} | {outside / gib:.2f} | "
            f"{per_layer / gib:.3f} | {inputs / gib:.2f} | {checkpointed / gib:.2f} | {whole / gib:.2f} | "
            f"{'yes' if fits else 'no'} |"
        )
    print(f"\n(GiB, estimated from CPU measurements at {low} and {high} layers; with gradient checkpointing)")
    report_largest(largest)


if __name__ == "__main__":
    main()
