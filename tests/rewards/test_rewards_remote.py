"""The reward server and its client over real HTTP: uvicorn in a thread on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from alignloop.data.schemas import Message
from alignloop.rewards import (
    FunctionRewardSource,
    MixedRewardSource,
    RemoteRewardSource,
    RewardSourceError,
    SentimentRewardSource,
    ToxicityRewardSource,
)
from alignloop.rewards.server import create_reward_app

PROMPTS = ["Say something.", [Message(role="system", content="Be kind."), Message(role="user", content="Hi!")]]
RESPONSES = ["You are a stupid idiot, shut up.", "I love helping you, what a wonderful day!"]


@contextlib.contextmanager
def serving(app):
    """Serve `app` on a free local port in a background thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mix_source():
    return MixedRewardSource([(1.0, ToxicityRewardSource()), (0.5, SentimentRewardSource())])


@pytest.fixture(scope="module")
def mix_server(mix_source):
    with serving(create_reward_app(mix_source)) as url:
        yield url


def test_round_trip_gives_the_local_scores(mix_source, mix_server):
    remote = RemoteRewardSource(mix_server, timeout_s=10, retries=0)
    try:
        assert remote(PROMPTS, RESPONSES) == pytest.approx(mix_source(PROMPTS, RESPONSES), abs=1e-12)
        assert remote([], []) == []
    finally:
        remote.close()
    assert httpx.get(f"{mix_server}/health").json() == {"status": "ok", "source": "mix"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompts": ["a", "b"], "responses": ["x"]}, "responses"),
        ({"prompts": [""], "responses": ["x"]}, "prompts"),
        ({"prompts": [[{"role": "user"}]], "responses": ["x"]}, "content"),
        ({"prompts": ["a"]}, "responses"),
        ({"prompts": ["a"], "responses": [3]}, "responses"),
    ],
)
def test_malformed_requests_are_422_with_the_field(mix_server, body, field):
    answer = httpx.post(f"{mix_server}/score", json=body)
    assert answer.status_code == 422
    assert any(field in map(str, error["loc"]) for error in answer.json()["detail"])


def test_a_4xx_answer_is_not_retried(mix_server):
    remote = RemoteRewardSource(f"{mix_server}/nowhere", retries=3, backoff_s=5)
    started = time.monotonic()
    with pytest.raises(RewardSourceError, match="refused the request: HTTP 404"):
        remote(["p"], ["r"])
    assert time.monotonic() - started < 2


def test_a_down_server_fails_after_the_retries_with_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    remote = RemoteRewardSource(url, timeout_s=1, retries=2, backoff_s=0.01)
    with pytest.raises(RewardSourceError) as caught:
        remote(["p"], ["r"])
    message = str(caught.value)
    assert f"{url}/score" in message and "could not connect" in message and "after 3 tries" in message


def test_a_slow_server_times_out():
    def slow(prompts, responses):
        time.sleep(0.6)
        return [0.0] * len(responses)

    with serving(create_reward_app(FunctionRewardSource(slow, name="slow"))) as url:
        remote = RemoteRewardSource(url, timeout_s=0.2, retries=1, backoff_s=0.01)
        with pytest.raises(RewardSourceError, match=r"no answer within timeout_s=0.2 .*after 2 tries"):
            remote(["p"], ["r"])


def test_a_failing_source_is_a_500_that_the_client_reports():
    calls = []

    def flaky(prompts, responses):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("GPU fell over")
        return [float(len(r)) for r in responses]

    with serving(create_reward_app(FunctionRewardSource(flaky, name="flaky"))) as url:
        # The first try gets a 500, the retry succeeds.
        assert RemoteRewardSource(url, retries=1, backoff_s=0.01)(["p"], ["abc"]) == [3.0]
        calls.clear()
        with pytest.raises(RewardSourceError, match="HTTP 500.*flaky failed: RuntimeError: GPU fell over.*after 1 try "):
            RemoteRewardSource(url, retries=0)(["p"], ["abc"])


def test_a_bad_answer_from_a_server_is_checked():
    # A server that is not alignloop's could answer NaN; the client checks as any source does.
    remote = RemoteRewardSource("http://127.0.0.1:1", name="odd server")
    remote._client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, text='{"rewards": [NaN]}')))
    with pytest.raises(RewardSourceError, match="odd server: score nan at index 0"):
        remote(["p"], ["r"])
    remote._client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, json={"scores": [1]})))
    with pytest.raises(RewardSourceError, match=r'expected JSON \{"rewards"'):
        remote(["p"], ["r"])


def test_bad_client_settings_are_refused():
    with pytest.raises(ValueError, match="http://host:port"):
        RemoteRewardSource("localhost:8000")
    with pytest.raises(ValueError, match="retries"):
        RemoteRewardSource("http://127.0.0.1:8000", retries=-1)
