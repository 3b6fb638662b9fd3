"""Does PRO (or DOVE) make a real model better, and by how much against DPO and SFT? The papers' orderings, small.

Task: real instructions (HH-RLHF first human turns, DOVE Anthropic-helpful instructions) each given one or two
verifiable IFEval-kind constraints (`trl_ranking.evaluation.constraints`); the reward of an answer is the share of its
constraints it meets, checked by the IFEval checkers of `if-verifiable`.

Pipeline (every method sees the same data):
1. Split the instructions into training prompts and >= 200 held-out prompts (disjoint instructions).
2. Sample `num_candidates` answers per training prompt from the base model and rank them by the reward (the PRO
   paper's "affordable ranking"); the candidates are cached, so reruns and every method reuse them. Prompts whose
   candidates all tie carry no preference and are left out (counted in the log and the JSON).
3. Train each method with LoRA through the public trainers for the same number of steps (`PROTrainer`,
   `DOVETrainer`, TRL's `DPOTrainer` and `SFTTrainer`).
4. Evaluate greedy answers on the held-out prompts: prompt- and instruction-level constraint accuracy, mean reward,
   drift from the base model (per-token KL(policy || base) on the policy's own held-out answers, and the base
   model's per-token NLL of those answers), answer length. Per-prompt values are kept for bootstrap intervals.

Results are written to the JSON after every method, so a partial run still gives rows; `report.py` makes the tables
and plots from it.

    python benchmarks/learning/run.py --config cpu --model /work/cache/smollm2-135m-instruct \
        --output benchmarks/learning/results/cpu.json

Methods are taken by name from `METHODS` (one line each); `--methods sft,dpo,pro_n4` runs a subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from trl_ranking.evaluation.constraints import (  # noqa: E402
    ConstraintScorer,
    build_constraint_prompts,
    check_constraints,
    load_dove_instructions,
    load_hh_first_turns,
)


logger = logging.getLogger("learning")

DATA = REPO / "tests" / "fixtures" / "data"
RESULTS = REPO / "benchmarks" / "learning" / "results"  # the committed results, and the candidates they were run on
HH_FILE = DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
DOVE_FILES = [
    DATA / "dove" / "anthropic_helpful" / "val_sft.jsonl",
    DATA / "dove" / "anthropic_helpful" / "test.jsonl",
]


# ----------------------------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Config:
    """One benchmark size. `steps * batch_size` training prompts (with a reward spread) are used by every method."""

    num_eval: int = 200
    steps: int = 30
    batch_size: int = 4
    num_candidates: int = 8
    max_new_tokens: int = 40
    train_pool_factor: float = 1.3  # training prompts sampled per prompt used (some have no reward spread)
    lora_r: int = 16
    lora_alpha: int = 32
    max_length: int = 320
    # Learning rate per method family (LoRA), 1e-3 each: the rate at which the quick start's PRO + LoRA visibly moved
    # held-out constraint accuracy. Sweeps run as `name@multiplier` rows (`--lr-sweep 0.3,1,3`, or e.g. `--methods
    # dpo@0.3,dpo@3`); `report.py` chooses each swept method's rate on the validation half of the held-out prompts and
    # compares the chosen rates on the test half. The CPU sweep (results/cpu.json) chose 1e-3 for SFT and PRO, 3e-4 for
    # DPO on best-vs-worst pairs, 1e-3 for DPO on conditional pairs. These defaults stay 1e-3: a resumed run keeps its
    # rows only while the settings are unchanged.
    learning_rates: dict[str, float] = field(
        default_factory=lambda: {"sft": 1e-3, "dpo": 1e-3, "pro": 1e-3, "dove": 1e-3}
    )
    beta: float = 0.1
    sample_temperature: float = 1.0
    generation_batch_size: int = 16
    eval_batch_size: int = 32
    bootstrap_chunks: int = 2
    # Held-out prompts whose answers get the drift measures (KL to base, base NLL); None = all of them
    drift_prompts: int | None = 100
    seed: int = 0
    methods: tuple[str, ...] = ()
    tiny_model: bool = False


# In order of priority: a partial run gives the main comparison first
ALL_MAIN = (
    "base",
    "sft",
    "dpo",
    "pro_n4",
    "pro_n2",
    "pro_n8",
    "pro_no_sft",
    "pro_sftw_0.005",
    "dove_joint",
    "dpo_conditional",
    "pro_n3",
    "pro_no_temp",
    "pro_first_stage",
    "pro_sftw_0.0005",
    "pro_sftw_0.5",
    "pro_bootstrap",
)

# The main comparison within 90 minutes on 2 CPU cores (`--config cpu --methods core`, the committed candidates):
# base, SFT, DPO, PRO's ranking-length trend and its SFT-term ablation. From the per-method times of the full run
# (results/cpu.json): about 80 min. Its rows are the full table's rows (the same settings).
METHOD_SETS: dict[str, tuple[str, ...]] = {
    "all": ALL_MAIN,
    "core": ("base", "sft", "dpo", "pro_n2", "pro_n4", "pro_n8", "pro_no_sft"),
}

CONFIGS: dict[str, Config] = {
    # Runs the pipeline end to end on a random tiny model in seconds (for the test)
    "tiny": Config(
        num_eval=6,
        steps=2,
        batch_size=2,
        num_candidates=4,
        max_new_tokens=8,
        train_pool_factor=6.0,
        lora_r=4,
        lora_alpha=8,
        max_length=128,
        generation_batch_size=8,
        eval_batch_size=8,
        methods=("base", "sft", "pro_n4"),
        tiny_model=True,
    ),
    # SmolLM2-135M-Instruct on 2 CPU cores: all 16 methods about 3 h 10 min (the candidates sampled once, 54 min,
    # then reused from results/cpu-candidates.json); `--methods core` about 80 min
    "cpu": Config(methods=ALL_MAIN),
    # A GPU: more steps, more prompts, longer answers, a learning-rate sweep per family
    "gpu": Config(
        num_eval=500,
        steps=200,
        batch_size=8,
        max_new_tokens=96,
        max_length=512,
        generation_batch_size=64,
        eval_batch_size=64,
        bootstrap_chunks=4,
        drift_prompts=None,
        methods=ALL_MAIN,
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# Methods: one line each. A method is (family, training function with its options). New PRO losses add a line with
# their `PROConfig` option, e.g. `"pro_listmle": Method("pro", partial(train_pro, n=4, loss_type="listmle"))`.
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Method:
    family: str
    train: Callable[..., Any] | None
    note: str = ""


def _method_table() -> dict[str, Method]:
    return {
        "base": Method("base", None, "the base model, untrained"),
        "sft": Method("sft", train_sft, "TRL SFTTrainer on the best of the candidates (RAFT / best-of-n)"),
        "dpo": Method("dpo", partial(train_dpo, pairs="best_worst"), "TRL DPOTrainer, best vs worst candidate"),
        "pro_n2": Method("pro", partial(train_pro, n=2), "PRO, ranking of 2 (best, worst)"),
        "pro_n3": Method("pro", partial(train_pro, n=3), "PRO, ranking of 3 (best, worst + 1)"),
        "pro_n4": Method("pro", partial(train_pro, n=4), "PRO, ranking of 4 (best, worst + 2)"),
        "pro_n8": Method("pro", partial(train_pro, n=8), "PRO, ranking of 8"),
        "pro_no_temp": Method("pro", partial(train_pro, n=4, dynamic_temperature=False), "PRO n=4, -T"),
        "pro_no_sft": Method("pro", partial(train_pro, n=4, sft_weight=0.0), "PRO n=4, -L_SFT"),
        "pro_first_stage": Method("pro", partial(train_pro, n=4, first_stage_only=True), "PRO n=4, -L^{k>1}"),
        "pro_sftw_0.5": Method("pro", partial(train_pro, n=4, sft_weight=0.5), "PRO n=4, sft_weight 0.5"),
        "pro_sftw_0.005": Method("pro", partial(train_pro, n=4, sft_weight=0.005), "PRO n=4, sft_weight 0.005"),
        "pro_sftw_0.0005": Method("pro", partial(train_pro, n=4, sft_weight=0.0005), "PRO n=4, sft_weight 5e-4"),
        "pro_bootstrap": Method("pro", partial(train_pro, n=4, self_bootstrap=True), "PRO n=4 + self-bootstrap"),
        "dove_joint": Method("dove", partial(train_dove, joint=True), "DOVETrainer on joint pairs"),
        "dpo_conditional": Method("dpo", partial(train_dpo, pairs="conditional"), "TRL DPOTrainer, conditional"),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def build_prompt_sets(cfg: Config) -> tuple[list[dict], list[dict]]:
    """(training pool, held-out) constraint prompts over disjoint instructions, deterministic given the seed."""
    hh = load_hh_first_turns(HH_FILE)
    dove = load_dove_instructions(DOVE_FILES)
    seen: set[str] = set()
    instructions, sources = [], []
    for source, texts in (("hh-rlhf", hh), ("dove", dove)):
        for text in texts:
            if text.lower() not in seen:
                seen.add(text.lower())
                instructions.append(text)
                sources.append(source)
    order = list(range(len(instructions)))
    random.Random(cfg.seed).shuffle(order)
    rows = build_constraint_prompts(
        [instructions[i] for i in order], seed=cfg.seed, sources=[sources[i] for i in order]
    )
    num_pool = int(math.ceil(cfg.steps * cfg.batch_size * cfg.train_pool_factor))
    if cfg.num_eval + num_pool > len(rows):
        raise ValueError(f"{cfg.num_eval} held-out + {num_pool} training prompts exceed the {len(rows)} instructions")
    return rows[cfg.num_eval : cfg.num_eval + num_pool], rows[: cfg.num_eval]


def sample_candidates(
    model, tokenizer, pool: list[dict], cfg: Config, cache: Path, committed: Path | None = None
) -> list[dict]:
    """Sample and score `num_candidates` answers per training prompt, cached in `cache` (JSON).

    `committed`: candidates sampled earlier and committed with the results (read only), used when `cache` has none
    for these prompts and settings. The key holds the prompts and the sampling settings, not the model: sampling from
    another model needs `--resample`."""
    from trl_ranking.evaluation import generate_responses

    key = hashlib.sha256(
        json.dumps([r["prompt_text"] for r in pool] + [cfg.num_candidates, cfg.max_new_tokens, cfg.seed]).encode()
    ).hexdigest()[:16]
    for path in (cache, committed):
        if path is not None and path.exists():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                logger.info("Reusing %d candidate sets sampled earlier, from %s", len(stored["rows"]), path)
                return stored["rows"]
            logger.info("%s holds candidates for other prompts or settings: not used", path)
    start = time.time()
    torch.manual_seed(cfg.seed)
    texts = generate_responses(
        model,
        tokenizer,
        [r["prompt"] for r in pool],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generation_batch_size,
        progress_bar=False,
        do_sample=True,
        temperature=cfg.sample_temperature,
        top_p=1.0,
        num_return_sequences=cfg.num_candidates,
    )
    rows = []
    for index, row in enumerate(pool):
        candidates = [t.strip() for t in texts[index * cfg.num_candidates : (index + 1) * cfg.num_candidates]]
        rewards = [_reward(row, c) for c in candidates]
        rows.append(dict(row, candidates=candidates, rewards=rewards))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "seconds": time.time() - start, "rows": rows}))
    logger.info("Sampled %d x %d candidates in %.0f s", len(pool), cfg.num_candidates, time.time() - start)
    return rows


def _reward(row: dict, text: str) -> float:
    passed = check_constraints(row, text)
    return sum(passed) / len(passed)


def select_training_rows(rows: list[dict], cfg: Config) -> tuple[list[dict], dict]:
    """Keep prompts whose non-empty candidates have a reward spread (best > worst); `steps * batch_size` of them."""
    kept, no_spread, empties = [], 0, 0
    for row in rows:
        pairs = [(c, r) for c, r in zip(row["candidates"], row["rewards"]) if c]
        empties += len(row["candidates"]) - len(pairs)
        if len(pairs) < 2 or max(r for _, r in pairs) == min(r for _, r in pairs):
            no_spread += 1
            continue
        kept.append(dict(row, candidates=[c for c, _ in pairs], rewards=[r for _, r in pairs]))
    needed = cfg.steps * cfg.batch_size
    stats = {
        "sampled_prompts": len(rows),
        "prompts_without_spread": no_spread,
        "empty_candidates_dropped": empties,
        "prompts_with_spread": len(kept),
        "prompts_used": min(needed, len(kept)),
        "base_candidate_mean_reward": _mean([r for row in rows for r in row["rewards"]]),
        "best_of_n_mean_reward": _mean([max(row["rewards"]) for row in rows]),
    }
    logger.info("Training prompts: %s", stats)
    if len(kept) < needed:
        logger.warning("Only %d prompts with a reward spread for %d needed: methods repeat them", len(kept), needed)
    return kept[:needed], stats


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def ranking_of(row: dict, n: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """A ranking of `n` candidates: the best and the worst, plus `n - 2` others drawn at random; best first.

    The rankings are nested (n=2 is DPO's best-vs-worst pair), so a longer ranking only adds intermediate candidates,
    as the PRO paper's Table 2 adds candidates to the human pair.
    """
    order = sorted(range(len(row["candidates"])), key=lambda i: -row["rewards"][i])
    best, worst = order[0], order[-1]
    middle = order[1:-1]
    extra = sorted(rng.sample(middle, min(n - 2, len(middle))), key=lambda i: -row["rewards"][i])
    chosen = [best, *extra, worst]
    return [row["candidates"][i] for i in chosen], [row["rewards"][i] for i in chosen]


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    cfg: Config
    model_path: str
    tokenizer: Any
    train_rows: list[dict]
    work_dir: Path
    learning_rate: float
    device: str
    bf16: bool | None = None  # training precision; None: bf16 where the device computes it natively (logged)


def _lora(cfg: Config):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _common_args(ctx: Context, name: str) -> dict[str, Any]:
    from trl_ranking.precision import choose_bf16

    cfg = ctx.cfg
    return {
        "output_dir": str(ctx.work_dir / name),
        "max_steps": cfg.steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": ctx.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, cfg.steps // 10),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": choose_bf16(ctx.bf16, ctx.device, what=f"{name}: training"),
        "use_cpu": ctx.device == "cpu",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": cfg.max_length,
    }


def train_sft(ctx: Context, name: str):
    from trl import SFTConfig, SFTTrainer

    rows = []
    for row in ctx.train_rows:
        best = max(range(len(row["candidates"])), key=lambda i: row["rewards"][i])
        rows.append({"prompt": row["prompt"], "completion": _assistant(row["candidates"][best])})
    args = SFTConfig(**_common_args(ctx, name), completion_only_loss=True)
    return SFTTrainer(
        model=ctx.model_path,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=ctx.tokenizer,
        peft_config=_lora(ctx.cfg),
    )


def conditional_and_joint_pairs(ctx: Context) -> tuple[list[dict], list[dict], dict]:
    """The DOVE comparison's data: conditional pairs (two random candidates of one prompt, judged) and joint pairs
    (one random candidate of each of two prompts, judged), built with `trl_ranking.data`, cut to the same number."""
    from trl_ranking.data import build_conditional_pairs, build_joint_pairs

    rng = random.Random(ctx.cfg.seed + 1)
    key_to_row = {r["prompt_text"]: r for r in ctx.train_rows}

    def judge(first, second) -> int:
        # The constraint reward of each (prompt, answer) under its own prompt's constraints; ties flip with the order
        # and are dropped by the builders.
        scores = []
        for prompt, completion in (first, second):
            row = key_to_row[prompt[-1]["content"] if isinstance(prompt, list) else prompt]
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            scores.append(_reward(row, text))
        return 0 if scores[0] >= scores[1] else 1

    conditional_rows, single_rows = [], []
    for row in ctx.train_rows:
        picks = rng.sample(range(len(row["candidates"])), 4 if len(row["candidates"]) >= 4 else 2)
        for a, b in zip(picks[0::2], picks[1::2]):
            conditional_rows.append(
                {
                    "prompt": row["prompt"],
                    "completions": [_assistant(row["candidates"][a]), _assistant(row["candidates"][b])],
                }
            )
        single_rows.append({"prompt": row["prompt"], "completion": _assistant(rng.choice(row["candidates"]))})
    conditional, cond_stats = build_conditional_pairs(conditional_rows, judge, return_stats=True)
    joint, joint_stats = build_joint_pairs(
        single_rows, judge, seed=ctx.cfg.seed, num_pairs_per_row=2, return_stats=True
    )
    count = min(len(conditional), len(joint))
    conditional = conditional.shuffle(seed=ctx.cfg.seed).select(range(count))
    joint = joint.shuffle(seed=ctx.cfg.seed).select(range(count))
    stats = {"conditional": str(cond_stats), "joint": str(joint_stats), "pairs_each": count}
    logger.info("DOVE comparison pairs: %s", stats)
    return conditional.to_list(), joint.to_list(), stats


def train_dpo(ctx: Context, name: str, pairs: str):
    from trl import DPOConfig, DPOTrainer

    extra = {}
    if pairs == "best_worst":
        rows = []
        for row in ctx.train_rows:
            order = sorted(range(len(row["candidates"])), key=lambda i: -row["rewards"][i])
            rows.append(
                {
                    "prompt": row["prompt"],
                    "chosen": _assistant(row["candidates"][order[0]]),
                    "rejected": _assistant(row["candidates"][order[-1]]),
                }
            )
    else:
        rows, _, extra = conditional_and_joint_pairs(ctx)
    return _pair_trainer(ctx, DPOTrainer, DPOConfig(**_common_args(ctx, name), beta=ctx.cfg.beta), rows, extra)


def _pair_trainer(ctx: Context, trainer_class, args, rows: list[dict], extra: dict):
    """A DPO-shaped trainer (TRL's DPOTrainer or DOVETrainer) with LoRA on `rows`, its pair count recorded."""
    if not rows:
        raise RuntimeError("no preference pairs (every pair tied)")
    trainer = trainer_class(
        model=ctx.model_path,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=ctx.tokenizer,
        peft_config=_lora(ctx.cfg),
    )
    trainer.benchmark_data = {"pairs": len(rows), **extra}
    return trainer


def train_dove(ctx: Context, name: str, joint: bool = True):
    from trl_ranking import DOVEConfig, DOVETrainer

    _, rows, extra = conditional_and_joint_pairs(ctx)
    args = DOVEConfig(**_common_args(ctx, name), beta=ctx.cfg.beta, joint=joint)
    return _pair_trainer(ctx, DOVETrainer, args, rows, extra)


def train_pro(ctx: Context, name: str, n: int, self_bootstrap: bool = False, **options):
    from trl_ranking import PROConfig, PROTrainer

    rng = random.Random(ctx.cfg.seed + n)
    rows = []
    for row in ctx.train_rows:
        completions, rewards = ranking_of(row, n, rng)
        rows.append({"prompt": row["prompt"], "completions": [_assistant(c) for c in completions], "rewards": rewards})
    extra: dict[str, Any] = {}
    reward_model = None
    if self_bootstrap:
        reward_model = ConstraintScorer(ctx.train_rows)
        extra = {
            "self_bootstrap": True,
            "bootstrap_chunks": ctx.cfg.bootstrap_chunks,
            "bootstrap_num_samples": 1,
            "bootstrap_max_new_tokens": ctx.cfg.max_new_tokens,
            "bootstrap_batch_size": ctx.cfg.generation_batch_size,
        }
    args = PROConfig(**_common_args(ctx, name), **extra, **options)
    trainer = PROTrainer(
        model=ctx.model_path,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=ctx.tokenizer,
        peft_config=_lora(ctx.cfg),
        reward_model=reward_model,
    )
    trainer.benchmark_data = {"ranking_length": n, "sft_weight": args.sft_weight, **options}
    return trainer


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def drift(
    model, tokenizer, prompts: list, responses: list[str], batch_size: int, base_context, policy_is_base: bool = False
) -> dict[str, list]:
    """Per answer: mean per-token KL(policy || base) over its tokens, the base model's mean NLL of it, its length.

    `base_context()` is a context manager under which `model` is the base model (the LoRA adapter switched off);
    with `policy_is_base` the KL is 0 by definition and only the base pass runs. Rows are left-padded so that every
    answer ends at the last position, and the head runs only on the last `max answer length + 1` positions (the
    prompts' logits are never needed): the cost is the two decoder passes, not a full-vocabulary head everywhere.
    """
    device = next(model.parameters()).device
    encoded = []
    for prompt, response in zip(prompts, responses):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            response_ids = response_ids + [tokenizer.eos_token_id]
        encoded.append((prompt_ids, response_ids))
    kl, nll, tokens = [], [], []
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(p) + len(r) for p, r in batch)
        keep = max(len(r) for _, r in batch) + 1  # the logits at position t predict token t + 1
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        response_mask = torch.zeros((len(batch), keep - 1), dtype=torch.bool)
        for i, (p, r) in enumerate(batch):
            ids = p + r
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
            response_mask[i, keep - 1 - len(r) :] = True
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        inputs = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
            "position_ids": positions.to(device),
            "logits_to_keep": keep,
        }
        mask = response_mask.to(device)
        targets = inputs["input_ids"][:, width - keep + 1 :]
        with base_context():
            base = model(**inputs).logits[:, :-1].float().log_softmax(-1)
        if policy_is_base:
            token_kl = torch.zeros_like(mask, dtype=torch.float32)
        else:
            policy = model(**inputs).logits[:, :-1].float().log_softmax(-1)
            token_kl = (policy.exp() * (policy - base)).sum(-1)
            del policy
        token_nll = -base.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for i in range(len(batch)):
            m = mask[i]
            count = int(m.sum())
            kl.append(float(token_kl[i][m].sum() / count))
            nll.append(float(token_nll[i][m].sum() / count))
            tokens.append(count - 1 if tokenizer.eos_token_id is not None else count)
        del base
    return {"kl": kl, "base_nll": nll, "tokens": tokens}


def evaluate(
    model, tokenizer, eval_rows: list[dict], cfg: Config, base_context, policy_is_base: bool = False
) -> dict[str, Any]:
    from trl_ranking.evaluation import generate_responses

    start = time.time()
    responses = generate_responses(
        model,
        tokenizer,
        [r["prompt"] for r in eval_rows],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.eval_batch_size,
        progress_bar=False,
    )
    responses = [r.strip() for r in responses]
    passes = [check_constraints(row, text) for row, text in zip(eval_rows, responses)]
    per_kind: dict[str, list[int]] = {}
    for row, passed in zip(eval_rows, passes):
        for instruction_id, ok in zip(row["instruction_id_list"], passed):
            per_kind.setdefault(instruction_id, []).append(int(ok))
    # Drift on the first `drift_prompts` held-out prompts: two decoder passes per answer cost more than generating it
    num_drift = len(eval_rows) if cfg.drift_prompts is None else min(cfg.drift_prompts, len(eval_rows))
    d = drift(
        model,
        tokenizer,
        [r["prompt"] for r in eval_rows[:num_drift]],
        responses[:num_drift],
        cfg.eval_batch_size,
        base_context,
        policy_is_base,
    )
    answer_tokens = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in responses]
    rewards = [sum(p) / len(p) for p in passes]
    prompt_pass = [float(all(p)) for p in passes]
    return {
        "metrics": {
            "prompt_accuracy": _mean(prompt_pass),
            "instruction_accuracy": sum(map(sum, passes)) / sum(map(len, passes)),
            "mean_reward": _mean(rewards),
            "kl_to_base": _mean(d["kl"]),
            "base_nll": _mean(d["base_nll"]),
            "tokens": _mean([float(t) for t in answer_tokens]),
            "drift_prompts": num_drift,
            "words": _mean([float(len(t.split())) for t in responses]),
            "empty_answers": sum(not t for t in responses),
        },
        "per_kind": {k: _mean([float(x) for x in v]) for k, v in sorted(per_kind.items())},
        "per_prompt": {
            "reward": rewards,
            "prompt_pass": prompt_pass,
            "instructions_passed": [sum(p) for p in passes],
            "kl": d["kl"],
            "base_nll": d["base_nll"],
            "tokens": answer_tokens,
        },
        "samples": [
            {"prompt": eval_rows[i]["prompt_text"], "answer": responses[i], "passed": passes[i]} for i in range(3)
        ],
        "eval_seconds": time.time() - start,
    }


def _log_summary(history: list[dict]) -> dict[str, Any]:
    """First, last and mean of the logged training values (losses, PRO's loss/ranking and loss/sft, DPO's margins)."""
    keys = ("loss", "loss/ranking", "loss/sft", "rewards/margins", "rewards/accuracies", "ranking/accuracy")
    summary: dict[str, Any] = {}
    for key in keys:
        values = [entry[key] for entry in history if key in entry]
        if values:
            summary[key] = {"first": values[0], "last": values[-1], "mean": _mean(values)}
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument(
        "--model", default=None, help="Checkpoint directory (model + tokenizer). Required unless tiny."
    )
    parser.add_argument(
        "--methods", default=None,
        help=f"Comma-separated method names, or a set: {', '.join(METHOD_SETS)} (default: the config's).",
    )  # fmt: skip
    parser.add_argument(
        "--output", default=None, help="Results JSON (default benchmarks/learning/results/<config>.json)"
    )
    parser.add_argument(
        "--work-dir", default=None, help="Caches and trainer outputs (default outputs/learning/<config>)"
    )
    parser.add_argument("--steps", type=int, default=None, help="Override the config's training steps.")
    parser.add_argument("--num-eval", type=int, default=None, help="Override the number of held-out prompts.")
    parser.add_argument(
        "--lr-sweep", default=None, help="Comma-separated multipliers of each family's learning rate (e.g. 0.5,1,2)."
    )
    parser.add_argument(
        "--resample", action="store_true",
        help="Sample the candidates again instead of reusing results/<config>-candidates.json (for another model).",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto",
        help="Training precision. auto (default): bf16 autocast where the device computes bf16 natively (Ampere+ "
        "GPUs; CPUs with AMX or AVX512-BF16), float32 elsewhere. Evaluation runs in float32 either way.",
    )  # fmt: skip
    parser.add_argument(
        "--model-note", default="", help="Free text stored with the results (e.g. the weights' origin)."
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = dataclasses.replace(CONFIGS[args.config])
    if args.steps:
        cfg.steps = args.steps
    if args.num_eval:
        cfg.num_eval = args.num_eval
    methods_table = _method_table()
    if args.methods in METHOD_SETS:
        names = list(METHOD_SETS[args.methods])
    else:
        names = args.methods.split(",") if args.methods else list(cfg.methods)
    unknown = [n for n in names if n.split("@")[0] not in methods_table]
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}; known: {sorted(methods_table)}")
    if args.lr_sweep:
        multipliers = [float(x) for x in args.lr_sweep.split(",")]
        names = [n if methods_table[n].family == "base" else f"{n}@{m:g}" for n in names for m in multipliers]
        names = list(dict.fromkeys(names))

    work_dir = Path(args.work_dir or REPO / "outputs" / "learning" / args.config)
    work_dir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output or RESULTS / f"{args.config}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from trl_ranking.precision import choose_bf16, precision_note

    requested = {"auto": None, "bf16": True, "fp32": False}[args.precision]
    bf16 = choose_bf16(requested, device, what="learning benchmark: training")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.tiny_model:
        from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm

        model_path = args.model or str(work_dir / "tiny-model")
        if not Path(model_path, "config.json").exists():
            make_tiny_causal_lm(model_path)
            load_bundled_tokenizer(chat_template=True).save_pretrained(model_path)
    else:
        if not args.model:
            raise SystemExit("--model is required (a checkpoint directory with its tokenizer)")
        model_path = args.model
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def load_base():
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)

    pool, eval_rows = build_prompt_sets(cfg)
    results: dict[str, Any] = {
        "config": args.config,
        "settings": dataclasses.asdict(cfg),
        "model": model_path,
        "model_note": args.model_note,
        "hardware": {
            "device": device,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "platform": platform.platform(),
        },
        "versions": _versions(),
        # Training in bf16 autocast (weights, LoRA adapters and optimizer state stay float32) or float32; the held-out
        # evaluation (generation, KL, NLL) runs the float32 weights in float32 either way
        "precision": f"training: {precision_note(bf16)}; evaluation: float32",
        "bf16": bf16,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "eval_prompts": len(eval_rows),
        "eval_sources": {s: sum(r.get("source") == s for r in eval_rows) for s in ("hh-rlhf", "dove")},
        "methods": {},
    }
    if output.exists():  # resume: keep finished methods of the same configuration
        previous = json.loads(output.read_text())
        same_run = previous.get("config") == args.config and previous.get("settings") == json.loads(
            json.dumps(results["settings"])
        )
        # Results from before the `precision` field trained in bf16 on CUDA and in float32 on CPUs
        previous_bf16 = previous.get("bf16", previous.get("hardware", {}).get("device") == "cuda")
        if same_run and previous_bf16 != bf16 and previous.get("methods"):
            # Never mix the precisions in one results file, nor overwrite its finished methods for the other one
            raise SystemExit(
                f"{output} holds methods trained in {'bf16' if previous_bf16 else 'float32'}; this run would train in "
                f"{'bf16' if bf16 else 'float32'}. Pass --precision {'bf16' if previous_bf16 else 'fp32'} to add to "
                "it, or another --output."
            )
        if same_run:
            results["methods"] = previous.get("methods", {})
            results["data"] = previous.get("data")
            # one results file across resumed runs: the first start, and the weights' note unless a new one is given
            results["started"] = previous.get("started", results["started"])
            results["model_note"] = args.model_note or previous.get("model_note", "")
            logger.info("Resuming %s: %d methods already done", output, len(results["methods"]))

    def save():
        results["updated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        output.write_text(json.dumps(results, indent=1))

    base_model = load_base()
    committed = None if args.resample else RESULTS / f"{args.config}-candidates.json"
    candidates = sample_candidates(base_model, tokenizer, pool, cfg, work_dir / "candidates.json", committed)
    train_rows, data_stats = select_training_rows(candidates, cfg)
    results["data"] = data_stats
    save()

    for name in names:
        if name in results["methods"] and "error" not in results["methods"][name]:
            logger.info("%s: already done, skipping", name)
            continue
        method_name, _, multiplier = name.partition("@")
        method = methods_table[method_name]
        entry: dict[str, Any] = {"family": method.family, "note": method.note}
        logger.info("=== %s (%s) ===", name, method.note)
        try:
            if method.train is None:
                model = base_model
                entry.update(evaluate(model, tokenizer, eval_rows, cfg, _nullcontext, policy_is_base=True))
            else:
                lr = cfg.learning_rates[method.family] * (float(multiplier) if multiplier else 1.0)
                ctx = Context(cfg, model_path, tokenizer, train_rows, work_dir / "runs", lr, device, bf16)
                torch.manual_seed(cfg.seed)
                start = time.time()
                trainer = method.train(ctx, name)
                trainer.train()
                entry["train_seconds"] = time.time() - start
                entry["learning_rate"] = lr
                entry["steps"] = trainer.state.global_step
                entry["train_log"] = _log_summary(trainer.state.log_history)
                entry["data"] = getattr(trainer, "benchmark_data", {})
                model = trainer.model
                entry.update(evaluate(model, tokenizer, eval_rows, cfg, model.disable_adapter))
                del trainer, model
                gc.collect()
        except Exception as error:  # keep the other methods' rows
            logger.exception("%s failed", name)
            entry["error"] = f"{type(error).__name__}: {error}"
        results["methods"][name] = entry
        save()
        if "metrics" in entry:
            m = entry["metrics"]
            logger.info(
                "%s: prompt acc %.3f, instruction acc %.3f, reward %.3f, KL %.4f, base NLL %.3f, tokens %.1f",
                name,
                m["prompt_accuracy"],
                m["instruction_accuracy"],
                m["mean_reward"],
                m["kl_to_base"],
                m["base_nll"],
                m["tokens"],
            )
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save()
    return results


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _versions() -> dict[str, str]:
    import transformers
    import trl

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:  # pragma: no cover
        pass
    return versions


if __name__ == "__main__":
    main()
