"""The proxies' HTTP client against a real backend: failures named, calls bounded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from broker.proxy.http import POOL_SIZE, ProxyClient, ProxyFailed, forwarded_headers, kept_headers
from tests.support.backend import Backend, Reply
from tests.support.server import free_port


def answer(path: str, body: Any) -> dict[str, Any] | Reply:
    if path == "/slow":
        return Reply(delay=1.0)
    if path == "/500":
        return Reply(status=500)
    if path == "/garbage":
        return Reply(body=b"{")
    return {"result": {"echo": body}}


@pytest.fixture(scope="module")
def backend() -> Any:
    with Backend(answer) as running:
        yield running


def test_answers_and_every_kind_of_failure(backend: Backend) -> None:
    async def scenario() -> None:
        calls = {path: ProxyClient(backend.url(path), 0.3) for path in ("/ok", "/slow", "/500", "/garbage")}
        assert await calls["/ok"].call({"a": 1}, {}) == {"result": {"echo": {"a": 1}}}
        for path, reason in (("/slow", "did not answer"), ("/500", "HTTP 500"), ("/garbage", "not JSON")):
            with pytest.raises(ProxyFailed, match=reason):
                await calls[path].call({}, {})
        down = ProxyClient(f"http://127.0.0.1:{free_port()}/x", 0.3)
        with pytest.raises(ProxyFailed, match="unreachable"):
            await down.call({}, {})
        for client in [*calls.values(), down]:
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_calls_beyond_the_pool_and_its_queue_fail_at_once(backend: Backend) -> None:
    async def scenario() -> None:
        client = ProxyClient(backend.url("/slow"), 2.0, max_waiting=0)
        waiting = [asyncio.ensure_future(client.call({}, {})) for _ in range(POOL_SIZE)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(ProxyFailed, match="in flight already"):
            await client.call({}, {})
        assert time.monotonic() - started < 1.5  # refused, not queued behind the 2 s deadline
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, dict) for r in results), results
        assert client.in_flight == 0
        await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_headers_kept_at_connect_and_forwarded_per_proxy() -> None:
    real, supplied = kept_headers(
        {"cookie": "c=1", "user-agent": "ua", "authorization": "no"},
        {"X-App": "web", "X-Forwarded-For": "6.6.6.6", "Cookie": "forged"},
        frozenset({"cookie", "user-agent"}),
        frozenset({"x-app", "x-forwarded-for", "cookie"}),
    )
    assert real == {"cookie": "c=1", "user-agent": "ua"}
    assert supplied == {"x-app": "web", "cookie": "forged"}  # never a client address
    # One proxy forwards the cookie only, another allows the client's X-App; the real cookie wins.
    assert forwarded_headers(real, supplied, frozenset({"cookie"}), frozenset(), {"x-s": "1"}) == {
        "cookie": "c=1",
        "x-s": "1",
    }
    assert forwarded_headers(real, supplied, frozenset(), frozenset({"x-app", "cookie"}), {}) == {
        "x-app": "web",
        "cookie": "forged",
    }
