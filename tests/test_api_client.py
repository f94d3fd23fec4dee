"""The API client against a real HTTP server on 127.0.0.1 that misbehaves on purpose (tests/api_server.py)."""

from __future__ import annotations

import time

import pytest

from api_server import FakeApi, closed_port
from workbench.api.cache import ResponseCache
from workbench.api.client import Answer, ApiClient, Failure, ModelNotFound, Request
from workbench.api.evaluator import parse_evaluator
from workbench.api.prices import Price


@pytest.fixture
def server():
    servers = []

    def start(**kwargs):
        api = FakeApi(**kwargs)
        servers.append(api)
        return api, api.start()

    yield start
    for api in servers:
        api.stop()


def _client(base_url, tmp_path=None, price=None, max_cost=None, **spec):
    e = parse_evaluator({"provider": "openai-compatible", "model": "m", "base_url": base_url, "timeout_s": 2,
                         "max_retries": 3, **spec})
    cache = ResponseCache(tmp_path / "cache.sqlite3") if tmp_path is not None else None
    return ApiClient(e, "sk-test", price or Price(0, 0, "test"), cache, max_cost)


def _requests(n, max_tokens=8):
    return [Request(f"question {i}?", max_tokens, 4) for i in range(n)]


def test_answers_in_order_with_reported_usage_and_cost(server, tmp_path):
    api, url = server()
    client = _client(url, tmp_path, price=Price(1.0, 2.0, "test"), max_concurrency=3)
    out = client.answer_many(_requests(5))
    assert [o.text for o in out] == [api.answer(f"question {i}?") for i in range(5)]
    assert all(isinstance(o, Answer) and o.usage_reported and not o.cached for o in out)
    assert out[0].cost_usd == pytest.approx((out[0].input_tokens * 1.0 + out[0].output_tokens * 2.0) / 1e6)
    assert api.auth_headers == ["Bearer sk-test"] * 5
    assert client.snapshot()["done"] == 5 and client.snapshot()["in_flight"] == 0


def test_the_cache_answers_a_repeated_request_without_sending_it(server, tmp_path):
    api, url = server()
    first = _client(url, tmp_path).answer_many(_requests(3))
    again = _client(url, tmp_path).answer_many(_requests(3))  # a new client: the cache is on disk
    assert api.received == 3
    assert [a.text for a in again] == [a.text for a in first] and all(a.cached for a in again)
    assert _client(url, None).answer_many(_requests(1))[0].cached is False  # --no-cache: no cache object
    assert api.received == 4


def test_429_with_retry_after_is_waited_out(server):
    api, url = server(behaviour=lambda n, body: (429, {"Retry-After": "1"}, '{"error": {"message": "slow down"}}') if n == 1 else None)
    client = _client(url)
    seen = []
    client.on_activity = seen.append
    start = time.monotonic()
    out = client.answer_many(_requests(1))
    assert isinstance(out[0], Answer) and time.monotonic() - start >= 1.0
    assert api.received == 2 and client.snapshot()["retries"] == 1
    assert any(s["waiting"] == 1 for s in seen)  # the progress line showed it waiting on the rate limit


def test_500_and_a_timeout_are_retried(server):
    api, url = server(behaviour=lambda n, body: {1: (500, {}, "oops"), 2: "hang"}.get(n))
    out = _client(url, timeout_s=0.5).answer_many(_requests(1))
    assert isinstance(out[0], Answer) and api.received == 3


def test_retries_exhausted_fail_that_request_only(server):
    api, url = server(behaviour=lambda n, body: (503, {}, "down") if body["messages"][0]["content"] == "question 1?" else None)
    out = _client(url, max_retries=1).answer_many(_requests(3))
    assert isinstance(out[0], Answer) and isinstance(out[2], Answer)
    assert isinstance(out[1], Failure) and "503" in out[1].message


def test_401_stops_sending_with_one_message(server):
    api, url = server(behaviour=lambda n, body: (401, {}, '{"error": {"message": "Incorrect API key provided: sk-test"}}'))
    client = _client(url, max_concurrency=1, api_key_env="WB_TEST_SECRET_KEY")
    out = client.answer_many(_requests(4))
    assert out == [None] * 4 and api.received == 1
    assert client.stop_kind == "refused" and "refused the key (401" in client.stop_reason


def test_404_fails_the_cells(server):
    api, url = server(behaviour=lambda n, body: (404, {}, '{"error": {"message": "The model `m` does not exist"}}'))
    with pytest.raises(ModelNotFound, match="does not exist"):
        _client(url).answer_many(_requests(2))


def test_a_malformed_body_fails_that_request_and_the_rest_go_on(server):
    api, url = server(behaviour=lambda n, body: (200, {}, "{not json") if n == 2 else None)
    out = _client(url, max_concurrency=1).answer_many(_requests(3))
    assert [type(o) for o in out] == [Answer, Failure, Answer]
    assert "not JSON" in out[1].message


def test_connection_refused_fails_the_requests_without_a_traceback():
    out = _client(f"http://127.0.0.1:{closed_port()}/v1").answer_many(_requests(2))
    assert all(isinstance(o, Failure) and o.message.startswith("could not connect") for o in out)


def test_the_budget_stops_before_a_request_would_cross_it(server):
    api, url = server()
    # ~$0.40 a request at most (4 input tokens *1.25 + 16, 8 output tokens at $20,000/M each): a $1 budget
    # allows two, and the reported usage makes each cost less, so a third fits only once the first two settle.
    client = _client(url, price=Price(20_000.0, 20_000.0, "test"), max_cost=1.0, max_concurrency=1)
    out = client.answer_many(_requests(6))
    spent = client.snapshot()["session_usd"]
    assert spent <= 1.0 and client.stop_kind == "budget" and "max_cost_usd" in client.stop_reason
    answered = [o for o in out if o is not None]
    assert 1 <= len(answered) < 6 and out[len(answered):] == [None] * (6 - len(answered))
    assert api.received == len(answered)


def test_anthropic_messages_wire(server):
    api, url = server()
    e = parse_evaluator({"provider": "anthropic", "model": "claude-x", "base_url": url.removesuffix("/v1"),
                         "prices": {"input": 3, "output": 15}})
    out = ApiClient(e, "sk-ant-test", Price(3, 15, "test")).answer_many(_requests(1))
    assert out[0].text == api.answer("question 0?") and out[0].usage_reported
    assert api.auth_headers == ["sk-ant-test"]
