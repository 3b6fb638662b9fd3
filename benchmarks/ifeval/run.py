"""IFEval, held out: does PRO make SmolLM2-135M-Instruct better at following instructions, against SFT and DPO?

Training prompts are real instructions that are not IFEval's (DOVE's Anthropic-helpful instructions, TL;DR posts,
the sparse-feedback instructions), each given 1-3 IFEval-type constraints by the checkers' own builders with random
arguments, every type and both directions of every length limit (`trl_ranking.evaluation.constraints`). The model
samples `n` answers per prompt; IFEval's own checkers score them (share of the prompt's instructions followed,
strict): the PRO paper's "affordable ranking". Every method trains a LoRA adapter on the same rankings; IFEval's 541
prompts are then answered greedily and scored with the official metrics (`trl_ranking.evaluation.ifeval`).

Stages, each resumable (its outputs are files; a finished stage is skipped when run again):

    python benchmarks/ifeval/run.py                       # everything: data, sample, train + eval every method
    python benchmarks/ifeval/run.py --methods base sft dpo pro_n4
    python benchmarks/ifeval/run.py --report              # the table from benchmarks/ifeval/results/*.json

Committed: the training rankings (`benchmarks/ifeval/data/rankings_seed{seed}.jsonl.gz`, one row per prompt with
`prompt`, `completions` best first, `rewards`, and the constraints) and one JSON per run
(`benchmarks/ifeval/results/{method}_seed{seed}.json`: `method`, `seed`, `metrics`, `answers` keyed by IFEval key, the
settings and timings). Work files (adapters) go to `--work-dir` (default `outputs/ifeval`, not in git).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch


REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DATA = REPO / "tests" / "fixtures" / "data"
logger = logging.getLogger("benchmarks.ifeval")


@dataclasses.dataclass
class Settings:
    """One benchmark configuration (the defaults: the CPU run of 2026-12-08)."""

    seed: int = 0
    num_train: int = 160  # training prompts
    num_validation: int = 48  # training-distribution prompts held out (for the rate choice; never IFEval)
    n: int = 4  # answers sampled per prompt
    sample_max_new_tokens: int = 288
    max_words: int = 180  # "at least N words" targets stay within what sample_max_new_tokens allows
    temperature: float = 1.0
    generation_batch: int = 48  # slots
    eval_max_new_tokens: int = 512
    eval_limit: int | None = None  # IFEval prompts (None: all 541)
    max_length: int = 512  # training: prompt + answer tokens
    epochs: float = 1.0
    batch_size: int = 4
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rates: dict = dataclasses.field(
        default_factory=lambda: {"sft": 1e-3, "dpo": 3e-4, "pro": 1e-3, "listmle": 3e-4}
    )  # the learning benchmark's rates tuned per family (benchmarks/learning/README.md); not retuned here
    beta: float = 0.1


METHODS = {
    "base": "the base model, no training",
    "sft": "SFT on the best answer of each prompt (TRL SFTTrainer, completion only)",
    "dpo": "TRL DPOTrainer on best-vs-worst pairs (beta 0.1)",
    "pro_n4": "PROTrainer, rankings of 4, PRO's SFT term at 0.05 / (n-1)^2 (so its share is n-independent)",
    "pro_n4_nosft": "PROTrainer, rankings of 4, no SFT term",
    "pro_n2": "PROTrainer, best and worst only (rankings of 2)",
    "listmle": "PROTrainer(loss_type='listmle'), reference-based Plackett-Luce, rankings of 4",
}


def _instructions(seed: int) -> list[tuple[str, str]]:
    """(source, instruction) of every training-eligible instruction, deduplicated, in a seeded order; none shares an
    8-word sequence with an IFEval prompt."""
    from trl_ranking.evaluation.constraints import (
        drop_ifeval_overlap,
        load_dove_instructions,
        load_sparse_feedback_instructions,
        load_tldr_instructions,
    )

    dove = DATA / "dove"
    sources = {
        "dove-helpful": load_dove_instructions([dove / "anthropic_helpful" / "val_sft.jsonl"]),
        "tldr": load_tldr_instructions([dove / "tldr" / "test.jsonl"], max_chars=600),
        "sparse-feedback": load_sparse_feedback_instructions(DATA / "sparse-feedback" / "sample_generation.json"),
    }
    seen: set[str] = set()
    pairs = []
    for source, texts in sources.items():
        for text in drop_ifeval_overlap(texts):
            if text.lower() not in seen:
                seen.add(text.lower())
                pairs.append((source, text))
    random.Random(seed).shuffle(pairs)
    return pairs


def build_prompts(cfg: Settings) -> tuple[list[dict], list[dict]]:
    """(training, validation) constraint prompts, deterministic given the seed."""
    from trl_ranking.evaluation.constraints import IFEVAL_CONSTRAINTS, build_constraint_prompts

    pairs = _instructions(cfg.seed)[: cfg.num_train + cfg.num_validation]
    rows = build_constraint_prompts(
        [text for _, text in pairs], seed=cfg.seed, constraints=IFEVAL_CONSTRAINTS, num_constraints=(1, 2, 3),
        sources=[source for source, _ in pairs], max_words=cfg.max_words,
    )
    return rows[: cfg.num_train], rows[cfg.num_train :]


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sample_rankings(cfg: Settings, model_path: str, path: Path, chunk: int = 48) -> list[dict]:
    """The training rankings (sampled once per seed, committed, reused by every method).

    Sampled `chunk` prompts at a time, each chunk appended to `<path>.partial` as it finishes, so that a run stopped
    midway resumes at its next chunk (a chunk's sampling seed is `seed + chunk index`: the same rows whatever the
    stops)."""
    if path.exists():
        return _read_jsonl_gz(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ranking.evaluation.constraints import constraint_pass_rates, constraint_rankings

    train, validation = build_prompts(cfg)
    prompts = [("train", row) for row in train] + [("validation", row) for row in validation]
    partial = path.with_name(path.name + ".partial")
    done: list[dict] = []
    if partial.exists():
        with open(partial, encoding="utf-8") as handle:
            done = [json.loads(line) for line in handle if line.strip()]
    chunks_done = {row["chunk"] for row in done}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).eval()
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index in range(0, len(prompts), chunk):
        if index // chunk in chunks_done:
            continue
        part = prompts[index : index + chunk]
        rows = constraint_rankings(
            model, tokenizer, [row for _, row in part], n=cfg.n, max_new_tokens=cfg.sample_max_new_tokens,
            seed=cfg.seed + index // chunk, temperature=cfg.temperature, batch_size=cfg.generation_batch,
        )
        split_of = {row["prompt_text"]: split for split, row in part}
        with open(partial, "a", encoding="utf-8") as handle:
            for row in rows:
                record = {**row, "split": split_of[row["prompt_text"]], "chunk": index // chunk}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                done.append(record)
        logger.info("sampled chunk %d (%d prompts) at %.0f s", index // chunk, len(part), time.perf_counter() - start)
    rankings = sorted(done, key=lambda row: row["chunk"])
    rates = constraint_pass_rates([r for r in rankings if r["split"] == "train"])
    _write_jsonl_gz(path, rankings)
    (path.parent / f"sampling_seed{cfg.seed}.json").write_text(
        json.dumps({"seconds_last_session": time.perf_counter() - start, "rankings": len(rankings),
                    "pass_rates": rates}, indent=2)
    )
    partial.unlink()
    return rankings


def _lora(cfg: Settings):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def _common(cfg: Settings, output_dir: Path, family: str, bf16: bool, rows: int) -> dict[str, Any]:
    steps = max(1, round(cfg.epochs * rows / cfg.batch_size))
    return {
        "output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rates[family], "lr_scheduler_type": "cosine", "warmup_steps": max(1, steps // 10),
        "logging_steps": 5, "save_strategy": "no", "report_to": "none", "bf16": bf16, "use_cpu": not torch.cuda.is_available(),
        "seed": cfg.seed, "data_seed": cfg.seed, "disable_tqdm": True, "max_length": cfg.max_length,
        "gradient_checkpointing": False,
    }


def _message(completion: Any) -> list[dict]:
    """A completion as an assistant turn (the sampled rankings store them as messages already)."""
    return completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]


def make_trainer(method: str, cfg: Settings, model_path: str, tokenizer, rankings: list[dict], output_dir: Path,
                 bf16: bool):
    from datasets import Dataset

    train = [r for r in rankings if r["split"] == "train"]
    # The same rows for every method: a prompt over half of max_length (long TL;DR posts) is left out, counted
    limit = cfg.max_length // 2
    kept = [r for r in train if len(tokenizer.apply_chat_template(
        [{"role": "user", "content": r["prompt_text"]}], tokenize=True, add_generation_prompt=True,
        return_dict=True)["input_ids"]) <= limit]
    if len(kept) < len(train):
        logger.info("%s: %d of %d training prompts are over %d tokens and left out", method, len(train) - len(kept),
                    len(train), limit)
    train = kept
    prompts = [[{"role": "user", "content": r["prompt_text"]}] for r in train]
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        rows = [{"prompt": p, "completion": _message(r["completions"][0])} for p, r in zip(prompts, train)]
        args = SFTConfig(**_common(cfg, output_dir, "sft", bf16, len(rows)), completion_only_loss=True)
        return SFTTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=_lora(cfg))
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        rows = [{"prompt": p, "chosen": _message(r["completions"][0]), "rejected": _message(r["completions"][-1])}
                for p, r in zip(prompts, train) if r["rewards"][0] > r["rewards"][-1]]
        args = DPOConfig(**_common(cfg, output_dir, "dpo", bf16, len(rows)), beta=cfg.beta)
        return DPOTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=_lora(cfg))
    from trl_ranking import PROConfig, PROTrainer

    n = 2 if method == "pro_n2" else cfg.n
    rows = []
    for p, r in zip(prompts, train):
        keep = [0, len(r["completions"]) - 1] if n == 2 else list(range(min(n, len(r["completions"]))))
        if r["rewards"][keep[0]] == r["rewards"][keep[-1]]:
            continue  # an all-tied ranking carries no ranking signal
        rows.append({"prompt": p, "completions": [_message(r["completions"][i]) for i in keep],
                     "rewards": [r["rewards"][i] for i in keep]})
    options: dict[str, Any] = {}
    family = "pro"
    if method.startswith("pro"):
        # PRO's SFT term is sft_weight * (n-1)^2 * NLL: 0.05 / (n-1)^2 keeps it at the paper's n = 2 share for every n
        options["sft_weight"] = 0.0 if method.endswith("nosft") else 0.05 / (n - 1) ** 2
    else:
        options.update(loss_type="listmle", beta=cfg.beta)
        family = "listmle"
    args = PROConfig(**_common(cfg, output_dir, family, bf16, len(rows)), **options)
    return PROTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=_lora(cfg))


def run_method(method: str, cfg: Settings, model_path: str, rankings: list[dict], work_dir: Path,
               results_dir: Path) -> dict:
    result_path = results_dir / f"{method}_seed{cfg.seed}.json"
    if result_path.exists():
        logger.info("%s: done (%s)", method, result_path)
        return json.loads(result_path.read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ranking.evaluation.ifeval import evaluate_ifeval
    from trl_ranking.precision import choose_bf16, precision_note

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    bf16 = choose_bf16(None, what=f"{method}: training and generation")
    timings: dict[str, float] = {}
    train_log: list[dict] = []
    if method == "base":
        model = AutoModelForCausalLM.from_pretrained(model_path)
    else:
        torch.manual_seed(cfg.seed)
        trainer = make_trainer(method, cfg, model_path, tokenizer, rankings, work_dir / method, bf16)
        start = time.perf_counter()
        trainer.train()
        timings["train_s"] = time.perf_counter() - start
        train_log = [entry for entry in trainer.state.log_history if "loss" in entry or "train_loss" in entry]
        model = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        del trainer
    model.eval()
    start = time.perf_counter()
    result = evaluate_ifeval(model, tokenizer, limit=cfg.eval_limit, max_new_tokens=cfg.eval_max_new_tokens,
                             batch_size=cfg.generation_batch, dtype=torch.bfloat16 if bf16 else None,
                             progress_bar=False)
    timings["eval_s"] = time.perf_counter() - start
    record = {
        "method": method, "description": METHODS[method], "seed": cfg.seed,
        "metrics": result.metrics(), "per_type": result.per_type, "answer_stats": result.answer_stats,
        "answers": dict(result.responses),
        "precision": precision_note(bf16), "timings": timings, "train_log": train_log,
        "settings": dataclasses.asdict(cfg), "model": model_path, "command": " ".join(sys.argv),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(record, indent=1, default=str))
    logger.info("%s: %s", method, record["metrics"])
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None, help="default: the SmolLM2 helper's offline checkpoint")
    parser.add_argument("--methods", nargs="+", default=["base", "sft", "dpo", "pro_n4"], choices=sorted(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=None, help="IFEval prompts (default: all 541)")
    parser.add_argument("--work-dir", default=str(REPO / "outputs" / "ifeval"))
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    parser.add_argument("--data-dir", default=str(HERE / "data"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--report", action="store_true", help="only print the table of the stored results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.report:
        from report import main as report_main  # benchmarks/ifeval/report.py

        report_main([args.results_dir])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Settings(seed=args.seed, eval_limit=args.eval_limit)
    model_path = args.model_path
    if model_path is None:
        from trl_ranking.assets import smollm2_135m_instruct

        model_path = smollm2_135m_instruct(prefer_hub=False)
    rankings = None
    for method in args.methods:
        if method != "base" and rankings is None:
            rankings = sample_rankings(cfg, model_path, Path(args.data_dir) / f"rankings_seed{cfg.seed}.jsonl.gz")
        run_method(method, cfg, model_path, rankings or [], Path(args.work_dir), Path(args.results_dir))


if __name__ == "__main__":
    main()
