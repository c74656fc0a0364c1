"""The one way tests start processes: a whole Switchboard server, or any other command, on loopback.

:class:`Process` is a command we started, with its output in a log file: signalled, waited for and
stopped by the pid we got (SIGTERM, then SIGKILL after a deadline), never by name. :class:`Server` is
``python -m broker`` (supervisor, router, shards) on a free port with its own runtime directory and a
config built from keyword overrides, ready once ``/health`` answers and every shard is up.

Nothing here needs pytest: ``bench/`` starts its servers with the same code.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import requests

from tests.support.tokens import API_KEY, SECRET
from tests.support.waiting import eventually, scaled

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL = 6000

# What every test server runs with unless a keyword override says otherwise.
BASE_CONFIG: dict[str, Any] = {
    "token_hmac_secret_key": SECRET,
    "api_key": API_KEY,
    "uni_http_stream": True,
    "uni_sse": True,
    "address": "127.0.0.1",
    "shutdown_timeout": "5s",
    "log_level": "debug",
}

# A process as (pid, start time in clock ticks): a pid reused by another process does not match.
ProcessId = tuple[int, int]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state first), or None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_id(pid: int) -> ProcessId | None:
    fields = _stat_fields(pid)
    return None if fields is None else (pid, int(fields[19]))


def child_pids(parent: int) -> list[int]:
    """The live processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == parent and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def kill_leftovers(processes: Sequence[ProcessId], grace: float = 10.0) -> None:
    """Wait (up to ``grace`` seconds) for these processes to leave, then SIGKILL the ones still there."""

    def remaining() -> list[ProcessId]:
        return [p for p in processes if process_id(p[0]) == p and alive(p[0])]

    with contextlib.suppress(AssertionError):
        eventually(lambda: not remaining(), timeout=grace, interval=0.05, what="the children to leave")
    for pid, _ in remaining():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    eventually(remaining, until=lambda left: not left, timeout=10, what="SIGKILL to take effect")


def healthy(url: str) -> bool:
    """True when the server at ``url`` answers ``/health`` with 200."""
    return requests.get(f"{url}/health", timeout=2).status_code == 200


def wait_healthy(url: str, timeout: float = 20.0, what: str = "/health to answer") -> None:
    eventually(
        lambda: healthy(url),
        timeout=timeout,
        interval=0.1,
        what=what,
        retry_on=(AssertionError, requests.RequestException),
    )


class Process:
    """A command started by the tests, its output (stdout and stderr) appended to ``log_path``."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        new_session: bool = False,
        children_grace: float = 10.0,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.new_session = new_session  # its own process group, to be signalled as a whole
        self.proc: subprocess.Popen[bytes] | None = None
        self.children: list[ProcessId] = []  # the children seen last, stopped with the process
        self.children_grace = children_grace  # how long they may outlive it before SIGKILL

    def spawn(self) -> None:
        assert not self.running, f"{self.argv[:3]} is running already (pid {self.pid})"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_tail(self, size: int = LOG_TAIL) -> str:
        return self.log()[-size:]

    def signal(self, signum: int) -> None:
        """``signum`` to the process (to its whole group when it has its own session)."""
        if self.new_session:
            os.killpg(self.pid, signum)
        else:
            os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Its exit code, once it exits by itself within ``timeout`` (scaled)."""
        assert self.proc is not None, "not started"
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.argv[:3]} did not exit within {scaled(timeout):g}s; log:\n{self.log_tail()}"
            ) from None

    def remember_children(self) -> None:
        if self.running:
            ids = (process_id(pid) for pid in child_pids(self.pid))
            self.children = [i for i in ids if i is not None]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it is still there after ``timeout`` (scaled): its exit code.

        Children that outlive it are killed too, by pid; a process that needed SIGKILL is a failure."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.remember_children()
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.argv[:3]} ignored SIGTERM for {scaled(timeout):g}s; log:\n{self.log_tail()}"
                ) from None
        kill_leftovers(self.children, scaled(self.children_grace))
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now, and the same to every child still there after a short while."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.remember_children()
            self.signal(signal.SIGKILL)
            self.proc.wait(scaled(10))
        kill_leftovers(self.children, scaled(self.children_grace))

    def kill_tree(self) -> None:
        """SIGKILL to the process and every child at once: a machine that lost power, not a stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.remember_children()
        for pid, started in self.children:
            if process_id(pid) == (pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)
        self.proc.wait(scaled(10))
        kill_leftovers(self.children, scaled(self.children_grace))


class Server(Process):
    """``python -m broker`` (supervisor + router + shards) as a real process tree.

    ``config`` overrides :data:`BASE_CONFIG` key by key. ``port`` and ``directory`` (config, log and
    runtime directory) default to fresh ones; passing another server's reuses them.
    """

    def __init__(
        self,
        tmp_path: Path,
        shards: int = 2,
        *,
        port: int | None = None,
        directory: Path | None = None,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
        **config: Any,
    ) -> None:
        self.port = port or free_port()
        self.shards = shards
        self.dir = directory or tmp_path / f"server-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = {**BASE_CONFIG, **config}
        self.config_path = self.dir / "config.json"
        self.config_path.write_bytes(orjson.dumps(self.config))
        self.run_dir = self.dir / "run"
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            *(sys.executable, "-m", "broker", "-c", str(self.config_path)),
            *("--port", str(self.port), "--shards", str(shards), "--runtime_dir", str(self.run_dir)),
        ]
        super().__init__(argv, self.dir / "server.log", env=env, new_session=new_session)

    def start(self, timeout: float = 20.0) -> Server:
        self.config = orjson.loads(self.config_path.read_bytes())  # edited since? the file is what runs
        self.spawn()
        self.wait_ready(timeout)
        return self

    def run_to_end(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """The same command line run in the foreground until it exits, its output captured."""
        return subprocess.run(
            self.argv,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=scaled(timeout),
            check=False,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/health`` answers and every shard is up (a shard restarted meanwhile included)."""
        try:
            eventually(
                self._ready,
                timeout=timeout,
                interval=0.1,
                what="the server to be ready",
                retry_on=(AssertionError, requests.RequestException, KeyError, IndexError),
            )
        except AssertionError as failure:
            raise AssertionError(f"{failure}\nserver log:\n{self.log_tail()}") from None
        self.remember_children()

    def _ready(self) -> bool:
        if not self.running:
            raise RuntimeError(f"server exited with {self.proc and self.proc.returncode}:\n{self.log_tail()}")
        if self.config.get("health", True) and not healthy(self.url):
            return False
        shards = self.api("info", {}, timeout=2)["result"]["nodes"][0]["shards"]
        assert len(shards) == self.shards and not any(s.get("unavailable") for s in shards), shards
        return True

    def api(self, method: str, params: Mapping[str, Any], timeout: float = 10) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/api/{method}",
            data=orjson.dumps(params),
            headers={"X-API-Key": str(self.config.get("api_key", ""))},
            timeout=scaled(timeout),
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def connections(self, **params: Any) -> dict[str, Any]:
        params.setdefault("user", "")
        params.setdefault("expression", "")
        found: dict[str, Any] = self.api("connections", params)["result"]["connections"]
        return found

    def shard_pids(self) -> dict[int, int]:
        shards = self.api("info", {})["result"]["nodes"][0]["shards"]
        return {s["index"]: s["pid"] for s in shards if "pid" in s}

    def router_pid(self) -> int:
        """The pid of the router spawned last (the supervisor logs each spawn)."""
        spawned = re.findall(r"spawned router \(pid (\d+)\)", self.log())
        assert spawned, f"no router spawned yet; log:\n{self.log_tail()}"
        return int(spawned[-1])

    def __enter__(self) -> Server:
        # ``with server.start(...)`` is the same as ``with server``: a second start would be refused
        # while the first one goes on answering, unseen and never stopped.
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
