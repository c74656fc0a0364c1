"""kill -9 of a history channel's writer shard, of the router, and of the writer in the middle of
publishing: who is told what, and nothing published after the writer is back is lost.

The subscribers are raw WebSocket clients on shard 0 that behave like the SDKs on a recoverable
subscription: on unsubscribe 2500 they subscribe again, recovering from the last position they saw.
The channel's writer is shard 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from broker.hashing import writer_for
from tests.integration.streamclient import StreamClient
from tests.integration.wsclient import WsClient, api, run, user_on_shard
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import eventually, eventually_async

WRITER = 1
HOME = 0
NAMESPACES = [
    {
        "name": "hist",
        "history_size": 500,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_recovery": True,
    }
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = {"namespaces": NAMESPACES}
    with Server(tmp_path_factory.mktemp("writer-restart"), shards=2, **extra) as srv:
        yield srv


@pytest.fixture
def channel(request: pytest.FixtureRequest) -> str:
    base = f"hist:{request.node.name[:40]}"
    return next(f"{base}-{i}" for i in range(1000) if writer_for(f"{base}-{i}", 2) == WRITER)


class Follower:
    """A recoverable subscription that resubscribes with recovery when the server ends it with 2500."""

    def __init__(self, client: WsClient, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.received: list[tuple[Any, int, str]] = []  # (data, offset, epoch)
        self.told: list[int] = []  # unsubscribe codes
        self.recovered: list[bool] = []  # one per resubscribe
        self.offset = 0
        self.epoch = ""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, server: Server, user: str, channel: str) -> Follower:
        client = await WsClient.connected(server.port, make_token(user))
        follower = cls(client, channel)
        reply = await client.subscribe(channel, recoverable=True)
        assert "subscribe" in reply, reply
        follower.offset = reply["subscribe"].get("offset", 0)
        follower.epoch = reply["subscribe"]["epoch"]
        follower._task = asyncio.get_running_loop().create_task(follower._follow())
        return follower

    def _take(self, pub: dict[str, Any], epoch: str) -> None:
        self.received.append((pub.get("data"), pub.get("offset", 0), epoch))
        self.offset = pub.get("offset", self.offset)

    async def _follow(self) -> None:
        while self.client.is_open:
            try:
                push = await self.client.wait_for(self._is_push, 30, "push")
            except AssertionError:
                return
            body = push["push"]
            if "pub" in body:
                self._take(body["pub"], self.epoch)
                continue
            self.told.append(body["unsubscribe"]["code"])
            assert body["unsubscribe"]["code"] == 2500, body
            reply = await self.client.subscribe(
                self.channel, recoverable=True, recover=True, offset=self.offset, epoch=self.epoch
            )
            result = reply["subscribe"]
            self.recovered.append(bool(result.get("recovered")))
            self.epoch = result["epoch"]
            self.offset = result.get("offset", 0)
            for pub in result.get("publications", []):
                self._take(pub, self.epoch)

    def _is_push(self, message: dict[str, Any]) -> bool:
        body = message.get("push")
        return (
            isinstance(body, dict)
            and body.get("channel") == self.channel
            and ("pub" in body or "unsubscribe" in body)
        )

    def numbers(self) -> list[int]:
        return [data["n"] for data, _, _ in self.received]

    async def until(self, wanted: set[int], timeout: float = 15.0) -> None:
        await eventually_async(
            lambda: sorted(wanted - set(self.numbers())),
            until=lambda missing: not missing,
            timeout=timeout,
            what="every wanted number (the last value: those missing)",
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()


async def _plain(server: Server, channel: str) -> WsClient:
    client = await WsClient.connected(server.port, make_token(user_on_shard("plain", HOME)))
    reply = await client.subscribe(channel)
    assert "subscribe" in reply and not reply["subscribe"].get("positioned"), reply
    return client


async def _followers(server: Server, channel: str, count: int = 3) -> list[Follower]:
    return [await Follower.start(server, user_on_shard(f"follower{n}", HOME), channel) for n in range(count)]


def _shard_back(server: Server, index: int, old_pid: int, timeout: float = 20.0) -> None:
    eventually(
        lambda: server.shard_pids().get(index) not in (None, old_pid),
        timeout=timeout,
        interval=0.1,
        what=f"shard {index} back under a new pid",
        retry_on=(AssertionError, requests.RequestException, KeyError),
    )
    server.wait_ready(timeout)


async def _publish(server: Server, channel: str, numbers: range) -> list[dict[str, Any]]:
    results = []
    for n in numbers:
        reply = await api(server, "publish", {"channel": channel, "data": {"n": n}})
        assert "result" in reply, reply
        results.append(reply["result"])
    return results


def _assert_in_order(follower: Follower) -> None:
    """No publication twice, and offsets increase within each epoch."""
    numbers = follower.numbers()
    assert len(numbers) == len(set(numbers)), numbers
    last: dict[str, int] = {}
    for _, offset, epoch in follower.received:
        assert offset > last.get(epoch, 0), follower.received
        last[epoch] = offset


async def _plain_numbers(client: WsClient, channel: str, count: int, timeout: float = 15.0) -> list[int]:
    return [data["n"] for data in await client.publications(channel, count, timeout)]


def test_writer_kill_loses_nothing_published_after_it_is_back(server: Server, channel: str) -> None:
    async def scenario() -> None:
        followers = await _followers(server, channel)
        plain = await _plain(server, channel)
        await _publish(server, channel, range(1))
        for follower in followers:
            await follower.until({0})
        assert await _plain_numbers(plain, channel, 1) == [0]

        old = server.shard_pids()[WRITER]
        os.kill(old, signal.SIGKILL)
        await asyncio.to_thread(_shard_back, server, WRITER, old)
        results = await _publish(server, channel, range(1, 31))
        assert [r["offset"] for r in results] == list(range(1, 31))  # the streams started over
        for follower in followers:
            await follower.until(set(range(31)))
            assert follower.numbers() == list(range(31))
            _assert_in_order(follower)
            assert follower.told == [2500] and follower.recovered == [False]
        assert await _plain_numbers(plain, channel, 30) == list(range(1, 31))
        assert not any("unsubscribe" in (m.get("push") or {}) for m in plain.inbox), plain.inbox
        for follower in followers:
            await follower.close()
        await plain.close()

    run(scenario(), 30)


def test_router_kill_loses_nothing(server: Server, channel: str) -> None:
    async def scenario() -> None:
        followers = await _followers(server, channel)
        plain = await _plain(server, channel)
        os.kill(server.router_pid(), signal.SIGKILL)
        await asyncio.to_thread(server.wait_ready, 20)
        results = await _publish(server, channel, range(30))
        assert [r["offset"] for r in results] == list(range(1, 31))
        for follower in followers:
            await follower.until(set(range(30)))
            assert follower.numbers() == list(range(30)) and follower.told == []
            _assert_in_order(follower)
        assert await _plain_numbers(plain, channel, 30) == list(range(30))
        for follower in followers:
            await follower.close()
        await plain.close()

    run(scenario(), 30)


class Publisher(threading.Thread):
    """Publishes ``{"n": 0}``, ``{"n": 1}`` … through the API until stopped; keeps what was acknowledged."""

    def __init__(self, server: Server, channel: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.channel = channel
        self.acked: dict[int, dict[str, Any]] = {}
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                reply = self.server.api("publish", {"channel": self.channel, "data": {"n": n}}, timeout=10)
            except Exception:
                reply = {}
            if "result" in reply:
                self.acked[n] = reply["result"]
            else:
                self.refused += 1
                time.sleep(0.05)  # a pause between publishes while the writer is away, not a wait
            n += 1


def test_writer_killed_mid_publish(server: Server, channel: str) -> None:
    """What the API acknowledged is delivered, or the subscriber is told (2500, then recovered: false)."""

    async def scenario() -> None:
        followers = await _followers(server, channel)
        plain = await _plain(server, channel)
        publisher = Publisher(server, channel)
        publisher.start()
        try:
            await eventually_async(lambda: len(publisher.acked) >= 20, timeout=10, what="20 acknowledged")
            old = server.shard_pids()[WRITER]
            old_epoch = next(iter(publisher.acked.values()))["epoch"]
            os.kill(old, signal.SIGKILL)
            await asyncio.to_thread(_shard_back, server, WRITER, old)
            await eventually_async(
                lambda: len([r for r in list(publisher.acked.values()) if r["epoch"] != old_epoch]) >= 20,
                timeout=10,
                what="20 publications acknowledged after the restart",
            )
        finally:
            publisher.stop.set()
            await asyncio.to_thread(publisher.join, 15)
        acked = dict(publisher.acked)
        epochs = {r["epoch"] for r in acked.values()}
        assert len(epochs) == 2, epochs
        new_epoch = next(e for e in epochs if e != old_epoch)
        after = {n for n, r in acked.items() if r["epoch"] == new_epoch}
        before = set(acked) - after
        assert publisher.refused or before, "the kill happened outside the publishing"
        for follower in followers:
            await follower.until(after)
            _assert_in_order(follower)
            missing = before - set(follower.numbers())
            # The subscription was ended and recovered: false reported, whatever it had missed.
            assert follower.told == [2500] and follower.recovered == [False], (follower.told, missing)
            # Nothing acknowledged after the writer was back is missing; nothing unacknowledged arrived
            # under the new epoch.
            assert {d["n"] for d, _, e in follower.received if e == new_epoch} == after
        for follower in followers:
            await follower.close()
        # Without a position there is nothing to tell: it just keeps receiving.
        got = [m["push"]["pub"]["data"]["n"] for m in plain.inbox if "pub" in (m.get("push") or {})]
        assert after <= set(got) and len(got) == len(set(got)), (sorted(after - set(got)), got)
        assert not any("unsubscribe" in (m.get("push") or {}) for m in plain.inbox), plain.inbox
        await plain.close()

    run(scenario(), 40)


def test_silent_shard_does_not_hold_the_writer(server: Server, channel: str) -> None:
    """A shard that does not answer the restarted writer delays its first publications by a bounded
    time only; once it wakes up its positioned subscribers are told and recover in the new epoch."""

    async def scenario() -> None:
        followers = await _followers(server, channel)
        home = server.shard_pids()[HOME]
        old = server.shard_pids()[WRITER]
        os.kill(home, signal.SIGSTOP)
        try:
            os.kill(old, signal.SIGKILL)
            # The writer answers although shard 0 is silent.
            result = await eventually_async(
                lambda: api(server, "publish", {"channel": channel, "data": {"n": 0}}),
                until=lambda reply: "result" in reply,
                timeout=20,
                interval=0.1,
                what="the restarted writer to accept a publication",
                retry_on=(AssertionError, requests.RequestException),
            )
            assert result["result"]["offset"] == 1, result
        finally:
            os.kill(home, signal.SIGCONT)
        # Awake, shard 0 answers the writer's announcement late: its clients are told then.
        await eventually_async(
            lambda: [(f.told, f.recovered) for f in followers],
            until=lambda states: all(recovered for _, recovered in states),
            timeout=10,
            what="every follower told and recovered",
        )
        await _publish(server, channel, range(1, 11))
        for follower in followers:
            await follower.until(set(range(1, 11)))
            assert follower.told == [2500] and follower.recovered == [False]
            _assert_in_order(follower)
            await follower.close()

    run(scenario(), 40)


def test_uni_stream_is_told_with_3010(server: Server, channel: str) -> None:
    """A uni stream's subscriptions are server-side: a restarted writer ends its connection with 3010."""
    first = server.api("publish", {"channel": channel, "data": {"n": 0}})["result"]
    position = {"recover": True, "offset": first["offset"], "epoch": first["epoch"]}
    body = {"token": make_token(user_on_shard("uni", HOME)), "subs": {channel: position}}
    client = StreamClient(server.port, body, timeout=15)
    try:
        assert client.connect()["subs"][channel]["recovered"] is True
        old = server.shard_pids()[WRITER]
        os.kill(old, signal.SIGKILL)
        _shard_back(server, WRITER, old)
        disconnect = client.read_until("disconnect")["disconnect"]
        assert disconnect["code"] == 3010, disconnect
    finally:
        client.close()
