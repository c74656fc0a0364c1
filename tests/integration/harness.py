"""Real server processes and real clients over loopback for whole-server tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import requests

from broker.auth import encode_token

SECRET = "integration-secret"
API_KEY = "integration-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_token(user: str, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "iat": int(time.time()), "exp": int(time.time()) + 3600}
    payload.update(claims)
    return encode_token(payload, secret)


class Server:
    """``switchboard`` (supervisor + router + shards) started as a real process tree."""

    def __init__(
        self,
        tmp_path: Path,
        shards: int = 2,
        extra: dict[str, Any] | None = None,
        env=None,
        new_session: bool = False,
    ) -> None:
        self.new_session = new_session  # its own process group, to be signalled as a whole
        self.port = free_port()
        self.shards = shards
        self.dir = tmp_path / f"server-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        self.config_path = self.dir / "config.json"
        config = {
            "token_hmac_secret_key": SECRET,
            "api_key": API_KEY,
            "uni_http_stream": True,
            "uni_sse": True,
            "address": "127.0.0.1",
            "shutdown_timeout": "5s",
            "log_level": "debug",
        }
        config.update(extra or {})
        self.config_path.write_bytes(orjson.dumps(config))
        self.log_path = self.dir / "server.log"
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker",
                "-c",
                str(self.config_path),
                "--port",
                str(self.port),
                "--shards",
                str(self.shards),
                "--runtime_dir",
                str(self.dir / "run"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=self.new_session,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                info = self.api("info", {}, timeout=2)
                shards = info["result"]["nodes"][0]["shards"]
                if len(shards) == self.shards and not any(s.get("unavailable") for s in shards):
                    return
                last = shards
            except (requests.RequestException, KeyError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout}s ({last}):\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def api(self, method: str, params: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/api/{method}",
            data=orjson.dumps(params),
            headers={"X-API-Key": API_KEY},
            timeout=timeout,
        )
        response.raise_for_status()
        return response.json()

    def connections(self, **params: Any) -> dict[str, Any]:
        params.setdefault("user", "")
        params.setdefault("expression", "")
        return self.api("connections", params)["result"]["connections"]

    def shard_pids(self) -> dict[int, int]:
        shards = self.api("info", {})["result"]["nodes"][0]["shards"]
        return {s["index"]: s["pid"] for s in shards if "pid" in s}

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def _token_subject(token: str) -> str:
    import base64

    try:
        part = token.split(".")[1]
        return str(orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("sub", ""))
    except (IndexError, ValueError):
        return ""


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
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.user = _token_subject((body or {}).get("token", ""))
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
