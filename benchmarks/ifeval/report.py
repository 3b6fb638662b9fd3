"""The IFEval table from the stored runs (`benchmarks/ifeval/results/*.json`), every answer rescored.

    python benchmarks/ifeval/report.py benchmarks/ifeval/results [--markdown benchmarks/ifeval/RESULTS.md]

Per method: IFEval's four metrics and their average (mean and spread over seeds where there are several), the
average's paired bootstrap interval over prompts against the base model and against DPO (the same prompts resampled
for both runs: 2,000 resamples, 95%), answer length and repetition, and the instruction types that moved most.
Every figure is recomputed from the stored answers with `score_ifeval`, so the table cannot disagree with them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path


METRICS = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")


def _per_prompt(result) -> dict[str, tuple[float, float, int, int, int]]:
    """key -> (prompt strict, prompt loose, instructions followed strict, loose, instructions)."""
    return {
        str(p.key): (float(p.follow_all_strict), float(p.follow_all_loose), sum(p.follow_strict), sum(p.follow_loose),
                     len(p.follow_strict))
        for p in result.per_prompt
    }


def _average(rows: list[tuple[float, float, int, int, int]]) -> float:
    """IFEval's average of the four metrics over these prompts (instruction-level pooled, as the official code)."""
    n = len(rows)
    instructions = sum(r[4] for r in rows)
    return (sum(r[0] for r in rows) / n + sum(r[2] for r in rows) / instructions + sum(r[1] for r in rows) / n
            + sum(r[3] for r in rows) / instructions) / 4


def paired_interval(a: dict, b: dict, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """average(a) - average(b) and its 95% paired bootstrap interval over the prompts both answered."""
    keys = sorted(set(a) & set(b))
    rng = random.Random(seed)
    diff = _average([a[k] for k in keys]) - _average([b[k] for k in keys])
    draws = []
    for _ in range(resamples):
        sample = [keys[rng.randrange(len(keys))] for _ in keys]
        draws.append(_average([a[k] for k in sample]) - _average([b[k] for k in sample]))
    draws.sort()
    return diff, draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]


def load_runs(results_dir: Path) -> dict[str, list[dict]]:
    from trl_ranking.evaluation.ifeval import load_ifeval_prompts, score_ifeval

    prompts = {str(row["key"]): row for row in load_ifeval_prompts()}
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if "answers" not in record or "method" not in record:
            continue
        rows = [prompts[key] for key in record["answers"]]
        result = score_ifeval(rows, {row["key"]: record["answers"][str(row["key"])] for row in rows})
        stored = record.get("metrics", {})
        for name in METRICS:  # the stored figures are the rescored ones
            if name in stored and abs(stored[name] - getattr(result, name)) > 1e-12:
                raise ValueError(f"{path}: stored {name} {stored[name]} != rescored {getattr(result, name)}")
        runs[record["method"]].append({"record": record, "result": result, "per_prompt": _per_prompt(result)})
    return runs


def table(runs: dict[str, list[dict]]) -> str:
    order = [m for m in ("base", "sft", "dpo", "pro_n2", "pro_n4", "pro_n4_nosft", "listmle") if m in runs]
    order += [m for m in runs if m not in order]
    lines = [
        "| method | seeds | prompt strict | inst strict | prompt loose | inst loose | **average** | vs base [95% CI] "
        "| vs DPO [95% CI] | words (median) | repeated 4-grams | empty |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pooled(method: str) -> dict:
        # seeds averaged per prompt for the paired comparison
        per = [run["per_prompt"] for run in runs[method]]
        keys = set.intersection(*(set(p) for p in per))
        return {k: tuple(statistics.mean(p[k][i] for p in per) for i in range(5)) for k in keys}

    for method in order:
        seeds = runs[method]
        cells = []
        for name in (*METRICS, "average"):
            values = [run["result"].metrics()[name] * 100 for run in seeds]
            text = f"{statistics.mean(values):.1f}"
            if len(values) > 1:
                text += f" ± {statistics.stdev(values):.1f}"
            cells.append(f"**{text}**" if name == "average" else text)
        comparisons = []
        for other in ("base", "dpo"):
            if other in runs and other != method:
                diff, low, high = paired_interval(pooled(method), pooled(other))
                comparisons.append(f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
            else:
                comparisons.append("–")
        stats = seeds[0]["result"].answer_stats
        lines.append(
            f"| {method} | {len(seeds)} | " + " | ".join(cells) + " | " + " | ".join(comparisons)
            + f" | {stats['median_words']:.0f} | {stats['repeated_4gram_share']:.3f} | {stats['empty_share']:.3f} |"
        )
    return "\n".join(lines)


def type_gains(runs: dict[str, list[dict]], top: int = 5) -> str:
    """The instruction types whose strict accuracy moved most against the base model, per method."""
    if "base" not in runs:
        return ""
    base = runs["base"][0]["result"].per_type
    lines = []
    for method, seeds in runs.items():
        if method == "base":
            continue
        per_type = seeds[0]["result"].per_type
        moves = sorted(((per_type[t]["strict"] - base[t]["strict"], t) for t in per_type if t in base), reverse=True)
        best = ", ".join(f"{t} {100 * d:+.0f}" for d, t in moves[:top])
        worst = ", ".join(f"{t} {100 * d:+.0f}" for d, t in moves[-top:][::-1])
        lines.append(f"- **{method}**: up: {best}; down: {worst}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", nargs="?", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    runs = load_runs(Path(args.results_dir))
    if not runs:
        print(f"no runs in {args.results_dir}", file=sys.stderr)
        return ""
    text = table(runs) + "\n\nStrict accuracy per instruction type against the base model (points):\n\n"
    text += type_gains(runs)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
