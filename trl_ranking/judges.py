"""Pairwise judges for the DOVE data protocol: which of two (instruction, response) pairs is better.

A judge is any callable `judge(first, second) -> 0 | 1 | None` where `first` and `second` are `(prompt, completion)`
pairs and the result is the index of the preferred pair, or `None` for "no verdict" (an unparseable reply, or a call
that failed after its retries), which callers skip and count, never reading it as a tie or a win. The two prompts
may differ (a joint comparison, the DOVE paper's D_H) or be equal (a conditional comparison, D_C). A judge may also
have a `judge_batch(firsts, seconds)` method returning one verdict per comparison (never raising for one bad
comparison); the pair builders in `trl_ranking.data` use it when present.

Two judges are provided: `RewardModelJudge` (compares the two pairs' reward-model scores) and `OpenAIChatJudge`
(asks a chat model behind an OpenAI-compatible HTTP endpoint, with the DOVE paper's prompts).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from tqdm.contrib.concurrent import thread_map

from .rewards import PromptLike, RewardModelScorer
from .validation import check_reward, scorer_output


logger = logging.getLogger(__name__)

Pair = tuple[PromptLike, PromptLike]
Judge = Callable[[Pair, Pair], int | None]

# The DOVE paper's comparison prompts (arXiv 2404.00530, Appendix F), copied unchanged from the authors' code:
# Hritikbansal/dove, `dove/comparison_prompts.py` (MIT License, Copyright (c) 2024 Hritikbansal). The paper asks
# each comparison in both orders and drops the pair when the answer flips.
DOVE_CONDITIONAL_PROMPT = """You are a helpful following assistant whose goal is to select the preferred output for a given instruction.
Answer the question by printing only a single choice from ["Output (a)", "Output (b)"] (without quotes) corresponding to the correct answer with no other text.

## Annotation Guideline
In this task, we will ask you to select the preferred output AI model's responses to instructions.

You will read a examples, which are composed of the following:

1. an Instruction we give to the AI system
2. Output (a), the first output from the AI system
3. Output (b), the second output from the AI system

Your task is to decide which response is better for each example. There are several dimensions that you can think along. Consider the following dimensions:

Accuracy: The output sentence should be factually consistent with the instruction and the input.
Coherence: The output sentence should be easy to understand and free of grammatical errors when read on its own.
Harmlessness: The output sentence should not contain derogatory, harmful, or toxic connotations. 

You should answer using only Output (a) or Output (b) depending on which response is better.

### Instruction:
{instruction}

### Output (a):
{output_1}

### Output (b):
{output_2}

## Preferred Output:
"""  # noqa: W291 (the trailing space after "connotations." is the authors')

DOVE_JOINT_PROMPT = """You are a helpful following assistant whose goal is to select the preferred output for a given instruction.
Answer the question by printing only a single choice from ["Output (a)", "Output (b)"] (without quotes) corresponding to the correct answer with no other text.

## Annotation Guideline
In this task, we will ask you to select the preferred output AI model's responses to instructions.

You will read a examples, which are composed of the following:

1. Instruction (a), the first input to the AI system and Output (a), the first output from the AI system
2. Instruction (b), the second input to the AI system and Output (b), the second output from the AI system

Your task is to decide which response is better for each example. There are several dimensions that you can think along. Consider the following dimensions:

Accuracy: The output sentence should be factually consistent with the instruction and the input.
Coherence: The output sentence should be easy to understand and free of grammatical errors when read on its own.
Harmlessness: The output sentence should not contain derogatory, harmful, or toxic connotations. 

You should answer using only Output (a) or Output (b) depending on which response is better.

### Instruction (a):
{instruction_1}

### Output (a):
{output_1}

### Instruction (b):
{instruction_2}

### Output (b):
{output_2}

## Preferred Output:
"""  # noqa: W291 (the trailing space after "connotations." is the authors')


def validate_judgement(value: Any, where: str) -> int | None:
    """Check that a judge returned the index of the preferred pair, 0 or 1, or `None` (no verdict), and return it.

    Python and NumPy integers equal to 0 or 1 are accepted. `None` means "no verdict" (an unparseable reply, or a
    call that failed after its retries): it is returned as is, and callers skip and count such comparisons, never
    reading them as a tie or a win. Booleans are rejected on purpose: a judge written as
    `return score_first > score_second` returns `True` when the *first* pair wins, which read as an index means the
    second, so accepting bools would silently invert such judges.

    Args:
        value: What the judge returned.
        where (`str`): Where it was called, quoted in the error (e.g. `"row 3 (paired with row 17), order AB"`).

    Raises:
        ValueError: `value` is neither the integer 0 or 1 nor `None`.

    Example:

    ```python
    >>> validate_judgement(1, "row 0")
    1
    >>> validate_judgement(None, "row 0") is None
    True
    >>> validate_judgement(True, "row 0")
    Traceback (most recent call last):
    ...
    ValueError: row 0: the judge must return 0 or 1 (the index of the preferred pair) or None (no verdict), got True (bool) ...
    ```
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) not in (0, 1):
        hint = " ; return an int index, not a bool" if isinstance(value, bool) else ""
        raise ValueError(
            f"{where}: the judge must return 0 or 1 (the index of the preferred pair) or None (no verdict), "
            f"got {value!r} ({type(value).__name__}){hint}"
        )
    return int(value)


def _check_pair(pair: Any, name: str) -> Pair:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"'{name}' must be a (prompt, completion) pair, got {type(pair).__name__}")
    return pair[0], pair[1]


class RewardModelJudge:
    """Judge two (prompt, completion) pairs by their reward-model scores: the higher score is preferred.

    Built on `RewardModelScorer`. Equal scores return 0 (the first pair) in both orders, which the both-orders
    protocol of `build_joint_pairs` counts as a tie. Note that a reward model scores each pair on its own, so the two
    orders always agree unless the scores are equal: the both-orders protocol only removes position bias of judges
    that see both pairs at once, such as `OpenAIChatJudge`.

    Args:
        scorer_or_model:
            A `RewardModelScorer`, any scorer callable `scorer(prompts, completions) -> list[float]`, a reward model
            (`AutoModelForSequenceClassification` with `num_labels=1`), or a path to one.
        tokenizer (*optional*):
            The tokenizer, needed when `scorer_or_model` is a model instance.
        **scorer_kwargs:
            Passed to `RewardModelScorer` (`batch_size`, `max_length`, `device`, `model_init_kwargs`) when a model or
            path is given.

    Example:

    ```python
    >>> from trl_ranking.judges import RewardModelJudge

    >>> judge = RewardModelJudge("path/to/reward-model", batch_size=16)
    >>> judge(("Where can I buy dry ice?", "At a grocery store."), ("What is 2+2?", "5"))
    0
    >>> judge.judge_batch([("a", " b")], [("c", " d")])
    [1]
    ```
    """

    def __init__(self, scorer_or_model: Any, tokenizer: Any | None = None, **scorer_kwargs: Any) -> None:
        import torch

        if isinstance(scorer_or_model, (str, torch.nn.Module)):
            self.scorer = RewardModelScorer(scorer_or_model, tokenizer, **scorer_kwargs)
        elif callable(scorer_or_model):
            if tokenizer is not None or scorer_kwargs:
                raise ValueError("tokenizer and scorer options are only used when a reward model or path is given")
            self.scorer = scorer_or_model
        else:
            raise ValueError(
                "scorer_or_model must be a scorer callable, a reward model or a path to one, "
                f"got {type(scorer_or_model).__name__}"
            )

    def __call__(self, first: Pair, second: Pair) -> int:
        """Return 0 if `first` scores at least as high as `second`, else 1."""
        return self.judge_batch([first], [second])[0]

    def judge_batch(self, firsts: Sequence[Pair], seconds: Sequence[Pair]) -> list[int]:
        """Judge many comparisons with one batched scoring pass (each distinct pair is scored once).

        Args:
            firsts: The first (prompt, completion) pair of each comparison.
            seconds: The second pair of each comparison, as many as `firsts`.

        Returns:
            `list[int]`: For each comparison, the index (0 or 1) of the preferred pair.
        """
        firsts, seconds = list(firsts), list(seconds)
        if len(firsts) != len(seconds):
            raise ValueError(f"got {len(firsts)} first pairs but {len(seconds)} second pairs; they must match")
        keys: dict[str, int] = {}
        prompts: list[PromptLike] = []
        completions: list[PromptLike] = []
        origins: list[str] = []  # where each distinct pair first appears, for the score check's error
        slots: list[tuple[int, int]] = []
        for index, (first, second) in enumerate(zip(firsts, seconds)):
            slot = []
            for name, pair in (("first", first), ("second", second)):
                prompt, completion = _check_pair(pair, f"comparison {index}: {name}")
                key = json.dumps([prompt, completion], sort_keys=True, default=str)
                if key not in keys:
                    keys[key] = len(prompts)
                    prompts.append(prompt)
                    completions.append(completion)
                    origins.append(f"comparison {index}, {name} pair (prompt {_as_text_or_repr(prompt)!r:.80})")
                slot.append(keys[key])
            slots.append((slot[0], slot[1]))
        raw = self.scorer(prompts, completions) if prompts else []
        raw = scorer_output(raw, len(prompts), "RewardModelJudge")
        # The one reward check: a text score would compare as text ('9' > '13'), `None` as a bare TypeError
        scores = [check_reward(score, f"{origin} (the scorer's score)") for score, origin in zip(raw, origins)]
        return [0 if scores[a] >= scores[b] else 1 for a, b in slots]


class JudgeRequestError(RuntimeError):
    """The judge's endpoint failed: a non-retryable status, retries exhausted, or a malformed response."""


def _as_text_or_repr(value: Any) -> str:
    """A prompt as plain text where it is one (for error messages), else its repr."""
    try:
        return _as_text(value, role_labels=True)
    except ValueError:
        return repr(value)


def _as_text(value: PromptLike, role_labels: bool) -> str:
    """Render a prompt or completion, text or messages, as plain text for the judge's prompt."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(turn, dict) and "content" in turn for turn in value):
        if not role_labels or (len(value) == 1 and value[0].get("role") in ("user", "assistant")):
            return "\n\n".join(str(turn["content"]) for turn in value)
        return "\n\n".join(f"{str(turn.get('role', 'user')).capitalize()}: {turn['content']}" for turn in value)
    raise ValueError(f"expected a string or a list of {{'role', 'content'}} messages, got {type(value).__name__}")


# The paper's answer format, "Output (a)" or "Output (b)" and nothing else; tolerated around it: case, spaces,
# Markdown emphasis or quotes, a final period, and the prompt's own "Preferred Output:" label echoed back
_ANSWER = re.compile(
    r"^[\s*_`'\"]*(?:(?:##\s*)?preferred\s+output\s*:\s*)?[\s*_`'\"]*(?:output\s*)?\(\s*([ab])\s*\)[\s*_`'\".]*$",
    re.IGNORECASE,
)


def parse_judgement(reply: str | None) -> int | None:
    """Parse a chat model's answer to the DOVE prompt into the index of the preferred pair, or `None`.

    Only the answer format the paper's prompt asks for is read: "Output (a)" -> 0, "Output (b)" -> 1 (any case and
    spacing, "(a)"/"(b)" alone, with Markdown emphasis, quotes, a final period or an echoed "Preferred Output:" label).
    Anything else returns `None` (no verdict): prose such as "Output (b) is worse than Output (a)." or "Output (a)
    and Output (b) are tied." is not guessed at, since reading the first output it names inverts such answers. The
    official DOVE code (`get_feedback` in `dove/ai_feedback.py`) tests `'(a)' in reply`, then `'(b)' in reply`, and
    skips a comparison whose reply names neither; this parser is stricter on purpose and skips prose too.

    Example:

    ```python
    >>> parse_judgement("Output (b)")
    1
    >>> parse_judgement("Output (b) is worse than Output (a).") is None
    True
    ```
    """
    if not isinstance(reply, str):
        return None
    match = _ANSWER.match(reply)
    if match is None:
        return None
    return 0 if match.group(1).lower() == "a" else 1


OPENAI_API_HOST = "api.openai.com"
"""The one host `$OPENAI_API_KEY` is sent to (over https) when `OpenAIChatJudge` gets no `api_key`."""

JUDGE_API_KEY_ENV = "TRL_RANKING_JUDGE_API_KEY"
"""Environment variable holding the key for a judge endpoint other than OpenAI's (e.g. with `trl-ranking eval`)."""


def _is_openai_endpoint(base_url: str) -> bool:
    """Whether `base_url` is OpenAI's own API over https (not a look-alike host, port or a proxy path)."""
    parts = urlsplit(base_url)
    return parts.scheme == "https" and parts.hostname == OPENAI_API_HOST and parts.port in (None, 443)


def _is_local_host(host: str | None) -> bool:
    """Whether `host` is this machine (a loopback name or address): plain http to it leaves no machine."""
    import ipaddress

    if host is None:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The deadline of the request the current thread is sending (a `time.monotonic()` value), set by `OpenAIChatJudge`'s
# client at the start of each attempt and read by its sockets
_request_deadline = threading.local()


def _remaining(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    """A socket operation's timeout, cut to what is left of the request's total deadline."""
    deadline = getattr(_request_deadline, "at", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout_error("the request passed its total deadline (OpenAIChatJudge `timeout`)")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A network stream (httpcore's interface) whose every read and write waits at most until the deadline: httpx's
    own timeouts bound each operation, so a server trickling one byte a second could hold a request for ever."""

    def __init__(self, stream: Any, timeout_error: type[Exception]) -> None:
        self._stream, self._timeout_error = stream, timeout_error

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _remaining(timeout, self._timeout_error))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        return self._stream.write(buffer, _remaining(timeout, self._timeout_error))

    def close(self) -> None:
        return self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        stream = self._stream.start_tls(ssl_context, server_hostname, _remaining(timeout, self._timeout_error))
        return _DeadlineStream(stream, self._timeout_error)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """httpcore's network backend, its streams wrapped in `_DeadlineStream`."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        # httpcore's own timeout error, which httpx and then `openai` turn into their timeout errors (and retry)
        self._timeout_error = sys.modules[type(backend).__module__.split(".")[0]].ReadTimeout

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> _DeadlineStream:
        stream = self._backend.connect_tcp(host, port, _remaining(timeout, self._timeout_error), **kwargs)
        return _DeadlineStream(stream, self._timeout_error)

    def connect_unix_socket(self, path: str, timeout: float | None = None, **kwargs: Any) -> _DeadlineStream:
        stream = self._backend.connect_unix_socket(path, _remaining(timeout, self._timeout_error), **kwargs)
        return _DeadlineStream(stream, self._timeout_error)

    def sleep(self, seconds: float) -> None:
        return self._backend.sleep(seconds)


def _deadline_http_client(openai_module: Any, timeout: float) -> Any | None:
    """An httpx client (the flavour `openai` uses) whose requests each end after `timeout` seconds in all, or `None`
    where this httpx has no network backend to wrap (the client's per-operation timeouts then apply alone)."""
    import importlib

    http = importlib.import_module("httpx2" if hasattr(openai_module, "DefaultHttpx2Client") else "httpx")
    transport = http.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        logger.warning("OpenAIChatJudge: this httpx has no network backend to bound; `timeout` is per operation")
        return None
    pool._network_backend = _DeadlineBackend(backend)

    def start_deadline(request: Any) -> None:  # each attempt (the client's retries included) gets the whole timeout
        _request_deadline.at = time.monotonic() + timeout

    return http.Client(
        transport=transport, timeout=timeout, follow_redirects=True, event_hooks={"request": [start_deadline]}
    )


class OpenAIChatJudge:
    """Judge two (instruction, response) pairs by asking a chat model through an OpenAI-compatible endpoint.

    Each comparison is one chat-completions request, sent with the `openai` client (`pip install
    'trl-ranking[judge]'`; any server speaking the OpenAI chat API works: OpenAI, vLLM, TGI, llama.cpp, Ollama...),
    whose single user message is the DOVE paper's comparison prompt (arXiv 2404.00530, Appendix F;
    `DOVE_JOINT_PROMPT` when the two instructions differ, `DOVE_CONDITIONAL_PROMPT` when they are equal). The answer
    is parsed with `parse_judgement` ("Output (a)" -> 0, "Output (b)" -> 1, anything else `None`). `judge_batch` sends
    `num_workers` requests at a time, with a progress bar.

    Retries are the `openai` client's: timeouts, connection errors and the statuses 408, 409, 429 and 5xx are retried
    up to `max_retries` times with exponential backoff (0.5 s doubling, capped at 8 s, with jitter), or after the
    server's `Retry-After` when it asks for at most 60 s. `timeout` bounds each request (each attempt) as a whole:
    connecting, sending, waiting and reading together, so a server that keeps trickling bytes cannot hold it longer
    (httpx's own timeouts bound each network operation only). A comparison can so take up to
    `(max_retries + 1) * timeout` seconds plus the backoff. The statuses 401, 403 and 404 (a wrong key, URL or model)
    raise `JudgeRequestError` at once.

    The API key: `api_key` when given. Otherwise `$OPENAI_API_KEY` is sent to OpenAI's own API only
    (`https://api.openai.com`), never to another `base_url`: a key for another endpoint is passed as `api_key=...`,
    or (e.g. for `trl-ranking eval --judge openai --judge_base_url ...`) in `$TRL_RANKING_JUDGE_API_KEY`; without
    either, the placeholder `"EMPTY"` is sent (local servers need no key). A key is never sent over plain `http://` to
    a host other than this machine (it would travel in clear text): that raises a `ValueError`; use `https://`.

    A comparison whose request still fails, or whose reply is not in the paper's answer format, gets the verdict
    `None` ("no verdict", logged at WARNING with the reason): the pair builders and `pairwise_win_rate` skip and count
    it, as the official code skips it, and never read it as a tie or a win.

    Args:
        base_url (`str`): The API root, e.g. `"https://api.openai.com/v1"` or `"http://localhost:8000/v1"`.
        model (`str`): The model name sent in the request.
        api_key (`str`, *optional*): The key sent to `base_url`. Defaults to `$OPENAI_API_KEY` for OpenAI's API
            (`https://api.openai.com/...`) only, to `$TRL_RANKING_JUDGE_API_KEY` for any other endpoint, else
            `"EMPTY"` (local servers need no key).
        timeout (`float`, defaults to `60.0`): Seconds per request, in all (see above).
        max_retries (`int`, defaults to `3`): Retries after the first attempt.
        prompt_template (`str`, *optional*): Template for joint comparisons, with the fields `{instruction_1}`,
            `{output_1}`, `{instruction_2}`, `{output_2}`; defaults to `DOVE_JOINT_PROMPT`.
        conditional_prompt_template (`str` or `None`, *optional*): Template for comparisons with equal instructions,
            with the fields `{instruction}`, `{output_1}`, `{output_2}`; defaults to `DOVE_CONDITIONAL_PROMPT`. Pass
            `None` to use `prompt_template` for every comparison.
        temperature (`float` or `None`, defaults to `None`): Sent when not `None`. The default sends none, so the
            server's default applies (1.0 for OpenAI), as in the official DOVE code, which sets no temperature. Pass
            `0.0` for (nearly) deterministic verdicts.
        max_tokens (`int`, *optional*): Sent when not `None`.
        extra_body (`dict`, *optional*): More fields for the request body (e.g. `{"seed": 0}`).
        num_workers (`int`, defaults to `1`): Concurrent requests in `judge_batch`.
        progress_bar (`bool`, defaults to `True`): Show a progress bar in `judge_batch` (for more than one comparison).
        client (`openai.OpenAI`, *optional*): A ready client (e.g. `openai.AzureOpenAI`, or one with a custom
            `http_client`); `base_url`, `api_key`, `timeout` and `max_retries` then only describe it.

    Raises (on a call):
        JudgeRequestError: the status 401, 403 or 404 (misconfiguration). `complete` raises it for every failure.

    Example:

    ```python
    >>> from trl_ranking.judges import OpenAIChatJudge

    >>> judge = OpenAIChatJudge("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    >>> judge(("Where can I buy dry ice?", "At most grocery stores."), ("What is 2+2?", "5"))
    0
    ```
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        prompt_template: str | None = None,
        conditional_prompt_template: str | None = DOVE_CONDITIONAL_PROMPT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
        num_workers: int = 1,
        progress_bar: bool = True,
        client: Any | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not model:
            raise ValueError("model must be a non-empty model name")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        prompt_template = DOVE_JOINT_PROMPT if prompt_template is None else prompt_template
        self._check_template(
            prompt_template, "prompt_template", ("instruction_1", "output_1", "instruction_2", "output_2")
        )
        if conditional_prompt_template is not None:
            self._check_template(
                conditional_prompt_template, "conditional_prompt_template", ("instruction", "output_1", "output_2")
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = self._resolve_api_key(base_url, api_key) if client is None else api_key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.prompt_template = prompt_template
        self.conditional_prompt_template = conditional_prompt_template
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.num_workers = num_workers
        self.progress_bar = progress_bar
        self._client = client

    @staticmethod
    def _resolve_api_key(base_url: str, api_key: str | None) -> str | None:
        """The key to send: `$OPENAI_API_KEY` goes to OpenAI's own https endpoint only, never elsewhere."""
        if api_key is None:
            if _is_openai_endpoint(base_url):
                api_key = os.environ.get("OPENAI_API_KEY")
            else:
                api_key = os.environ.get(JUDGE_API_KEY_ENV)
                if api_key is None and os.environ.get("OPENAI_API_KEY"):
                    logger.info(
                        "OpenAIChatJudge: $OPENAI_API_KEY is not sent to %s, which is not OpenAI's API; pass "
                        "api_key=... (or set $%s) if this endpoint needs a key",
                        base_url,
                        JUDGE_API_KEY_ENV,
                    )
        parts = urlsplit(base_url)
        if api_key and api_key != "EMPTY" and parts.scheme == "http" and not _is_local_host(parts.hostname):
            raise ValueError(
                f"OpenAIChatJudge: refusing to send an API key over plain http to {parts.hostname} ({base_url}): it "
                "would travel in clear text. Use an https:// base_url, or no key for a server on this machine."
            )
        return api_key

    @staticmethod
    def _check_template(template: str, name: str, fields: tuple[str, ...]) -> None:
        try:
            rendered = template.format(**{field: f"<<{field}>>" for field in fields})
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"{name} must be a str.format template using only the fields {', '.join(fields)}: {error!r}"
            ) from error
        missing = [field for field in fields if f"<<{field}>>" not in rendered]
        if missing:
            raise ValueError(f"{name} does not use the field(s) {', '.join(missing)}")

    @property
    def client(self):
        """The `openai.OpenAI` client (built on first use)."""
        if self._client is None:
            try:
                import openai
            except ImportError as error:
                raise ImportError("OpenAIChatJudge needs openai: `pip install 'trl-ranking[judge]'`") from error
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "EMPTY",
                timeout=self.timeout,
                max_retries=self.max_retries,
                default_headers={"User-Agent": "trl-ranking"},
                http_client=_deadline_http_client(openai, self.timeout),
            )
        return self._client

    def build_prompt(self, first: Pair, second: Pair) -> str:
        """The text sent to the chat model for one comparison (first pair as (a), second as (b))."""
        (prompt_a, completion_a), (prompt_b, completion_b) = _check_pair(first, "first"), _check_pair(second, "second")
        instruction_a, instruction_b = _as_text(prompt_a, role_labels=True), _as_text(prompt_b, role_labels=True)
        output_a, output_b = _as_text(completion_a, role_labels=False), _as_text(completion_b, role_labels=False)
        if self.conditional_prompt_template is not None and instruction_a == instruction_b:
            return self.conditional_prompt_template.format(
                instruction=instruction_a, output_1=output_a, output_2=output_b
            )
        return self.prompt_template.format(
            instruction_1=instruction_a, output_1=output_a, instruction_2=instruction_b, output_2=output_b
        )

    def __call__(self, first: Pair, second: Pair) -> int | None:
        """Ask the chat model which pair is better: 0 for `first`, 1 for `second`, `None` for no verdict."""
        return self.judge_batch([first], [second])[0]

    def judge_batch(self, firsts: Sequence[Pair], seconds: Sequence[Pair]) -> list[int | None]:
        """Judge many comparisons, `num_workers` requests at a time; verdicts (0, 1 or `None`) in input order."""
        firsts, seconds = list(firsts), list(seconds)
        if len(firsts) != len(seconds):
            raise ValueError(f"got {len(firsts)} first pairs but {len(seconds)} second pairs; they must match")
        contents = [self.build_prompt(first, second) for first, second in zip(firsts, seconds)]
        replies = thread_map(
            self._reply_or_error,
            contents,
            max_workers=self.num_workers,
            desc="Judging",
            unit="comparison",
            disable=not self.progress_bar or len(contents) < 2,
        )
        verdicts: list[int | None] = []
        for index, reply in enumerate(replies):
            if isinstance(reply, JudgeRequestError):
                logger.warning("comparison %d: no verdict, the request failed: %s", index, reply)
                verdicts.append(None)
                continue
            verdict = parse_judgement(reply)
            if verdict is None:
                logger.warning(
                    "comparison %d: no verdict, the reply is not 'Output (a)' or 'Output (b)': %r", index, reply[:300]
                )
            verdicts.append(verdict)
        return verdicts

    def complete(self, content: str) -> str:
        """Send one user message to the endpoint (with the client's retries) and return the reply's text.

        Raises:
            JudgeRequestError: the request failed (after its retries) or the response has no message text.
        """
        import openai

        request: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}]}
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        if self.extra_body:
            request["extra_body"] = self.extra_body
        try:
            response = self.client.chat.completions.create(**request)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            # A wrong key, URL or model: every call would fail the same way
            raise _FatalJudgeError(f"{self.base_url}: {type(error).__name__}: {error}") from error
        except openai.OpenAIError as error:  # retries exhausted, or a status that is not retried (400, 422, ...)
            raise JudgeRequestError(f"{self.base_url}: {type(error).__name__}: {error}") from error
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as error:
            raise JudgeRequestError(
                f"{self.base_url} returned a response without choices[0].message.content: {response!r:.500}"
            ) from error
        if not isinstance(content, str):
            raise JudgeRequestError(f"{self.base_url} returned a non-text message content: {content!r}")
        return content

    def _reply_or_error(self, content: str) -> str | JudgeRequestError:
        try:
            return self.complete(content)
        except _FatalJudgeError:
            raise
        except JudgeRequestError as error:
            return error

    def __repr__(self) -> str:
        return f"OpenAIChatJudge(base_url={self.base_url!r}, model={self.model!r}, max_retries={self.max_retries})"


class _FatalJudgeError(JudgeRequestError):
    """The endpoint says the judge is misconfigured (status 401, 403 or 404)."""
