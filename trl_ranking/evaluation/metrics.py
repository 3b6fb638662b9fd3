"""The papers' metrics: BLEU against a reference, reward-model scores, and judge-based pairwise win rates."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from trl_ranking.judges import Judge, validate_judgement


logger = logging.getLogger(__name__)


def _sigmoid(x: float) -> float:
    """Numerically stable logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _check_same_length(**named: Sequence[Any]) -> int:
    """Check that every list is non-empty and that they all have the same length; return that length."""
    lengths = {}
    for name, values in named.items():
        if isinstance(values, str):
            raise ValueError(f"{name} must be a list, not a string")
        lengths[name] = len(values)
        if lengths[name] == 0:
            raise ValueError(f"{name} is empty: nothing to evaluate")
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"mismatched lengths: {detail}; they must match")
    return next(iter(lengths.values()))


def bleu(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    sentence_level: bool = False,
    **sacrebleu_kwargs: Any,
) -> float:
    """BLEU of `predictions` against one reference each, with sacreBLEU, on a 0-100 scale.

    By default this is corpus BLEU (`sacrebleu.corpus_bleu`, its default `13a` tokenization), the standard,
    comparable figure; `sentence_level=True` averages sacreBLEU's sentence BLEU (exponential smoothing). Neither is
    the number the PRO paper reports: its official evaluation averages NLTK `sentence_bleu` on raw strings, i.e.
    over character n-grams without smoothing, which `pro_bleu` reproduces.

    Args:
        predictions (`list[str]`): The generated texts.
        references (`list[str]`): One reference per prediction (for the PRO table, the chosen response).
        sentence_level (`bool`, defaults to `False`): Average sentence BLEU instead of corpus BLEU.
        **sacrebleu_kwargs: Passed to sacreBLEU (e.g. `tokenize="intl"`, `lowercase=True`).

    Raises:
        ValueError: empty lists, mismatched lengths, or a non-string value.

    Example:

    ```python
    >>> from trl_ranking.evaluation import bleu

    >>> bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    100.00000000000004
    ```
    """
    try:
        import sacrebleu
    except ImportError as error:  # pragma: no cover - sacrebleu is a test dependency
        raise ImportError("bleu needs sacrebleu: `pip install trl-ranking[eval]`") from error

    _check_same_length(predictions=predictions, references=references)
    for name, values in (("predictions", predictions), ("references", references)):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(f"{name}[{index}] must be a string, got {type(value).__name__}")
    if sentence_level:
        scores = [
            sacrebleu.sentence_bleu(prediction, [reference], **sacrebleu_kwargs).score
            for prediction, reference in zip(predictions, references)
        ]
        return sum(scores) / len(scores)
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], **sacrebleu_kwargs).score


def compute_rewards(
    scorer: Callable[[list[Any], list[Any]], Sequence[float]],
    prompts: Sequence[Any],
    responses: Sequence[Any],
    *,
    sigmoid: bool = True,
) -> list[float]:
    """Score each (prompt, response) pair with `scorer`, normalised with a sigmoid by default.

    The PRO paper reports reward as the mean over test examples of `sigmoid(r)`, `r` the reward model's logit for
    the (prompt, generated response) pair (the official `eval_hh/infer_and_eval_main_reward.py` applies
    `torch.sigmoid` to the scores and averages them per test file), which maps the reward model's unbounded logits
    into (0, 1) so that one outlier cannot dominate the mean.

    Args:
        scorer (`Callable[[list, list], list[float]]`): e.g. a `trl_ranking.rewards.RewardModelScorer`.
        prompts (`list`): The prompts, strings or message lists (passed to the scorer unchanged).
        responses (`list`): One response per prompt.
        sigmoid (`bool`, defaults to `True`): Return `sigmoid(score)` instead of the raw score.

    Raises:
        ValueError: empty or mismatched lists, or a scorer that returns the wrong number of scores or a non-finite
            score.
    """
    count = _check_same_length(prompts=prompts, responses=responses)
    scores = scorer(list(prompts), list(responses))
    if hasattr(scores, "tolist"):
        scores = scores.tolist()
    scores = [float(score) for score in scores]
    if len(scores) != count:
        raise ValueError(f"the scorer returned {len(scores)} scores for {count} pairs; it must return one per pair")
    for index, score in enumerate(scores):
        if not math.isfinite(score):
            raise ValueError(f"pair {index}: the scorer returned a non-finite score ({score})")
    if sigmoid:
        scores = [_sigmoid(score) for score in scores]
    return scores


def mean_reward(
    scorer: Callable[[list[Any], list[Any]], Sequence[float]],
    prompts: Sequence[Any],
    responses: Sequence[Any],
    *,
    sigmoid: bool = True,
) -> float:
    """Mean of `compute_rewards`: the PRO paper's reward metric, `mean(sigmoid(r))` on a 0-1 scale.

    Example:

    ```python
    >>> from trl_ranking.evaluation import mean_reward

    >>> mean_reward(lambda prompts, responses: [0.0, 2.0], ["Q1", "Q2"], [" A1", " A2"])  # (0.5 + 0.8808) / 2
    0.6903985...
    ```
    """
    scores = compute_rewards(scorer, prompts, responses, sigmoid=sigmoid)
    return sum(scores) / len(scores)


def pro_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The PRO paper's BLEU: NLTK `sentence_bleu` on raw strings, averaged over examples, x100.

    The official evaluation (`PRO/eval/metrics2.py`, `get_bleu`) strips both texts and calls
    `nltk.translate.bleu_score.sentence_bleu([reference], hypothesis)` on the strings themselves. NLTK iterates a
    string character by character, so the n-grams (n = 1..4, uniform weights) are **character** n-grams, and no
    smoothing is applied (an example with no matching character 4-gram scores ~0). The paper's table reports the
    mean over examples x100. This function computes exactly that (NLTK's zero-count warnings are silenced); use
    `bleu` for the standard, word-level sacreBLEU figure.

    Args:
        predictions (`list[str]`): The generated texts.
        references (`list[str]`): One reference per prediction (the first candidate of the official test files).

    Raises:
        ValueError: empty lists, mismatched lengths, or a non-string value.
        ImportError: NLTK is not installed (`pip install trl-ranking[eval]`).

    Example:

    ```python
    >>> from trl_ranking.evaluation import pro_bleu

    >>> pro_bleu(["abcdef"], ["abcdeg"])  # character n-gram precisions 5/6, 4/5, 3/4, 2/3: (1/3) ** (1/4) x 100
    75.98356856515926
    ```
    """
    try:
        from nltk.translate.bleu_score import sentence_bleu
    except ImportError as error:  # pragma: no cover - nltk is in the eval extra
        raise ImportError("pro_bleu needs NLTK: `pip install trl-ranking[eval]`") from error

    count = _check_same_length(predictions=predictions, references=references)
    for name, values in (("predictions", predictions), ("references", references)):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(f"{name}[{index}] must be a string, got {type(value).__name__}")
    total = 0.0
    with warnings.catch_warnings():
        # NLTK warns for every hypothesis with a zero n-gram count; the official scores keep those examples as ~0
        warnings.simplefilter("ignore", UserWarning)
        for prediction, reference in zip(predictions, references):
            total += sentence_bleu([reference.strip()], prediction.strip())
    return 100.0 * total / count


WIN_RATE_RULES = ("dove", "pro")


def pairwise_win_rate(
    judge: Judge,
    prompts: Sequence[Any],
    responses_a: Sequence[Any],
    responses_b: Sequence[Any],
    *,
    rule: str = "dove",
    batch_size: int = 32,
    progress_bar: bool = False,
) -> dict[str, float]:
    """Win, tie and lose rates of `responses_a` against `responses_b`, asking `judge` in both orders.

    For each prompt the judge sees `((prompt, a), (prompt, b))` and then `((prompt, b), (prompt, a))`; the two
    verdicts are combined by `rule`:

    - `"dove"` (the DOVE paper, `dove/auto_eval.py`): `a` wins when it is preferred in both orders, loses when `b` is
      preferred in both, and a flip between the two orders (a judge that follows the position rather than the
      content) is a tie. `win_rate` is the paper's number: `win + tie / 2` (ties count 1/2).
    - `"pro"` (the PRO paper's GPT-4 evaluation): the two orderings are averaged, each counting as half a
      comparison, so a split verdict is half a win and half a loss (no tie: the judges here answer 0 or 1).
      `win_rate` is again `win + tie / 2`. With 0/1 verdicts both rules give the same `win_rate` (the fraction of
      orderings that prefer `a`); they differ in the win/tie/lose breakdown.

    A judge may answer `None` for a comparison it could not decide (an unparseable reply or a failed call, the
    contract of `trl_ranking.judges`). Such a prompt (either order `None`) is skipped, as the official DOVE script
    skips it, and counted in `failed`: the rates are fractions of the `num_judged` prompts that have both verdicts.
    A failure is never counted as a tie or a win.

    Args:
        judge (`Callable[[tuple, tuple], int | None]`): `judge(first, second)` with `first`/`second`
            `(prompt, completion)` tuples, returning the index (0 or 1) of the preferred one, or `None` for no
            verdict (the interface of `trl_ranking.judges`; a bool is rejected, see `validate_judgement`).
        prompts (`list`): The prompts.
        responses_a (`list`): The responses of the system being evaluated.
        responses_b (`list`): The responses it is compared with (a baseline, or the reference answers).
        rule (`str`, defaults to `"dove"`): How the two orders combine, `"dove"` or `"pro"` (see above).
        batch_size (`int`, defaults to `32`): Prompts per call of the judge's `judge_batch(firsts, seconds)` method,
            used when the judge has one (as `trl_ranking.judges.RewardModelJudge` and
            `trl_ranking.judges.OpenAIChatJudge` do); plain callables are called once per comparison.
        progress_bar (`bool`, defaults to `False`): Show a `tqdm` progress bar.

    Returns:
        `dict[str, float]`: `{"win", "tie", "lose"}` (fractions of the judged prompts, summing to 1), `"win_rate"`
        (`win + tie / 2`), `"num_judged"` and `"failed"` (prompts skipped for a `None` verdict). With no judged
        prompt at all the rates are `nan`.

    Raises:
        ValueError: empty or mismatched lists, an unknown `rule`, or a judge result other than 0, 1 or `None` (the
            prompt and order are named).

    Example:

    ```python
    >>> from trl_ranking.evaluation import pairwise_win_rate

    >>> prefer_longer = lambda first, second: int(len(second[1]) > len(first[1]))
    >>> pairwise_win_rate(prefer_longer, ["Q1", "Q2"], ["a long answer", "no"], ["short", "yes"])
    {'win': 0.5, 'tie': 0.0, 'lose': 0.5, 'win_rate': 0.5, 'num_judged': 2, 'failed': 0}
    ```
    """
    if not callable(judge):
        raise ValueError(f"judge must be a callable judge(first, second) -> 0 | 1, got {judge!r}")
    if rule not in WIN_RATE_RULES:
        raise ValueError(f"rule must be one of {WIN_RATE_RULES}, got {rule!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    count = _check_same_length(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
    judge_batch = getattr(judge, "judge_batch", None)
    wins = ties = losses = 0.0
    judged = failed = 0
    for start in tqdm(range(0, count, batch_size), desc="Judging", disable=not progress_bar, unit="batch"):
        indices = range(start, min(start + batch_size, count))
        a_pairs = [(prompts[i], responses_a[i]) for i in indices]
        b_pairs = [(prompts[i], responses_b[i]) for i in indices]
        # Both orders of every comparison: (a, b) then (b, a)
        firsts, seconds = a_pairs + b_pairs, b_pairs + a_pairs
        if callable(judge_batch):
            results = list(judge_batch(firsts, seconds))
            if len(results) != len(firsts):
                raise ValueError(f"judge.judge_batch returned {len(results)} answers for {len(firsts)} comparisons")
        else:
            results = [judge(first, second) for first, second in zip(firsts, seconds)]
        for offset, index in enumerate(indices):
            raw_ab, raw_ba = results[offset], results[offset + len(indices)]
            if raw_ab is None or raw_ba is None:
                failed += 1
                continue
            a_first = validate_judgement(raw_ab, f"prompt {index}, order (a, b)")
            b_first = validate_judgement(raw_ba, f"prompt {index}, order (b, a)")
            judged += 1
            if rule == "pro":
                # Each ordering is half a comparison: a is preferred when (a, b) answers 0 and (b, a) answers 1
                a_votes = (a_first == 0) + (b_first == 1)
                wins += a_votes / 2
                losses += (2 - a_votes) / 2
            elif a_first == 0 and b_first == 1:
                wins += 1
            elif a_first == 1 and b_first == 0:
                losses += 1
            else:
                ties += 1
    if failed:
        logger.warning(
            "pairwise_win_rate: %d of %d prompts had no verdict from the judge and were skipped", failed, count
        )
    if judged == 0:
        nan = float("nan")
        return {"win": nan, "tie": nan, "lose": nan, "win_rate": nan, "num_judged": 0, "failed": failed}
    win, tie, lose = wins / judged, ties / judged, losses / judged
    return {"win": win, "tie": tie, "lose": lose, "win_rate": win + tie / 2, "num_judged": judged, "failed": failed}
