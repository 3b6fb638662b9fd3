"""Human preferences, held out: does training on human pairs/rankings teach a model to prefer the preferred answer?

Data (real, in the repository): HH-RLHF harmless-base pairs, split into training and held-out pairs by prompt (first
human turn, so no held-out prompt is seen in training); and the sparse-feedback rankings (19 instructions with 4-5
Alpaca-7B answers rated 1-7 by humans: tiny, split 13 train / 6 held-out by instruction).

Methods (LoRA, same steps): base; SFT on the chosen / top answer (TRL `SFTTrainer`); DPO (TRL `DPOTrainer`, chosen vs
rejected, or best vs worst of a ranking); PRO (`PROTrainer`, the pair, or the whole ranking with its ratings).
Each method is scored with its own implicit score on held-out pairs (every pair of a held-out ranking whose ratings
differ): the mean log-probability of the answer (PRO's score, also used for base and SFT) and, for DPO, the log-ratio
`log pi(y|x) - log pi_ref(y|x)` (summed over tokens; the reference is the base model, the adapter switched off).
Preference accuracy = share of held-out pairs whose preferred answer scores higher. Every method also gets the other
score, for comparison.

    python benchmarks/learning/human.py --model /work/cache/smollm2-135m-instruct \
        --output benchmarks/learning/results/human.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from run import DATA, Config, Context, _assistant, _common_args, _lora, _versions  # noqa: E402


logger = logging.getLogger("learning.human")

CONFIGS = {
    "tiny": Config(steps=2, batch_size=2, lora_r=4, lora_alpha=8, max_length=128, eval_batch_size=8, tiny_model=True),
    "cpu": Config(steps=30, batch_size=4, max_length=256, eval_batch_size=16),
    "gpu": Config(steps=200, batch_size=8, max_length=512, eval_batch_size=64),
}
NUM_HELDOUT = {"tiny": 8, "cpu": 200, "gpu": 400}
METHODS = ("base", "sft", "dpo", "pro")


def _token_length(tokenizer, prompt, response: str) -> int:
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text + response, add_special_tokens=False)["input_ids"]) + 1


def hh_split(tokenizer, cfg: Config, num_heldout: int) -> tuple[list[dict], list[dict], dict]:
    """HH-RLHF pairs as rankings of 2, split by first human turn; pairs longer than `max_length` left out (counted)."""
    from trl_ranking.data import load_hh_rlhf

    pairs = load_hh_rlhf(DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz", conversational=True)
    rows, too_long, empty = [], 0, 0
    for pair in pairs:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        if not chosen.strip() or not rejected.strip() or chosen == rejected:
            empty += 1
            continue
        if max(_token_length(tokenizer, pair["prompt"], t) for t in (chosen, rejected)) > cfg.max_length:
            too_long += 1
            continue
        rows.append({"prompt": pair["prompt"], "completions": [chosen, rejected], "rewards": [1.0, 0.0]})

    # split by the first human turn's hash: the held-out prompts are never trained on
    def bucket(row):
        return int(hashlib.sha256(row["prompt"][0]["content"].encode()).hexdigest(), 16) % 1000

    rows.sort(key=bucket)
    heldout_keys = {r["prompt"][0]["content"] for r in rows[:num_heldout]}
    heldout = [r for r in rows if r["prompt"][0]["content"] in heldout_keys][:num_heldout]
    train = [r for r in rows if r["prompt"][0]["content"] not in heldout_keys]
    random.Random(cfg.seed).shuffle(train)
    train = train[: cfg.steps * cfg.batch_size]
    stats = {"pairs": len(pairs), "too_long": too_long, "empty_or_equal": empty, "train": len(train)}
    stats["heldout"] = len(heldout)
    return train, heldout, stats


def sparse_split(cfg: Config) -> tuple[list[dict], list[dict], dict]:
    from trl_ranking.data import load_sparse_feedback_rankings

    def prompt_format(instruction: str, input_text: str):
        return [{"role": "user", "content": instruction + (f"\n\n{input_text}" if input_text else "")}]

    rankings = load_sparse_feedback_rankings(DATA / "sparse-feedback", prompt_format=prompt_format).to_list()
    rows = [{"prompt": r["prompt"], "completions": r["completions"], "rewards": r["rewards"]} for r in rankings]
    random.Random(cfg.seed).shuffle(rows)
    heldout, train = rows[:6], rows[6:]
    return train, heldout, {"rankings": len(rows), "train": len(train), "heldout": len(heldout)}


def heldout_pairs(rows: list[dict]) -> list[tuple[Any, str, str]]:
    """Every (prompt, preferred, other) pair of the held-out rankings whose rewards differ."""
    pairs = []
    for row in rows:
        c, r = row["completions"], row["rewards"]
        for i in range(len(c)):
            for j in range(i + 1, len(c)):
                if r[i] != r[j]:
                    pairs.append((row["prompt"], c[i], c[j]) if r[i] > r[j] else (row["prompt"], c[j], c[i]))
    return pairs


@torch.no_grad()
def sequence_logps(model, tokenizer, prompts, responses, batch_size: int, max_length: int) -> tuple[list, list]:
    """Summed log-probability of each response (EOS included) given its chat-templated prompt, and its token count."""
    device = next(model.parameters()).device
    encoded = []
    for prompt, response in zip(prompts, responses):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        p = tokenizer(text, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        keep = max(1, max_length - len(r))
        encoded.append((p[-keep:], r[: max_length - 1]))
    sums, counts = [], []
    model.eval()
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(p) + len(r) for p, r in batch)
        keep = max(len(r) for _, r in batch) + 1
        # Left-padded, so that every response lies in the last `keep` positions: only those logits are built (the
        # vocabulary is ~50k: full logits of long rows would take gigabytes)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for i, (p, r) in enumerate(batch):
            ids[i, width - len(p) - len(r) :] = torch.tensor(p + r)
            attention[i, width - len(p) - len(r) :] = 1
            mask[i, width - len(r) :] = True
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        ids, attention, mask, positions = (t.to(device) for t in (ids, attention, mask, positions))
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep).logits
        logps = logits[:, :-1].float().log_softmax(-1)  # position t predicts token t + 1
        targets, target_mask = ids[:, width - keep + 1 :], mask[:, width - keep + 1 :]
        token = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * target_mask
        sums += token.sum(-1).tolist()
        counts += target_mask.sum(-1).tolist()
        del logits, logps
    return sums, counts


def score_pairs(model, tokenizer, pairs, cfg: Config, base_context) -> dict[str, list[float]]:
    prompts = [p for p, _, _ in pairs] * 2
    responses = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    sums, counts = sequence_logps(model, tokenizer, prompts, responses, cfg.eval_batch_size, cfg.max_length)
    with base_context():
        ref_sums, _ = sequence_logps(model, tokenizer, prompts, responses, cfg.eval_batch_size, cfg.max_length)
    n = len(pairs)
    mean = [s / c for s, c in zip(sums, counts)]
    ratio = [s - r for s, r in zip(sums, ref_sums)]
    return {
        "mean_logp": [float(mean[i] > mean[n + i]) for i in range(n)],
        "log_ratio": [float(ratio[i] > ratio[n + i]) for i in range(n)],
    }


def train_method(name: str, ctx: Context, rows: list[dict]):
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from trl_ranking import PROConfig, PROTrainer

    common = dict(model=ctx.model_path, processing_class=ctx.tokenizer, peft_config=_lora(ctx.cfg))
    if name == "sft":
        data = [{"prompt": r["prompt"], "completion": _assistant(r["completions"][0])} for r in rows]
        args = SFTConfig(**_common_args(ctx, name), completion_only_loss=True)
        return SFTTrainer(args=args, train_dataset=Dataset.from_list(data), **common)
    if name == "dpo":
        data = [
            {
                "prompt": r["prompt"],
                "chosen": _assistant(r["completions"][0]),
                "rejected": _assistant(r["completions"][-1]),
            }
            for r in rows
        ]
        args = DPOConfig(**_common_args(ctx, name), beta=ctx.cfg.beta)
        return DPOTrainer(args=args, train_dataset=Dataset.from_list(data), **common)
    if name == "pro":
        data = [
            {"prompt": r["prompt"], "completions": [_assistant(c) for c in r["completions"]], "rewards": r["rewards"]}
            for r in rows
        ]
        args = PROConfig(**_common_args(ctx, name))
        return PROTrainer(args=args, train_dataset=Dataset.from_list(data), **common)
    raise ValueError(name)


OWN_SCORE = {"base": "mean_logp", "sft": "mean_logp", "pro": "mean_logp", "dpo": "log_ratio"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--model", default=None)
    parser.add_argument("--datasets", default="hh-rlhf,sparse-feedback")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--output", default=None)
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-note", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(CONFIGS[args.config])
    repo = Path(__file__).resolve().parents[2]
    work_dir = Path(args.work_dir or repo / "outputs" / "learning" / f"human-{args.config}")
    work_dir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output or repo / "benchmarks" / "learning" / "results" / f"human-{args.config}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = args.model
    if cfg.tiny_model and not model_path:
        from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm

        model_path = str(work_dir / "tiny-model")
        if not Path(model_path, "config.json").exists():
            make_tiny_causal_lm(model_path)
            load_bundled_tokenizer(chat_template=True).save_pretrained(model_path)
    if not model_path:
        raise SystemExit("--model is required")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    results: dict[str, Any] = {
        "config": f"human-{args.config}",
        "settings": dataclasses.asdict(cfg),
        "model": model_path,
        "model_note": args.model_note,
        "versions": _versions(),
        "hardware": {"device": device, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "datasets": {},
    }
    if output.exists():
        previous = json.loads(output.read_text())
        if previous.get("settings") == json.loads(json.dumps(results["settings"])):
            results["datasets"] = previous.get("datasets", {})

    def save():
        results["updated"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        output.write_text(json.dumps(results, indent=1))

    base_cfg = cfg
    for dataset in args.datasets.split(","):
        cfg = base_cfg
        if dataset == "hh-rlhf":
            train, heldout, stats = hh_split(tokenizer, cfg, NUM_HELDOUT[args.config])
        elif dataset == "sparse-feedback":
            train, heldout, stats = sparse_split(cfg)
            # Alpaca prompts with inputs and full answers (up to ~850 tokens): longer rows than HH's filtered pairs;
            # 13 training rankings: two passes over them, 2 rankings a step
            cfg = dataclasses.replace(
                cfg,
                max_length=max(cfg.max_length, 896),
                batch_size=2,
                steps=min(cfg.steps, -(-2 * len(train) // 2)),
                eval_batch_size=4,
            )
        else:
            raise SystemExit(f"unknown dataset {dataset}")
        pairs = heldout_pairs(heldout)
        block = results["datasets"].setdefault(dataset, {"methods": {}})
        block["data"] = dict(stats, heldout_pairs=len(pairs))
        logger.info("%s: %s", dataset, block["data"])
        for name in args.methods.split(","):
            if "accuracy" in block["methods"].get(name, {}):
                continue
            entry: dict[str, Any] = {}
            try:
                start = time.time()
                if name == "base":
                    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
                    scores = score_pairs(model, tokenizer, pairs, cfg, _Null)
                else:
                    ctx = Context(
                        cfg, model_path, tokenizer, train, work_dir / dataset, cfg.learning_rates[name], device
                    )
                    torch.manual_seed(cfg.seed)
                    trainer = train_method(name, ctx, train)
                    trainer.train()
                    entry["train_seconds"] = time.time() - start
                    entry["steps"] = trainer.state.global_step
                    model = trainer.model
                    scores = score_pairs(model, tokenizer, pairs, cfg, model.disable_adapter)
                    del trainer
                entry["score"] = OWN_SCORE[name]
                entry["per_pair"] = scores[OWN_SCORE[name]]
                entry["accuracy"] = sum(entry["per_pair"]) / len(pairs)
                entry["accuracy_by_score"] = {k: sum(v) / len(v) for k, v in scores.items()}
                entry["seconds"] = time.time() - start
                del model
                gc.collect()
                logger.info("%s %s: held-out preference accuracy %.3f (%s)", dataset, name, entry["accuracy"], entry)
            except Exception as error:
                logger.exception("%s %s failed", dataset, name)
                entry["error"] = f"{type(error).__name__}: {error}"
            block["methods"][name] = {k: v for k, v in entry.items()}
            save()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save()
    return results


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
