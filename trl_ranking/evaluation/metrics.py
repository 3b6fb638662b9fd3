"""The papers' metrics: BLEU against a reference, reward-model scores, and judge-based pairwise win rates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from trl_ranking.judges import Judge, validate_judgement


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
    comparable figure. The PRO paper's official evaluation instead averages sentence-level BLEU (NLTK's
    `sentence_bleu`, no smoothing, 0-1) over examples; `sentence_level=True` gives the mean of sacreBLEU's
    sentence BLEU (exponential smoothing) on 0-100, which is closer to that averaging but not identical to it.

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
        scorer (`Callable[[list, list], list[float]]`): e.g. a [`~trl_ranking.rewards.RewardModelScorer`].
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
    """Mean of [`compute_rewards`]: the PRO paper's reward metric, `mean(sigmoid(r))` on a 0-1 scale.

    Example:

    ```python
    >>> from trl_ranking.evaluation import mean_reward

    >>> mean_reward(lambda prompts, responses: [0.0, 2.0], ["Q1", "Q2"], [" A1", " A2"])  # (0.5 + 0.8808) / 2
    0.6903985...
    ```
    """
    scores = compute_rewards(scorer, prompts, responses, sigmoid=sigmoid)
    return sum(scores) / len(scores)


def pairwise_win_rate(
    judge: Judge,
    prompts: Sequence[Any],
    responses_a: Sequence[Any],
    responses_b: Sequence[Any],
    *,
    batch_size: int = 32,
    progress_bar: bool = False,
) -> dict[str, float]:
    """Win, tie and lose rates of `responses_a` against `responses_b`, asking `judge` in both orders.

    For each prompt the judge sees `((prompt, a), (prompt, b))` and then `((prompt, b), (prompt, a))`. `a` wins when
    it is preferred in both orders, loses when `b` is preferred in both, and a flip between the two orders (a judge
    that follows the position rather than the content) counts as a tie, the protocol of the DOVE paper.

    Args:
        judge (`Callable[[tuple, tuple], int]`): `judge(first, second)` with `first`/`second` `(prompt, completion)`
            tuples, returning the index (0 or 1) of the preferred one (the interface of `trl_ranking.judges`; a bool
            is rejected, see `validate_judgement`).
        prompts (`list`): The prompts.
        responses_a (`list`): The responses of the system being evaluated.
        responses_b (`list`): The responses it is compared with (a baseline, or the reference answers).
        batch_size (`int`, defaults to `32`): Prompts per call of the judge's `judge_batch(firsts, seconds)` method,
            used when the judge has one (as [`~trl_ranking.judges.RewardModelJudge`] and
            [`~trl_ranking.judges.OpenAIChatJudge`] do); plain callables are called once per comparison.
        progress_bar (`bool`, defaults to `False`): Show a `tqdm` progress bar.

    Returns:
        `dict[str, float]`: `{"win": ..., "tie": ..., "lose": ...}`, fractions of the prompts summing to 1.

    Raises:
        ValueError: empty or mismatched lists, or a judge result other than 0 or 1 (the prompt and order are named).

    Example:

    ```python
    >>> from trl_ranking.evaluation import pairwise_win_rate

    >>> prefer_longer = lambda first, second: int(len(second[1]) > len(first[1]))
    >>> pairwise_win_rate(prefer_longer, ["Q1", "Q2"], ["a long answer", "no"], ["short", "yes"])
    {'win': 0.5, 'tie': 0.0, 'lose': 0.5}
    ```
    """
    if not callable(judge):
        raise ValueError(f"judge must be a callable judge(first, second) -> 0 | 1, got {judge!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    count = _check_same_length(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
    judge_batch = getattr(judge, "judge_batch", None)
    wins = ties = losses = 0
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
            a_first = validate_judgement(results[offset], f"prompt {index}, order (a, b)")
            b_first = validate_judgement(results[offset + len(indices)], f"prompt {index}, order (b, a)")
            if a_first == 0 and b_first == 1:
                wins += 1
            elif a_first == 1 and b_first == 0:
                losses += 1
            else:
                ties += 1
    return {"win": wins / count, "tie": ties / count, "lose": losses / count}
