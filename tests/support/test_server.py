"""The process launcher: stop is SIGTERM then SIGKILL after the deadline, children are found and not left
behind, the log is there for failure messages. (A whole server is started by every integration test.)"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.support.server import BASE_CONFIG, Process, Server, alive, child_pids, free_port, process_id
from tests.support.waiting import eventually, scaled

# A parent that prints, starts a child sleeping with it, and exits on SIGTERM or ignores it.
PARENT = """
import signal, subprocess, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, lambda *_: print("ignored SIGTERM", flush=True))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("child", child.pid, flush=True)
time.sleep(60)
"""


def start(tmp_path: Path, mode: str) -> tuple[Process, int]:
    process = Process([sys.executable, "-c", PARENT, mode], tmp_path / f"{mode}.log", children_grace=0.2)
    process.spawn()
    line = eventually(lambda: process.log().split("\n", 1)[0], until=lambda t: t.startswith("child "))
    child = int(line.split()[1])
    assert eventually(lambda: child_pids(process.pid)) == [child]
    return process, child


def test_stop_sends_sigterm_and_takes_the_children_along(tmp_path: Path) -> None:
    process, child = start(tmp_path, "obey")
    assert process.stop(timeout=10) == -signal.SIGTERM
    assert not alive(process.pid)
    assert not alive(child)  # orphaned by the SIGTERM, then killed by its pid


def test_stop_kills_what_ignores_sigterm_and_fails(tmp_path: Path) -> None:
    process, child = start(tmp_path, "ignore")
    failure = rf"ignored SIGTERM for {scaled(0.3):g}s; log:\n(.|\n)*ignored SIGTERM"
    with pytest.raises(AssertionError, match=failure):
        process.stop(timeout=0.3)
    assert not process.running
    assert not alive(child)


def test_a_running_process_is_not_started_twice(tmp_path: Path) -> None:
    process, _ = start(tmp_path, "obey")
    try:
        with pytest.raises(AssertionError, match="is running already"):
            process.spawn()
    finally:
        process.kill()


def test_wait_exit_fails_with_the_log(tmp_path: Path) -> None:
    process, _ = start(tmp_path, "obey")
    try:
        with pytest.raises(AssertionError, match=rf"did not exit within {scaled(0.1):g}s; log:\nchild "):
            process.wait_exit(0.1)
    finally:
        process.kill()


def test_a_process_id_does_not_match_a_reused_pid(tmp_path: Path) -> None:
    process, _ = start(tmp_path, "obey")
    identity = process_id(process.pid)
    assert identity is not None and identity[0] == process.pid
    process.kill()
    assert process_id(process.pid) != identity


def test_server_config_comes_from_keyword_overrides(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path, shards=3, port=port, log_level="info", uni_websocket=True)
    assert server.config == {**BASE_CONFIG, "log_level": "info", "uni_websocket": True}
    assert server.config_path.read_text().startswith("{")
    assert server.argv[-6:] == ["--port", str(port), "--shards", "3", "--runtime_dir", str(server.run_dir)]
    again = Server(tmp_path, port=server.port, directory=server.dir)
    assert (again.url, again.run_dir, again.log_path) == (server.url, server.run_dir, server.log_path)
