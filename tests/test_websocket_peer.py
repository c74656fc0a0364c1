"""broker.websocket against an independent peer: the ``websockets`` library's asyncio client.

A small uvloop server does the opening handshake with broker.websocket.handshake and then drives a
ServerConnection from an asyncio.Protocol, the way a shard does after the router's hand-off: it echoes every
message, and answers the text message ``close <code> <reason>`` by starting the close handshake itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from broker.websocket import (
    OP_BINARY,
    OP_TEXT,
    Close,
    Event,
    Message,
    Ping,
    ProtocolError,
    ServerConnection,
    check_upgrade,
    encode_frame,
    error_response,
    response_101,
    select_subprotocol,
)

LIMIT = 200_000
SUBPROTOCOLS = ["centrifuge-protobuf", "centrifuge-json"]
TIMEOUT = 10.0


class EchoProtocol(asyncio.Protocol):
    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.conn: ServerConnection | None = None
        self.events: list[Event] = []
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.protocols.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.conn is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            request, data = bytes(self.head[:end]), bytes(self.head[end + 4 :])
            self.head = bytearray()
            lines = request.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            error = check_upgrade(method, headers)
            if error is not None:
                self.transport.write(error_response(error))
                self.transport.close()
                return
            subprotocol = select_subprotocol(headers.get("Sec-WebSocket-Protocol"), SUBPROTOCOLS)
            self.transport.write(response_101(headers["Sec-WebSocket-Key"], subprotocol))
            # From here on this is what a shard does with a handed-off socket and the bytes read so far.
            self.conn = ServerConnection(max_message_size=LIMIT)
            if not data:
                return
        self.handle(self.conn.receive_data(data))

    def handle(self, events: list[Event]) -> None:
        conn, transport = self.conn, self.transport
        assert conn is not None and transport is not None
        out: list[bytes] = []
        for event in events:
            self.events.append(event)
            if isinstance(event, Message) and conn.open:
                if not event.binary and event.payload.startswith(b"close "):
                    _, code, reason = event.payload.decode().split(" ", 2)
                    out.append(conn.send_close(int(code), reason))
                else:
                    out.append(encode_frame(OP_BINARY if event.binary else OP_TEXT, event.payload))
        # One write per batch of input, as the shard coalesces its frames.
        out.append(conn.data_to_send())
        transport.write(b"".join(out))
        if conn.closed:
            transport.close()
        elif conn.failed:
            # Give the peer time to stop sending, so that closing does not reset the connection and destroy
            # the close frame before the client has read it.
            asyncio.get_running_loop().call_later(0.2, transport.close)


class EchoServer:
    def __init__(self) -> None:
        self.protocols: list[EchoProtocol] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: EchoProtocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def connect(self, **kwargs: object) -> connect:
        options: dict[str, object] = {
            "max_size": None,
            "ping_interval": None,
            "open_timeout": TIMEOUT,
            "close_timeout": TIMEOUT,
        }
        options.update(kwargs)
        return connect(self.uri, **options)  # type: ignore[arg-type]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.abort()
        await self.server.wait_closed()


def run(scenario: Callable[[EchoServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = EchoServer()
        await server.start()
        try:
            async with asyncio.timeout(TIMEOUT * 2):
                await scenario(server)
        finally:
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


SIZES = [0, 1, 125, 126, 65535, 65536, 100_000]


def test_echo_text_and_binary() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            for size in SIZES:
                # Exactly ``size`` bytes of UTF-8 with characters of every length.
                text = "aé€😀" * (size // 10) + "a" * (size % 10)
                await ws.send(text)
                assert await recv(ws) == text
                data = os.urandom(size)
                await ws.send(data)
                assert await recv(ws) == data
        protocol = server.protocols[0]
        await asyncio.wait_for(protocol.lost.wait(), TIMEOUT)
        assert isinstance(protocol.events[-1], Close)

    run(scenario)


def test_echo_fragmented_messages() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            await ws.send(["hel", "lo ", "", "wörld"])
            assert await recv(ws) == "hello wörld"
            await ws.send([b"ab", b"", b"cd"])
            assert await recv(ws) == b"abcd"
            big = [os.urandom(70_000), os.urandom(126), os.urandom(60_000)]
            await ws.send(big)
            assert await recv(ws) == b"".join(big)
            # A message right after the fragmented ones still works.
            await ws.send("after")
            assert await recv(ws) == "after"

    run(scenario)


def test_ping_from_client_gets_a_pong() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            waiter = await ws.ping(b"heartbeat")
            await asyncio.wait_for(waiter, TIMEOUT)
            waiter = await ws.ping()
            await asyncio.wait_for(waiter, TIMEOUT)
            assert Ping(b"heartbeat") in server.protocols[0].events

    run(scenario)


def test_message_over_the_limit_closes_with_1009() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            await ws.send(b"x" * LIMIT)
            assert await recv(ws) == b"x" * LIMIT
            await ws.send(b"x" * (LIMIT + 1))
            with pytest.raises(ConnectionClosed) as caught:
                await recv(ws)
            assert caught.value.rcvd is not None
            assert caught.value.rcvd.code == 1009
            assert caught.value.rcvd.reason == "message too big"
        protocol = server.protocols[0]
        assert protocol.events[-1] == ProtocolError(1009, "message too big")
        await asyncio.wait_for(protocol.lost.wait(), TIMEOUT)

    run(scenario)


def test_close_initiated_by_server() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            await ws.send("close 4000 bye now")
            with pytest.raises(ConnectionClosed) as caught:
                await recv(ws)
            assert caught.value.rcvd is not None
            assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4000, "bye now")
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        protocol = server.protocols[0]
        await asyncio.wait_for(protocol.lost.wait(), TIMEOUT)
        # The client's reply completed the handshake on the server side.
        last = protocol.events[-1]
        assert isinstance(last, Close) and last.code == 4000
        assert protocol.conn is not None and protocol.conn.closed

    run(scenario)


def test_normal_close_initiated_by_server() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            await ws.send("close 1000 done")
            with pytest.raises(ConnectionClosedOK):
                await recv(ws)

    run(scenario)


def test_close_initiated_by_client() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect() as ws:
            await ws.send("hi")
            assert await recv(ws) == "hi"
            await asyncio.wait_for(ws.close(1001, "going away"), TIMEOUT)
            assert ws.close_code == 1001
        protocol = server.protocols[0]
        await asyncio.wait_for(protocol.lost.wait(), TIMEOUT)
        assert protocol.events[-1] == Close(1001, "going away")

    run(scenario)


def test_subprotocol_negotiation() -> None:
    async def scenario(server: EchoServer) -> None:
        async with server.connect(subprotocols=["centrifuge-json", "centrifuge-protobuf"]) as ws:
            assert ws.subprotocol == "centrifuge-protobuf"
        async with server.connect(subprotocols=["centrifuge-json"]) as ws:
            assert ws.subprotocol == "centrifuge-json"
        async with server.connect() as ws:
            assert ws.subprotocol is None

    run(scenario)


def test_first_frame_in_the_same_packet_as_the_request() -> None:
    """The router's hand-off: bytes read past the upgrade request are fed to the connection first."""

    async def scenario(server: EchoServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        mask = b"\x01\x02\x03\x04"
        payload = b'{"id":1,"connect":{}}'
        frame = (
            bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        request = (
            b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(request + frame + frame)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101 ")
        echo = encode_frame(OP_TEXT, payload)
        assert await asyncio.wait_for(reader.readexactly(2 * len(echo)), TIMEOUT) == echo + echo
        writer.close()

    run(scenario)


def test_rejected_upgrade() -> None:
    async def scenario(server: EchoServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
        assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response
        writer.close()

    run(scenario)
