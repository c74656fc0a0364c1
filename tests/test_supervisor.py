"""Supervisor behaviour, with the supervisor in a subprocess driven by signals and dummy children."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from broker.lifecycle import ChildContext, standalone_context
from broker.logs import setup_logging
from broker.supervisor import BOOTING, READY, ChildState
from tests.support.server import Process, alive
from tests.support.waiting import eventually

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
BOOT_ERROR_MARKER = "boot-marker-42"  # see tests/_children.py


def _gone(pid: int) -> bool:
    return not alive(pid)


def _is_our_child_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing" in cmdline


class Supervised:
    """A supervisor subprocess over dummy children, with its log and the children's records."""

    def __init__(self, tmp_path: Path, name: str = "supervisor") -> None:
        self.run_dir = tmp_path / "run"
        self.log_path = tmp_path / f"{name}.log"
        self.process: Process | None = None

    def start(self, specs: list[tuple[str, str, int | None]], **options: Any) -> None:
        payload = {
            "runtime_dir": str(self.run_dir),
            "specs": [{"role": r, "target": f"_children:{t}", "index": i} for r, t, i in specs],
            **options,
        }
        env = {
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        }
        code = "import sys, _children; sys.exit(_children.supervise(sys.argv[1]))"
        self.process = Process([sys.executable, "-c", code, json.dumps(payload)], self.log_path, env=env)
        self.process.spawn()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

    def pids(self, role: str) -> list[int]:
        path = self.run_dir / f"{role}.pids"
        if not path.exists():
            return []
        return [int(line) for line in path.read_text().split()]

    def events(self, role: str) -> list[str]:
        path = self.run_dir / f"{role}.events"
        return path.read_text().splitlines() if path.exists() else []

    def all_child_pids(self) -> list[int]:
        if not self.run_dir.exists():
            return []
        return [int(x) for p in self.run_dir.glob("*.pids") for x in p.read_text().split()]

    def wait_ready(self, *roles: str, count: int = 1, timeout: float = 30.0) -> None:
        for role in roles:
            eventually(
                partial(self._started, role, count), timeout=timeout, what=f"{role} started {count} time(s)"
            )
            pid = self.pids(role)[count - 1]
            eventually(
                partial(self._logged, f"{role} (pid {pid}) ready"), timeout=timeout, what=f"{role} ready log"
            )

    def _started(self, role: str, count: int) -> bool:
        return len(self.pids(role)) >= count

    def _logged(self, text: str) -> bool:
        return text in self.log()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait_exit(timeout)

    def cleanup(self) -> None:
        if self.process is not None:
            self.process.kill()
        # Children of an earlier supervisor killed by the test are no children of this process any more.
        for pid in self.all_child_pids():
            if alive(pid) and _is_our_child_process(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[Supervised]:
    supervised = Supervised(tmp_path)
    try:
        yield supervised
    finally:
        supervised.cleanup()


def test_boot_failure_halts_with_the_error(sup: Supervised) -> None:
    sup.start([("shard-0", "well_behaved", 0), ("router", "boot_failure", None)])
    code = sup.wait_exit(30)
    log = sup.log()
    assert code != 0, log
    assert BOOT_ERROR_MARKER in log
    assert "halting: router failed to boot" in log
    assert sup.pids("router") == []  # never restarted, never ready
    for pid in sup.all_child_pids():
        assert not alive(pid)


def test_unusable_runtime_dir_halts_before_spawning(sup: Supervised) -> None:
    sup.run_dir.write_text("not a directory")
    sup.start([("router", "well_behaved", None)])
    assert sup.wait_exit(30) != 0
    assert "halting: cannot prepare runtime directory" in sup.log()
    assert "spawned" not in sup.log()


def test_child_killed_after_ready_is_respawned(sup: Supervised) -> None:
    sup.start([("shard-0", "well_behaved", 0), ("router", "well_behaved", None)])
    sup.wait_ready("shard-0", "router")
    first = sup.pids("shard-0")[0]
    os.kill(first, signal.SIGKILL)
    sup.wait_ready("shard-0", count=2)
    second = sup.pids("shard-0")[1]
    assert second != first
    assert not alive(first)
    assert f"shard-0 (pid {first}) was killed by SIGKILL; restarting" in sup.log()
    assert len(sup.pids("router")) == 1  # the others are left alone
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0


def test_sigterm_stops_gracefully(sup: Supervised) -> None:
    roles = ["shard-0", "shard-1", "router"]
    sup.start(
        [("shard-0", "well_behaved", 0), ("shard-1", "well_behaved", 1), ("router", "well_behaved", None)]
    )
    sup.wait_ready(*roles)
    assert stat.S_IMODE(sup.run_dir.stat().st_mode) == 0o700
    sup.signal(signal.SIGHUP)
    eventually(lambda: "SIGHUP" in sup.log(), timeout=10, what="SIGHUP logged")
    assert sup.process is not None and sup.process.running
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0
    assert time.monotonic() - started < 8.0  # well under the 10 s deadline: nobody was waited out
    for role in roles:
        (pid,) = sup.pids(role)
        assert sup.events(role) == [f"term {pid}"]
        assert not alive(pid)
    assert "deadline passed" not in sup.log()


def test_child_ignoring_sigterm_is_killed_at_the_deadline(sup: Supervised) -> None:
    sup.start([("shard-0", "ignores_term", 0), ("router", "well_behaved", None)], shutdown_timeout=1.5)
    sup.wait_ready("shard-0", "router")
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0
    elapsed = time.monotonic() - started
    assert elapsed >= 1.4
    (pid,) = sup.pids("shard-0")
    assert sup.events("shard-0") == [f"term-ignored {pid}"]
    assert not alive(pid)
    log = sup.log()
    assert "shutdown deadline passed; killing shard-0" in log
    assert "was killed by SIGKILL" in log


def test_second_signal_forces_exit(sup: Supervised) -> None:
    sup.start([("shard-0", "ignores_term", 0), ("router", "well_behaved", None)], shutdown_timeout=60)
    sup.wait_ready("shard-0", "router")
    sup.signal(signal.SIGTERM)
    eventually(lambda: sup.events("shard-0"), timeout=15, what="shard-0 saw SIGTERM")
    started = time.monotonic()
    sup.signal(signal.SIGINT)
    assert sup.wait_exit(20) == 0
    assert time.monotonic() - started < 10.0
    assert "received SIGINT again: killing all children now" in sup.log()
    for pid in sup.all_child_pids():
        assert not alive(pid)


def test_a_child_busy_with_one_long_step_is_not_killed(sup: Supervised) -> None:
    sup.start([("shard-0", "busy_for_a_while", 0)], heartbeat_timeout=1.0)
    sup.wait_ready("shard-0")
    first = sup.pids("shard-0")[0]
    eventually(lambda: f"busy-done {first}" in sup.events("shard-0"), timeout=20, what="the long step's end")
    time.sleep(1.5)  # beating again: left alone
    assert alive(first) and sup.pids("shard-0") == [first]
    log = sup.log()
    assert "but it is using CPU" in log and "killing it" not in log
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0


def test_a_child_spinning_without_heartbeat_is_killed_after_the_grace(sup: Supervised) -> None:
    sup.start([("shard-0", "spins_first", 0)], heartbeat_timeout=1.0)
    sup.wait_ready("shard-0")
    first = sup.pids("shard-0")[0]
    began = time.monotonic()
    sup.wait_ready("shard-0", count=2, timeout=40)
    assert not alive(first)
    assert time.monotonic() - began >= 8.0  # BUSY_GRACE (10) heartbeat timeouts, less the boot
    assert "but it is using CPU" in sup.log() and "killing it" in sup.log()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0


def test_missing_heartbeat_kills_and_respawns(sup: Supervised) -> None:
    sup.start([("shard-0", "stuck_first", 0)], heartbeat_timeout=2.0)
    sup.wait_ready("shard-0")
    first = sup.pids("shard-0")[0]
    sup.wait_ready("shard-0", count=2, timeout=40)
    assert not alive(first)
    log = sup.log()
    assert "no heartbeat for" in log
    assert "(no heartbeat for" in log and "restarting" in log
    # The point: longer than the timeout plus one tick, in which the second start beats and is left alone.
    time.sleep(3.2)
    assert len(sup.pids("shard-0")) == 2
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0


def test_crash_loop_after_ready_halts(sup: Supervised) -> None:
    sup.start([("shard-0", "exits_after_ready", 0)], max_restarts=3, restart_window=60.0)
    code = sup.wait_exit(60)
    log = sup.log()
    assert code != 0, log
    assert "crash loop" in log
    assert len(sup.pids("shard-0")) == 4  # the first start and three restarts


def test_children_exit_when_the_supervisor_dies(sup: Supervised) -> None:
    sup.start([("shard-0", "well_behaved", 0), ("router", "well_behaved", None)])
    sup.wait_ready("shard-0", "router")
    sup.signal(signal.SIGKILL)
    sup.wait_exit(10)
    for role in ("shard-0", "router"):
        (pid,) = sup.pids(role)
        eventually(partial(_gone, pid), timeout=15, what=f"{role} to exit")
        # The child never checks its parent: only the parent-death signal can have stopped it.
        assert sup.events(role) == [f"term {pid}"]


@pytest.fixture
def second(tmp_path: Path) -> Iterator[Supervised]:
    """Another supervisor on the same runtime directory as ``sup``."""
    supervised = Supervised(tmp_path, "second")
    try:
        yield supervised
    finally:
        supervised.cleanup()


def test_second_supervisor_on_the_same_directory_is_refused_and_touches_nothing(
    sup: Supervised, second: Supervised
) -> None:
    sup.start([("shard-0", "well_behaved", 0), ("router", "well_behaved", None)])
    sup.wait_ready("shard-0", "router")
    before = sorted(p.name for p in sup.run_dir.iterdir())
    second.start([("shard-0", "well_behaved", 0), ("router", "well_behaved", None)])
    assert second.wait_exit(30) != 0
    log = second.log()
    assert f"runtime directory {sup.run_dir} is in use by another server (pid {sup.pid})" in log, log
    assert "spawned" not in log
    assert sorted(p.name for p in sup.run_dir.iterdir()) == before
    for role in ("shard-0", "router"):
        (pid,) = sup.pids(role)
        assert alive(pid)
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0


def test_start_after_a_killed_supervisor_waits_for_its_draining_children(
    sup: Supervised, second: Supervised
) -> None:
    sup.start([("shard-0", "slow_to_stop", 0)])
    sup.wait_ready("shard-0")
    (old,) = sup.pids("shard-0")
    sup.signal(signal.SIGKILL)
    sup.wait_exit(10)
    # The orphan still drains (1.5 s) and still owns the directory: the new server waits for it.
    second.start([("shard-0", "well_behaved", 0)])
    second.wait_ready("shard-0", count=2)
    assert sup.events("shard-0") == [f"stopped {old}"]
    assert _gone(old)
    assert "still held by the processes of a stopped server" in second.log()
    second.signal(signal.SIGTERM)
    assert second.wait_exit(30) == 0


def test_standalone_context_is_a_no_op() -> None:
    ctx = standalone_context("shard-3")
    assert isinstance(ctx, ChildContext)
    assert ctx.role == "shard-3"
    assert not ctx.supervised
    ctx.beat()
    ctx.ready()
    ctx.ready()
    assert ctx.is_ready
    assert ctx.parent_alive()


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def test_log_lines_are_single_line_logfmt(restore_root_logger: None) -> None:
    out = io.StringIO()
    setup_logging("warn", "shard-1", stream=out)
    logger = logging.getLogger("tests.supervisor")
    logger.info("not shown")
    logger.warning('two\nlines "quoted"')
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = lines
    assert first.endswith('msg="two\\nlines \\"quoted\\"" logger=tests.supervisor')
    stamp, level, role, pid = first.split(" ")[:4]
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == len("2026-11-28T08:31:25.123Z")
    assert (level, role, pid) == ("level=warn", "role=shard-1", f"pid={os.getpid()}")
    assert " level=error " in second
    assert 'exc="Traceback' in second and "ValueError: bad value" in second


def test_log_level_none_disables_logging(restore_root_logger: None) -> None:
    out = io.StringIO()
    setup_logging("none", "router", stream=out)
    logging.getLogger("x").error("hidden")
    assert out.getvalue() == ""
    setup_logging("trace", "router", stream=out)
    logging.getLogger("x").debug("shown")
    assert "level=debug role=router" in out.getvalue()


def test_child_state_names_itself() -> None:
    assert (BOOTING, READY) == (ChildState.BOOTING, ChildState.READY)
    assert repr(READY) == "<ChildState.READY: 'ready'>"
