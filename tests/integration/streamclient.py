"""A raw-socket client of the unidirectional HTTP transports (uni_http_stream, uni_sse)."""

from __future__ import annotations

import socket
from typing import Any

import orjson

from tests.support.tokens import token_subject
from tests.support.waiting import scaled


class StreamClient:
    """A raw-socket uni_http_stream / uni_sse client that decodes every message it receives."""

    def __init__(
        self,
        port: int,
        body: dict[str, Any] | None = None,
        transport: str = "uni_http_stream",
        source: str = "127.0.0.1",
        timeout: float = 5.0,
    ) -> None:
        self.transport = transport
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=scaled(timeout), source_address=(source, 0)
        )
        self.user = token_subject((body or {}).get("token", ""))
        payload = orjson.dumps(body or {})
        path = f"/connection/{transport}"
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        self.sock.sendall(request)
        self.raw = b""  # every byte received, for leak checks
        self._buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.ended = False
        self._pending: list[dict[str, Any]] = []

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.ended = True
            return False
        self.raw += data
        self._buffer += data
        return True

    def _read_head(self) -> None:
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionError("closed before the response head")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), f"not a response head first: {self.raw[:400]!r}"
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def read(self) -> dict[str, Any] | None:
        """The next message, or None when the stream ended."""
        if not self.status:
            self._read_head()
        while not self._pending:
            if self.status != 200:
                return None
            while b"\r\n" not in self._buffer:
                if not self._fill():
                    return None
            size_line, rest = self._buffer.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(rest) < size + 2:
                if not self._fill():
                    return None
                rest = self._buffer.split(b"\r\n", 1)[1]
            chunk, self._buffer = rest[:size], rest[size + 2 :]
            if size == 0:
                self.ended = True
                return None
            for line in chunk.split(b"\n"):
                line = line.strip()
                if line.startswith(b"data: "):
                    line = line[6:]
                if line:
                    self._pending.append(orjson.loads(line))
        return self._pending.pop(0)

    def read_until(self, key: str) -> dict[str, Any]:
        while True:
            msg = self.read()
            if msg is None:
                raise ConnectionError(f"stream ended before a {key!r} message")
            if key in msg:
                return msg

    def connect(self) -> dict[str, Any]:
        return self.read_until("connect")["connect"]

    def close(self) -> None:
        self.sock.close()
