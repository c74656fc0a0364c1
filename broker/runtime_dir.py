"""The runtime directory (IPC sockets, per-port) and the lock that says which server owns it.

Two servers started on the same port share a runtime directory, and every start cleans up what a
previous run left there (stale sockets are unlinked before binding, the shared-memory counts are
dropped). Without an owner, a second start that then fails on the busy port would first have removed
the sockets of the server that is running. So a server owns its directory through ``flock`` on
``server.lock`` inside it, taken before anything in the directory is touched:

* the supervisor takes it exclusively and passes the locked descriptor on to its children, so the
  directory stays owned until the last process of that server has exited, even when the supervisor
  itself was killed and its children are still draining (the kernel drops the lock when the last
  descriptor closes: a server killed with SIGKILL never blocks the next start);
* a role run alone (``switchboard router`` / ``switchboard shard --index K`` under systemd) takes it
  shared, so that the roles of one deployment coexist, and additionally takes ``<role>.lock``
  exclusively, so that the same role cannot run twice.

The lock files stay in place: unlinking a lock file while another process waits on it would let two
processes each hold a lock on a different file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("switchboard.runtime")

SERVER_LOCK = "server.lock"
WAIT_POLL = 0.1


class RuntimeDirError(Exception):
    """The runtime directory cannot be created, is not safe to use, or belongs to another server."""


class RuntimeDirBusy(RuntimeDirError):
    """Another live server (or role) holds the runtime directory."""


def prepare(path: Path) -> None:
    """Create ``path`` (mode 0700) or check that the existing one is a directory of ours."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise RuntimeDirError(f"runtime directory {path} is not a directory")
        if st.st_uid != os.getuid():
            raise RuntimeDirError(f"runtime directory {path} is owned by another user (uid {st.st_uid})")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise RuntimeDirError(f"cannot prepare runtime directory {path}: {exc.strerror or exc}") from exc


class RuntimeLock:
    """Locked descriptors held for the life of the process (or handed to children, see module doc)."""

    def __init__(self, path: Path, fds: list[int]) -> None:
        self.path = path
        self.fds = fds

    @property
    def server_fd(self) -> int:
        """The descriptor of ``server.lock``; children of a supervisor inherit it."""
        return self.fds[0]

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                if _read_pid(fd) == os.getpid():
                    os.ftruncate(fd, 0)  # the next start sees no owner rather than a stale pid
                os.close(fd)
        self.fds = []


def lock_server(
    path: Path, wait_for_orphans: float = 0.0, cancelled: Callable[[], bool] | None = None
) -> RuntimeLock:
    """Own ``path`` for a whole server (supervisor): exclusive lock, our pid written into the file.

    When the lock is held by the children of a server whose supervisor is gone (the pid in the file is
    dead), they are draining after the parent-death signal: wait up to ``wait_for_orphans`` seconds
    for them, unless ``cancelled()`` turns true (a stop signal meanwhile). Raises RuntimeDirBusy when the
    directory stays in use.
    """
    prepare(path)
    fd = _open_lock(path / SERVER_LOCK)
    deadline = time.monotonic() + wait_for_orphans
    waited = False
    while not _try_lock(fd, fcntl.LOCK_EX):
        holder = _read_pid(fd)
        if holder is None:
            os.close(fd)
            raise RuntimeDirBusy(
                f"runtime directory {path} is in use by roles run alone (switchboard router / shard); "
                "stop them first, or give this server another port or runtime_dir"
            )
        if _pid_alive(holder):
            os.close(fd)
            raise RuntimeDirBusy(
                f"runtime directory {path} is in use by another server (pid {holder}); "
                "stop it first, or give this one another port or runtime_dir"
            )
        if time.monotonic() >= deadline or (cancelled is not None and cancelled()):
            os.close(fd)
            raise RuntimeDirBusy(
                f"runtime directory {path} is still in use by the processes of a stopped server "
                f"(pid {holder}); stop them first, or give this server another port or runtime_dir"
            )
        if not waited:
            waited = True
            log.warning(
                "runtime directory %s is still held by the processes of a stopped server (pid %s); "
                "waiting up to %gs for them to exit",
                path,
                holder,
                wait_for_orphans,
            )
        time.sleep(WAIT_POLL)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RuntimeLock(path, [fd])


def lock_role(path: Path, role: str) -> RuntimeLock:
    """Own ``path`` for one role run alone: shared server lock plus an exclusive ``<role>.lock``."""
    prepare(path)
    server_fd = _open_lock(path / SERVER_LOCK)
    if not _try_lock(server_fd, fcntl.LOCK_SH):
        holder = _read_pid(server_fd)
        os.close(server_fd)
        raise RuntimeDirBusy(
            f"runtime directory {path} is in use by a server (pid {holder}); "
            f"{role} cannot run alone next to it"
        )
    # Holding it shared means no server holds it: a pid still written there is stale.
    os.ftruncate(server_fd, 0)
    role_fd = _open_lock(path / f"{role}.lock")
    if not _try_lock(role_fd, fcntl.LOCK_EX):
        holder = _read_pid(role_fd)
        os.close(role_fd)
        os.close(server_fd)
        raise RuntimeDirBusy(f"{role} is already running with runtime directory {path} (pid {holder})")
    os.ftruncate(role_fd, 0)
    os.pwrite(role_fd, f"{os.getpid()}\n".encode(), 0)
    return RuntimeLock(path, [server_fd, role_fd])


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RuntimeDirError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
