"""A bare connect proxy backend for benchmarks: asyncio + uvloop, HTTP/1.1 keep-alive, in its own process.

It parses just enough HTTP to read each request's body and answers a connect proxy result, so that what
a benchmark measures is the server's side of the call, not a web framework's. The user is the
ConnectRequest data's ``user`` when there is one (``{"result": {"user": ...}}``), else a fixed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import socket
import time
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

FIXED = orjson.dumps({"result": {"user": "42", "meta": {"tenant": "a"}}})


def answer_for(body: bytes) -> bytes:
    try:
        data = orjson.loads(body).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return FIXED
    if isinstance(data, dict) and isinstance(data.get("user"), str):
        return orjson.dumps({"result": {"user": data["user"]}})
    return FIXED


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body, self.buffer = self.buffer[head_end + 4 : end], self.buffer[end:]
            answer = answer_for(body)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(answer), answer)
            )


def serve(port: int) -> None:
    import uvloop

    uvloop.install()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Backend, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def start(port: int, timeout: float = 20.0) -> BaseProcess:
    """The backend in a process of its own, listening once this returns."""
    process = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    process.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return process
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError("the proxy backend did not start")
