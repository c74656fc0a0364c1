"""ZeroMQ request/reply between a ROUTER and DEALERs in one loop."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from broker import errors
from broker.ipc.control import NotConnected, RemoteError, Requester, Responder, ShardUnavailable, client_error
from tests.support.waiting import eventually_async


async def _exchange(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/c.ipc"
    requester = Requester(loop, ctx, endpoint)

    async def handler(method, params):
        if method == "fail":
            raise errors.BAD_REQUEST()
        if method == "slow":
            await asyncio.sleep(1)  # a handler slower than the caller's deadline: the point
        if method == "boom":
            raise RuntimeError("secret detail")
        return {"echo": params, "method": method}

    responder = Responder(loop, ctx, endpoint, b"shard-0", handler)
    # The sockets connect in the background: a request before that is unanswered.
    result = await eventually_async(
        lambda: requester.request(b"shard-0", "ping", {"n": 0}, 1.0), timeout=10, retry_on=(ShardUnavailable,)
    )
    assert result == {"echo": {"n": 0}, "method": "ping"}
    many = await asyncio.gather(*(requester.request(b"shard-0", "x", {"n": i}, 2.0) for i in range(300)))
    assert [r["echo"]["n"] for r in many] == list(range(300))
    with pytest.raises(RemoteError) as info:
        await requester.request(b"shard-0", "fail", {}, 1.0)
    assert info.value.code == 107
    with pytest.raises(RemoteError) as info:
        await requester.request(b"shard-0", "boom", {}, 1.0)
    assert info.value.code == 100 and "secret" not in info.value.message
    with pytest.raises(ShardUnavailable):
        await requester.request(b"shard-0", "slow", {}, 0.1)
    with pytest.raises(ShardUnavailable):
        await requester.request(b"shard-9", "ping", {}, 1.0)
    responder.close()
    requester.close()
    ctx.term()


def test_requests_replies_errors_and_deadlines(tmp_path):
    asyncio.run(_exchange(tmp_path))


def test_a_remote_error_reaches_the_client_as_the_shard_gave_it(caplog):
    err = client_error(RemoteError(108, "not available"), "publish to chat", errors.INTERNAL)
    assert err == errors.ClientError(108, "not available")
    assert not caplog.records  # the shard answered: nothing to report here


def test_an_unanswered_request_becomes_the_given_error_and_one_log_line(caplog):
    unavailable = errors.INTERNAL.with_message("shard unavailable")
    err = client_error(ShardUnavailable("shard-1 did not answer within 1s"), "presence", unavailable)
    assert err == unavailable and err is not unavailable  # a fresh error to raise
    assert [r.getMessage() for r in caplog.records] == ["presence: shard-1 did not answer within 1s"]


async def _late_peer(tmp_path, grace: float) -> tuple[object, float]:
    """A responder that connects 0.2 s after the request is made, as a peer that is still booting."""
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/late-{grace}.ipc"
    requester = Requester(loop, ctx, endpoint, connect_grace=grace)
    responders: list[Responder] = []

    def connect() -> None:
        responders.append(Responder(loop, ctx, endpoint, b"shard-1", lambda method, params: {"ok": method}))

    loop.call_later(0.2, connect)
    started = loop.time()
    try:
        outcome: object = await requester.request(b"shard-1", "ping", {}, 5.0)
    except ShardUnavailable as exc:
        outcome = exc
    elapsed = loop.time() - started
    for responder in responders:
        responder.close()
    requester.close()
    ctx.term()
    return outcome, elapsed


def test_a_peer_not_connected_yet_is_asked_again_within_the_grace(tmp_path):
    outcome, _ = asyncio.run(_late_peer(tmp_path, 2.0))
    assert outcome == {"ok": "ping"}


def test_without_a_grace_a_missing_peer_fails_at_once(tmp_path):
    outcome, elapsed = asyncio.run(_late_peer(tmp_path, 0.0))
    assert isinstance(outcome, NotConnected) and elapsed < 0.1
