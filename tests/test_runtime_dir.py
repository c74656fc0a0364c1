"""Ownership of the runtime directory: flock on server.lock (whole server) and <role>.lock (roles alone)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from broker.runtime_dir import SERVER_LOCK, RuntimeDirBusy, RuntimeDirError, lock_role, lock_server


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(10)
    return proc.pid


def test_server_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = lock_server(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert (run / SERVER_LOCK).read_text().strip() == str(os.getpid())
    with pytest.raises(RuntimeDirBusy, match=rf"{run} is in use by another server \(pid {os.getpid()}\)"):
        lock_server(run)
    first.release()
    assert (run / SERVER_LOCK).read_text() == ""  # a clean stop leaves no stale owner behind
    lock_server(run).release()


def test_files_of_the_directory_are_left_alone_when_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    held = lock_server(run)
    (run / "pub-0.ipc").write_text("socket of the running server")
    with pytest.raises(RuntimeDirBusy):
        lock_server(run)
    assert sorted(p.name for p in run.iterdir()) == ["pub-0.ipc", SERVER_LOCK]
    held.release()


def test_lock_of_a_dead_server_whose_children_linger_is_waited_for(tmp_path: Path) -> None:
    run = tmp_path / "run"
    orphans = lock_server(run)  # stands for the children still holding a killed supervisor's lock
    os.pwrite(orphans.server_fd, f"{dead_pid()}\n".encode(), 0)
    with pytest.raises(RuntimeDirBusy, match="still in use by the processes of a stopped server"):
        lock_server(run, wait_for_orphans=0.3)
    threading.Timer(0.3, orphans.release).start()
    lock_server(run, wait_for_orphans=10).release()


def test_roles_alone_share_the_directory_but_not_their_role(tmp_path: Path) -> None:
    run = tmp_path / "run"
    router = lock_role(run, "router")
    shard = lock_role(run, "shard-0")
    with pytest.raises(RuntimeDirBusy, match=rf"shard-0 is already running .* \(pid {os.getpid()}\)"):
        lock_role(run, "shard-0")
    with pytest.raises(RuntimeDirBusy, match="in use by roles run alone"):
        lock_server(run, wait_for_orphans=5)
    router.release()
    shard.release()
    server = lock_server(run)
    with pytest.raises(RuntimeDirBusy, match=rf"in use by a server \(pid {os.getpid()}\)"):
        lock_role(run, "router")
    server.release()


def test_a_role_run_alone_next_to_a_server_is_refused_before_it_starts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    server = lock_server(run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = subprocess.run(
        [sys.executable, "-m", "broker", "router", "--runtime_dir", str(run), "-a", "127.0.0.1", "-p", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    server.release()
    assert result.returncode == 1
    assert f"error: runtime directory {run} is in use by a server (pid {os.getpid()})" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.write_text("not a directory")
    with pytest.raises(RuntimeDirError, match="cannot prepare runtime directory"):
        lock_server(run)
