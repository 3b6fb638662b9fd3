"""Tests for the judge interface, `RewardModelJudge` and `OpenAIChatJudge` (against a stub server on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# --- OpenAIChatJudge against a stub server -------------------------------------------------------------------------


def chat_reply(content):
    return 200, {
        "id": "stub",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


class StubChatServer:
    """An OpenAI-compatible `/v1/chat/completions` stub: answers from a script, records every request."""

    def __init__(self):
        self.script = []  # (status, body, headers) or a callable(request_json) -> (status, body)
        self.default = None
        self.requests = []
        self.delays = []  # seconds to wait before answering, one per request in arrival order
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                delay = stub.delays.pop(0) if stub.delays else 0.0
                if delay:
                    time.sleep(delay)
                entry = stub.script.pop(0) if stub.script else stub.default
                if callable(entry):
                    entry = entry(body)
                status, payload, *rest = entry
                headers = rest[0] if rest else {}
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # the client timed out and left
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = StubChatServer()
    yield server
    server.close()


FIRST = ("Where can I buy dry ice?", "Google says it's available at Home Depot or Ace Hardware stores.")
SECOND = ("Can an egg really be fried on a sidewalk on a hot day?", "No, that would burn the egg.")


def make_judge(stub, **kwargs):
    defaults = {"model": "stub-judge", "api_key": "sk-test", "timeout": 5.0, "max_retries": 2, "backoff": 0.01}
    return OpenAIChatJudge(stub.base_url, **{**defaults, **kwargs})


def test_chat_judge_request_and_answers(stub):
    stub.script = [chat_reply("Output (a)"), chat_reply("Output (b)"), chat_reply("Output (a)")]
    judge = make_judge(stub)
    assert judge(FIRST, SECOND) == 0
    assert judge(SECOND, FIRST) == 1
    request = stub.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "stub-judge"
    # The official DOVE code sends no temperature (the API default, 1.0): neither does the default judge
    assert "temperature" not in request["body"]
    make_judge(stub, temperature=0.0)(FIRST, SECOND)
    assert stub.requests[2]["body"]["temperature"] == 0.0
    (message,) = request["body"]["messages"]
    assert message["role"] == "user"
    content = message["content"]
    # Both instructions and both responses, in the asked order, in the paper's joint prompt
    assert content == DOVE_JOINT_PROMPT.format(
        instruction_1=FIRST[0], output_1=FIRST[1], instruction_2=SECOND[0], output_2=SECOND[1]
    )
    assert content.index(FIRST[0]) < content.index(FIRST[1]) < content.index(SECOND[0]) < content.index(SECOND[1])
    assert "### Instruction (a):" in content and "### Instruction (b):" in content
    swapped = stub.requests[1]["body"]["messages"][0]["content"]
    assert swapped.index(SECOND[0]) < swapped.index(FIRST[0])


def test_chat_judge_uses_the_conditional_prompt_for_equal_instructions(stub):
    stub.default = chat_reply("Output (b)")
    judge = make_judge(stub)
    other = (FIRST[0], "I don't know, I'm not a salesperson.")
    assert judge(FIRST, other) == 1
    content = stub.requests[0]["body"]["messages"][0]["content"]
    assert content == DOVE_CONDITIONAL_PROMPT.format(instruction=FIRST[0], output_1=FIRST[1], output_2=other[1])
    assert content.count(FIRST[0]) == 1
    # With no conditional template, the joint prompt is used for every comparison
    make_judge(stub, conditional_prompt_template=None)(FIRST, other)
    assert "### Instruction (b):" in stub.requests[1]["body"]["messages"][0]["content"]


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
    content = stub.requests[0]["body"]["messages"][0]["content"]
    assert f"### Instruction (a):\n{FIRST[0]}\n" in content
    assert f"User: Hi\n\nAssistant: Hello!\n\nUser: {SECOND[0]}" in content
    assert f"### Output (a):\n{FIRST[1]}\n" in content


def test_chat_judge_retries_a_500_then_succeeds(stub, caplog):
    stub.script = [
        (500, {"error": "overloaded"}),
        (429, {"error": "slow down"}, {"Retry-After": "0"}),
        chat_reply("Output (b)"),
    ]
    judge = make_judge(stub)
    with caplog.at_level("WARNING", logger="trl_ranking.judges"):
        assert judge(FIRST, SECOND) == 1
    assert len(stub.requests) == 3
    assert stub.requests[0]["body"] == stub.requests[2]["body"]
    assert "HTTP 500" in caplog.text and "HTTP 429" in caplog.text


def test_chat_judge_gives_up_after_max_retries(stub, caplog):
    stub.default = (503, {"error": "unavailable"})
    judge = make_judge(stub, max_retries=2)
    # `complete` raises; a comparison gets no verdict (None), with the reason in the log
    with pytest.raises(JudgeRequestError, match=r"HTTP 503 .*unavailable.*gave up after 3 attempts"):
        judge.complete("Which is better?")
    assert len(stub.requests) == 3
    with caplog.at_level("WARNING", logger="trl_ranking.judges"):
        assert judge(FIRST, SECOND) is None
    assert len(stub.requests) == 6
    assert "comparison 0: no verdict, the request failed: HTTP 503" in caplog.text


def test_chat_judge_batch_gives_no_verdict_for_one_failed_comparison(stub):
    # One bad comparison (a 400: e.g. over the judge's context length) does not lose the others
    def by_instruction(body):
        content = body["messages"][0]["content"]
        if "### Instruction (a):\n" + SECOND[0] in content:
            return 400, {"error": "context length exceeded"}
        return chat_reply("Output (a)")

    stub.default = by_instruction
    judge = make_judge(stub, num_workers=2)
    assert judge.judge_batch([FIRST, SECOND, FIRST], [SECOND, FIRST, SECOND]) == [0, None, 0]
    assert len(stub.requests) == 3  # a 400 is not retried


def test_chat_judge_does_not_retry_a_client_error(stub):
    stub.script = [(401, {"error": {"message": "invalid api key"}})]
    judge = make_judge(stub)
    with pytest.raises(JudgeRequestError, match="HTTP 401.*invalid api key"):
        judge(FIRST, SECOND)
    assert len(stub.requests) == 1


def test_chat_judge_retries_a_timeout(stub):
    stub.delays = [1.0]
    stub.default = chat_reply("Output (a)")
    judge = make_judge(stub, timeout=0.3)
    assert judge(FIRST, SECOND) == 0
    assert len(stub.requests) == 2


def test_chat_judge_unparseable_answer_is_no_verdict(stub, caplog):
    stub.script = [chat_reply("Both responses are equally good.")]
    with caplog.at_level("WARNING", logger="trl_ranking.judges"):
        assert make_judge(stub)(FIRST, SECOND) is None
    assert "'Both responses are equally good.'" in caplog.text
    stub.script = [(200, "not json at all"), (200, "not json at all")]
    assert make_judge(stub)(FIRST, SECOND) is None
    with pytest.raises(JudgeRequestError, match="without choices.*not json at all"):
        make_judge(stub).complete("Which is better?")


def test_chat_judge_connection_refused_is_retried_then_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = OpenAIChatJudge(f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(JudgeRequestError, match=r"could not reach .*gave up after 2 attempts"):
        judge.complete("Which is better?")
    assert judge(FIRST, SECOND) is None


class RawServer:
    """A loopback TCP server answering each connection with a scripted behaviour, for HTTP failures that
    `http.server` cannot produce. Each behaviour is `callable(connection, stop_event)`; the last one repeats.
    Bounded: every wait checks the stop event, and `close` stops the accept loop and the handlers."""

    def __init__(self, behaviours):
        self.behaviours = list(behaviours)
        self.connections = 0
        self.sent = []  # bytes sent per connection
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                continue
            behaviour = self.behaviours[min(self.connections, len(self.behaviours) - 1)]
            self.connections += 1
            self.sent.append(0)
            index = len(self.sent) - 1
            thread = threading.Thread(target=self._handle, args=(connection, behaviour, index), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _handle(self, connection, behaviour, index):
        with connection:
            connection.settimeout(2.0)
            _read_request(connection)
            with contextlib.suppress(OSError):
                for chunk in behaviour(self.stop):
                    connection.sendall(chunk)
                    self.sent[index] += len(chunk)

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.sock.close()


def _read_request(connection):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


def _http_reply(content: str) -> bytes:
    body = json.dumps(chat_reply(content)[1]).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def raw_server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    servers = []

    def start(*behaviours):
        servers.append(RawServer(behaviours))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_chat_judge_timeout_bounds_a_trickling_response(raw_server):
    # The whole answer, status line and headers included, one byte every 0.05 s (about 10 s in all): the deadline
    # (`timeout`) must end the call long before it is complete, whatever the per-read timeouts
    reply = _http_reply("Output (a)")

    def trickle(stop):
        for byte in reply:
            if stop.wait(0.05):
                return
            yield bytes([byte])

    server = raw_server(trickle)
    judge = OpenAIChatJudge(server.base_url, model="m", timeout=0.5, max_retries=0)
    with pytest.raises(JudgeRequestError, match="within the 0.5s timeout"):
        judge.complete("Which is better?")
    assert server.connections == 1
    assert server.sent[0] < len(reply) // 2  # the client left early, with most of the answer unsent


@pytest.mark.parametrize(
    "broken",
    [
        b"HELLO\r\n\r\n",  # a malformed status line (http.client's BadStatusLine)
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"choi',  # a truncated body (IncompleteRead)
    ],
    ids=["bad-status-line", "incomplete-read"],
)
def test_chat_judge_retries_and_wraps_protocol_errors(raw_server, broken):
    server = raw_server(lambda stop: iter([broken]), lambda stop: iter([_http_reply("Output (b)")]))
    judge = OpenAIChatJudge(server.base_url, model="m", timeout=5, max_retries=1, backoff=0.01)
    assert judge(FIRST, SECOND) == 1
    assert server.connections == 2
    # Without a retry left, the error is a JudgeRequestError naming the URL
    server = raw_server(lambda stop: iter([broken]))
    judge = OpenAIChatJudge(server.base_url, model="m", timeout=5, max_retries=0)
    with pytest.raises(JudgeRequestError, match=r"could not reach http://127\.0\.0\.1:\d+/v1/chat/completions"):
        judge.complete("Which is better?")


def test_chat_judge_batch_keeps_the_order(stub):
    # The answer depends on the request: prefer the pair whose output is shorter
    def by_length(body):
        content = body["messages"][0]["content"]
        out_a = content.split("### Output (a):\n")[1].split("\n\n###")[0]
        out_b = content.split("### Output (b):\n")[1].split("\n\n##")[0]
        return chat_reply("Output (a)" if len(out_a) <= len(out_b) else "Output (b)")

    stub.default = by_length
    judge = make_judge(stub, num_workers=3)
    firsts = [FIRST, SECOND, FIRST, SECOND, FIRST]
    seconds = [SECOND, FIRST, SECOND, FIRST, SECOND]
    assert judge.judge_batch(firsts, seconds) == [1, 0, 1, 0, 1]
    assert len(stub.requests) == 5


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
    from conftest import DOVE_DIR

    from trl_ranking.data.joint_pairs import build_joint_pairs

    with open(DOVE_DIR / "anthropic_helpful" / "val_sft.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][:24]

    def shorter_or_first(body):
        """Prefers the shorter output, but answers "Output (a)" when the lengths are within 20 characters, and
        answers in prose (no verdict) when the longer output is (a) and longer by 20 to 60 characters."""
        content = body["messages"][0]["content"]
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
        content = request["body"]["messages"][0]["content"]
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
    from conftest import DOVE_DIR

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
