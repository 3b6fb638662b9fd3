"""Tables (markdown) and plots (PNG) from the JSON results of `run.py` (and of `human.py`).

    python benchmarks/learning/report.py benchmarks/learning/results/cpu.json --plots benchmarks/learning/results \
        --readme benchmarks/learning/README.md

With `--readme`, the text between `<!-- results:<config>:start -->` and `<!-- results:<config>:end -->` in the README is
replaced by the tables; without it they are printed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np


RESAMPLES = 2000


def bootstrap_ci(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (resampling prompts)."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(RESAMPLES, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_diff(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the same prompts, with its 95% paired bootstrap interval."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low, high = bootstrap_ci(diff.tolist(), seed)
    return float(diff.mean()), low, high


def _fmt_diff(d: tuple[float, float, float] | None) -> str:
    if d is None:
        return ""
    mean, low, high = d
    mark = "" if low <= 0 <= high else " *"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def _done(results: dict, name: str) -> bool:
    return "metrics" in results["methods"].get(name, {})


def _swept(name: str) -> tuple[str, float]:
    """`("dpo", 0.3)` for a sweep row `dpo@0.3`; `(name, 1.0)` for a row at the family's configured learning rate."""
    method, _, multiplier = name.partition("@")
    return method, float(multiplier) if multiplier else 1.0


def _main_rows(results: dict) -> dict[str, dict]:
    """The rows at each family's configured learning rate (the learning-rate sweep's other points have their table)."""
    return {name: entry for name, entry in results["methods"].items() if "@" not in name}


def halves(count: int) -> tuple[list[int], list[int]]:
    """Validation and test halves of the held-out prompts: even and odd positions (both keep the sources' mix)."""
    return list(range(0, count, 2)), list(range(1, count, 2))


def _mean(values: list[float], index: list[int]) -> float:
    picked = [values[i] for i in index if i < len(values)]
    return float(np.mean(picked)) if picked else float("nan")


def lr_selection(results: dict) -> dict[str, dict[str, Any]]:
    """For each method swept with `--lr-sweep` or `name@multiplier` rows: the held-out reward of each learning rate on
    the validation half, and the rate chosen on it (ties go to the configured rate, then the lower one).

    Returns `{method: {"points": {multiplier: entry}, "selected": multiplier}}`. Choosing on one half and reporting on
    the other keeps the choice from flattering the figures it is judged by.
    """
    methods = results["methods"]
    swept: dict[str, dict[float, dict]] = {}
    for name, entry in methods.items():
        if "@" in name and "metrics" in entry:
            method, multiplier = _swept(name)
            swept.setdefault(method, {})[multiplier] = entry
    selection = {}
    for method, points in swept.items():
        if "metrics" in methods.get(method, {}):
            points[1.0] = methods[method]
        validation, _ = halves(len(next(iter(points.values()))["per_prompt"]["reward"]))
        scores = {m: _mean(e["per_prompt"]["reward"], validation) for m, e in points.items()}
        best = max(scores.values())
        tied = [m for m, score in scores.items() if score >= best - 1e-12]
        selected = 1.0 if 1.0 in tied else min(tied)
        selection[method] = {"points": dict(sorted(points.items())), "selected": selected, "validation": scores}
    return selection


def lr_sweep_table(results: dict) -> str:
    """The learning-rate sweep: every rate's validation-half and test-half reward; then the tuned methods compared on
    the test half alone (paired against base and against DPO at its own tuned rate)."""
    selection = lr_selection(results)
    if not selection:
        return ""
    methods = results["methods"]
    first = next(iter(next(iter(selection.values()))["points"].values()))
    validation, test = halves(len(first["per_prompt"]["reward"]))

    def on_test(entry: dict) -> list[float]:
        return [entry["per_prompt"]["reward"][i] for i in test]

    lines = [
        f"Learning rates swept per method (validation half: the {len(validation)} held-out prompts at even positions; "
        f"test half: the {len(test)} at odd positions). The rate is chosen on the validation half; the test half "
        "judges it.",
        "",
        "| method | LR multiplier | learning rate | validation reward | test reward [95% CI] | KL to base /token "
        "(test half) | answer tokens | train s | chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, info in selection.items():
        for multiplier, entry in info["points"].items():
            test_rewards = on_test(entry)
            low, high = bootstrap_ci(test_rewards)
            kl = _mean(entry["per_prompt"].get("kl", []), test)
            tokens = _mean(entry["per_prompt"].get("tokens", []), test)
            lines.append(
                f"| {method} | {multiplier:g}x | {entry.get('learning_rate', float('nan')):.1e} | "
                f"{info['validation'][multiplier]:.3f} | {np.mean(test_rewards):.3f} [{low:.3f}, {high:.3f}] | "
                f"{kl:.4f} | {tokens:.1f} | {entry.get('train_seconds', 0):.0f} | "
                f"{'**yes**' if multiplier == info['selected'] else ''} |"
            )

    def tuned(method: str) -> dict | None:
        if method in selection:
            return selection[method]["points"][selection[method]["selected"]]
        return methods.get(method) if "metrics" in methods.get(method, {}) else None

    base, dpo = tuned("base"), tuned("dpo")
    lines += [
        "",
        "Each swept method at its chosen rate, on the test half only (paired differences over the same prompts, "
        "marked * when their interval excludes 0):",
        "",
        "| method | chosen LR | prompt acc | test reward [95% CI] | vs base (paired) | vs DPO, tuned (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for method in ["base", *selection]:
        entry = tuned(method)
        if entry is None:
            continue
        rewards = on_test(entry)
        low, high = bootstrap_ci(rewards)
        vs_base = paired_diff(rewards, on_test(base)) if base and method != "base" else None
        vs_dpo = paired_diff(rewards, on_test(dpo)) if dpo and method not in ("base", "dpo") else None
        rate = "" if method == "base" else f"{entry.get('learning_rate', float('nan')):.1e}"
        lines.append(
            f"| {method} | {rate} | {_mean(entry['per_prompt']['prompt_pass'], test):.3f} | {np.mean(rewards):.3f} "
            f"[{low:.3f}, {high:.3f}] | {_fmt_diff(vs_base)} | {_fmt_diff(vs_dpo)} |"
        )
    return "\n".join(lines)


def main_table(results: dict) -> str:
    methods = _main_rows(results)
    base = methods.get("base", {}).get("per_prompt", {}).get("reward")
    dpo = methods.get("dpo", {}).get("per_prompt", {}).get("reward")
    lines = [
        "| method | what | prompt acc | instr. acc | mean reward [95% CI] | vs base (paired) | vs DPO (paired) | "
        "KL to base /token | base NLL /token | answer tokens | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in methods.items():
        if "metrics" not in entry:
            lines.append(f"| {name} | {entry.get('note', '')} | failed: {entry.get('error', '?')[:80]} |||||||||")
            continue
        m, rewards = entry["metrics"], entry["per_prompt"]["reward"]
        low, high = bootstrap_ci(rewards)
        vs_base = paired_diff(rewards, base) if base and name != "base" else None
        vs_dpo = paired_diff(rewards, dpo) if dpo and name not in ("dpo", "base") else None
        lines.append(
            f"| {name} | {entry.get('note', '')} | {m['prompt_accuracy']:.3f} | {m['instruction_accuracy']:.3f} | "
            f"{m['mean_reward']:.3f} [{low:.3f}, {high:.3f}] | {_fmt_diff(vs_base)} | {_fmt_diff(vs_dpo)} | "
            f"{m['kl_to_base']:.4f} | {m['base_nll']:.3f} | {m['tokens']:.1f} | {entry.get('train_seconds', 0):.0f} |"
        )
    return "\n".join(lines)


def balance_table(results: dict) -> str:
    """PRO's two loss terms as logged in training (mean over steps), with the held-out reward."""
    lines = [
        "| method | n | sft_weight | loss/ranking (mean) | loss/sft (mean) | sft / ranking | held-out reward |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in _main_rows(results).items():
        log = entry.get("train_log", {})
        if "loss/ranking" not in log or "metrics" not in entry:
            continue
        ranking, sft = log["loss/ranking"]["mean"], log["loss/sft"]["mean"]
        data = entry.get("data", {})
        ratio = sft / ranking if ranking else float("nan")
        lines.append(
            f"| {name} | {data.get('ranking_length', '')} | {data.get('sft_weight', '')} | {ranking:.3f} | "
            f"{sft:.3f} | {ratio:.1f} | {entry['metrics']['mean_reward']:.3f} |"
        )
    return "\n".join(lines)


def per_kind_table(results: dict) -> str:
    kinds = sorted({k for e in results["methods"].values() for k in e.get("per_kind", {})})
    names = [n for n in _main_rows(results) if _done(results, n)]
    if not kinds or not names:
        return ""
    short = [k.split(":")[1] for k in kinds]
    lines = ["| method | " + " | ".join(short) + " |", "|---|" + "---|" * len(kinds)]
    for name in names:
        per = results["methods"][name]["per_kind"]
        lines.append(f"| {name} | " + " | ".join(f"{per.get(k, float('nan')):.2f}" for k in kinds) + " |")
    return "\n".join(lines)


def data_summary(results: dict) -> str:
    s = results.get("settings", {})
    d = results.get("data") or {}
    hw = results.get("hardware", {})
    return (
        f"Model: `{results.get('model')}` {results.get('model_note', '')}. Held-out prompts: {results.get('eval_prompts')} "
        f"({results.get('eval_sources')}). Training: {d.get('prompts_used')} prompts with a reward spread (of "
        f"{d.get('sampled_prompts')} sampled; {d.get('prompts_without_spread')} had all {s.get('num_candidates')} "
        f"candidates tied), {s.get('steps')} steps x {s.get('batch_size')} rows, LoRA r={s.get('lora_r')} on all linear "
        f"layers, learning rates {s.get('learning_rates')}, beta {s.get('beta')}; answers up to "
        f"{s.get('max_new_tokens')} new tokens. Base candidates' mean reward {d.get('base_candidate_mean_reward', 0):.3f}, "
        f"best-of-{s.get('num_candidates')} {d.get('best_of_n_mean_reward', 0):.3f}. Hardware: {hw.get('device')}, "
        f"{hw.get('cpu_count')} CPUs, {hw.get('torch_threads')} torch threads; {results.get('versions')}. "
        f"Run {results.get('started')} to {results.get('finished', results.get('updated'))}."
    )


def human_table(results: dict) -> str:
    lines = [
        "| data | method | train rows | held-out pairs | accuracy, own score [95% CI] | own score | mean log-prob acc. | "
        "log-ratio acc. | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, block in results.get("datasets", {}).items():
        data = block.get("data", {})
        for name, entry in block.get("methods", {}).items():
            if "accuracy" not in entry:
                lines.append(f"| {dataset} | {name} | failed: {entry.get('error', '?')[:80]} |||||||")
                continue
            low, high = bootstrap_ci(entry["per_pair"])
            by = entry.get("accuracy_by_score", {})
            ratio = "(= 0: no adapter)" if name == "base" else f"{by.get('log_ratio', float('nan')):.3f}"
            lines.append(
                f"| {dataset} | {name} | {data.get('train')} | {len(entry['per_pair'])} | {entry['accuracy']:.3f} "
                f"[{low:.3f}, {high:.3f}] | {entry['score']} | {by.get('mean_logp', float('nan')):.3f} | {ratio} | "
                f"{entry.get('train_seconds', 0):.0f} |"
            )
    notes = [f"{name}: {block.get('data')}" for name, block in results.get("datasets", {}).items()]
    return (
        "\n".join(lines)
        + "\n\nData: "
        + "; ".join(notes)
        + f". Model: `{results.get('model')}` "
        + (
            f"{results.get('model_note', '')}; settings {results.get('settings', {}).get('steps')} steps, LoRA r="
            f"{results.get('settings', {}).get('lora_r')}, learning rates {results.get('settings', {}).get('learning_rates')}."
        )
    )


def plots(results: dict, folder: Path, prefix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    methods = {n: e for n, e in _main_rows(results).items() if "metrics" in e}
    written = []

    lengths = [(int(n.split("_n")[1]), n) for n in methods if re.fullmatch(r"pro_n\d+", n)]
    if lengths:
        lengths.sort()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [n for n, _ in lengths]
        ys = [methods[name]["metrics"]["mean_reward"] for _, name in lengths]
        cis = [bootstrap_ci(methods[name]["per_prompt"]["reward"]) for _, name in lengths]
        ax.errorbar(
            xs,
            ys,
            yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
            marker="o",
            capsize=3,
            label="PRO",
        )
        for other, style in (("base", ":"), ("sft", "--"), ("dpo", "-.")):
            if other in methods:
                ax.axhline(methods[other]["metrics"]["mean_reward"], linestyle=style, color="gray", label=other)
        ax.set_xlabel("ranking length n")
        ax.set_ylabel("held-out mean reward")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
        ax.set_title("Reward vs ranking length (PRO Table 2, small)", fontsize=9)
        fig.tight_layout()
        path = folder / f"{prefix}_reward_vs_ranking_length.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, entry in methods.items():
        m = entry["metrics"]
        ax.scatter(m["kl_to_base"], m["mean_reward"], s=20)
        ax.annotate(name, (m["kl_to_base"], m["mean_reward"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("per-token KL(policy || base) on held-out answers")
    ax.set_ylabel("held-out mean reward")
    ax.set_title("Reward vs drift per method", fontsize=9)
    fig.tight_layout()
    path = folder / f"{prefix}_reward_vs_drift.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def render(results: dict) -> str:
    if "datasets" in results:
        return human_table(results) + "\n"
    parts = [
        data_summary(results),
        "",
        "Constraint following on held-out prompts (greedy answers). Intervals: 95% bootstrap over prompts; paired "
        "differences marked * when their interval excludes 0.",
        "",
        main_table(results),
        "",
        "PRO's two loss terms (training means) and the held-out reward:",
        "",
        balance_table(results),
        "",
        "Pass rate per constraint kind:",
        "",
        per_kind_table(results),
    ]
    sweep = lr_sweep_table(results)
    if sweep:
        parts += ["", sweep]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="A results JSON of run.py or human.py")
    parser.add_argument("--plots", default=None, help="Folder for the PNG plots (none if omitted)")
    parser.add_argument("--readme", default=None, help="README whose results block for this config is replaced")
    args = parser.parse_args(argv)
    results: dict[str, Any] = json.loads(Path(args.results).read_text())
    text = render(results)
    config = results.get("config", "human")
    if args.plots and "methods" in results:
        for path in plots(results, Path(args.plots), config):
            print(f"wrote {path}")
    if args.readme:
        readme = Path(args.readme)
        start, end = f"<!-- results:{config}:start -->", f"<!-- results:{config}:end -->"
        content = readme.read_text()
        if start not in content or end not in content:
            raise SystemExit(f"{readme} has no {start} ... {end} block")
        before, rest = content.split(start, 1)
        _, after = rest.split(end, 1)
        readme.write_text(before + start + "\n" + text + end + after)
        print(f"updated {readme}")
    else:
        print(text)
    return text


if __name__ == "__main__":
    main()
