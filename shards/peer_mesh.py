"""The peer mesh: a shard's questions to the other shards of its node.

A channel's writer orders its publications and answers for its stream, so a shard sends its clients'
publications and history/recovery questions to the writer (:meth:`PeerMesh.writer_query`), and asks
every shard for what each holds a part of, such as presence (:meth:`PeerMesh.cluster_query`). Questions to
this shard itself are answered by ``local`` without a round trip, in the same JSON shape as a remote
answer. A shard that does not answer in time is skipped by a cluster query and is error 100 for a
writer query.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import orjson
import zmq

from broker import errors
from broker.eager import client_outcome, start_eagerly
from broker.errors import ClientError
from broker.hashing import writer_for
from broker.ipc import paths
from broker.ipc.control import (
    Raw,
    RemoteError,
    Requester,
    Responder,
    ShardUnavailable,
    client_error,
)
from broker.publication import Publication, publication_params

log = logging.getLogger("switchboard.shard")

PEER_TIMEOUT = 5.0
# How long a peer that is not connected yet is tried again (shards boot side by side; one that
# restarted reconnects within ~0.1 s).
CONNECT_GRACE = 1.0

Done = Callable[[ClientError | None, Any], None]


class Requesting(Protocol):
    """The requesting side of the control plane (``broker.ipc.control.Requester``)."""

    def request(self, identity: bytes, method: str, params: Any, timeout: float) -> Awaitable[Any]: ...


class PeerMesh:
    def __init__(
        self,
        index: int,
        size: int,
        local: Callable[[str, dict[str, Any]], Any],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.index = index
        self.size = size
        self.local = local  # answers a peer question on this shard (the handlers of shards.peer_requests)
        self.spawn = spawn
        self.requester: Requesting | None = None
        # Identical questions to a writer already on their way: key → callbacks waiting for the answer.
        self._inflight: dict[tuple[str, bytes], list[Done]] = {}

    def open(
        self,
        loop: asyncio.AbstractEventLoop,
        context: zmq.Context[zmq.Socket[bytes]],
        runtime: Path,
        answer: Callable[[str, Any], Any],
    ) -> list[Requester | Responder]:
        """Connect to the other shards: one socket to ask them, one per peer to answer it."""
        identity = paths.shard_identity(self.index)
        requester = Requester(loop, context, paths.peer_endpoint(runtime, self.index), CONNECT_GRACE)
        self.requester = requester
        answers = [
            Responder(loop, context, paths.peer_endpoint(runtime, i), identity, answer) for i in self.others()
        ]
        return [requester, *answers]

    def others(self) -> list[int]:
        return [i for i in range(self.size) if i != self.index]

    async def request(self, index: int, method: str, params: dict[str, Any], timeout: float) -> Any:
        assert self.requester is not None
        return await self.requester.request(paths.shard_identity(index), method, params, timeout)

    def publish_remote(
        self, writer: int, publication: Publication, done: Done, skip_history: bool = False
    ) -> None:
        """Send a client's publication to its channel's writer on another shard."""
        params = publication_params(publication)
        if skip_history:
            params["skip_history"] = True
        self.spawn(self._ask(writer, "publish", params, done, f"publish to {publication.channel}"))

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Done) -> None:
        """Ask every shard (this one directly), then ``done(None, merge(parts))``; silent ones are skipped."""
        # Through JSON and back, so that local and remote parts have the same shape.
        local = orjson.loads(orjson.dumps(self.local(method, params)))
        if self.size == 1:
            done(None, merge([local]))
            return
        self.spawn(self._gather(method, params, local, merge, done))

    async def _gather(self, method: str, params: dict[str, Any], local: Any, merge: Any, done: Done) -> None:
        others = self.others()
        outcomes = await asyncio.gather(
            *(self.request(i, method, params, PEER_TIMEOUT) for i in others), return_exceptions=True
        )
        parts = [local]
        for index, outcome in zip(others, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("shard %d did not answer %s: %s", index, method, outcome)
            else:
                parts.append(outcome)
        done(None, merge(parts))

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Done) -> None:
        """Ask the channel's writer shard (this one directly when it is the writer).

        Identical questions in flight at the same time (many clients subscribing or recovering from
        the same position after an outage) share one request and one answer.
        """
        writer = writer_for(channel, self.size)
        if writer == self.index:
            self._ask_here(method, params, done)
            return
        key = (method, orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
        waiting = self._inflight.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        self._inflight[key] = [done]

        def answered(err: ClientError | None, result: Any) -> None:
            for callback in self._inflight.pop(key, []):
                callback(err, result)

        self.spawn(self._ask(writer, method, params, answered, f"{method} on shard {writer}"))

    def _ask_here(self, method: str, params: dict[str, Any], done: Done) -> None:
        """This shard is the writer: its own answer, in the same JSON shape as a peer's."""

        def answered(err: ClientError | None, result: Any) -> None:
            if err is not None:
                done(err, None)
            else:
                done(None, orjson.loads(result.json if isinstance(result, Raw) else orjson.dumps(result)))

        settle = client_outcome(answered)
        try:
            result = self.local(method, params)
        except Exception as exc:
            settle(None, exc)
            return
        if not inspect.iscoroutine(result):
            settle(result, None)
            return
        task = start_eagerly(result, settle, asyncio.get_running_loop())
        if task is not None:
            self.spawn(_awaited(task))

    async def _ask(self, index: int, method: str, params: dict[str, Any], done: Done, what: str) -> None:
        try:
            result = await self.request(index, method, params, PEER_TIMEOUT)
        except (ShardUnavailable, RemoteError) as exc:
            done(client_error(exc, what, errors.INTERNAL), None)
            return
        done(None, result)


async def _awaited(task: asyncio.Task[None]) -> None:
    """Keeps a carried-on local answer among the shard's tasks (cancelled with them at shutdown)."""
    await task
