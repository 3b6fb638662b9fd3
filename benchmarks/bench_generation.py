"""Generation throughput side by side: plain `model.generate` in float32 and bfloat16 against the project's path.

One run, the same prompts (IFEval's, rendered with the model's chat template), the same number of new tokens per
answer. Three paths (and more slot counts with `--slots`):

- `generate fp32`: `model.generate`, greedy, batch `--batch` (what the project used before).
- `generate bf16`: the same in bfloat16.
- `slots bf16 (S)`: `trl_ranking.generation.generate_responses(engine="slots")`, bfloat16, `S` slots: a freed row
  takes the next prompt at once, one preallocated cache, grouped-query decode attention.

With `--forced` (default) every answer is exactly `--new-tokens` tokens (`min_new_tokens`), so the figure is decode
throughput alone; `--natural` lets answers end at EOS, where the slot decoder also stops paying for finished rows.
Each path runs `--repeats` times, interleaved; the median is reported. Also printed: the share of the bf16 GEMM limit
(a 512x576 @ 576x1536 bf16 product timed in the same run, times the model's FLOPs per token), and how many bf16 answers
of the project's path are token-identical to `generate bf16`'s (greedy; a near tie of two logits may break differently
under another summation order).

    python benchmarks/bench_generation.py --model-path /root/.cache/trl_ranking/smollm2-135m-instruct-q4_1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]


def gemm_limit(threads: int, dtype: torch.dtype = torch.bfloat16, repeats: int = 30) -> float:
    """FLOP/s of a 512x576 @ 576x1536 matrix product (SmolLM2's MLP shape at 512 tokens), best of `repeats`."""
    a = torch.randn(512, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    for _ in range(5):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 512 * 576 * 1536 / best


def flops_per_token(config, context: int) -> float:
    """Forward FLOPs of one decoded token: 2 x the weights it multiplies (layers and LM head) plus attention over
    `context` cached positions."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    mlp = 3 * hidden * config.intermediate_size
    weights = layers * (attention + mlp) + hidden * config.vocab_size
    return 2 * weights + layers * 4 * heads * head_dim * context


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None, help="a checkpoint (default: the SmolLM2 helper's cache)")
    parser.add_argument("--prompts", type=int, default=16, help="IFEval prompts (the first N)")
    parser.add_argument("--batch", type=int, default=16, help="model.generate's batch")
    parser.add_argument("--slots", type=int, nargs="+", default=[16, 64], help="the slot decoder's slot counts")
    parser.add_argument("--slot-dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--natural", action="store_true", help="answers end at EOS (default: exactly --new-tokens)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-fp32", action="store_true", help="leave out generate fp32 (slow)")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ranking.evaluation.ifeval import load_ifeval_prompts
    from trl_ranking.generation import generate_responses
    from trl_ranking.precision import cpu_bf16_flags

    model_path = args.model_path
    if model_path is None:
        from trl_ranking.assets import smollm2_135m_instruct

        model_path = smollm2_135m_instruct(prefer_hub=False)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = load_ifeval_prompts()[: args.prompts]
    prompts = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    prompt_lengths = [
        len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        for p in prompts
    ]
    models = {dtype: AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).eval()
              for dtype in (torch.float32, torch.bfloat16)}
    forced = {} if args.natural else {"min_new_tokens": args.new_tokens}

    paths: dict[str, dict] = {}
    if not args.skip_fp32:
        paths["generate fp32"] = dict(model=models[torch.float32], engine="generate", batch_size=args.batch)
    paths["generate bf16"] = dict(model=models[torch.bfloat16], engine="generate", batch_size=args.batch)
    for name in args.slot_dtypes:
        for slots in args.slots:
            dtype = torch.bfloat16 if name == "bf16" else torch.float32
            paths[f"slots {name} ({slots})"] = dict(model=models[dtype], engine="slots", batch_size=slots)

    def run(path: dict) -> tuple[float, list[str], int]:
        start = time.perf_counter()
        answers = generate_responses(
            path["model"], tokenizer, prompts, max_new_tokens=args.new_tokens, batch_size=path["batch_size"],
            engine=path["engine"], progress_bar=False, stop_strings=None, **forced,
        )
        seconds = time.perf_counter() - start
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
        return seconds, answers, tokens

    # warm-up: one short call per path (allocator, kernels)
    for path in paths.values():
        generate_responses(path["model"], tokenizer, prompts[:2], max_new_tokens=4, batch_size=2,
                           engine=path["engine"], progress_bar=False)
    times: dict[str, list[float]] = {name: [] for name in paths}
    answers: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, path in paths.items():
            seconds, answers[name], tokens[name] = run(path)
            times[name].append(seconds)
            print(f"  {name}: {seconds:.1f} s", flush=True)

    limit = gemm_limit(torch.get_num_threads())
    context = statistics.mean(prompt_lengths) + args.new_tokens / 2
    token_flops = flops_per_token(models[torch.float32].config, int(context))
    # Tokens as generated: `--forced` makes every answer exactly --new-tokens long
    generated = {name: (len(prompts) * args.new_tokens if not args.natural else tokens[name]) for name in paths}
    baseline = "generate fp32" if "generate fp32" in paths else "generate bf16"
    results = {}
    print()
    print(f"model {model_path}; {len(prompts)} IFEval prompts ({min(prompt_lengths)}-{max(prompt_lengths)} tokens), "
          f"{args.new_tokens} new tokens {'(natural ends)' if args.natural else '(forced)'}; "
          f"{torch.get_num_threads()} threads; CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}")
    print(f"bf16 GEMM limit (512x576 @ 576x1536): {limit / 1e12:.2f} TFLOP/s; {token_flops / 1e9:.3f} GFLOP per token")
    print(f"| path | tokens/s | x {baseline} | share of bf16 GEMM limit | answers identical to generate, same dtype |")
    print("|---|---|---|---|---|")
    for name in paths:
        seconds = statistics.median(times[name])
        rate = generated[name] / seconds
        base_rate = generated[baseline] / statistics.median(times[baseline])
        reference = "generate bf16" if "bf16" in name else "generate fp32"
        same = sum(a == b for a, b in zip(answers[name], answers[reference])) if reference in answers else None
        share = rate * token_flops / limit
        results[name] = dict(seconds=seconds, tokens_per_s=rate, ratio=rate / base_rate, gemm_share=share,
                             identical_to_generate=same, reference=reference)
        shown = f"{same}/{len(prompts)}" if same is not None and name != reference else "-"
        print(f"| {name} | {rate:.0f} | {rate / base_rate:.2f}x | {100 * share:.1f}% | {shown} |")
    report = dict(
        date=datetime.date.today().isoformat(), machine=platform.processor() or platform.machine(),
        cpu_bf16_flags=list(cpu_bf16_flags()), threads=torch.get_num_threads(), args=vars(args),
        gemm_limit_flops=limit, flops_per_token=token_flops, results=results, command=" ".join(sys.argv),
    )
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
