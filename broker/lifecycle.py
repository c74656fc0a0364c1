"""The child side of the supervisor contract, shared by the router and the shard processes.

A role's run function receives a :class:`ChildContext`::

    router.main.run(cfg, ctx)          shards.main.run(cfg, index, ctx)

and must

* call ``ctx.ready()`` once its boot has finished (sockets bound, peers connected). Until then the
  supervisor treats the process as booting: if it raises, returns or dies before ``ready()``, the whole
  server halts with its error instead of restarting it in a loop;
* call ``ctx.beat()`` from its event loop about once per second (a timer on the loop, not a side thread,
  so that a blocked loop stops beating). ``beat()`` stores one float in shared memory: no system call;
* install its own SIGTERM handling (graceful stop: stop accepting, disconnect clients, exit before the
  shutdown deadline). Supervised children ignore SIGINT: Ctrl-C reaches the whole process group and the
  supervisor turns it into one SIGTERM per child. A standalone child (``ctx.supervised`` is false) should
  treat SIGINT like SIGTERM;
* optionally check ``ctx.parent_alive()`` (for example next to ``beat()``) and stop when it is false.
  On Linux the kernel also sends SIGTERM to a supervised child when the supervisor dies (PR_SET_PDEATHSIG).

:func:`child_main` is the entry point the supervisor starts in every child (``spawn`` start method): it
arms the parent-death signal, ignores SIGINT, sets up logging for the role, imports the target named by an
import string (``"router.main:run"``) and calls it. An exception before ``ready()`` is reported to the
supervisor over a pipe and the child exits with :data:`BOOT_ERROR_EXIT`.

Under systemd each role runs alone (``switchboard router`` / ``switchboard shard --index K``) with
:func:`standalone_context`, whose ``ready()`` and ``beat()`` do nothing.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, Protocol

from broker.config import from_payload
from broker.logs import setup_logging

log = logging.getLogger(__name__)

BOOT_ERROR_EXIT = 3
"""Exit status of a child whose run function failed before it reported ready."""

MSG_READY = b"R"
MSG_BOOT_ERROR = b"E"
"""Messages on the status pipe: ``R`` once ready, ``E`` + UTF-8 error text on a boot failure."""

MAX_ERROR_TEXT = 4000

_PR_SET_PDEATHSIG = 1


class HeartbeatCell(Protocol):
    """A shared ``double`` (``multiprocessing`` RawValue) holding the child's last ``time.monotonic()``."""

    value: float


class ChildContext:
    """What a router or shard process knows about its supervisor. See the module docstring."""

    def __init__(
        self,
        role: str,
        *,
        supervised: bool = False,
        parent_pid: int | None = None,
        status: Connection | None = None,
        heartbeat: HeartbeatCell | None = None,
    ) -> None:
        self.role = role
        self.supervised = supervised
        self._parent_pid = parent_pid
        self._status = status
        self._heartbeat = heartbeat
        self._ready = False

    @property
    def is_ready(self) -> bool:
        return self._ready

    def ready(self) -> None:
        """Boot finished: tell the supervisor. Later calls do nothing."""
        if self._ready:
            return
        self._ready = True
        self.beat()
        if self._status is not None:
            try:
                self._status.send_bytes(MSG_READY)
            except OSError:
                pass  # the supervisor is gone; the parent-death signal will follow
        log.info("%s ready", self.role)

    def beat(self) -> None:
        """Liveness heartbeat; call it from the event loop about once per second."""
        if self._heartbeat is not None:
            self._heartbeat.value = time.monotonic()

    def parent_alive(self) -> bool:
        """False once the supervisor that started this process has gone (always True standalone)."""
        if self._parent_pid is None:
            return True
        return os.getppid() == self._parent_pid

    def report_boot_error(self, text: str) -> None:
        """Send the reason of a failed boot to the supervisor (used by :func:`child_main`)."""
        if self._status is None or self._ready:
            return
        data = text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."
        try:
            self._status.send_bytes(MSG_BOOT_ERROR + data.encode("utf-8", "replace"))
        except OSError:
            pass

    def close(self) -> None:
        if self._status is not None:
            self._status.close()
            self._status = None


class InheritedFd:
    """A descriptor handed to a spawned child as the same open file, e.g. the runtime directory lock.

    The child holds it until it exits and never closes it: a ``flock`` belongs to the open file, so
    the lock stays taken while any process of the server is alive (see :mod:`broker.runtime_dir`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        # DupFd registers the descriptor with the spawning process, which keeps it open in the child.
        return (_rebuild_inherited_fd, (reduction.DupFd(self.fd),))


def _rebuild_inherited_fd(dup: Any) -> InheritedFd:
    fd = int(dup.detach())
    os.set_inheritable(fd, False)  # held by this process only, not by anything it might start
    return InheritedFd(fd)


def standalone_context(role: str) -> ChildContext:
    """A context for a role run on its own (systemd unit): ``ready()`` only logs, ``beat()`` does nothing."""
    return ChildContext(role, supervised=False)


def resolve_target(target: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"target {target!r} is not callable")
    function: Callable[..., Any] = obj
    return function


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def child_main(
    role: str,
    target: str,
    index: int | None,
    payload: Mapping[str, Any],
    parent_pid: int,
    status: Connection,
    heartbeat: HeartbeatCell,
    runtime_lock: InheritedFd | None = None,
) -> None:
    """Entry point of a supervised child process (runs in the child, after ``spawn``).

    ``runtime_lock`` is the supervisor's lock on the runtime directory; it stays open until exit.
    """
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:
        # The supervisor died before the death signal was armed.
        raise SystemExit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = from_payload(payload)
    setup_logging(cfg.log_level, role)
    ctx = ChildContext(role, supervised=True, parent_pid=parent_pid, status=status, heartbeat=heartbeat)
    try:
        func = resolve_target(target)
        if index is None:
            func(cfg, ctx)
        else:
            func(cfg, index, ctx)
    except SystemExit as exc:
        if not ctx.is_ready:
            _boot_failed(ctx, f"exited with status {exc.code!r} before it was ready")
        raise
    except BaseException as exc:
        if not ctx.is_ready:
            log.exception("%s failed to boot", role)
            _boot_failed(ctx, f"{type(exc).__name__}: {exc}")
        log.exception("%s stopped on an error", role)
        raise SystemExit(1) from None
    if not ctx.is_ready:
        _boot_failed(ctx, "returned before it was ready")
    ctx.close()


def _boot_failed(ctx: ChildContext, text: str) -> None:
    ctx.report_boot_error(text)
    ctx.close()
    raise SystemExit(BOOT_ERROR_EXIT)
