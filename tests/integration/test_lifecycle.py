"""Shard death and restart, graceful shutdown, boot failure — with real processes."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import orjson
import requests

from broker.hashing import shard_for_user
from tests.integration.streamclient import StreamClient
from tests.support.server import BASE_CONFIG, Process, Server, free_port, healthy
from tests.support.tokens import make_token
from tests.support.waiting import eventually


def users_on(shard: int, count: int, prefix: str) -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        user = f"{prefix}-{i}"
        if shard_for_user(user, 2) == shard:
            found.append(user)
        i += 1
    return found


def test_killed_shard_is_restarted_and_its_connections_are_gone(tmp_path: Path) -> None:
    with Server(tmp_path, shards=2) as server:
        victims = users_on(0, 5, "victim")
        survivors = users_on(1, 5, "survivor")
        clients = {}
        for user in victims + survivors:
            client = StreamClient(server.port, {"token": make_token(user)})
            clients[user] = (client, client.connect()["client"])
        old_pids = server.shard_pids()
        os.kill(old_pids[0], signal.SIGKILL)
        for user in victims:
            assert clients[user][0].read() is None  # the stream ends with the process
        new_pid = eventually(
            lambda: server.shard_pids().get(0),
            until=lambda pid: pid not in (None, old_pids[0]),
            timeout=20,
            what="shard 0 back under a new pid",
        )
        assert new_pid != old_pids[0]
        assert server.shard_pids()[1] == old_pids[1]
        everyone = server.connections(expression="true")
        assert set(everyone) == {clients[user][1] for user in survivors}
        for user in victims:
            assert server.connections(user=user) == {}
        # the restarted shard takes new connections
        again = StreamClient(server.port, {"token": make_token(victims[0])})
        client_id = again.connect()["client"]
        assert set(server.connections(user=victims[0])) == {client_id}
        for client, _ in clients.values():
            client.close()
        again.close()
        assert "shard-0" in server.log()


def test_sigterm_drains_clients_with_shutdown(tmp_path: Path) -> None:
    server = Server(tmp_path, shards=2).start()
    clients = [StreamClient(server.port, {"token": make_token(f"drain-{i}")}) for i in range(20)]
    for client in clients:
        client.connect()
    started = time.monotonic()
    assert server.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    for client in clients:
        assert client.read_until("disconnect") == {"disconnect": {"code": 3001, "reason": "shutdown"}}
        assert client.read() is None
        client.close()


def test_sigterm_to_the_whole_process_group_still_drains(tmp_path: Path) -> None:
    """systemd (KillMode=control-group) or a shell signals every process at once: still a graceful stop."""
    server = Server(tmp_path, shards=2, new_session=True).start()
    clients = [StreamClient(server.port, {"token": make_token(f"group-{i}")}) for i in range(10)]
    for client in clients:
        client.connect()
    server.signal(signal.SIGTERM)  # to the whole group: the server has its own session
    assert server.wait_exit(20) == 0
    for client in clients:
        assert client.read_until("disconnect") == {"disconnect": {"code": 3001, "reason": "shutdown"}}
        client.close()
    assert "exiting now" not in server.log()


def test_boot_failure_halts_with_the_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = Server(tmp_path, shards=1, port=port).run_to_end()
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower() or "errno 98" in result.stderr.lower()


def test_router_restart_keeps_client_connections(tmp_path: Path) -> None:
    """Clients live on the shards: the router can die and come back without dropping them."""
    with Server(tmp_path, shards=2) as server:
        client = StreamClient(server.port, {"token": make_token("survivor")})
        client_id = client.connect()["client"]
        os.kill(server.router_pid(), signal.SIGKILL)
        answered = eventually(
            lambda: server.connections(user="survivor"),
            timeout=20,
            what="the restarted router to list the survivor",
            retry_on=(AssertionError, requests.RequestException),
        )
        assert list(answered) == [client_id]
        server.api("disconnect", {"user": "survivor"})
        assert client.read_until("disconnect")["disconnect"]["code"] == 3503
        newcomer = StreamClient(server.port, {"token": make_token("newcomer")})
        assert newcomer.connect()["client"]
        client.close()
        newcomer.close()


def test_second_server_on_the_same_port_is_refused_and_the_first_keeps_working(tmp_path: Path) -> None:
    with Server(tmp_path, shards=2) as server:
        result = server.run_to_end()
        assert result.returncode != 0
        assert f"runtime directory {server.run_dir} is in use by another server (pid {server.pid})" in (
            result.stderr
        ), result.stderr
        # The first server still hands new connections to its shards and answers for them.
        clients = [StreamClient(server.port, {"token": make_token(f"after-{i}")}) for i in range(4)]
        ids = {client.connect()["client"] for client in clients}
        assert set(server.connections(expression='user.startsWith("after-")')) == ids
        for client in clients:
            client.close()


def test_new_server_starts_after_the_previous_supervisor_was_killed(tmp_path: Path) -> None:
    first = Server(tmp_path, shards=2).start()
    children = list(first.shard_pids().values())
    first.signal(signal.SIGKILL)  # the supervisor only: its children are left to the parent-death signal
    first.wait_exit(10)
    # Its children stop on the parent-death signal; the next start waits for them if it must.
    second = Server(tmp_path, shards=2, port=first.port, directory=first.dir)
    with second.start(timeout=40):
        eventually(
            lambda: [pid for pid in children if os.path.exists(f"/proc/{pid}")],
            until=lambda left: not left,
            timeout=20,
            what="the first server's shards to exit (the last value: those left)",
        )
        client = StreamClient(second.port, {"token": make_token("back")})
        client_id = client.connect()["client"]
        assert set(second.connections(user="back")) == {client_id}
        client.close()


def test_server_with_a_feature_not_supported_yet_refuses_to_start(tmp_path: Path) -> None:
    server = Server(tmp_path, shards=1, broker="nats", nats_url="nats://127.0.0.1:4222")
    result = server.run_to_end()
    assert result.returncode == 1
    assert 'error: broker is not supported yet (broker: "nats"; remove it or set it to "")' in (
        result.stderr
    ), result.stderr
    assert not server.run_dir.exists()  # stopped before anything was started


def answers(url: str) -> bool:
    try:
        return healthy(url)
    except requests.RequestException:
        return False  # not listening yet


def test_a_router_listens_only_once_its_shards_answer(tmp_path: Path) -> None:
    """The router waits for every shard before it listens (up to 10 s), so that /health answering
    means a client is served: run as separate processes (the systemd router + shard units), the shards
    start well after the router here."""
    port = free_port()
    config = tmp_path / "config.json"
    config.write_bytes(orjson.dumps(BASE_CONFIG))
    common = ["-c", str(config), "--port", str(port), "--shards", "2", "--runtime_dir", str(tmp_path / "run")]
    router = Process([sys.executable, "-m", "broker", "router", *common], tmp_path / "router.log")
    shards = [
        Process(
            [sys.executable, "-m", "broker", "shard", "--index", str(i), *common], tmp_path / f"shard-{i}.log"
        )
        for i in range(2)
    ]
    url = f"http://127.0.0.1:{port}"
    router.spawn()
    try:
        time.sleep(2.0)  # the router is up by now, waiting for shards that were never started
        assert not answers(url), router.log_tail()
        for shard in shards:
            shard.spawn()
        eventually(lambda: answers(url), timeout=20, what="/health once both shards answer")
        client = StreamClient(port, {"token": make_token("after-boot")})
        assert client.connect()["client"]
        client.close()
    finally:
        for process in (router, *shards):
            if process.running:
                process.stop()
