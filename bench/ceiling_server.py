"""The fan-out ceiling: a bare uvloop server that writes pre-framed WebSocket text frames to its sockets.

It is what a WebSocket server costs when it does nothing but the writes: no protocol, no JSON encoding,
no subscription bookkeeping beyond a dict, no inter-process hop. :mod:`bench.fanout_bench` runs the same
burst shapes against it and against Switchboard in the same run, and reports Switchboard as a fraction
of it.

* WebSocket port: a minimal handshake. The request line's query names the connection's channels
  (``GET /ws?channels=a,b HTTP/1.1``); the answer is the 101 with ``Sec-WebSocket-Accept``. Anything the
  client sends afterwards is read and dropped.
* Control port: one JSON object per line, answered with one line once every write has been handed to
  the transports: ``{"channels": [...], "n": 10, "coalesce": true, "t": 123.4, "b": 7}`` writes ``n``
  frames per channel to that channel's sockets, each a 100-byte text payload carrying ``t``, ``b`` and the
  frame's index. With ``coalesce`` a socket gets its ``n`` frames in one write, otherwise one write per
  frame. ``{"stats": true}`` answers with the connection count and the process's RSS.

Run it alone with ``python -m bench.ceiling_server --port 0 --control-port 0``; it prints
``{"event": "ready", "port": ..., "control_port": ...}`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import signal
import sys
from typing import Any, cast

import orjson
import uvloop

PAYLOAD_SIZE = 100
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame_for(t: float, burst: int, index: int, channel: str) -> bytes:
    payload = orjson.dumps({"t": t, "b": burst, "i": index, "c": channel}).ljust(PAYLOAD_SIZE, b" ")
    if len(payload) > 125:
        raise ValueError("payload larger than a one-byte length")
    return bytes((0x81, len(payload))) + payload


class Ceiling:
    def __init__(self) -> None:
        self.channels: dict[str, dict[asyncio.Transport, None]] = {}
        self.connections = 0

    def join(self, transport: asyncio.Transport, channels: list[str]) -> None:
        self.connections += 1
        for channel in channels:
            self.channels.setdefault(channel, {})[transport] = None

    def leave(self, transport: asyncio.Transport, channels: list[str]) -> None:
        self.connections -= 1
        for channel in channels:
            members = self.channels.get(channel)
            if members is not None:
                members.pop(transport, None)

    def burst(self, command: dict[str, Any]) -> int:
        t, burst, count = float(command["t"]), int(command["b"]), int(command["n"])
        writes = 0
        for channel in command["channels"]:
            members = self.channels.get(channel, {})
            frames = [frame_for(t, burst, i, channel) for i in range(count)]
            if command.get("coalesce"):
                joined = b"".join(frames)
                for transport in members:
                    transport.write(joined)
                writes += len(members)
            else:
                for frame in frames:
                    for transport in members:
                        transport.write(frame)
                writes += len(members) * len(frames)
        return writes


class WebSocketPeer(asyncio.Protocol):
    __slots__ = ("buffer", "ceiling", "channels", "open", "transport")

    def __init__(self, ceiling: Ceiling) -> None:
        self.ceiling = ceiling
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.channels: list[str] = []
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.open:
            return  # pongs and the like: nothing to do
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 8192 and self.transport is not None:
                self.transport.close()
            return
        head, self.buffer = self.buffer[:end].decode("latin-1"), b""
        lines = head.split("\r\n")
        target = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
        query = target.partition("?")[2]
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "channels" and value:
                self.channels = value.split(",")
        key = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode("ascii") + b"\r\n\r\n"
        )
        self.open = True
        self.ceiling.join(self.transport, self.channels)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open and self.transport is not None:
            self.ceiling.leave(self.transport, self.channels)
        self.transport = None


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def control(ceiling: Ceiling, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            command = orjson.loads(line)
            if command.get("stats"):
                answer = {"connections": ceiling.connections, "rss": rss_bytes()}
            else:
                answer = {"writes": ceiling.burst(command)}
            writer.write(orjson.dumps(answer) + b"\n")
    finally:
        writer.close()


async def serve(port: int, control_port: int) -> None:
    loop = asyncio.get_running_loop()
    ceiling = Ceiling()
    server = await loop.create_server(lambda: WebSocketPeer(ceiling), "127.0.0.1", port, backlog=4096)
    controller = await asyncio.start_server(lambda r, w: control(ceiling, r, w), "127.0.0.1", control_port)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    ports = [s.getsockname()[1] for s in (server.sockets[0], controller.sockets[0])]
    sys.stdout.buffer.write(
        orjson.dumps({"event": "ready", "pid": os.getpid(), "port": ports[0], "control_port": ports[1]})
        + b"\n"
    )
    sys.stdout.buffer.flush()
    await stopped.wait()
    server.close()
    controller.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    args = parser.parse_args(argv)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(serve(args.port, args.control_port))


if __name__ == "__main__":
    main()
