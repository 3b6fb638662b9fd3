"""Verifiable-constraint prompts (IFEval kind) built from real instructions, and their reward.

Each real instruction (an HH-RLHF first human turn, a DOVE Anthropic-helpful instruction) gets one or two constraints of
the IFEval kind: a word limit, a required or forbidden keyword, lowercase only, no commas, a title, a fixed ending... The
constraint text is the IFEval checker's own description, and the checks are the IFEval checkers of the `if-verifiable`
library (`if_verifiable.ifeval`, the Google Research code): nothing is checked here.

The reward of a response is the share of its prompt's constraints it meets (IFEval's strict instruction-level score);
`constraint_metrics` aggregates IFEval's prompt-level and instruction-level accuracy and the mean reward.

The catalogue keeps to checkers that need no NLTK data download (sentence counting needs `punkt_tab`, which these
machines do not have), and to constraints a small instruct model meets sometimes but not always with short answers, so
that ranking its sampled answers by this reward carries signal (see `benchmarks/learning/README.md` for the rates).

Example:

```python
>>> rows = build_constraint_prompts(["How do I boil an egg?"], seed=0)
>>> print(rows[0]["prompt_text"])
How do I boil an egg?
<BLANKLINE>
Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.
Include keywords ['time'] in the response.
>>> constraint_reward(rows[0], "<<Eggs>> Boil them for nine minutes.")  # the title, not the keyword
0.5
>>> constraint_reward(rows[0], "<<Eggs>> Boil them; time it: nine minutes.")
1.0

```
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "Install the `if-verifiable` package (`pip install if-verifiable`, or `pip install trl-ranking[eval]`)."
)


def _ifeval() -> tuple[dict[str, Any], dict[str, set[str]], Callable[..., Any]]:
    """The IFEval registry, its conflict table and the library's evaluation function (imported lazily)."""
    try:
        import langdetect
        from if_verifiable.common import evaluate_instructions
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT, conflict_make
    except ImportError as error:  # pragma: no cover - the dependency is in the `eval` and `test` extras
        raise ImportError(
            f"Constraint checking needs the IFEval checkers of `if-verifiable`. {_INSTALL_HINT}"
        ) from error
    # langdetect (used by the letter-case checkers) is random unless seeded: make rewards reproducible.
    langdetect.DetectorFactory.seed = 0
    conflicts = conflict_make({key: set(value) for key, value in INSTRUCTION_CONFLICTS.items()})
    return INSTRUCTION_DICT, conflicts, evaluate_instructions


# Common words a keyword constraint may require: frequent enough in everyday answers that a model sometimes uses them.
_REQUIRED_KEYWORDS = (
    "important",
    "example",
    "simple",
    "people",
    "time",
    "help",
    "because",
    "first",
    "best",
    "good",
    "make",
    "safe",
)
_STOPWORDS_TEXT = (
    "a an the and or but if of to in on at by for with from about into over is are was were be been being do does "
    "did have has had i you he she it we they me him her them my your his its our their this that these those what "
    "which who whom whose how why when where can could would should will shall may might must not no yes so than "
    "too very just also any some all more most other such only own same there here then out up down off again "
    "once get got know want like need tell think really please thing things way much many make made one two"
)
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _forbidden_word(rng: random.Random, instruction: str) -> dict[str, Any]:
    # A content word of the instruction itself: models tend to echo it, so avoiding it is a real choice.
    words = [w.lower() for w in re.findall(r"[A-Za-z]{4,}", instruction) if w.lower() not in _STOPWORDS]
    word = rng.choice(words) if words else rng.choice(_REQUIRED_KEYWORDS)
    return {"forbidden_words": [word]}


@dataclass(frozen=True)
class ConstraintSpec:
    """One constraint kind: an IFEval instruction id and how to draw its kwargs for an instruction.

    Args:
        instruction_id: The IFEval id (a key of `if_verifiable.ifeval.instructions_registry.INSTRUCTION_DICT`).
        sample_kwargs: `(rng, instruction) -> kwargs` for the checker's `build_description`; `{}` for checkers
            without arguments. Always explicit values, so that the library never draws them at random.
        weight: Relative frequency of this kind when constraints are drawn.
    """

    instruction_id: str
    sample_kwargs: Callable[[random.Random, str], dict[str, Any]]
    weight: float = 1.0


DEFAULT_CONSTRAINTS: tuple[ConstraintSpec, ...] = (
    ConstraintSpec(
        "length_constraints:number_words",
        lambda rng, _: {"num_words": rng.choice([15, 20, 25, 30]), "relation": "less than"},
        weight=2.0,
    ),
    ConstraintSpec("keywords:existence", lambda rng, _: {"keywords": [rng.choice(_REQUIRED_KEYWORDS)]}, weight=1.5),
    ConstraintSpec("keywords:forbidden_words", _forbidden_word),
    ConstraintSpec("punctuation:no_comma", lambda rng, _: {}, weight=1.5),
    ConstraintSpec("detectable_format:title", lambda rng, _: {}, weight=0.5),
    ConstraintSpec(
        "keywords:letter_frequency",
        lambda rng, _: {"letter": rng.choice("zqxjk"), "let_frequency": 1, "let_relation": "at least"},
        weight=0.5,
    ),
    ConstraintSpec("detectable_format:number_bullet_lists", lambda rng, _: {"num_bullets": rng.choice([2, 3])}),
)
"""The constraint kinds drawn by default, chosen from SmolLM2-135M-Instruct's (4-bit-dequantized) measured pass rates:
12 sampled answers (temperature 1, 48 new tokens) per kind on HH-RLHF and DOVE instructions met a word limit 50% of
the time, a required keyword 17%, a forbidden word (avoided) 58%, no commas 25%, a title 83%, a rare letter 67%, an
exact bullet count 25%. All-lowercase, a quoted answer and a fixed ending were never met (0/12 each): with no
candidate meeting them, ranking carries no signal for them, so they are left out (pass them in `constraints` to use
them). Their text is IFEval's own description."""


def describe_constraint(instruction_id: str, kwargs: Mapping[str, Any]) -> str:
    """The IFEval checker's description of a constraint ("Answer with less than 20 words.")."""
    registry, _, _ = _ifeval()
    if instruction_id not in registry:
        raise ValueError(f"Unknown IFEval instruction id {instruction_id!r}; known ids: {sorted(registry)}")
    checker = registry[instruction_id](instruction_id)
    return checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})


def build_constraint_prompts(
    instructions: Sequence[str],
    seed: int = 0,
    num_constraints: tuple[int, ...] = (1, 2),
    constraints: Sequence[ConstraintSpec] = DEFAULT_CONSTRAINTS,
    conversational: bool = True,
    sources: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Give each instruction one or two verifiable constraints, deterministically given `seed`.

    The prompt is the instruction followed by the constraints' IFEval descriptions (one line each). Two constraints of
    one prompt never conflict (IFEval's conflict table).

    Args:
        instructions: The real instructions (non-empty strings).
        seed: Seed of the draw; the same seed and instructions give the same rows.
        num_constraints: How many constraints a prompt gets, drawn uniformly from these values.
        constraints: The constraint kinds to draw from (default: `DEFAULT_CONSTRAINTS`).
        conversational: Give `prompt` as TRL messages (`[{"role": "user", "content": ...}]`) instead of a string.
        sources: Optional source name per instruction, copied to a `source` field.

    Returns:
        One dict per instruction: `prompt`, `instruction`, `instruction_id_list`, `kwargs` (one dict per constraint),
        `prompt_text` (the user message) and `source` when given.

    Raises:
        ValueError: an empty instruction (naming its index), an unknown instruction id, or impossible counts.
    """
    registry, conflicts, _ = _ifeval()
    for spec in constraints:
        if spec.instruction_id not in registry:
            raise ValueError(f"Unknown IFEval instruction id {spec.instruction_id!r} in `constraints`.")
    if not num_constraints or min(num_constraints) < 1 or max(num_constraints) > len(constraints):
        raise ValueError(f"`num_constraints` must be values in [1, {len(constraints)}], got {num_constraints}.")
    if sources is not None and len(sources) != len(instructions):
        raise ValueError(f"`sources` has {len(sources)} entries for {len(instructions)} instructions.")
    rng = random.Random(seed)
    rows = []
    for index, instruction in enumerate(instructions):
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction {index} is empty or not a string: {instruction!r}")
        instruction = instruction.strip()
        count = rng.choice(num_constraints)
        chosen: list[ConstraintSpec] = []
        available = list(constraints)
        while len(chosen) < count and available:
            spec = rng.choices(available, weights=[s.weight for s in available])[0]
            chosen.append(spec)
            available = [
                s
                for s in available
                if s.instruction_id not in conflicts.get(spec.instruction_id, {spec.instruction_id})
                and s.instruction_id != spec.instruction_id
            ]
        ids = [spec.instruction_id for spec in chosen]
        kwargs = [spec.sample_kwargs(rng, instruction) for spec in chosen]
        descriptions = [describe_constraint(i, k) for i, k in zip(ids, kwargs)]
        text = instruction + "\n\n" + "\n".join(descriptions)
        row = {
            "prompt": [{"role": "user", "content": text}] if conversational else text,
            "prompt_text": text,
            "instruction": instruction,
            "instruction_id_list": ids,
            "kwargs": kwargs,
        }
        if sources is not None:
            row["source"] = sources[index]
        rows.append(row)
    return rows


def _check_row(row: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]], str]:
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, Sequence) or not ids:
        raise ValueError(f"row has no `instruction_id_list` (got {ids!r})")
    if isinstance(kwargs, str):  # stored as JSON text (e.g. in an Arrow column)
        kwargs = json.loads(kwargs)
    if not isinstance(kwargs, Sequence) or len(kwargs) != len(ids):
        raise ValueError(
            f"row's `kwargs` must be a list with one dict per instruction id ({len(ids)}), got {kwargs!r}"
        )
    prompt = row.get("prompt_text") or row.get("instruction") or ""
    return list(ids), [dict(k or {}) for k in kwargs], prompt


def check_constraints(row: Mapping[str, Any], response: str) -> list[bool]:
    """Whether `response` meets each of the row's constraints (IFEval strict checks, in `instruction_id_list` order).

    An empty response meets none.
    """
    registry, _, evaluate_instructions = _ifeval()
    ids, kwargs, prompt = _check_row(row)
    for instruction_id in ids:
        if instruction_id not in registry:
            raise ValueError(f"Unknown IFEval instruction id {instruction_id!r} in row")
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    results, _ = evaluate_instructions(
        response=response,
        instruction_id_list=ids,
        kwargs_list=kwargs,
        prompt=prompt,
        instruction_registry=registry,
    )
    if not results:  # the library returns no results for an empty response
        return [False] * len(ids)
    return [result.strict_pass for result in results]


def constraint_reward(row: Mapping[str, Any], response: str) -> float:
    """The share of the row's constraints that `response` meets, in [0, 1]."""
    passed = check_constraints(row, response)
    return sum(passed) / len(passed)


def constraint_metrics(rows: Sequence[Mapping[str, Any]], responses: Sequence[str]) -> dict[str, float]:
    """IFEval-style aggregates over prompts and their responses.

    Returns:
        `prompt_accuracy` (share of prompts whose constraints are all met), `instruction_accuracy` (share of all
        constraints met), `mean_reward` (mean per-prompt share), `num_prompts`, `num_instructions`, and the
        pass rate of each constraint kind as `rate/<instruction id>`.
    """
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} rows but {len(responses)} responses")
    if not rows:
        raise ValueError("no rows to evaluate")
    prompt_hits, instruction_hits, instructions, rewards = 0, 0, 0, []
    per_kind: dict[str, list[int]] = {}
    for row, response in zip(rows, responses):
        passed = check_constraints(row, response)
        prompt_hits += all(passed)
        instruction_hits += sum(passed)
        instructions += len(passed)
        rewards.append(sum(passed) / len(passed))
        for instruction_id, ok in zip(row["instruction_id_list"], passed):
            per_kind.setdefault(instruction_id, [0, 0])
            per_kind[instruction_id][0] += ok
            per_kind[instruction_id][1] += 1
    metrics = {
        "prompt_accuracy": prompt_hits / len(rows),
        "instruction_accuracy": instruction_hits / instructions,
        "mean_reward": sum(rewards) / len(rewards),
        "num_prompts": float(len(rows)),
        "num_instructions": float(instructions),
    }
    for instruction_id, (hits, total) in sorted(per_kind.items()):
        metrics[f"rate/{instruction_id}"] = hits / total
    return metrics


class ConstraintScorer:
    """A reward-model-like callable `(prompts, completions) -> list[float]` backed by `constraint_reward`.

    It looks each prompt up among the rows it was built with (by the prompt's user text), so it can serve as
    `PROTrainer(reward_model=...)` for self-bootstrapping or as a judge's scorer.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]]):
        self._rows: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            self._rows[_prompt_key(row["prompt"])] = row

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        scores = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions)):
            key = _prompt_key(prompt)
            if key not in self._rows:
                raise ValueError(f"prompt {index} is not one of the scorer's constraint prompts: {key[:80]!r}")
            scores.append(constraint_reward(self._rows[key], _completion_text(completion)))
        return scores


def _prompt_key(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    if isinstance(prompt, Sequence) and prompt and isinstance(prompt[-1], Mapping):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        return (users[-1] if users else prompt[-1]["content"]).strip()
    raise ValueError(f"cannot read a prompt from {prompt!r}")


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return completion[-1]["content"]
    raise ValueError(f"cannot read a completion from {completion!r}")


def load_hh_first_turns(path: str | Path, min_chars: int = 10, max_chars: int = 300) -> list[str]:
    """The distinct first human turns of an HH-RLHF file (gzipped JSON lines), in file order.

    Turns shorter than `min_chars` or longer than `max_chars` are skipped (counted in the log).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    seen: dict[str, None] = {}
    skipped = 0
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            transcript = record.get("chosen")
            if not isinstance(transcript, str) or "Human:" not in transcript:
                raise ValueError(f"{path}, line {line_number}: field 'chosen' is missing or has no 'Human:' turn")
            first = transcript.split("Human:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
            if not min_chars <= len(first) <= max_chars:
                skipped += 1
                continue
            seen.setdefault(first, None)
    if skipped:
        logger.info("Skipped %d HH-RLHF first turns outside [%d, %d] characters", skipped, min_chars, max_chars)
    return list(seen)


def load_dove_instructions(paths: Iterable[str | Path], min_chars: int = 10, max_chars: int = 300) -> list[str]:
    """The distinct `instruction` fields of DOVE JSON-lines files, in file order (length-filtered, counted in the log)."""
    seen: dict[str, None] = {}
    skipped = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                instruction = json.loads(line).get("instruction")
                if not isinstance(instruction, str):
                    raise ValueError(f"{path}, line {line_number}: field 'instruction' is missing or not a string")
                instruction = instruction.strip()
                if not min_chars <= len(instruction) <= max_chars:
                    skipped += 1
                    continue
                seen.setdefault(instruction, None)
    if skipped:
        logger.info("Skipped %d DOVE instructions outside [%d, %d] characters", skipped, min_chars, max_chars)
    return list(seen)
