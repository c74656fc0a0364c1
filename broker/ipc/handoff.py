"""Handing an accepted client socket from the router to a shard.

Theory of operation
-------------------
The router parses a client's first request, decides which shard owns the user and passes the socket's
file descriptor to that shard with SCM_RIGHTS over a ``SOCK_SEQPACKET`` Unix socket. One datagram carries
the descriptor plus a message: a small JSON header (:class:`Header`: transport, client id, codec) and every
byte the router has read that the shard still needs (the connect request). Sequenced packets keep message
boundaries, so no framing of our own is needed and a descriptor can never be paired with the wrong header.

Each shard listens on ``<runtime_dir>/shard-K.handoff``; the router connects lazily and reconnects after a
shard restarts. The router's side is non-blocking with a bounded queue: a slow shard must never stall the
router's loop. Until the datagram has left, the router keeps the client's transport paused; once it has,
the router drops its own descriptor (``transport.abort()`` closes only the router's copy) and holds
nothing more of the connection.
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("switchboard.handoff")

MAX_MESSAGE = 1 << 20  # header + initial bytes; connect requests are limited far below this
_LENGTH = struct.Struct("!I")
_FD_SPACE = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
_SEND_BUFFER = 4 << 20


class HandoffError(Exception):
    """The message could not be handed to the shard."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a shard must know of a handed-off connection besides the bytes read from it."""

    transport: str  # an endpoint's transport name: "websocket", "uni_websocket", "uni_sse", ...
    client: str  # the client id the router chose; the shard was picked from it (or from the user)
    protocol: str = "json"  # the bidirectional WebSocket's codec: "json" or "protobuf"
    # What the connect proxy decided for a client without a token (broker.proxy.connect.Outcome JSON).
    proxied: bytes = b""
    # Request headers kept for later proxy calls: [real, client-supplied] (broker.proxy.http.kept_headers).
    headers: tuple[dict[str, str], dict[str, str]] | None = None
    # A connect proxy call for the shard to make ({"b": body, "h": headers}, JSON), before adopting.
    ask: bytes = b""

    def to_json(self) -> bytes:
        # One-letter keys: the header travels with every connection.
        fields: dict[str, object] = {"t": self.transport, "c": self.client, "p": self.protocol}
        if self.proxied:
            fields["x"] = orjson.Fragment(self.proxied)
        if self.headers is not None:
            fields["h"] = self.headers
        if self.ask:
            fields["q"] = orjson.Fragment(self.ask)
        return orjson.dumps(fields)

    @classmethod
    def from_json(cls, raw: bytes) -> Header:
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HandoffError(f"handoff header is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise HandoffError("handoff header is not an object")
        transport, client, protocol = fields.get("t"), fields.get("c"), fields.get("p", "json")
        if not (isinstance(transport, str) and isinstance(client, str) and isinstance(protocol, str)):
            raise HandoffError("handoff header lacks a transport, a client id or a codec")
        proxied = fields.get("x")
        return cls(
            transport,
            client,
            protocol,
            orjson.dumps(proxied) if isinstance(proxied, dict) else b"",
            _headers(fields.get("h")),
            orjson.dumps(fields["q"]) if isinstance(fields.get("q"), dict) else b"",
        )


def _headers(value: Any) -> tuple[dict[str, str], dict[str, str]] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    real, supplied = value
    if not isinstance(real, dict) or not isinstance(supplied, dict):
        return None
    return (
        {str(k): v for k, v in real.items() if isinstance(v, str)},
        {str(k): v for k, v in supplied.items() if isinstance(v, str)},
    )


def encode(header: Header, data: bytes) -> bytes:
    head = header.to_json()
    message = _LENGTH.pack(len(head)) + head + data
    if len(message) > MAX_MESSAGE:
        raise HandoffError("handoff message too large")
    return message


def decode(message: bytes | memoryview) -> tuple[Header, bytes]:
    if len(message) < _LENGTH.size:
        raise HandoffError("truncated handoff message")
    (head_len,) = _LENGTH.unpack_from(message)
    end = _LENGTH.size + head_len
    if end > len(message):
        raise HandoffError("truncated handoff header")
    return Header.from_json(bytes(message[_LENGTH.size : end])), bytes(message[end:])


Done = Callable[[bool], None]


class HandoffSender:
    """The router's non-blocking channel to one shard."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: Path, max_queue: int = 4096) -> None:
        self._loop = loop
        self._path = str(path)
        self._sock: socket.socket | None = None
        self._queue: collections.deque[tuple[bytes, int, Done]] = collections.deque()
        self._max_queue = max_queue
        self._writing = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def send(self, message: bytes, fd: int, done: Done) -> None:
        """Send ``message`` with ``fd``; ``done(True)`` once it left, ``done(False)`` if it cannot."""
        if self._queue:
            if len(self._queue) >= self._max_queue:
                log.warning("handoff queue to %s is full; refusing a connection", self._path)
                done(False)
                return
            self._queue.append((message, fd, done))
            return
        # A second attempt covers a shard that restarted since we connected: its old socket is dead.
        for _attempt in range(2):
            sock = self._sock or self._reconnect()
            if sock is None:
                break
            try:
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            except BlockingIOError:
                self._queue.append((message, fd, done))
                self._start_writing()
                return
            except OSError as exc:
                self._fail(exc)
                continue
            done(True)
            return
        done(False)

    def _reconnect(self) -> socket.socket | None:
        try:
            self._sock = self._connect()
        except OSError as exc:
            log.warning("shard handoff socket %s unavailable: %s", self._path, exc.strerror)
            return None
        return self._sock

    def _start_writing(self) -> None:
        if not self._writing and self._sock is not None:
            self._loop.add_writer(self._sock.fileno(), self._flush)
            self._writing = True

    def _stop_writing(self) -> None:
        if self._writing and self._sock is not None:
            self._loop.remove_writer(self._sock.fileno())
        self._writing = False

    def _flush(self) -> None:
        sock = self._sock
        while self._queue and sock is not None:
            message, fd, done = self._queue[0]
            try:
                sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(exc)
                return
            self._queue.popleft()
            done(True)
        self._stop_writing()

    def _fail(self, exc: OSError) -> None:
        log.warning("handoff to %s failed: %s", self._path, exc.strerror or exc)
        self.close()

    def close(self) -> None:
        self._stop_writing()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        pending, self._queue = self._queue, collections.deque()
        for _message, _fd, done in pending:
            done(False)


Adopt = Callable[[Header, bytes, int], None]


class HandoffReceiver:
    """A shard's listening socket for descriptors sent by the router."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: Path, adopt: Adopt) -> None:
        self._loop = loop
        self._path = path
        self._adopt = adopt
        self._listener: socket.socket | None = None
        self._conns: dict[int, socket.socket] = {}
        self._buffer = bytearray(MAX_MESSAGE)

    def start(self) -> None:
        try:
            self._path.unlink()
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(self._path))
        os.chmod(self._path, 0o600)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("handoff accept failed: %s", exc.strerror)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SEND_BUFFER)
            self._conns[conn.fileno()] = conn
            self._loop.add_reader(conn.fileno(), self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        view = memoryview(self._buffer)
        while True:
            try:
                nbytes, ancdata, flags, _ = conn.recvmsg_into([view], _FD_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("handoff connection error: %s", exc.strerror)
                self._drop(conn)
                return
            fds = _fds_from(ancdata)
            if nbytes == 0 and not fds:
                self._drop(conn)
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
                log.error("discarding a malformed handoff message (%d bytes, %d fds)", nbytes, len(fds))
                for fd in fds:
                    os.close(fd)
                continue
            try:
                header, data = decode(view[:nbytes])
            except HandoffError as exc:
                log.error("discarding a handoff message: %s", exc)
                os.close(fds[0])
                continue
            try:
                self._adopt(header, data, fds[0])
            except Exception:
                log.exception("adopting a handed-off connection failed")
                _close_quietly(fds[0])

    def _drop(self, conn: socket.socket) -> None:
        fileno = conn.fileno()
        if fileno >= 0:
            self._loop.remove_reader(fileno)
            self._conns.pop(fileno, None)
        conn.close()

    def stop(self) -> None:
        if self._listener is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            try:
                self._path.unlink()
            except FileNotFoundError:
                pass
        for conn in list(self._conns.values()):
            self._drop(conn)


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:
        if exc.errno != errno.EBADF:
            raise
