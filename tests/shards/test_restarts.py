"""A writer's restart with fake peers: the announcement opens the writer; peers make room once."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.channels import ChannelRules
from broker.config import build
from broker.engine import MemoryHistory
from broker.hashing import writer_for
from broker.ipc.control import ShardUnavailable
from broker.publication import Publication
from shards import restarts
from shards.restarts import PeerRestarts, announce_start
from shards.writer import ChannelWriter


def make_writer(index: int, size: int) -> ChannelWriter:
    cfg = build({"token_hmac_secret_key": "x", "join_leave": True}, environ={})
    writer = ChannelWriter(
        ChannelRules.from_config(cfg), index, size, cfg.global_history_meta_ttl, MemoryHistory()
    )
    writer.sink = type("Sink", (), {"publish": lambda self, p: True})()
    return writer


class Mesh:
    def __init__(self, index: int, size: int, silent: set[int]) -> None:
        self.index = index
        self.size = size
        self.silent = silent
        self.asked: list[int] = []

    def others(self) -> list[int]:
        return [i for i in range(self.size) if i != self.index]

    async def request(self, index: int, method: str, params: dict[str, Any], timeout: float) -> Any:
        self.asked.append(index)
        if index in self.silent:
            raise ShardUnavailable("silent")
        return {"leaves": 0, "ended": 0}


def test_the_writer_opens_once_every_shard_answered():
    async def scenario() -> bool:
        writer = make_writer(0, 3)
        await asyncio.wait_for(
            announce_start(writer, Mesh(0, 3, set()), "boot", asyncio.get_running_loop()), 2
        )  # type: ignore[arg-type]
        return writer.writing()

    assert asyncio.run(scenario())


def test_a_silent_shard_holds_the_writer_only_until_the_hold_timeout(monkeypatch):
    monkeypatch.setattr(restarts, "WRITER_HOLD_TIMEOUT", 0.2)
    monkeypatch.setattr(restarts, "ANNOUNCE_FOR", 0.5)

    async def scenario() -> tuple[bool, bool, list[int]]:
        writer = make_writer(0, 3)
        mesh = Mesh(0, 3, {2})
        task = asyncio.ensure_future(announce_start(writer, mesh, "boot", asyncio.get_running_loop()))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        early = writer.writing()
        await asyncio.sleep(0.3)
        late = writer.writing()
        await asyncio.wait_for(task, 2)
        return early, late, mesh.asked

    early, late, asked = asyncio.run(scenario())
    assert (early, late) == (False, True)
    assert asked.count(1) == 1 and asked.count(2) > 1  # the silent shard is asked again


class Subscriber:
    def __init__(self, channels: set[str]) -> None:
        self.channels = channels
        self.rearmed: set[str] = set()

    def rearm(self, channels: set[str]) -> None:
        self.rearmed |= channels

    def when_ready(self, channel: str, callback: Any) -> None:
        asyncio.get_running_loop().call_soon(callback)


class Positioned:
    def __init__(self) -> None:
        self.cut: list[set[str]] = []

    def cut_positioned(self, channels: set[str], boot: str) -> list[Any]:
        self.cut.append(channels)
        return []

    def resubscribed(self, conn: Any, channel: str) -> bool:
        return True


def test_peers_end_the_restarted_writers_channels_and_handle_each_boot_once():
    async def scenario() -> tuple[Any, ...]:
        writer = make_writer(0, 2)
        await writer.write_publication(Publication("room", b"", user="u", client="c", kind="join"))
        channels = {f"ch{i}" for i in range(20)}
        fanout = Positioned()
        peers = PeerRestarts(writer, fanout, 2, asyncio.get_running_loop())
        peers.subscriber = subscriber = Subscriber(channels)
        first = await asyncio.wait_for(peers.restarted(1, "boot-a"), 2)
        again = await asyncio.wait_for(peers.restarted(1, "boot-a"), 2)
        return first, again, fanout.cut, subscriber.rearmed, channels

    first, again, cut, rearmed, channels = asyncio.run(scenario())
    of_shard_1 = {ch for ch in channels if writer_for(ch, 2) == 1}
    assert cut == [of_shard_1] and rearmed == of_shard_1
    assert again == {"leaves": 0, "ended": 0}
    assert first["ended"] == 0
