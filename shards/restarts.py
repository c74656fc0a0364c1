"""A writer's restart, both ways: the restarted shard announces itself, the others make room for it.

A restarted writer lost the streams of its channels: it starts them over in new epochs. Before it
assigns the first offset, every other shard ends the positioned subscriptions of those channels (2500 /
3010), so that each client resubscribes and is told ``recovered: false`` about what the old writer took
with it, then positions itself in the new epoch before anything is published in it. Telling was chosen
over resuming the old epoch from the offsets the other shards saw: a publication the old writer
acknowledged but died before sending is seen by nobody, so its offset would be given again to another
publication and the loss would go unnoticed.

The restarted shard's publications wait (:meth:`ChannelWriter.until_writing`) until every shard answered
its announcement, or ``WRITER_HOLD_TIMEOUT``: a shard that does not answer in time still ends its
clients' subscriptions when the first publication of a new epoch reaches it (gap detection). The
announcement also makes the other shards emit leaves for the clients the restarted shard lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from broker.access.redis_store import RedisAccessStore
from broker.access.rules import AccessRules, BadEntry
from broker.hashing import writer_for
from shards.connection import ClientConnection
from shards.peer_mesh import PEER_TIMEOUT, PeerMesh
from shards.writer import ChannelWriter

log = logging.getLogger("switchboard.shard")

# A (re)started writer holds its first publications at most this long while the other shards end the
# positioned subscriptions of its channels and subscribe to its new PUB (below the router's
# api_shard_timeout, so that a held publish is answered rather than timed out).
WRITER_HOLD_TIMEOUT = 3.0
# How long a shard waits for the subscriptions it ended for a restarted writer to come back.
RESUBSCRIBE_WAIT = 1.5
# How long a restarted shard repeats its announcement to shards that do not answer.
ANNOUNCE_FOR = 15.0


async def announce_start(
    writer: ChannelWriter, mesh: PeerMesh, boot: str, loop: asyncio.AbstractEventLoop
) -> None:
    """Tell the other shards this one started; open the writer once they are ready for it."""
    waiting = set(mesh.others())
    started = time.monotonic()
    deadline = started + ANNOUNCE_FOR
    loop.call_later(WRITER_HOLD_TIMEOUT, writer.open_writing, "timeout")
    while waiting and time.monotonic() < deadline:
        left = WRITER_HOLD_TIMEOUT - (time.monotonic() - started)
        timeout = left if not writer.writing() and left > 0.1 else PEER_TIMEOUT
        ordered = sorted(waiting)
        params = {"index": mesh.index, "boot": boot}
        outcomes = await asyncio.gather(
            *(mesh.request(index, "shard_started", params, timeout) for index in ordered),
            return_exceptions=True,
        )
        for index, outcome in zip(ordered, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                waiting.discard(index)
        if not waiting:
            writer.open_writing("every shard answered")
        else:
            await asyncio.sleep(0.2)
    writer.open_writing("announcement over")


async def load_access_rules(rules: AccessRules, mesh: PeerMesh, store: RedisAccessStore | None) -> None:
    """A shard that starts takes the session management entries (blocked users, revoked tokens) from
    Redis with the Redis engine, else from the first peer that answers: with the memory engine they are
    kept by every shard, and live as long as one of them does."""
    if store is not None:
        try:
            entries = await store.load()
        except Exception as exc:
            log.error("access rules not loaded from Redis: %r", exc)
        else:
            _apply_entries(rules, entries, "Redis")
            return
    for index in mesh.others():
        try:
            answer = await mesh.request(index, "access_rules", {}, PEER_TIMEOUT)
        except Exception as exc:  # a peer that is down or starting too: ask the next one
            log.debug("shard %d has no access rules for us: %r", index, exc)
            continue
        entries = answer.get("entries", []) if isinstance(answer, dict) else []
        _apply_entries(rules, entries, f"shard {index}")
        return


def _apply_entries(rules: AccessRules, entries: list[Any], source: str) -> None:
    for entry in entries:
        try:
            rules.apply(entry)
        except BadEntry as exc:
            log.warning("access rule from %s skipped: %s", source, exc)
    log.info("access rules loaded from %s: %d entries", source, len(entries))


class Subscriptions(Protocol):
    """This shard's data-plane subscriptions (``broker.ipc.pubsub.Subscriber``)."""

    @property
    def channels(self) -> set[str]: ...

    def rearm(self, channels: set[str]) -> None: ...

    def when_ready(self, channel: str, callback: Callable[[], None]) -> None: ...


class Positioned(Protocol):
    """Fan-out's hold on positioned subscriptions (``shards.fanout.FanOut``)."""

    def cut_positioned(self, channels: set[str], boot: str) -> list[tuple[ClientConnection, str]]: ...

    def resubscribed(self, conn: ClientConnection, channel: str) -> bool: ...


class PeerRestarts:
    """The side of every other shard: leaves for the lost clients, and room for the new epochs."""

    def __init__(
        self, writer: ChannelWriter, fanout: Positioned, size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.writer = writer
        self.fanout = fanout
        self.size = size
        self.loop = loop
        self.subscriber: Subscriptions | None = None
        # The boot of each other shard already handled: its announcement is repeated until answered.
        self._boots: dict[int, str] = {}

    async def restarted(self, index: int, boot: str) -> dict[str, Any]:
        """Shard ``index`` (re)started: leaves for its lost clients, and its channels' streams are new.

        Ends the positioned subscriptions of the channels it writes (their epoch is gone), subscribes to
        its new PUB again and waits for its welcome, then for the ended subscriptions to come back —
        each wait bounded — so that its first publications reach every subscriber here in the new epoch.
        """
        if self._boots.get(index) == boot:
            return {"leaves": 0, "ended": 0}  # a repeat of an announcement already handled
        self._boots[index] = boot
        leaves = await self.writer.forget_shard(index)
        if self.subscriber is None:
            return {"leaves": leaves, "ended": 0}
        channels = {ch for ch in self.subscriber.channels if writer_for(ch, self.size) == index}
        ended = self.fanout.cut_positioned(channels, boot)
        count = len(ended)
        self.subscriber.rearm(channels)
        welcomed: list[asyncio.Future[None]] = []
        for channel in channels:
            future: asyncio.Future[None] = self.loop.create_future()
            self.subscriber.when_ready(channel, _resolver(future))
            welcomed.append(future)
        if welcomed:
            await asyncio.wait(welcomed)  # bounded: when_ready gives up after READY_TIMEOUT
        deadline = time.monotonic() + RESUBSCRIBE_WAIT
        while ended and time.monotonic() < deadline:
            ended = [(conn, ch) for conn, ch in ended if not self.fanout.resubscribed(conn, ch)]
            if ended:
                await asyncio.sleep(0.02)
        if ended:
            log.info("%d subscriptions ended for shard %d did not come back in time", len(ended), index)
        return {"leaves": leaves, "ended": count}


def _resolver(future: asyncio.Future[None]) -> Callable[[], None]:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    return resolve
