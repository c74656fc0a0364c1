"""The channel writer: the one place on a node that orders a channel's publications.

Every channel has one writer shard (:func:`broker.hashing.writer_for`). It gives each publication its
offset and epoch from the history engine, keeps the join/leave members of the channels it writes, and
sends publications on to every shard through its PUB socket. Reads of the stream (history, position,
recovery) are answered here too, so that the engine is called from this module only. Engine calls are
awaited (an engine may be remote); the memory engine's never suspend, so a write completes in the step
that started it and publications leave in the order their writes started.

A writer that (re)started holds its first publications until the other shards are ready for its new
epochs (:mod:`shards.restarts` opens it with :meth:`ChannelWriter.open_writing`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from broker import errors
from broker.channels import ChannelOptions, ChannelRules
from broker.engine.base import HistoryResult, RecoveryResult, StreamPosition
from broker.engine.history import HistoryEngine
from broker.hashing import shard_for
from broker.ipc.control import Raw
from broker.metrics.counters import ShardCounters
from broker.publication import Publication

log = logging.getLogger("switchboard.shard")

# Recent recovery answers kept per writer (see shards.peer_requests.recover).
RECOVERY_ANSWERS_KEPT = 64


class PublicationSink(Protocol):
    """Where ordered publications go: the writer's PUB socket to every shard."""

    def publish(self, publication: Publication) -> bool: ...


class Relay(Protocol):
    """Where publications go when they cross nodes (the Redis broker): they come back to every node
    with subscribers, this one included, and the node's shards get them from there."""

    async def publish(self, publication: Publication) -> None: ...


class ChannelWriter:
    def __init__(
        self,
        rules: ChannelRules,
        index: int,
        size: int,
        default_meta_ttl: float,
        engine: HistoryEngine,
    ) -> None:
        self.rules = rules
        self.index = index
        self.size = size
        self.counters: ShardCounters | None = None  # set by the shard: messages sent, by kind
        self.default_meta_ttl = default_meta_ttl
        self.engine = engine
        self.sink: PublicationSink | None = None
        # With the Redis engine: publications leave through Redis (the history engine's publish script
        # PUBLISHes, join/leave go through the relay) and reach the sink when Redis delivers them.
        self.relay: Relay | None = None
        # This writer's life: a subscription positioned by its answers needs no cutting when the
        # announcement of this same boot reaches a shard late (see shards.restarts).
        self.boot = ""
        # join_leave channels this shard writes: channel → client → its join event. Kept so that the
        # clients of a shard that died can be announced as gone once it starts again.
        self.members: dict[str, dict[str, Publication]] = {}
        # Recent recovery answers: key → (stream top when made, JSON answer).
        self.recovery_answers: dict[tuple[Any, ...], tuple[StreamPosition, Raw]] = {}
        # Set once the other shards know this writer started afresh.
        self._writing = asyncio.Event()

    # -- the hold after a (re)start ----------------------------------------------------------------

    def open_writing(self, why: str) -> None:
        if not self._writing.is_set():
            self._writing.set()
            log.info("shard %d publishes from now on (%s)", self.index, why)

    def writing(self) -> bool:
        """Publications may be given offsets (the other shards know this writer started afresh)."""
        return self._writing.is_set()

    async def until_writing(self, write: Callable[[], Any]) -> Any:
        """``write()`` (awaited when it is a coroutine) once publications may be given offsets."""
        await self._writing.wait()
        result = write()
        return await result if inspect.isawaitable(result) else result

    # -- writing -------------------------------------------------------------------------------

    async def write_publication(
        self, publication: Publication, *, skip_history: bool = False, idempotency_key: str = ""
    ) -> dict[str, Any]:
        """Give the publication its place in the stream and send it on.

        The offset is assigned (and the publication stored) before it fans out, so the offset a client
        sees in a push is the one history returns. A repeated idempotency key returns the first result
        and sends nothing.
        """
        assert self.sink is not None
        now = time.time()
        publication.time_ms = int(now * 1000)
        if not publication.kind:
            options = self.rules.options_for(publication.channel)
            publication.delta = publication.delta or options.delta_publish
            result = await self.engine.publish(
                publication,
                history_size=options.history_size,
                history_ttl=options.history_ttl,
                history_meta_ttl=self.meta_ttl(options),
                now=now,
                skip_history=skip_history,
                idempotency_key=idempotency_key,
            )
            if result.duplicate:
                return position_result(result.offset, result.epoch)
        elif publication.kind == "join":
            self.members.setdefault(publication.channel, {})[publication.client] = publication
        elif publication.kind == "leave":
            joined = self.members.get(publication.channel)
            if joined is not None:
                joined.pop(publication.client, None)
                if not joined:
                    del self.members[publication.channel]
        if self.relay is not None:
            if publication.kind:
                await self.relay.publish(publication)
        elif not self.sink.publish(publication):
            raise errors.INTERNAL()
        if self.counters is not None:
            self.counters.broker_message_sent(publication.kind or "publication")
        return position_result(publication.offset, publication.epoch)

    async def forget_shard(self, index: int) -> int:
        """Shard ``index`` (re)started: its former clients left every join_leave channel we write."""
        gone = 0
        for channel, joined in list(self.members.items()):
            for client, join in list(joined.items()):
                if shard_for(join.user or "", client, self.size) != index:
                    continue
                leave = Publication(
                    channel,
                    b"",
                    user=join.user,
                    client=client,
                    conn_info=join.conn_info,
                    chan_info=join.chan_info,
                    kind="leave",
                )
                await self.write_publication(leave)
                gone += 1
        if gone:
            log.info("announced %d leaves for the clients shard %d had before it restarted", gone, index)
        return gone

    # -- reading -------------------------------------------------------------------------------

    def history_options(self, channel: str) -> ChannelOptions:
        """The channel's options, or 108 when it keeps no history."""
        options = self.rules.options_for(channel)
        if not options.history_enabled:
            raise errors.NOT_AVAILABLE()
        return options

    def meta_ttl(self, options: ChannelOptions) -> float:
        return options.history_meta_ttl or self.default_meta_ttl

    async def history(
        self, channel: str, *, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        options = self.history_options(channel)
        return await self.engine.history(
            channel,
            limit=limit,
            since=since,
            reverse=reverse,
            now=time.time(),
            history_meta_ttl=self.meta_ttl(options),
        )

    async def position(self, channel: str) -> StreamPosition:
        options = self.history_options(channel)
        return await self.engine.position(channel, now=time.time(), history_meta_ttl=self.meta_ttl(options))

    async def recover(
        self, channel: str, since: StreamPosition, limit: int, encode: Callable[[RecoveryResult], Raw]
    ) -> Raw:
        """What a resubscribing client missed since ``since``, encoded by ``encode``.

        After an outage many clients of a channel come back from the same position at once; the answer
        is kept while the stream's top is unchanged, so it is read and encoded once, not per client.
        """
        options = self.history_options(channel)
        now = time.time()
        meta_ttl = self.meta_ttl(options)
        top = await self.engine.position(channel, now=now, history_meta_ttl=meta_ttl)
        key = (channel, since.offset, since.epoch, limit, options.force_recovery_mode)
        cached = self.recovery_answers.get(key)
        if cached is not None and cached[0] == top:
            return cached[1]
        if options.force_recovery_mode == "cache":
            outcome = await self.engine.recover_cache(
                channel, since=since, now=now, history_meta_ttl=meta_ttl
            )
        else:
            outcome = await self.engine.recover(
                channel, since=since, limit=limit, now=now, history_meta_ttl=meta_ttl
            )
        answer = encode(outcome)
        if len(self.recovery_answers) >= RECOVERY_ANSWERS_KEPT:
            self.recovery_answers.pop(next(iter(self.recovery_answers)))
        self.recovery_answers[key] = (top, answer)
        return answer

    async def remove_history(self, channel: str) -> None:
        self.history_options(channel)
        await self.engine.remove_history(channel, now=time.time())

    def maintain(self, now: float) -> None:
        """The engine's upkeep (called once a second by the ticker)."""
        self.engine.maintain(now)


def position_result(offset: int, epoch: str) -> dict[str, Any]:
    return {"offset": offset, "epoch": epoch} if offset else {}
