"""The one launcher of whole servers for tests: supervisor, router and shards as a real process tree.

Each server gets a free loopback port, a directory of its own (config, runtime directory, log) and is
stopped by its pid: SIGTERM, then SIGKILL after the deadline.
"""

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

from tests.support.tokens import SECRET
from tests.support.waiting import scaled

API_KEY = "integration-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        deadline = time.monotonic() + scaled(timeout)
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
