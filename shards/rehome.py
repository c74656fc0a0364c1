"""Connections that come with a connect proxy call still to make (``proxy_connect_placement: shard``).

The router picked this shard by the client id, not by the user (nobody knows the user yet) and sent
the prepared call along (:meth:`broker.proxy.connect_call.ConnectProxy.prepare`). The shard holds the
socket untouched — no transport, nothing read — while it asks the backend; then the connection belongs
to the user's shard: this one adopts it, or hands the socket, the bytes read so far and the decision on
to that shard over its handoff socket, exactly as the router would have. A call that fails is a
*failed* decision like any other (100 to the connect, the SDK tries again); a socket that cannot be
handed on is closed (the SDK reconnects), with one log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from broker.hashing import shard_for
from broker.ipc import paths
from broker.ipc.handoff import HandoffError, HandoffSender, Header, encode
from broker.proxy.connect_call import ConnectProxy

log = logging.getLogger("switchboard.proxy")

Adopt = Callable[[Header, bytes, int], None]


class Rehoming:
    def __init__(
        self,
        proxy: ConnectProxy,
        index: int,
        size: int,
        runtime: Path,
        adopt: Adopt,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.proxy = proxy
        self.index = index
        self.size = size
        self.runtime = runtime
        self.adopt = adopt
        self.spawn = spawn
        self.loop = loop
        self._senders: dict[int, HandoffSender] = {}

    def receive(self, header: Header, data: bytes, fd: int) -> None:
        """A socket with a call to make: ask, then adopt it here or hand it to the user's shard."""
        self.spawn(self._ask(header, data, fd))

    async def _ask(self, header: Header, data: bytes, fd: int) -> None:
        try:
            call = orjson.loads(header.ask)
            body, headers = call["b"], call["h"]
            if not isinstance(body, dict) or not isinstance(headers, dict):
                raise ValueError("not a prepared call")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("client %s: malformed connect proxy call in the handoff: %s", header.client, exc)
            os.close(fd)
            return
        try:
            outcome = await self.proxy.ask(body, headers)
        except BaseException:
            os.close(fd)
            raise
        decided = Header(header.transport, header.client, header.protocol, outcome.to_json(), header.headers)
        target = shard_for(outcome.user, header.client, self.size)
        if target == self.index:
            self.adopt(decided, data, fd)
        else:
            self._hand_on(target, decided, data, fd)

    def _hand_on(self, target: int, header: Header, data: bytes, fd: int) -> None:
        try:
            message = encode(header, data)
        except HandoffError as exc:
            log.error("client %s: cannot hand on to shard %d: %s", header.client, target, exc)
            os.close(fd)
            return
        sender = self._senders.get(target)
        if sender is None:
            sender = HandoffSender(self.loop, paths.handoff_path(self.runtime, target))
            self._senders[target] = sender

        def sent(ok: bool) -> None:
            os.close(fd)  # the target holds its own copy now (or nobody does: the client reconnects)
            if not ok:
                log.error("client %s: shard %d did not take the connection", header.client, target)

        sender.send(message, fd, sent)

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
