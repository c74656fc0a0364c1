"""This shard's connections by user, kept in its shared-memory segment for the router to read.

What the ``connections`` API shows of a connection changes when it connects or leaves, subscribes or
unsubscribes, refreshes a token, or answers a ping (its latency). :class:`Membership` reports each such
change here (:meth:`UserIndexPublisher.changed`); the users changed during one event-loop iteration are
rewritten once, at its end, with the very encoding the shard's own answer uses
(:func:`user_fragment`), so the router's answer from shared memory equals the shard's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from broker.config import Config
from broker.ipc.channel_counts import user_index_name
from broker.ipc.user_index import UserIndexWriter
from shards.hub import Hub

log = logging.getLogger("switchboard.shard")


def user_fragment(conns: Iterable[Any]) -> bytes:
    """``"<client>":{ConnectionInfo},…``: what goes between ``{"connections":{`` and ``}}``."""
    return orjson.dumps({conn.state.client: conn.state.connection_info() for conn in conns})[1:-1]


class UserIndexPublisher:
    def __init__(self, writer: UserIndexWriter, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self.hub = hub
        self.loop = loop
        self._dirty: set[str] = set()
        self._scheduled = False
        self._told_incomplete = False
        self._closed = False

    @classmethod
    def open(
        cls, cfg: Config, index: int, hub: Hub, loop: asyncio.AbstractEventLoop
    ) -> UserIndexPublisher | None:
        if not cfg.shm_user_index:
            return None
        try:
            writer = UserIndexWriter.create(
                user_index_name(cfg, index),
                capacity=2 * cfg.shm_user_index_capacity,
                heap_bytes=cfg.shm_user_index_heap,
            )
        except (OSError, ValueError) as exc:
            log.warning("no user index in shared memory (the router asks this shard instead): %s", exc)
            return None
        return cls(writer, hub, loop)

    def changed(self, user: str) -> None:
        if not user or self._closed:
            return  # anonymous connections are never looked up by user
        self._dirty.add(user)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        dirty, self._dirty = self._dirty, set()
        put = self.writer.put
        for user in dirty:
            conns = self.hub.user_connections(user)
            put(user, user_fragment(conns) if conns else b"")
        self._report_incomplete()

    def tick(self) -> None:
        """Once a second: the heartbeat readers check, and another try at fitting every user."""
        self.writer.beat()
        self.writer.retry_if_incomplete()
        self._report_incomplete()

    def _report_incomplete(self) -> None:
        complete = self.writer.complete
        if not complete and not self._told_incomplete:
            log.warning(
                "user index full (node.shm_user_index_capacity / _heap): by-user queries ask this shard"
            )
        self._told_incomplete = not complete

    def close(self) -> None:
        self._closed = True
        self.writer.remove_segment()
