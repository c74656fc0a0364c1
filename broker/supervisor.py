"""The supervisor ("arbiter"): starts the router and the shards, watches them, restarts and stops them.

Theory of operation
-------------------

One supervisor process owns N + 1 children: ``shard-0`` ... ``shard-{N-1}`` and the ``router``. Each
child is described by a :class:`ChildSpec` (role, target import string, shard index) and started with the
``spawn`` start method only: the supervisor never forks, so no child inherits an event loop, a thread or
a ZeroMQ context. A child runs :func:`broker.lifecycle.child_main`, which imports the target inside the
child and calls it with a :class:`broker.lifecycle.ChildContext`.

Per child the supervisor keeps

* a **status pipe** (child → supervisor): ``R`` when the child calls ``ctx.ready()``, or ``E`` + text when
  its run function fails before that;
* a **heartbeat cell**: one shared ``double`` the child sets to ``time.monotonic()`` from its event loop
  (``ctx.beat()``; CLOCK_MONOTONIC is system-wide on Linux, so both sides read the same clock);
* the process **sentinel**, readable once the process has exited.

Start: create ``cfg.runtime_path`` (mode 0700, must be a directory owned by us) and lock it
(:mod:`broker.runtime_dir`): a second server on the same port stops here with the first one's pid and
touches nothing. Only then clear what a previous run left (the shared channel counts), spawn the shards,
then the router; every child inherits the locked descriptor, so the directory stays owned until the
last of them has exited. Every child starts *booting*; it becomes *ready* when its ``R`` arrives.

Main loop: signal handlers only append the signal number to a queue; ``signal.set_wakeup_fd`` writes a
byte to a self-pipe so that the loop wakes up. The loop blocks in ``multiprocessing.connection.wait`` on
the self-pipe, every status pipe and every sentinel, with a one-second timeout, and then

1. handles queued signals: SIGTERM / SIGINT start a graceful stop; SIGHUP is logged and ignored (a reload
   would mean restarting shards, which drops their connections; restart the service instead);
2. reads the status pipes;
3. reaps exited children (``Process.is_alive`` waits on the pid, so no zombie stays behind), reading their
   status pipe to the end first so that a ``ready`` or an error sent just before exiting is not lost:

   * a child that exits **before it was ready** (boot error, crash, or a return from its run function)
     halts the whole server with that child's error: a failure at boot (bad config, address in use) would
     fail again, so it is never restarted in a loop;
   * a child that exits **after it was ready** is logged and respawned with the same role and index, and
     a fresh heartbeat. More than ``max_restarts`` restarts of one child within ``restart_window`` seconds
     is a crash loop and halts the server;

4. checks liveness: a ready child whose heartbeat is older than ``cfg.heartbeat_timeout`` (a blocked event
   loop) gets SIGKILL; it is then reaped and respawned like any child that died after ready. A child that
   kept using CPU within that time is working through one long step (a storm of commands on a machine
   with more shards than cores), not stuck: it gets ``BUSY_GRACE`` timeouts, with one warning, before the
   kill. A child still booting after ``boot_timeout`` seconds halts the server.

Stop (a signal, or a halt): SIGTERM to every live child (each stops accepting, disconnects its clients
with 3001 "shutdown" and exits), then wait until all have exited or ``cfg.shutdown_timeout`` has passed,
and SIGKILL whatever is left. A second SIGTERM / SIGINT during this phase SIGKILLs every child at once.
The exit status is 0 for a requested stop and 1 for a halt.

Children exit when the supervisor dies: each arms ``PR_SET_PDEATHSIG`` = SIGTERM (Linux), and
``ctx.parent_alive()`` compares ``os.getppid()`` with the supervisor's pid. The supervisor must run in the
main thread (signal handlers) and spawns from it (the death signal follows the spawning thread).
"""

from __future__ import annotations

import collections
import enum
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from broker.config import Config
from broker.lifecycle import MSG_BOOT_ERROR, MSG_READY, HeartbeatCell, InheritedFd, child_main
from broker.logs import setup_logging
from broker.runtime_dir import RuntimeDirError, RuntimeLock, lock_server

log = logging.getLogger(__name__)

ROUTER_TARGET = "router.main:run"
SHARD_TARGET = "shards.main:run"

EXIT_OK = 0
EXIT_HALTED = 1
# A child without a heartbeat that keeps using CPU is given this many heartbeat timeouts before the kill.
BUSY_GRACE = 10
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised child: ``target`` is ``"module:function"``, resolved inside the child.

    With ``index`` None the target is called as ``run(cfg, ctx)``, otherwise as ``run(cfg, index, ctx)``.
    """

    role: str
    target: str
    index: int | None = None


def default_specs(cfg: Config) -> list[ChildSpec]:
    """The shards ``shard-0`` ... ``shard-{N-1}`` followed by the router."""
    specs = [ChildSpec(f"shard-{k}", SHARD_TARGET, k) for k in range(cfg.num_shards)]
    specs.append(ChildSpec("router", ROUTER_TARGET, None))
    return specs


class ChildState(enum.Enum):
    """Where a child is in its boot; an enum so that logs and reprs name the state."""

    BOOTING = "booting"
    READY = "ready"


BOOTING = ChildState.BOOTING
READY = ChildState.READY


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    heartbeat: HeartbeatCell
    process: BaseProcess | None = None
    status: Connection | None = None
    state: ChildState = BOOTING
    spawned_at: float = 0.0
    boot_error: str | None = None
    kill_reason: str | None = None
    restarts: collections.deque[float] = field(default_factory=collections.deque)
    cpu: float = -1.0  # its CPU time at the last liveness check
    cpu_grew_at: float = 0.0  # when a check last saw its CPU time grow
    busy_logged: bool = False

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


class Arbiter:
    """Runs the children described by ``specs`` (default: :func:`default_specs`) until stopped.

    Call :meth:`run` from the main thread; it returns the process exit status.
    """

    def __init__(
        self,
        cfg: Config,
        specs: Sequence[ChildSpec] | None = None,
        *,
        max_restarts: int = 5,
        restart_window: float = 10.0,
        boot_timeout: float = 60.0,
        tick: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.specs = list(specs) if specs is not None else default_specs(cfg)
        roles = [s.role for s in self.specs]
        if len(set(roles)) != len(roles):
            raise ValueError(f"child roles must be unique: {roles}")
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.boot_timeout = boot_timeout
        self.tick = tick
        self._mp = multiprocessing.get_context("spawn")
        # One id for every process of this node (shown in `info`, keyed in Redis), new for each start.
        cfg.node_uid = cfg.node_uid or str(uuid.uuid4())
        self._payload = cfg.to_payload()
        self._children: list[_Child] = []
        self._signals: collections.deque[int] = collections.deque()
        self._wake_r = -1
        self._wake_w = -1
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd: int | None = None
        self._stop_reason: str | None = None
        self._exit_code = EXIT_OK
        self._lock: RuntimeLock | None = None

    # ----------------------------------------------------------------------------------------- public

    def run(self) -> int:
        self._install_signals()
        try:
            try:
                self._own_runtime_dir()
                log.info("supervisor starting %d children: %s", len(self.specs), [s.role for s in self.specs])
                self._children = [_Child(spec, self._new_heartbeat()) for spec in self.specs]
                for child in self._children:
                    self._handle_signals()  # Ctrl-C while many shards start: spawn no more
                    if self._stop_reason is not None:
                        break
                    self._spawn(child)
                self._supervise()
            except RuntimeDirError as exc:
                self._halt(str(exc))
            except Exception as exc:
                log.exception("supervisor error")
                self._halt(f"supervisor error: {type(exc).__name__}: {exc}")
            self._shutdown()
        finally:
            self._kill_and_reap_all()
            self._release_runtime_dir()
            self._restore_signals()
        log.info("supervisor exiting with status %d (%s)", self._exit_code, self._stop_reason)
        return self._exit_code

    @property
    def children_pids(self) -> dict[str, int | None]:
        return {c.role: c.pid for c in self._children}

    # ---------------------------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only enqueue: the set_wakeup_fd byte wakes the loop, which does the work.
        self._signals.append(signum)

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _drain_wakeup(self) -> None:
        while True:
            try:
                if not os.read(self._wake_r, 512):
                    return
            except (BlockingIOError, InterruptedError):
                return

    def _take_signals(self) -> list[int]:
        taken: list[int] = []
        while self._signals:
            taken.append(self._signals.popleft())
        return taken

    def _handle_signals(self) -> None:
        for signum in self._take_signals():
            name = signal.Signals(signum).name
            if signum in _STOP_SIGNALS:
                if self._stop_reason is None:
                    self._stop_reason = f"received {name}"
                    log.info("received %s: graceful shutdown", name)
            elif signum == signal.SIGHUP:
                log.warning("received SIGHUP: reload is not supported (restart the service instead)")

    # ---------------------------------------------------------------------------------------- startup

    def _own_runtime_dir(self) -> None:
        # Lock before anything in the directory is touched: a second server on the same port must
        # leave the running one's sockets and counts alone. Children of a killed supervisor may still
        # be draining (parent-death signal): give them their shutdown time before giving up.
        wait = float(self.cfg.shutdown_timeout) + 5.0
        self._lock = lock_server(self.cfg.runtime_path, wait_for_orphans=wait, cancelled=self._stop_requested)
        from broker.ipc.channel_counts import remove_counts, remove_user_indexes

        remove_counts(self.cfg)  # left by a previous run of this directory
        remove_user_indexes(self.cfg)

    def _stop_requested(self) -> bool:
        self._handle_signals()
        return self._stop_reason is not None

    def _release_runtime_dir(self) -> None:
        if self._lock is None:
            return
        from broker.ipc.channel_counts import remove_counts, remove_user_indexes

        remove_counts(self.cfg)
        remove_user_indexes(self.cfg)
        self._lock.release()
        self._lock = None

    def _new_heartbeat(self) -> HeartbeatCell:
        cell: HeartbeatCell = self._mp.RawValue("d", time.monotonic())
        return cell

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        reader, writer = self._mp.Pipe(duplex=False)
        child.heartbeat.value = time.monotonic()
        process = self._mp.Process(
            target=child_main,
            name=f"switchboard-{spec.role}",
            args=(
                spec.role,
                spec.target,
                spec.index,
                self._payload,
                os.getpid(),
                writer,
                child.heartbeat,
                InheritedFd(self._lock.server_fd) if self._lock is not None else None,
            ),
        )
        try:
            process.start()
        finally:
            writer.close()
        child.process = process
        child.status = reader
        child.state = BOOTING
        child.spawned_at = time.monotonic()
        child.boot_error = None
        child.kill_reason = None
        log.info("spawned %s (pid %s)", spec.role, process.pid)

    # ------------------------------------------------------------------------------------- main loop

    def _halt(self, reason: str) -> None:
        log.error("halting: %s", reason)
        if self._exit_code == EXIT_OK:
            self._exit_code = EXIT_HALTED
        if self._stop_reason is None or not self._stop_reason.startswith("halt"):
            self._stop_reason = f"halt: {reason}"

    def _wait_objects(self) -> list[Any]:
        objects: list[Any] = [self._wake_r]
        for child in self._children:
            if child.status is not None:
                objects.append(child.status)
            if child.process is not None:
                objects.append(child.process.sentinel)
        return objects

    def _supervise(self) -> None:
        while True:
            self._handle_signals()
            if self._stop_reason is not None:
                return
            wait(self._wait_objects(), timeout=self.tick)
            self._drain_wakeup()
            self._handle_signals()
            for child in self._children:
                self._read_status(child)
            for child in self._children:
                self._reap(child, on_exit=self._after_exit)
            if self._stop_reason is None:
                self._check_liveness()

    def _read_status(self, child: _Child) -> None:
        conn = child.status
        if conn is None:
            return
        try:
            while conn.poll():
                self._on_status(child, conn.recv_bytes())
        except (EOFError, OSError):
            conn.close()
            child.status = None

    def _on_status(self, child: _Child, data: bytes) -> None:
        if data == MSG_READY:
            if child.state is not READY:
                child.state = READY
                log.info(
                    "%s (pid %s) ready after %.2fs",
                    child.role,
                    child.pid,
                    time.monotonic() - child.spawned_at,
                )
        elif data.startswith(MSG_BOOT_ERROR):
            child.boot_error = data[len(MSG_BOOT_ERROR) :].decode("utf-8", "replace")
            log.error("%s (pid %s) failed to boot: %s", child.role, child.pid, child.boot_error)
        else:
            log.warning("%s sent an unknown status message %r", child.role, data[:40])

    def _reap(self, child: _Child, on_exit: Callable[[_Child, int | None, int | None], None]) -> None:
        """If the child's process has exited: wait for it, read its last status, release it."""
        process = child.process
        if process is None or process.is_alive():
            return
        pid, exitcode = process.pid, process.exitcode
        if child.status is not None:
            # Everything it wrote is in the pipe now; read it all (up to EOF) before deciding.
            self._read_status(child)
        if child.status is not None:
            child.status.close()
            child.status = None
        process.close()
        child.process = None
        on_exit(child, pid, exitcode)

    def _after_exit(self, child: _Child, pid: int | None, exitcode: int | None) -> None:
        how = f"(pid {pid}) {describe_exit(exitcode)}"
        if self._stop_reason is not None:
            log.info("%s %s", child.role, how)
            return
        if child.state is not READY:
            reason = child.boot_error or f"{how} before it was ready"
            self._halt(f"{child.role} failed to boot: {reason}")
            return
        if child.kill_reason:
            log.warning("%s %s (%s); restarting", child.role, how, child.kill_reason)
        else:
            log.error("%s %s; restarting", child.role, how)
        now = time.monotonic()
        child.restarts.append(now)
        while child.restarts and now - child.restarts[0] > self.restart_window:
            child.restarts.popleft()
        if len(child.restarts) > self.max_restarts:
            self._halt(
                f"{child.role} restarted {len(child.restarts)} times within {self.restart_window:g}s "
                "(crash loop); giving up"
            )
            return
        self._spawn(child)

    def _check_liveness(self) -> None:
        now = time.monotonic()
        timeout = float(self.cfg.heartbeat_timeout)
        for child in self._children:
            process = child.process
            if process is None or child.kill_reason is not None:
                continue
            if child.state is BOOTING:
                if now - child.spawned_at > self.boot_timeout:
                    self._halt(f"{child.role} (pid {process.pid}) not ready after {self.boot_timeout:g}s")
                    return
                continue
            if timeout <= 0:
                continue
            age = now - child.heartbeat.value
            cpu = cpu_seconds(process.pid) if process.pid is not None else None
            if cpu is not None and cpu > child.cpu:
                child.cpu, child.cpu_grew_at = cpu, now
            if age <= timeout:
                child.busy_logged = False
                continue
            if now - child.cpu_grew_at < timeout and age <= timeout * BUSY_GRACE:
                # One long step on a machine with more processes than cores (a storm of commands
                # on every shard at once): it works, it is not stuck. Stopped, blocked or idle
                # processes use no CPU and are killed at the timeout; a livelocked one later.
                if not child.busy_logged:
                    child.busy_logged = True
                    log.warning(
                        "%s (pid %s): no heartbeat for %.1fs, but it is using CPU: a long step on a busy "
                        "machine; killed only if it lasts %gs",
                        child.role,
                        process.pid,
                        age,
                        timeout * BUSY_GRACE,
                    )
                continue
            child.kill_reason = f"no heartbeat for {age:.1f}s"
            log.error("%s (pid %s): no heartbeat for %.1fs; killing it", child.role, process.pid, age)
            self._send(child, signal.SIGKILL)

    # ------------------------------------------------------------------------------------------ stop

    def _send(self, child: _Child, signum: int) -> None:
        pid = child.pid
        if pid is None:
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _live(self) -> list[_Child]:
        return [c for c in self._children if c.process is not None]

    def _shutdown(self) -> None:
        for child in self._children:
            self._reap(child, on_exit=self._after_exit)
        live = self._live()
        if not live:
            return
        timeout = max(0.0, float(self.cfg.shutdown_timeout))
        names = ", ".join(f"{c.role}={c.pid}" for c in live)
        log.info("stopping: SIGTERM to %s (deadline %gs)", names, timeout)
        for child in live:
            self._send(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._live():
            forced = False
            for signum in self._take_signals():
                if signum in _STOP_SIGNALS:
                    log.warning("received %s again: killing all children now", signal.Signals(signum).name)
                    forced = True
            if forced:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "shutdown deadline passed; killing %s",
                    ", ".join(f"{c.role}={c.pid}" for c in self._live()),
                )
                break
            wait(self._wait_objects(), timeout=min(remaining, self.tick))
            self._drain_wakeup()
            for child in self._children:
                self._read_status(child)
                self._reap(child, on_exit=self._after_exit)
        self._kill_and_reap_all()

    def _kill_and_reap_all(self, join_timeout: float = 10.0) -> None:
        live = self._live()
        for child in live:
            self._send(child, signal.SIGKILL)
        for child in live:
            process = child.process
            if process is None:
                continue
            process.join(join_timeout)
            if process.exitcode is None:
                log.error("%s (pid %s) did not exit after SIGKILL", child.role, process.pid)
                continue
            log.info("%s (pid %s) %s", child.role, process.pid, describe_exit(process.exitcode))
            self._reap(child, on_exit=_ignore_exit)


def _ignore_exit(child: _Child, pid: int | None, exitcode: int | None) -> None:
    pass


def serve(cfg: Config, specs: Iterable[ChildSpec] | None = None) -> int:
    """Run the whole server (supervisor + router + shards) until it is stopped; returns the exit status."""
    setup_logging(cfg.log_level, "supervisor")
    return Arbiter(cfg, list(specs) if specs is not None else None).run()
