"""Train the same steps with each batch layout, side by side, and compare tokens, step time and memory.

Layouts (PROTrainer): `padded` (TRL's: one row per candidate, prompt repeated, rows padded), `prefix` (prefix
sharing: one row per ranking, each prompt once), `prefix+pf` (prefix sharing + padding-free: the whole batch in one
row), `pf` (padding-free alone). On the HH-RLHF pairs, TRL's own `DPOTrainer` runs the same pairs too: `dpo` (the
reference log-probs precomputed, so a step is one policy forward/backward, like reference-free PRO) and `dpo+ref`
(the reference model run on the fly, TRL's default).

Every layout gets its own copy of the same random-weight model and optimizer, sees the same batches in the same
order, and the steps are interleaved (step k of every layout, then step k + 1), so that a change of machine load hits
every layout alike. Reported per layout: positions the model processes per step (rows x length, padding included),
real tokens, median step time, throughput, and memory: the bytes the forward saves for the backward (activation
memory, any device) and, on CUDA, the peak allocated during the step above the memory held before it.

With `--trainer dove` the same layouts run with DOVETrainer (the reference model run on the fly, in the same layout):
on the HH-RLHF pairs (`hh`: conditional pairs, one shared prompt, so prefix sharing applies; compare with `dpo+ref`)
and on joint pairs built from DOVE's Anthropic-helpful SFT rows (`joint`: consecutive rows paired, two different
templated instructions, which share only the template's opening tokens).

CPU (default; a small Llama-shaped model, a few steps):
    python benchmarks/bench_layouts.py
    python benchmarks/bench_layouts.py --trainer dove --datasets hh joint --layouts padded prefix prefix+pf pf dpo+ref
GPU (realistically shaped random-weight model, bf16, SDPA and flex attention):
    python benchmarks/bench_layouts.py --device cuda --model-config qwen2-0.5b --attn sdpa flex_attention \
        --batch-size 8 --max-length 1024 --steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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
SPARSE_DIR = REPO / "tests" / "fixtures" / "data" / "sparse-feedback"
DOVE_SFT_FILE = REPO / "tests" / "fixtures" / "data" / "dove" / "anthropic_helpful" / "val_sft.jsonl"
DOVE_TEMPLATE = "### Instructions: {}\n\n### Response:"  # the DOVE paper's instruction template

# Model shapes (random weights). Vocabulary: the real model's, fed GPT-2 token ids (a subset), so that the LM head
# costs what it costs in the real model.
MODEL_CONFIGS = {
    "small": dict(
        model_type="llama", hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=688, vocab_size=50257,
    ),
    # SmolLM2-135M's shape (its vocabulary is 49,152; the GPT-2 ids the benchmark feeds need 50,257). For the real
    # checkpoint and its own tokenizer, use `--model-path` instead.
    "smollm2-135m": dict(
        model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, vocab_size=50257, tie_word_embeddings=True, rope_theta=100000.0,
    ),
    "qwen2-0.5b": dict(
        model_type="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936,
    ),
    "qwen2-1.5b": dict(
        model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936,
    ),
    "llama-7b": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=11008, vocab_size=32000,
    ),
}  # fmt: skip

PRO_LAYOUTS = {
    "padded": dict(prefix_sharing=False, padding_free=False),
    "prefix": dict(prefix_sharing=True, padding_free=False),
    "prefix+pf": dict(prefix_sharing=True, padding_free=True),
    "pf": dict(prefix_sharing=False, padding_free=True),
}
# A layout name ending in FULL_HEAD runs that layout with TRL's fused head as it runs off Triton devices (every position
# of the batch projected onto the vocabulary), to measure side by side what scoring only the scored positions gains
FULL_HEAD = ":full-head"


def layout_of(name: str) -> dict | None:
    return PRO_LAYOUTS.get(name.removesuffix(FULL_HEAD))


def full_head_forward(model, inputs, shift_labels, **model_kwargs):
    """`trl_ranking.scoring.scored_forward` as it was: TRL's fused head on every position of the batch."""
    if shift_labels.shape[1] == inputs["input_ids"].shape[1] - 1:  # next-token labels of padded rows: unshift them
        labels = torch.nn.functional.pad(shift_labels, (1, 0), value=-100)
        return model(**inputs, **model_kwargs, labels=labels, fused_lm_head=True, use_cache=False)
    return model(**inputs, **model_kwargs, shift_labels=shift_labels, fused_lm_head=True, use_cache=False)


@contextlib.contextmanager
def full_head(enabled: bool):
    import trl_ranking.scoring

    # Every trainer scores through `trl_ranking.scoring`, whose functions look `scored_forward` up at call time
    original = trl_ranking.scoring.scored_forward
    if enabled:
        trl_ranking.scoring.scored_forward = full_head_forward
    try:
        yield
    finally:
        trl_ranking.scoring.scored_forward = original


def make_model_dir(name: str, layers: int | None, directory: str) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(MODEL_CONFIGS[name])
    if layers is not None:
        values["num_hidden_layers"] = layers
    model_type = values.pop("model_type")
    values.setdefault("tie_word_embeddings", False)
    special = min(50256, values["vocab_size"] - 1)  # GPT-2's <|endoftext|>, or the last id of a smaller vocabulary
    config = AutoConfig.for_model(
        model_type, **values, max_position_embeddings=4096, bos_token_id=special, eos_token_id=special,
        pad_token_id=special,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    return directory


def select_rows(dataset, tokenizer, max_length: int, count: int, top_n: int | None = None) -> list[dict]:
    """The first `count` rows whose prompt + longest completion fit in `max_length` tokens (no truncation anywhere,
    so every trainer sees exactly the same tokens), rankings cut to their `top_n` best candidates."""
    rows = []
    for row in dataset:
        completions = row["completions"] if "completions" in row else [row["chosen"], row["rejected"]]
        prompt_length = len(tokenizer(row["prompt"])["input_ids"])
        longest = max(len(tokenizer(row["prompt"] + c)["input_ids"]) for c in completions) + 1
        if longest > max_length or prompt_length < 2:
            continue
        if "completions" in row:
            keep = top_n or len(completions)
            row = {"prompt": row["prompt"], "completions": completions[:keep], "rewards": row["rewards"][:keep]}
        else:
            row = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
        rows.append(row)
        if len(rows) == count:
            break
    return rows


def joint_pair_rows(tokenizer, max_length: int, count: int) -> list[dict]:
    """Joint pairs from DOVE's Anthropic-helpful SFT rows: consecutive rows that fit in `max_length` tokens, paired
    in file order (the first of each two chosen: the benchmark needs no real preference), instructions templated."""
    import json

    sides = []
    with open(DOVE_SFT_FILE) as f:
        for line in f:
            row = json.loads(line)
            prompt, response = DOVE_TEMPLATE.format(row["instruction"]), " " + row["response"].strip()
            if len(tokenizer(prompt + response)["input_ids"]) + 1 <= max_length:
                sides.append((prompt, response))
            if len(sides) == 2 * count:
                break
    return [
        {"chosen_prompt": a[0], "chosen": a[1], "rejected_prompt": b[0], "rejected": b[1]}
        for a, b in zip(sides[0::2], sides[1::2])
    ]


class ActivationMeter:
    """Bytes of the tensors the forward saves for the backward (unique storages, weights excluded): the activation
    memory held at the end of the forward, which is where training peaks."""

    def __init__(self, model):
        self.bytes = 0
        self.bf16_bytes = 0  # the same tensors with every floating-point one at 2 bytes an element (bf16 compute)
        self._seen = set()
        self._weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(self, tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in self._seen and pointer not in self._weights:
            self._seen.add(pointer)
            nbytes = tensor.untyped_storage().nbytes()
            self.bytes += nbytes
            self.bf16_bytes += nbytes // tensor.element_size() * 2 if tensor.is_floating_point() else nbytes
        return tensor

    @contextlib.contextmanager
    def measure(self):
        self.bytes, self.bf16_bytes, self._seen = 0, 0, set()
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor):
            yield


PROFILE_CATEGORIES = ("head", "attention", "optimizer", "backbone")


def _category(event) -> str:
    """Where a profiled op's own time goes: the LM head (TRL's chunked log-prob function, forward and backward), the
    attention kernels (SDPA / flex / eager's matmul-softmax inside the attention function, forward and backward), the
    optimizer step, or the rest of the backbone (projections, MLPs, norms, embeddings, masks)."""
    while event is not None:
        name = event.name
        if name in ("bench::head", "bench::optimizer", "bench::attention"):
            return name.split("::")[1]
        if "ChunkedLogProb" in name:
            return "head"
        if "scaled_dot_product" in name or "ScaledDotProduct" in name or "flex_attention" in name.lower():
            return "attention"
        event = event.cpu_parent
    return "backbone"


@contextlib.contextmanager
def profile_markers():
    """Label the LM head and the attention function in the profile (forward; their backward nodes carry their names
    or run inside them)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from trl.trainer import utils as trl_utils

    head = trl_utils._ChunkedLogProbFunction.apply
    functions = dict(ALL_ATTENTION_FUNCTIONS._global_mapping)

    def marked(function, label):
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(label):
                return function(*args, **kwargs)

        return wrapper

    trl_utils._ChunkedLogProbFunction.apply = marked(head, "bench::head")
    for key, function in functions.items():
        ALL_ATTENTION_FUNCTIONS._global_mapping[key] = marked(function, "bench::attention")
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction.apply = head
        ALL_ATTENTION_FUNCTIONS._global_mapping.update(functions)


class Runner:
    """One trainer, its batches, and the measurements of its steps."""

    def __init__(self, name, trainer, rows_per_step: int, device: str):
        self.name, self.trainer, self.device = name, trainer, device
        dataset = trainer.train_dataset
        self.batches = [
            trainer.data_collator([dataset[i] for i in range(start, start + rows_per_step)])
            for start in range(0, len(dataset) - rows_per_step + 1, rows_per_step)
        ]
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by `Trainer.train`, which this loop stands in for
        trainer.model.train()
        self.meter = ActivationMeter(trainer.model)
        original = trainer.compute_loss

        def compute_loss(*args, **kwargs):
            with self.meter.measure():
                return original(*args, **kwargs)

        trainer.compute_loss = compute_loss
        self.times, self.activation, self.peak, self.positions, self.tokens, self.losses = [], [], [], [], [], []
        self.breakdown, self.wall = None, []

    def profile(self, index: int) -> dict[str, float]:
        """Seconds of one step's own op time per category (`PROFILE_CATEGORIES`), from `torch.profiler`."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
        batch, trainer = self.batches[index % len(self.batches)], self.trainer
        with profile_markers(), profile(activities=activities) as prof, full_head(self.name.endswith(FULL_HEAD)):
            trainer.training_step(trainer.model, batch)
            with torch.profiler.record_function("bench::optimizer"):
                trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        totals = dict.fromkeys(PROFILE_CATEGORIES, 0.0)
        for event in prof.events():
            own = event.self_device_time_total if self.device == "cuda" else event.self_cpu_time_total
            totals[_category(event)] += own / 1e6
        return totals

    def step(self, index: int, record: bool) -> None:
        batch = self.batches[index % len(self.batches)]
        trainer = self.trainer
        sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            resting = torch.cuda.memory_allocated()
        start, start_cpu = time.perf_counter(), time.process_time()
        with full_head(self.name.endswith(FULL_HEAD)):
            loss = trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        sync()
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if record:
            # On CPU the step's CPU time (with `--threads 1`: its compute) is what the comparison uses: on a shared
            # machine the wall time also counts the time the process waited for a core
            self.times.append(elapsed if self.device == "cuda" else elapsed_cpu)
            self.wall.append(elapsed)
            self.activation.append(self.meter.bytes)
            if self.device == "cuda":
                self.peak.append(torch.cuda.max_memory_allocated() - resting)
            # DOVE's packed batches keep the padded rows for DPO's masks; the model runs on the `packed_*` rows
            self.positions.append(batch.get("packed_input_ids", batch["input_ids"]).numel())
            self.tokens.append(int(batch.get("packed_attention_mask", batch["attention_mask"]).sum()))
            self.losses.append(float(loss))


def build_trainers(kind, rows, model_dir, tokenizer, args, attn):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from trl_ranking import DOVEConfig, DOVETrainer, PROConfig, PROTrainer

    common = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=1e-6,
        bf16=False,  # the weights themselves are bf16 on CUDA (no autocast), fp32 on CPU
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=args.device == "cpu",
        seed=0,
    )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32

    def model():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn).to(args.device)

    # LoRA on every linear layer, as the users this package is for train (`--lora-r`); otherwise full fine-tuning
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    dataset = Dataset.from_list(rows)
    if kind == "rankings":
        # DPO on the same prompts: each ranking's two best candidates as one pair (a ranking for the price of a pair?)
        pairs = Dataset.from_list(
            [{"prompt": r["prompt"], "chosen": r["completions"][0], "rejected": r["completions"][1]} for r in rows]
        )
    else:
        pairs = dataset
    runners = {}
    for name in args.layouts:
        if name.startswith("dpo"):
            if kind == "joint":
                continue
            config = DPOConfig(**common, precompute_ref_log_probs=name == "dpo")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = DPOTrainer(
                    model=model(),
                    args=config,
                    train_dataset=pairs,
                    processing_class=tokenizer,
                    peft_config=peft_config,
                )
        elif args.trainer == "dove":
            config = DOVEConfig(**common, **layout_of(name))
            trainer = DOVETrainer(
                model=model(), args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
            )
        else:
            config = PROConfig(**common, **layout_of(name))
            trainer = PROTrainer(
                model=model(), args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
            )
        layout = layout_of(name)
        if layout is not None and (trainer.prefix_sharing, trainer.padding_free) != tuple(layout.values()):
            print(f"  [{name}] fell back: prefix_sharing={trainer.prefix_sharing} padding_free={trainer.padding_free}")
        runners[name] = Runner(name, trainer, args.batch_size, args.device)
    return runners


def report(title, runners, batch_size, device, baseline="padded", trainer="pro", rankings=False):
    # On rankings DPO trains on each ranking's two best candidates: a step of n candidates against a step of one pair
    versus = "per step on the same prompts (ranking vs pair)" if rankings else "per-pair throughput"
    baseline = baseline if baseline in runners else next(iter(runners))
    median = {name: statistics.median(r.times) for name, r in runners.items()}
    activation = {name: statistics.mean(r.activation) for name, r in runners.items()}
    peak = {name: statistics.mean(r.peak) for name, r in runners.items()} if device == "cuda" else {}
    lines = [f"\n## {title}", ""]
    unit = "pairs/s" if trainer == "dove" else "rankings/s"
    what = "step time (s)" if device == "cuda" else "step CPU time (s) | wall (s)"
    header = f"| layout | positions/step | real tokens/step | {what} | {unit} | speed-up vs padded | "
    header += "activation MiB | vs padded |"
    if peak:
        header += " step peak MiB | vs padded |"
    lines += [header, "|" + " --- |" * (header.count("|") - 1)]
    for name, runner in runners.items():
        cells = [
            name,
            f"{statistics.mean(runner.positions):,.0f}",
            f"{statistics.mean(runner.tokens):,.0f}",
            f"{median[name]:.3f}",
            *([] if device == "cuda" else [f"{statistics.median(runner.wall):.3f}"]),
            f"{batch_size / median[name]:.2f}",
            f"{median[baseline] / median[name]:.2f}x",
            f"{activation[name] / 2**20:,.1f}",
            f"{activation[name] / activation[baseline]:.2f}",
        ]
        if peak:
            cells += [f"{peak[name] / 2**20:,.0f}", f"{peak[name] / peak[baseline]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for dpo, what in (("dpo", "precomputed reference"), ("dpo+ref", "on-the-fly reference")):
        if dpo not in runners:
            continue
        lines.append("")
        for name in runners:
            if not name.startswith("dpo"):
                lines.append(f"{versus}, {name} vs DPOTrainer ({what}): {median[dpo] / median[name]:.2f}x")
    if "dpo" in runners and "dpo+ref" in runners:
        lines.append(f"DPOTrainer on-the-fly reference vs precomputed: {median['dpo'] / median['dpo+ref']:.2f}x")
    profiled = {name: r.breakdown for name, r in runners.items() if r.breakdown}
    if profiled:
        lines += [
            "",
            "Where the time goes (the profiled warm-up step, own op time in seconds and share of the step):",
            "",
        ]
        lines += ["| layout | " + " | ".join(PROFILE_CATEGORIES) + " | total |", "|" + " --- |" * 6]
        for name, totals in profiled.items():
            total = sum(totals.values())
            cells = [f"{totals[c]:.2f} ({totals[c] / total:.0%})" for c in PROFILE_CATEGORIES]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {total:.2f} |")
    losses = {name: r.losses[0] for name, r in runners.items() if not name.startswith("dpo")}
    if losses:
        spread = max(losses.values()) - min(losses.values())
        lines.append(f"\nfirst timed step's loss, {trainer.upper()} layouts: {losses} (spread {spread:.2e})")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model-config", default="small", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument(
        "--model-path", default=None,
        help="a real checkpoint (and its tokenizer) instead of a random-weight `--model-config`",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="profile the first warm-up step of each layout: time in the head, attention, optimizer, backbone",
    )  # fmt: skip
    parser.add_argument("--attn", nargs="+", default=["sdpa"], help="attention implementations to run")
    parser.add_argument("--layouts", nargs="+", default=["padded", "prefix", "prefix+pf", "dpo", "dpo+ref"])
    parser.add_argument("--trainer", default="pro", choices=["pro", "dove"], help="the trainer of the layouts")
    parser.add_argument(
        "--datasets", nargs="+", default=None, choices=["hh", "sparse", "joint"],
        help="defaults to hh sparse (PRO) or hh joint (DOVE); `sparse` is PRO only, `joint` DOVE only",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sparse-batch-size", type=int, default=None, help="defaults to --batch-size")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--sparse-n", type=int, default=4, help="keep the top n candidates of each ranking")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per layout")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank (0: full fine-tuning)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy machine)"
    )
    parser.add_argument("--output", default=None, help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    if args.profile and args.warmup < 1:
        parser.error("--profile profiles the first warm-up step: it needs --warmup 1 or more")
    if args.datasets is None:
        args.datasets = ["hh", "joint"] if args.trainer == "dove" else ["hh", "sparse"]
    if ("sparse" in args.datasets and args.trainer == "dove") or ("joint" in args.datasets and args.trainer == "pro"):
        parser.error("`sparse` (rankings) is for --trainer pro, `joint` (joint pairs) for --trainer dove")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    from trl_ranking.assets import load_bundled_tokenizer
    from trl_ranking.data import load_hh_rlhf, load_sparse_feedback_rankings

    hf_logging.set_verbosity_error()
    if args.model_path:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer = load_bundled_tokenizer()
    steps = args.warmup + args.steps
    hardware = platform.processor() or platform.machine()
    if args.device == "cuda":
        hardware = torch.cuda.get_device_name()
    header = (
        f"# bench_layouts {datetime.date.today()} | {hardware}, {os.cpu_count()} CPUs | torch {torch.__version__} | "
        f"model {args.model_path or args.model_config}{f' ({args.layers} layers)' if args.layers else ''} | "
        f"{'bf16' if args.device == 'cuda' else 'fp32'} | {f'LoRA r={args.lora_r}' if args.lora_r else 'full fine-tuning'} | "
        f"{torch.get_num_threads()} threads | "
        f"load average {os.getloadavg()[0]:.1f} | command: python benchmarks/bench_layouts.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
    )
    print(header, flush=True)
    texts = [header]
    with tempfile.TemporaryDirectory() as model_dir:
        if args.model_path:
            model_dir = args.model_path
        else:
            make_model_dir(args.model_config, args.layers, model_dir)
        for attn in args.attn:
            for dataset_name in args.datasets:
                if dataset_name == "hh":
                    batch_size = args.batch_size
                    rows = select_rows(load_hh_rlhf(HH_FILE), tokenizer, args.max_length, batch_size * steps)
                    kind, title = "pairs", f"HH-RLHF pairs (n=2), batch {batch_size}, {attn}"
                elif dataset_name == "joint":
                    batch_size = args.batch_size
                    rows = joint_pair_rows(tokenizer, args.max_length, batch_size * steps)
                    kind, title = "joint", f"DOVE joint pairs (Anthropic-helpful SFT rows), batch {batch_size}, {attn}"
                else:
                    batch_size = args.sparse_batch_size or args.batch_size
                    data = load_sparse_feedback_rankings(SPARSE_DIR)
                    rows = select_rows(data, tokenizer, args.max_length, len(data), top_n=args.sparse_n)
                    kind = "rankings"
                    sizes = sorted({len(r["completions"]) for r in rows})
                    title = f"sparse-feedback rankings (n={sizes}), batch {batch_size}, {attn}"
                run_args = argparse.Namespace(**{**vars(args), "batch_size": batch_size})
                runners = build_trainers(kind, rows, model_dir, tokenizer, run_args, attn)
                for step in range(steps):
                    for runner in runners.values():
                        if args.profile and step == 0:  # the first warm-up step, profiled
                            runner.breakdown = runner.profile(step)
                        else:
                            runner.step(step, record=step >= args.warmup)
                texts.append(report(f"{args.trainer.upper()}: {title}", runners, batch_size, args.device,
                                    trainer=args.trainer, rankings=kind == "rankings"))  # fmt: skip
                del runners
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}", flush=True)
    if args.output:
        Path(args.output).write_text("\n".join(texts) + "\n")


if __name__ == "__main__":
    main()
