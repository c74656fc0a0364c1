"""Raw WebSocket peers for whole-server tests: the ``websockets`` client speaking the client protocol.

``WsClient`` wraps one ``websockets`` connection in either encoding (JSON text frames or varint-framed
protobuf binary frames built with the generated ``client_pb2`` classes). A background task reads every
message, answers server pings (``{}``) when the connect result asked for pongs, and keeps everything else
in an inbox that tests search with bounded waits. When the server closes, the close frame's code and
reason are kept (1006 when the TCP connection ended without one).

``raw_upgrade`` sends a hand-written HTTP upgrade request over a plain socket, for the requests the
library refuses to build (a wrong ``Sec-WebSocket-Version``), and ``RawWs`` is a minimal frame-level
client over a socket whose reading the test controls (a client that stops reading).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from google.protobuf.message import Message as ProtoMessage
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from broker.hashing import shard_for_user
from broker.protocol.proto import client_pb2
from tests.support.waiting import scaled, timeout_scale

T = TypeVar("T")

WS_PATH = "/connection/websocket"
UNI_WS_PATH = "/connection/uni_websocket"
CLOSED = 1006  # no close frame received


def run(scenario: Coroutine[Any, Any, T], timeout: float = 40.0) -> T:
    """Run one async scenario to the end, bounded as a whole."""
    return asyncio.run(asyncio.wait_for(scenario, scaled(timeout)))


async def api(server: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``server.api`` off the event loop, so that the clients' readers keep running meanwhile."""
    return await asyncio.to_thread(server.api, method, params)


def users_on_shards(prefix: str, shards: int = 2) -> list[str]:
    """One user id per shard: ``result[k]`` lives on shard k."""
    found: dict[int, str] = {}
    for n in itertools.count():
        user = f"{prefix}-{n}"
        found.setdefault(shard_for_user(user, shards) or 0, user)
        if len(found) == shards:
            return [found[k] for k in range(shards)]
    raise AssertionError("unreachable")


def user_on_shard(prefix: str, shard: int, shards: int = 2) -> str:
    return users_on_shards(prefix, shards)[shard]


# -- protobuf framing -------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def split_varint_frames(data: bytes) -> list[bytes]:
    """The length-prefixed messages of one binary frame."""
    messages = []
    pos = 0
    while pos < len(data):
        size = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        messages.append(data[pos : pos + size])
        pos += size
    assert pos == len(data), f"trailing bytes in a protobuf frame: {data!r}"
    return messages


def proto_to_dict(message: ProtoMessage) -> dict[str, Any]:
    """The set fields of a protobuf message as a dict; ``bytes`` stay bytes, present empty messages stay."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is not None and kind.GetOptions().map_entry:
            out[field.name] = {
                k: proto_to_dict(v) if isinstance(v, ProtoMessage) else v for k, v in value.items()
            }
        elif field.is_repeated:
            out[field.name] = [proto_to_dict(v) if isinstance(v, ProtoMessage) else v for v in value]
        elif kind is not None:
            out[field.name] = proto_to_dict(value)
        else:
            out[field.name] = value
    return out


def encode_pb_commands(commands: list[dict[str, Any]]) -> bytes:
    return b"".join(
        varint(len(body)) + body for body in (client_pb2.Command(**c).SerializeToString() for c in commands)
    )


def decode_pb_replies(frame: bytes) -> list[dict[str, Any]]:
    out = []
    for body in split_varint_frames(frame):
        reply = client_pb2.Reply()
        reply.ParseFromString(body)
        out.append(proto_to_dict(reply))
    return out


def decode_json_replies(frame: str | bytes) -> list[dict[str, Any]]:
    text = frame.decode() if isinstance(frame, bytes) else frame
    return [orjson.loads(line) for line in text.strip().split("\n") if line]


# -- the websockets-based client --------------------------------------------------------------------


class WsClient:
    def __init__(self, ws: ClientConnection, protocol: str, auto_pong: bool, uni: bool) -> None:
        self.ws = ws
        self.protocol = protocol
        self.auto_pong = auto_pong
        self.uni = uni
        self.inbox: list[dict[str, Any]] = []
        self.frames: list[str | bytes] = []  # every data frame as received
        self.pings = 0
        self.pong_wanted = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.connect_result: dict[str, Any] = {}
        self.user = ""  # the user a test connected as, when it says so
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        port: int,
        protocol: str = "json",
        *,
        path: str = WS_PATH,
        query: str = "",
        subprotocols: list[str] | None = None,
        origin: str | None = None,
        auto_pong: bool = True,
        headers: dict[str, str] | None = None,
    ) -> WsClient:
        uri = f"ws://127.0.0.1:{port}{path}{query}"
        if subprotocols is None and protocol == "protobuf" and not query:
            subprotocols = ["centrifuge-protobuf"]
        ws = await ws_connect(
            uri,
            origin=origin,  # type: ignore[arg-type]
            subprotocols=subprotocols,  # type: ignore[arg-type]
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            max_size=None,
            open_timeout=5,
            close_timeout=2,
        )
        return cls(ws, protocol, auto_pong, uni=path == UNI_WS_PATH)

    @classmethod
    async def connected(cls, port: int, token: str, protocol: str = "json", **kwargs: Any) -> WsClient:
        client = await cls.open(port, protocol, **kwargs)
        reply = await client.connect(token)
        assert "connect" in reply, reply
        return client

    # -- reading ------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                if self.uni or self.protocol == "json":
                    messages = decode_json_replies(frame)
                else:
                    assert isinstance(frame, bytes), f"text frame on a protobuf connection: {frame!r}"
                    messages = decode_pb_replies(frame)
                for message in messages:
                    if not message:
                        self.pings += 1
                        if self.auto_pong and self.pong_wanted:
                            await self._send_raw_commands([{}])
                        continue
                    self.inbox.append(message)
                self._changed.set()
        except ConnectionClosed as exc:
            self._closed(exc)
        finally:
            if self.close_code is None:
                self._closed(None)
            self._changed.set()

    def _closed(self, exc: ConnectionClosed | None) -> None:
        if exc is not None and exc.rcvd is not None:
            self.close_code = exc.rcvd.code
            self.close_reason = exc.rcvd.reason
        else:
            self.close_code = CLOSED

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0, what: str = "message"
    ) -> dict[str, Any]:
        """Remove and return the first inbox message matching ``predicate``; fail after ``timeout``."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.inbox):
                if predicate(message):
                    return self.inbox.pop(i)
            if self.close_code is not None:
                raise AssertionError(
                    f"connection closed ({self.close_code} {self.close_reason!r}) while waiting for "
                    f"{what}; inbox: {self.inbox[:10]}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; inbox: {self.inbox[:10]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def reply(self, command_id: int, timeout: float = 5.0) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("id") == command_id, timeout, f"reply {command_id}")

    async def push(self, kind: str, channel: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next push of ``kind`` (``pub``, ``unsubscribe`` …) for ``channel``; returns the push body."""

        def match(m: dict[str, Any]) -> bool:
            body = m if self.uni else m.get("push")
            if not isinstance(body, dict) or kind not in body:
                return False
            return channel is None or body.get("channel", "") == channel

        message = await self.wait_for(match, timeout, f"{kind} push on {channel!r}")
        return message if self.uni else message["push"]

    async def publications(self, channel: str, count: int, timeout: float = 10.0) -> list[Any]:
        """The data of the next ``count`` publications in ``channel``, in arrival order."""
        out = []
        deadline = time.monotonic() + scaled(timeout)
        while len(out) < count:
            left = max(0.01, deadline - time.monotonic())
            try:
                push = await self.push("pub", channel, left / timeout_scale())  # push() scales it back
            except AssertionError as exc:
                raise AssertionError(f"got {len(out)} of {count} publications: {exc}") from None
            out.append(push["pub"].get("data"))
        return out

    async def closed(self, timeout: float = 5.0) -> tuple[int, str]:
        """Wait for the server to end the connection; its close code and reason."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), scaled(timeout))
        except TimeoutError:
            raise AssertionError(
                f"connection still open after {timeout}s; inbox: {self.inbox[:10]}"
            ) from None
        assert self.close_code is not None
        return self.close_code, self.close_reason

    @property
    def is_open(self) -> bool:
        return self.close_code is None

    # -- writing ------------------------------------------------------------------------------

    async def _send_raw_commands(self, commands: list[dict[str, Any]]) -> None:
        with contextlib.suppress(ConnectionClosed):
            if self.protocol == "protobuf":
                await self.ws.send(encode_pb_commands(commands))
            else:
                await self.ws.send(b"\n".join(orjson.dumps(c) for c in commands).decode())

    async def send_commands(self, *commands: dict[str, Any]) -> None:
        await self._send_raw_commands(list(commands))

    def next_id(self) -> int:
        return next(self._ids)

    async def command(self, name: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        command_id = self.next_id()
        await self.send_commands({"id": command_id, name: body})
        return await self.reply(command_id, timeout)

    async def connect(self, token: str, **fields: Any) -> dict[str, Any]:
        reply = await self.command("connect", {"token": token, **fields})
        if "connect" in reply:
            self.connect_result = reply["connect"]
            self.pong_wanted = bool(reply["connect"].get("pong"))
        return reply

    async def subscribe(self, channel: str, **fields: Any) -> dict[str, Any]:
        return await self.command("subscribe", {"channel": channel, **fields})

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        if self.protocol == "protobuf" and not isinstance(data, bytes):
            data = orjson.dumps(data)
        return await self.command("publish", {"channel": channel, "data": data})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def pub_data(client: WsClient, data: Any) -> Any:
    """Publication data as JSON value whatever the encoding (protobuf carries the JSON bytes)."""
    if client.protocol == "protobuf" and isinstance(data, bytes):
        return orjson.loads(data)
    return data


async def upgrade_status(port: int, path: str = WS_PATH, **kwargs: Any) -> int:
    """The HTTP status of an upgrade attempt made by the library: 101 or the refusal's status."""
    try:
        client = await WsClient.open(port, path=path, **kwargs)
    except InvalidStatus as exc:
        return exc.response.status_code
    await client.close()
    return 101


# -- raw sockets ------------------------------------------------------------------------------------


def raw_upgrade(port: int, path: str = WS_PATH, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """Send a hand-made upgrade request; the status and headers of the response."""
    base = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers or {})
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in base.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    response_headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return status, response_headers


class RawWs:
    """A blocking frame-level JSON WebSocket client over a socket (small receive buffer by default)."""

    def __init__(self, port: int, rcvbuf: int | None = 4096, timeout: float = 5.0) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the upgrade"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
        """One client frame; ``masked=False`` breaks RFC 6455's rule that clients mask."""
        first = (0x80 if fin else 0) | opcode
        bit = 0x80 if masked else 0
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", first, bit | size)
        elif size < 65536:
            header = struct.pack("!BBH", first, bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, bit | 127, size)
        if not masked:
            return header + payload
        mask = os.urandom(4)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.send_raw(self.frame(1, text.encode()))

    def _need(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def read_frame(self) -> tuple[int, bytes]:
        """One frame (opcode, payload); EOFError at the end of the stream."""
        self._need(2)
        opcode = self.buffer[0] & 0x0F
        size = self.buffer[1] & 0x7F
        pos = 2
        if size == 126:
            self._need(4)
            size = struct.unpack("!H", self.buffer[2:4])[0]
            pos = 4
        elif size == 127:
            self._need(10)
            size = struct.unpack("!Q", self.buffer[2:10])[0]
            pos = 10
        self._need(pos + size)
        payload = self.buffer[pos : pos + size]
        self.buffer = self.buffer[pos + size :]
        return opcode, payload

    def read_json(self) -> list[dict[str, Any]]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == 1:
                return decode_json_replies(payload)
            if opcode == 8:
                raise EOFError(f"close frame {payload!r}")

    def ending(self) -> str:
        """Read to the end: ``"close <code>"`` for a close frame, else ``"eof"`` / ``"reset"``."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == 8:
                    return f"close {int.from_bytes(payload[:2], 'big')}"
        except EOFError:
            return "eof"
        except ConnectionResetError:
            return "reset"

    def close(self) -> None:
        self.sock.close()


__all__ = [
    "CLOSED",
    "UNI_WS_PATH",
    "WS_PATH",
    "RawWs",
    "WsClient",
    "api",
    "pub_data",
    "raw_upgrade",
    "run",
    "upgrade_status",
    "user_on_shard",
    "users_on_shards",
]
