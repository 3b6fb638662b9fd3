"""Tests for the judge interface, `RewardModelJudge` and `OpenAIChatJudge` (with a mocked `openai` client, offline)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from trl_ranking.assets import make_tiny_reward_model
from trl_ranking.judges import (
    DOVE_CONDITIONAL_PROMPT,
    DOVE_JOINT_PROMPT,
    JudgeRequestError,
    OpenAIChatJudge,
    RewardModelJudge,
    parse_judgement,
    validate_judgement,
)
from trl_ranking.rewards import RewardModelScorer


openai = pytest.importorskip("openai")  # the `judge` extra


def make_reward_model(seed: int):
    """A tiny random reward model (a 2-layer Llama sequence classifier), as freshly built: in training mode."""
    return make_tiny_reward_model(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, seed=seed
    ).train()


# --- validate_judgement and parse_judgement ---------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(0, 0), (1, 1), (np.int64(1), 1), (np.int32(0), 0)])
def test_validate_judgement_accepts_integer_indices(value, expected):
    result = validate_judgement(value, "row 4")
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", [True, False, 2, -1, 0.0, 1.0, "0", [0], float("nan")])
def test_validate_judgement_rejects_everything_else(value):
    with pytest.raises(ValueError, match=r"^row 4 \(paired with row 9\): the judge must return 0 or 1"):
        validate_judgement(value, "row 4 (paired with row 9)")


def test_validate_judgement_passes_no_verdict_through():
    # None is "no verdict" (an unparseable reply or a failed call): returned as is, for the caller to skip and count
    assert validate_judgement(None, "row 4") is None


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Output (a)", 0),
        ("Output (b)", 1),
        ("output(b).", 1),
        ("  **Output (a)**\n", 0),
        ("OUTPUT ( B )", 1),
        ("(b)", 1),
        ("`Output (a)`", 0),
        ("Preferred Output: Output (b)", 1),
        ("## Preferred Output:\nOutput (a)", 0),
    ],
)
def test_parse_judgement_reads_the_papers_answer_format(reply, expected):
    assert parse_judgement(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        # Prose is not guessed at: the first output named is not the preferred one in the first two
        "Output (b) is worse than Output (a).",
        "Output (a) and Output (b) are tied.",
        "Output (a) is better than Output (b).",
        "After reading both, I prefer Output (b).",
        "I cannot decide.",
        "",
        "   ",
        "a",
        "2",
        "Output (c)",
        "Output (a) or Output (b)",
        None,
    ],
)
def test_parse_judgement_gives_no_verdict_for_anything_else(reply):
    assert parse_judgement(reply) is None


# --- RewardModelJudge ---------------------------------------------------------------------------------------------


class LengthScorer:
    """Scores a pair by the length of its completion; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return [float(len(completion)) for completion in completions]


def test_reward_model_judge_with_a_scorer_callable():
    scorer = LengthScorer()
    judge = RewardModelJudge(scorer)
    long_pair, short_pair = ("Where can I buy dry ice?", "At most grocery stores."), ("What is 2+2?", "4")
    assert judge(long_pair, short_pair) == 0
    assert judge(short_pair, long_pair) == 1
    # Equal scores prefer the first pair in both orders, i.e. a flip: the both-orders protocol sees a tie
    equal = ("Another question", "x" * len(long_pair[1]))
    assert judge(long_pair, equal) == 0 and judge(equal, long_pair) == 0

    scorer.calls.clear()
    firsts = [long_pair, short_pair, long_pair]
    seconds = [short_pair, long_pair, short_pair]
    assert judge.judge_batch(firsts, seconds) == [0, 1, 0]
    # One scoring call, each distinct (prompt, completion) pair scored once
    assert len(scorer.calls) == 1 and len(scorer.calls[0][0]) == 2
    with pytest.raises(ValueError, match="2 first pairs but 1 second"):
        judge.judge_batch(firsts[:2], seconds[:1])
    with pytest.raises(ValueError, match="comparison 0: second"):
        judge.judge_batch([long_pair], ["not a pair"])


def test_reward_model_judge_with_a_reward_model(tokenizer):
    model = make_reward_model(seed=0)
    judge = RewardModelJudge(model, tokenizer, batch_size=3, max_length=64)
    assert isinstance(judge.scorer, RewardModelScorer) and judge.scorer.batch_size == 3
    pairs = [
        ("Where can I buy dry ice?", " Google says it's available at Home Depot."),
        ("Can an egg really be fried on a sidewalk?", " No, that would burn the egg."),
        ("What are some popular dip ideas?", " Tzatziki, hummus, or pico de gallo."),
    ]
    scores = judge.scorer([p for p, _ in pairs], [c for _, c in pairs])
    firsts = [pairs[0], pairs[1], pairs[2], pairs[1]]
    seconds = [pairs[1], pairs[2], pairs[0], pairs[0]]
    expected = [0 if scores[pairs.index(a)] >= scores[pairs.index(b)] else 1 for a, b in zip(firsts, seconds)]
    assert judge.judge_batch(firsts, seconds) == expected
    assert [judge(a, b) for a, b in zip(firsts, seconds)] == expected
    # The two orders agree unless the scores are equal
    assert [judge(b, a) for a, b in zip(firsts, seconds)] == [1 - value for value in expected]


def test_reward_model_judge_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="only used when a reward model"):
        RewardModelJudge(LengthScorer(), tokenizer)
    with pytest.raises(ValueError, match="scorer_or_model must be"):
        RewardModelJudge(3)


# --- OpenAIChatJudge with a mocked `openai` client ----------------------------------------------------------------


def chat_reply(content):
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(role="assistant", content=content))])


def http_module():
    """The HTTP library the installed `openai` is built on: `httpx2` (openai >= 3) or `httpx`."""
    return pytest.importorskip("httpx2" if hasattr(openai, "DefaultHttpx2Client") else "httpx")


def http_request(url: str = "http://judge/v1/chat/completions"):
    """A real request object, as the client attaches to its errors (`openai` reads its headers)."""
    return http_module().Request("POST", url)


def status_error(status: int, message: str):
    """The `openai` exception the client raises for an HTTP `status` (after its retries, for retried statuses)."""
    response = http_module().Response(status, request=http_request(), json={"error": {"message": message}})
    cls = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError}.get(
        status, openai.InternalServerError
    )
    return cls(message, response=response, body=None)


class FakeChatClient:
    """Stands for `openai.OpenAI`: `chat.completions.create(**request)` answers from a script and records requests.
    An entry is a reply (`chat_reply`), an exception to raise, or a callable(request) returning one of them."""

    def __init__(self):
        self.script = []
        self.default = None
        self.requests = []
        self.lock = threading.Lock()
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **request):
        with self.lock:
            self.requests.append(request)
            entry = self.script.pop(0) if self.script else self.default
        if callable(entry):
            entry = entry(request)
        if isinstance(entry, BaseException):
            raise entry
        return entry


@pytest.fixture
def stub():
    return FakeChatClient()


FIRST = ("Where can I buy dry ice?", "Google says it's available at Home Depot or Ace Hardware stores.")
SECOND = ("Can an egg really be fried on a sidewalk on a hot day?", "No, that would burn the egg.")


def make_judge(stub, **kwargs):
    defaults = {"model": "stub-judge", "api_key": "sk-test", "timeout": 5.0, "max_retries": 2, "client": stub}
    return OpenAIChatJudge("http://judge/v1", **{**defaults, **kwargs})


def content_of(request) -> str:
    (message,) = request["messages"]
    assert message["role"] == "user"
    return message["content"]


def test_chat_judge_request_and_answers(stub):
    stub.script = [chat_reply("Output (a)"), chat_reply("Output (b)"), chat_reply("Output (a)")]
    judge = make_judge(stub)
    assert judge(FIRST, SECOND) == 0
    assert judge(SECOND, FIRST) == 1
    request = stub.requests[0]
    assert request["model"] == "stub-judge"
    # The official DOVE code sends no temperature (the API default, 1.0): neither does the default judge
    assert "temperature" not in request and "max_tokens" not in request and "extra_body" not in request
    make_judge(stub, temperature=0.0, max_tokens=8, extra_body={"seed": 0})(FIRST, SECOND)
    assert stub.requests[2]["temperature"] == 0.0 and stub.requests[2]["max_tokens"] == 8
    assert stub.requests[2]["extra_body"] == {"seed": 0}
    content = content_of(request)
    # Both instructions and both responses, in the asked order, in the paper's joint prompt
    assert content == DOVE_JOINT_PROMPT.format(
        instruction_1=FIRST[0], output_1=FIRST[1], instruction_2=SECOND[0], output_2=SECOND[1]
    )
    assert content.index(FIRST[0]) < content.index(FIRST[1]) < content.index(SECOND[0]) < content.index(SECOND[1])
    assert "### Instruction (a):" in content and "### Instruction (b):" in content
    swapped = content_of(stub.requests[1])
    assert swapped.index(SECOND[0]) < swapped.index(FIRST[0])


def test_chat_judge_uses_the_conditional_prompt_for_equal_instructions(stub):
    stub.default = chat_reply("Output (b)")
    judge = make_judge(stub)
    other = (FIRST[0], "I don't know, I'm not a salesperson.")
    assert judge(FIRST, other) == 1
    content = content_of(stub.requests[0])
    assert content == DOVE_CONDITIONAL_PROMPT.format(instruction=FIRST[0], output_1=FIRST[1], output_2=other[1])
    assert content.count(FIRST[0]) == 1
    # With no conditional template, the joint prompt is used for every comparison
    make_judge(stub, conditional_prompt_template=None)(FIRST, other)
    assert "### Instruction (b):" in content_of(stub.requests[1])


def test_chat_judge_conversational_pairs(stub):
    stub.default = chat_reply("Output (a)")
    judge = make_judge(stub)
    first = ([{"role": "user", "content": FIRST[0]}], [{"role": "assistant", "content": FIRST[1]}])
    second = (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": SECOND[0]},
        ],
        SECOND[1],
    )
    assert judge(first, second) == 0
    content = content_of(stub.requests[0])
    assert f"### Instruction (a):\n{FIRST[0]}\n" in content
    assert f"User: Hi\n\nAssistant: Hello!\n\nUser: {SECOND[0]}" in content
    assert f"### Output (a):\n{FIRST[1]}\n" in content


def test_chat_judge_failed_request_is_no_verdict(stub, caplog):
    # What the client raises once its retries are spent (or for a status it does not retry, e.g. 400)
    stub.default = status_error(503, "Error code: 503 - unavailable")
    judge = make_judge(stub)
    with pytest.raises(JudgeRequestError, match=r"InternalServerError: Error code: 503 - unavailable"):
        judge.complete("Which is better?")
    with caplog.at_level("WARNING", logger="trl_ranking.judges"):
        assert judge(FIRST, SECOND) is None
    assert "comparison 0: no verdict, the request failed: http://judge/v1: InternalServerError" in caplog.text
    stub.default = openai.APIConnectionError(request=http_request("http://judge/v1"))
    assert judge(FIRST, SECOND) is None


def test_chat_judge_batch_gives_no_verdict_for_one_failed_comparison(stub):
    # One bad comparison (a 400: e.g. over the judge's context length) does not lose the others
    def by_instruction(request):
        if "### Instruction (a):\n" + SECOND[0] in content_of(request):
            return status_error(400, "context length exceeded")
        return chat_reply("Output (a)")

    stub.default = by_instruction
    judge = make_judge(stub, num_workers=2)
    assert judge.judge_batch([FIRST, SECOND, FIRST], [SECOND, FIRST, SECOND]) == [0, None, 0]
    assert len(stub.requests) == 3


@pytest.mark.parametrize("status", [401, 404])
def test_chat_judge_misconfiguration_raises(stub, status):
    stub.default = status_error(status, "invalid api key or model")
    judge = make_judge(stub, num_workers=2)
    with pytest.raises(JudgeRequestError, match="invalid api key or model"):
        judge.judge_batch([FIRST, SECOND], [SECOND, FIRST])


def test_chat_judge_unparseable_answer_is_no_verdict(stub, caplog):
    stub.script = [chat_reply("Both responses are equally good.")]
    with caplog.at_level("WARNING", logger="trl_ranking.judges"):
        assert make_judge(stub)(FIRST, SECOND) is None
    assert "'Both responses are equally good.'" in caplog.text
    stub.script = [SimpleNamespace(choices=[]), chat_reply(None)]
    assert make_judge(stub)(FIRST, SECOND) is None
    with pytest.raises(JudgeRequestError, match="non-text message content: None"):
        make_judge(stub).complete("Which is better?")


def test_chat_judge_batch_keeps_the_order_and_shows_progress(stub, capsys):
    # The answer depends on the request: prefer the pair whose output is shorter
    def by_length(request):
        content = content_of(request)
        out_a = content.split("### Output (a):\n")[1].split("\n\n###")[0]
        out_b = content.split("### Output (b):\n")[1].split("\n\n##")[0]
        return chat_reply("Output (a)" if len(out_a) <= len(out_b) else "Output (b)")

    stub.default = by_length
    judge = make_judge(stub, num_workers=3)
    firsts = [FIRST, SECOND, FIRST, SECOND, FIRST]
    seconds = [SECOND, FIRST, SECOND, FIRST, SECOND]
    assert judge.judge_batch(firsts, seconds) == [1, 0, 1, 0, 1]
    assert len(stub.requests) == 5
    progress = capsys.readouterr().err
    assert "Judging: 100%" in progress and "5/5" in progress
    make_judge(stub, progress_bar=False).judge_batch(firsts, seconds)
    assert "Judging" not in capsys.readouterr().err


def test_chat_judge_builds_an_openai_client_with_its_settings(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = OpenAIChatJudge("http://localhost:8000/v1/", model="m", timeout=7.0, max_retries=4)
    client = judge.client
    assert isinstance(client, openai.OpenAI) and judge.client is client
    assert str(client.base_url).rstrip("/") == "http://localhost:8000/v1"
    assert client.max_retries == 4 and client.timeout == 7.0 and client.api_key == "EMPTY"


def test_chat_judge_retries_are_the_openai_clients(monkeypatch):
    """The real `openai` client on an in-process transport (no network): 500 and 429 are retried, then answered."""
    http = http_module()
    answers = [
        (500, {"error": {"message": "overloaded"}}),
        (429, {"error": {"message": "slow down"}}),
        (200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Output (b)"}}]}),
    ]  # fmt: skip
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        status, body = answers[len(seen) - 1]
        return http.Response(status, json=body, headers={"retry-after-ms": "1"})

    client = openai.OpenAI(
        base_url="http://judge/v1",
        api_key="sk-test",
        max_retries=2,
        http_client=http.Client(transport=http.MockTransport(handler)),
    )
    judge = OpenAIChatJudge("http://judge/v1", model="m", client=client)
    assert judge(FIRST, SECOND) == 1
    assert len(seen) == 3 and seen[0] == seen[2] and seen[0]["model"] == "m"
    seen.clear()
    answers[0] = (401, {"error": {"message": "invalid api key"}})
    with pytest.raises(JudgeRequestError, match="AuthenticationError"):
        judge(FIRST, SECOND)
    assert len(seen) == 1  # not retried


def test_chat_judge_works_inside_a_running_event_loop(stub):
    # In Jupyter an event loop already runs in the main thread: the judge's requests must still complete
    import asyncio

    stub.default = chat_reply("Output (b)")
    judge = make_judge(stub, num_workers=2)

    async def inside_a_loop():
        return judge.judge_batch([FIRST, SECOND], [SECOND, FIRST])

    assert asyncio.run(inside_a_loop()) == [1, 1]


def test_chat_judge_bad_configuration():
    with pytest.raises(ValueError, match="base_url"):
        OpenAIChatJudge("localhost:8000", model="m")
    with pytest.raises(ValueError, match="does not use the field"):
        OpenAIChatJudge("http://x", model="m", prompt_template="{instruction_1} {output_1} {output_2}")
    with pytest.raises(ValueError, match="only the fields"):
        OpenAIChatJudge("http://x", model="m", conditional_prompt_template="{question} {output_1} {output_2}")


# --- end to end with the pair builder -----------------------------------------------------------------------------


def test_chat_judge_builds_joint_pairs_from_val_sft(stub):
    from tiny_models import DOVE_DIR

    from trl_ranking.data.joint_pairs import build_joint_pairs

    with open(DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:24]

    def shorter_or_first(request):
        """Prefers the shorter output, but answers "Output (a)" when the lengths are within 20 characters, and
        answers in prose (no verdict) when the longer output is (a) and longer by 20 to 60 characters."""
        content = content_of(request)
        out_a = content.split("### Output (a):\n")[1].split("\n\n### Instruction (b)")[0]
        out_b = content.split("### Output (b):\n")[1].split("\n\n## Preferred Output:")[0]
        if abs(len(out_a) - len(out_b)) < 20 or len(out_a) < len(out_b):
            return chat_reply("Output (a)")
        if len(out_a) - len(out_b) < 60:
            return chat_reply("Output (b) is better than Output (a).")
        return chat_reply("Output (b)")

    stub.default = shorter_or_first
    with pytest.warns(UserWarning, match="no verdict for"):
        judge = make_judge(stub, num_workers=4)
        pairs, stats = build_joint_pairs(rows, judge, seed=0, batch_size=8, return_stats=True)
    assert len(stub.requests) == stats.judge_calls == 2 * stats.asked == 48
    lengths = {row["instruction"]: len(row["response"]) for row in rows}
    asked = set()
    for request in stub.requests:
        content = content_of(request)
        first = content.split("### Instruction (a):\n")[1].split("\n\n### Output (a)")[0]
        second = content.split("### Instruction (b):\n")[1].split("\n\n### Output (b)")[0]
        asked.add(frozenset((first, second)))
    expected_ties = sum(1 for a, b in asked if abs(lengths[a] - lengths[b]) < 20)
    expected_failed = sum(1 for a, b in asked if 20 <= abs(lengths[a] - lengths[b]) < 60)
    assert expected_ties > 0 and expected_failed > 0
    assert stats.ties == expected_ties and stats.failed == expected_failed
    assert stats.kept == len(pairs) == stats.asked - expected_ties - expected_failed
    assert all(len(row["chosen"]) + 60 <= len(row["rejected"]) for row in pairs)


def test_reward_model_judge_builds_joint_pairs(tokenizer):
    from tiny_models import DOVE_DIR

    from trl_ranking.data.joint_pairs import build_joint_pairs

    with open(DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:40]
    judge = RewardModelJudge(make_reward_model(seed=1), tokenizer, batch_size=16, max_length=128)
    pairs, stats = build_joint_pairs(rows, judge, seed=0, return_stats=True)
    scores = judge.scorer([row["instruction"] for row in rows], [row["response"] for row in rows])
    score_of = {row["instruction"]: score for row, score in zip(rows, scores)}
    assert stats.asked == 40 and stats.kept == len(pairs) == 40 - stats.ties
    for row in pairs:
        assert score_of[row["chosen_prompt"]] > score_of[row["rejected_prompt"]]


# --- issue 27: scores checked, the environment's key kept to OpenAI, a total deadline per request -----------------


@pytest.mark.parametrize(
    "scores, message",
    [
        (["9", "11", "13"], r"comparison 0, first pair \(prompt 'p0'\) \(the scorer's score\): a reward must be a number, got str \('9'\)"),
        ([1.0, None, 2.0], r"comparison 0, second pair \(prompt 'p1'\) \(the scorer's score\): a reward must be a number, got NoneType"),
        ([1.0, 2.0, float("nan")], r"comparison 1, second pair \(prompt 'p2'\) \(the scorer's score\): the reward is not finite"),
    ],
)
def test_reward_model_judge_checks_every_score(scores, message):
    # Text scores would compare as text ('9' > '13'), keeping 9 as chosen over 11 and 13
    judge = RewardModelJudge(lambda prompts, completions: list(scores))
    pairs = [("p0", "a"), ("p1", "b"), ("p2", "c")]
    with pytest.raises(ValueError, match=message):
        judge.judge_batch([pairs[0], pairs[1]], [pairs[1], pairs[2]])


def test_reward_model_judge_accepts_numpy_and_tensor_scores():
    import torch

    judge = RewardModelJudge(lambda prompts, completions: torch.tensor([9.0, 11.0]))
    assert judge(("p", "a"), ("p", "b")) == 1
    judge = RewardModelJudge(lambda prompts, completions: np.array([13, 11]))
    assert judge(("p", "a"), ("p", "b")) == 0


@pytest.mark.parametrize(
    "base_url, sent",
    [
        ("https://api.openai.com/v1", "sk-from-env"),
        ("https://api.openai.com/v1/", "sk-from-env"),
        ("http://api.openai.com/v1", "EMPTY"),  # plain http: never the key
        ("http://127.0.0.1:8000/v1", "EMPTY"),
        ("http://judge.example.com/v1", "EMPTY"),
        ("https://api.openai.com.evil.example/v1", "EMPTY"),
        ("https://my-proxy.example/api.openai.com/v1", "EMPTY"),
    ],
)
def test_chat_judge_sends_the_environments_key_only_to_openai(monkeypatch, base_url, sent):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.delenv("TRL_RANKING_JUDGE_API_KEY", raising=False)
    judge = OpenAIChatJudge(base_url, model="m")
    assert judge.client.api_key == sent  # built, not called: nothing is sent anywhere
    assert "sk-from-env" not in repr(judge)


def test_chat_judge_key_for_another_endpoint_is_explicit(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.delenv("TRL_RANKING_JUDGE_API_KEY", raising=False)
    assert OpenAIChatJudge("http://127.0.0.1:8000/v1", model="m", api_key="sk-mine").client.api_key == "sk-mine"
    monkeypatch.setenv("TRL_RANKING_JUDGE_API_KEY", "sk-judge")
    assert OpenAIChatJudge("http://127.0.0.1:8000/v1", model="m").client.api_key == "sk-judge"
    # An explicit key over plain http to a host that is not this machine travels in clear text: refused
    with pytest.raises(ValueError, match=r"plain http.*judge\.example\.com"):
        OpenAIChatJudge("http://judge.example.com/v1", model="m", api_key="sk-mine")
    with pytest.raises(ValueError, match=r"plain http.*judge\.example\.com"):
        OpenAIChatJudge("http://judge.example.com/v1", model="m")  # the judge variable's key, the same
    monkeypatch.delenv("TRL_RANKING_JUDGE_API_KEY")
    assert OpenAIChatJudge("https://judge.example.com/v1", model="m", api_key="sk-mine").client.api_key == "sk-mine"


def _trickling_server(delay: float) -> tuple[int, threading.Event]:
    """A local HTTP server that answers one request with a valid reply, one byte every `delay` seconds."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()
    body = json.dumps(
        {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Output (b)"}}]}
    ).encode()  # fmt: skip
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def serve():
        connection, _ = listener.accept()
        with connection, listener:
            connection.recv(65536)
            for byte in reply:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(delay)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], stop


def test_chat_judge_timeout_bounds_a_trickling_request(monkeypatch):
    """Every read gets a byte within the per-read timeout, yet the whole reply takes ~40 s: the call must fail after
    about `timeout` seconds, not when the server is done."""
    import time

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    port, stop = _trickling_server(delay=0.1)
    judge = OpenAIChatJudge(f"http://127.0.0.1:{port}/v1", model="m", timeout=1.0, max_retries=0)
    start = time.monotonic()
    try:
        with pytest.raises(JudgeRequestError, match=r"within 1 s|[Tt]imeout|timed out"):
            judge.complete("hi")
    finally:
        stop.set()
    assert time.monotonic() - start < 8.0
