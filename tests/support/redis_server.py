"""Real ``redis-server`` processes for tests: one instance, or a three-master Redis Cluster.

Each runs on a free loopback port in a directory of its own, without persistence, and is stopped by the
pid we started. ``make test`` installs Debian's ``redis-server`` and ``redis-tools`` when they are
missing (``make services``).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path

from tests.support.server import Process, free_port
from tests.support.waiting import eventually, scaled

REDIS_SERVER = "redis-server"
REDIS_CLI = "redis-cli"


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis wants it at most 55535."""
    for _ in range(200):
        port = random.randint(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def available() -> bool:
    return shutil.which(REDIS_SERVER) is not None and shutil.which(REDIS_CLI) is not None


def command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command over RESP, answered as its raw reply bytes (enough for PING and INFO-like replies)."""
    parts = [a.encode() for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            reply += chunk
            if not chunk or _complete(reply):
                return reply


def _complete(reply: bytes) -> bool:
    if reply[:1] in (b"+", b"-", b":"):
        return reply.endswith(b"\r\n")
    if reply[:1] == b"$":
        header, _, body = reply.partition(b"\r\n")
        size = int(header[1:])
        return size < 0 or len(body) >= size + 2
    return reply.endswith(b"\r\n")


class RedisServer(Process):
    """``redis-server`` on 127.0.0.1:``port``: no RDB, no AOF, its files in ``directory``."""

    def __init__(self, directory: Path, port: int | None = None, *extra: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.directory = directory
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--protected-mode", "no",
            *extra,
        ]  # fmt: skip
        super().__init__(argv, directory / f"redis-{self.port}.log")

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.spawn()
        try:
            eventually(self._answers, timeout=timeout, what=f"redis-server on {self.port} to answer PING")
        except BaseException:
            self.kill()
            raise
        return self

    def _answers(self) -> bool:
        if not self.running:
            raise RuntimeError(f"redis-server exited:\n{self.log_tail()}")
        try:
            return command(self.port, "PING", timeout=1) == b"+PONG\r\n"
        except OSError:
            return False

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop and start again on the same port (an outage: everything in memory is gone)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisCluster:
    """Three masters (no replicas) joined with ``redis-cli --cluster create``; ready once
    ``cluster_state:ok`` on every node."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        )
        self.nodes = [
            RedisServer(directory / f"node-{i}", free_cluster_port(), *options) for i in range(masters)
        ]

    @property
    def address(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            self._create(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        hosts = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        eventually(self._ok, timeout=timeout, interval=0.1, what="cluster_state:ok on every node")

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
