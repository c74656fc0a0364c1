"""The ZeroMQ control plane between the router and its shards.

Theory of operation
-------------------
The router binds one ROUTER socket at ``ipc://<runtime_dir>/control.ipc``; each shard connects a DEALER
whose routing id is ``shard-K``. A request is two frames, an 8-byte request id and an orjson body
``{"m": method, "p": params}``; the shard answers with three frames: the same id, ``r`` or ``e``, and the
result (or ``{"code", "message"}``) as JSON. Keeping the result in a frame of its own lets the router
splice large answers (a connections scan) into its HTTP response without decoding them: see ``Raw``.
``ROUTER_MANDATORY`` makes a send to a shard that is not connected fail at
once (so a dead shard is reported, not waited for) and ``ROUTER_HANDOVER`` lets a restarted shard take its
routing id back.

The same pair serves the shards' peer mesh: each shard binds a :class:`Requester` of its own for the
requests it sends to other shards, and answers theirs with one :class:`Responder` per peer.

Both sides use plain pyzmq sockets served by the loop (:class:`broker.ipc.zmqloop.SocketReader`).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
import zmq

from broker.eager import start_eagerly
from broker.errors import ClientError
from broker.ipc.zmqloop import SocketReader

_INTERNAL_ANSWER = orjson.dumps({"code": 100, "message": "internal server error"})
log = logging.getLogger("switchboard.control")

_REQUEST_ID = struct.Struct("!Q")


class ShardUnavailable(Exception):
    """The shard is not connected or did not answer in time."""


class NotConnected(ShardUnavailable):
    """No socket of that shard is connected (yet: ZeroMQ connects in the background, retrying)."""


class RemoteError(Exception):
    """The shard answered with an error (a ClientError on its side)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_client_error(self) -> ClientError:
        return ClientError(self.code, self.message)


def client_error(exc: RemoteError | ShardUnavailable, what: str, unavailable: ClientError) -> ClientError:
    """The error to give a client for a failed request: the shard's own answer as it is, or
    ``unavailable`` when no answer came (logged once, with ``what`` was asked)."""
    if isinstance(exc, RemoteError):
        return exc.to_client_error()
    log.warning("%s: %s", what, exc)
    return unavailable()


class Raw:
    """A result that is already JSON: sent as it is by a shard, and handed to the requester undecoded."""

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json


_CONNECT_RETRY = 0.02


class Requester(SocketReader):
    """Sends requests (the router to its shards, a shard to its peers) and matches replies to futures."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        connect_grace: float = 0.0,
    ) -> None:
        # A peer that is not connected is tried again for this long (within the request's timeout):
        # ZeroMQ connects in the background, within ~0.1 s of a process (re)starting.
        self.connect_grace = connect_grace
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        super().__init__(loop, sock)

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 4 or len(frames[1]) != _REQUEST_ID.size:
            log.warning("ignoring a malformed control reply (%d frames)", len(frames))
            return
        (request_id,) = _REQUEST_ID.unpack(frames[1])
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return  # answered after its deadline
        if frames[2] == b"e":
            try:
                err = orjson.loads(frames[3])
                future.set_exception(RemoteError(int(err.get("code", 100)), str(err.get("message", ""))))
            except (orjson.JSONDecodeError, AttributeError, ValueError):
                future.set_exception(RemoteError(100, "internal server error"))
        else:
            future.set_result(Raw(frames[3]))

    async def request_raw(self, identity: bytes, method: str, params: Any, timeout: float) -> Raw:
        """The shard's result as undecoded JSON bytes."""
        if self.connect_grace <= 0:
            return await self._request_raw(identity, method, params, timeout)
        give_up = self._loop.time() + min(timeout, self.connect_grace)
        while True:
            try:
                return await self._request_raw(identity, method, params, timeout)
            except NotConnected:
                if self._loop.time() + _CONNECT_RETRY >= give_up:
                    raise
            await asyncio.sleep(_CONNECT_RETRY)

    async def _request_raw(self, identity: bytes, method: str, params: Any, timeout: float) -> Raw:
        request_id = next(self._ids)
        future: asyncio.Future[Raw] = self._loop.create_future()
        try:
            self._sock.send_multipart(
                [identity, _REQUEST_ID.pack(request_id), orjson.dumps({"m": method, "p": params})],
                zmq.NOBLOCK,
            )
        except zmq.ZMQError as exc:
            raise NotConnected(f"{identity.decode()} is not connected") from exc
        finally:
            self._kick()
        self._pending[request_id] = future
        # A timer instead of asyncio.wait_for: no extra task per request on this hot path.
        timer = self._loop.call_later(timeout, _expire, future, identity, timeout)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(request_id, None)

    async def request(self, identity: bytes, method: str, params: Any, timeout: float) -> Any:
        return orjson.loads((await self.request_raw(identity, method, params, timeout)).json)

    def close(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ShardUnavailable("router is shutting down"))
        self._pending.clear()
        self._close_socket()


def _expire(future: asyncio.Future[Raw], identity: bytes, timeout: float) -> None:
    if not future.done():
        future.set_exception(ShardUnavailable(f"{identity.decode()} did not answer within {timeout:g}s"))


# A handler returns its result, or an awaitable of it when it has to wait for something.
Handler = Callable[[str, Any], Any]


class Responder(SocketReader):
    """A shard's answering end: receives requests, runs the handler, sends the answer back."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        identity: bytes,
        handler: Handler,
    ) -> None:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__(loop, sock)

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            log.warning("ignoring a malformed control request (%d frames)", len(frames))
            return
        request_id, body = frames
        try:
            request = orjson.loads(body)
            outcome = self._handler(request["m"], request.get("p"))
        except Exception as exc:
            self._answer(request_id, exc)
            return
        if inspect.iscoroutine(outcome):
            # Answered in this drain when it does not have to wait (the memory engine never does).
            task = start_eagerly(outcome, partial(self._settle, request_id), self._loop)
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif inspect.isawaitable(outcome):
            task = self._loop.create_task(self._finish(request_id, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # Most handlers are synchronous: answer within this drain, without a task per request.
            self._answer(request_id, outcome)

    async def _finish(self, request_id: bytes, outcome: Awaitable[Any]) -> None:
        try:
            result = await outcome
        except Exception as exc:
            self._answer(request_id, exc)
            return
        self._answer(request_id, result)

    def _settle(self, request_id: bytes, result: Any, error: BaseException | None) -> None:
        self._answer(request_id, error if error is not None else result)

    def _answer(self, request_id: bytes, result: Any) -> None:
        # An exception is inspected, never raised again here: re-raising would link this frame into its
        # traceback (and a handler may hand back a shared error constant).
        kind, payload = b"e", _INTERNAL_ANSWER
        if isinstance(result, ClientError):
            payload = orjson.dumps({"code": result.code, "message": result.message})
        elif isinstance(result, Exception):
            log.error("control request failed", exc_info=result)
        else:
            try:
                payload = result.json if isinstance(result, Raw) else orjson.dumps(result)
                kind = b"r"
            except TypeError as exc:  # orjson.JSONEncodeError is one
                log.error("control answer cannot be encoded: %s", exc)
        try:
            self._sock.send_multipart([request_id, kind, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("cannot answer the router: %s", exc)
        self._kick()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._close_socket()
