"""kill -9 of the supervisor: its children learn it at once (PR_SET_PDEATHSIG), every client is told 3001
"shutdown" (reconnect allowed) rather than dropped, nothing is left running, and the next start on the same
port and runtime directory succeeds."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import make_token


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone; the children here are the supervisor's, not the test's.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _router_pid(server: Server) -> int:
    lines = server.log_path.read_text().splitlines()
    return next(int(line.split("pid ")[1].split(")")[0]) for line in lines if "spawned router" in line)


def test_supervisor_killed_tells_every_client_and_leaves_nothing_behind(tmp_path: Path) -> None:
    server = Server(tmp_path, shards=2).start()
    try:
        children = [*server.shard_pids().values(), _router_pid(server)]

        async def scenario() -> None:
            clients = [
                await WsClient.connected(server.port, make_token(user), protocol)
                for user in users_on_shards("orphan")
                for protocol in ("json", "protobuf")
            ]
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGKILL)
            for client in clients:
                assert await client.closed(10) == (3001, "shutdown"), client.protocol

        run(scenario())
        assert server.proc is not None
        server.proc.wait(5)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []

        # Same port, same runtime directory: nothing the dead tree left behind stands in the way.
        server.start()
        user = users_on_shards("after")[0]

        async def reconnect() -> None:
            client = await WsClient.connected(server.port, make_token(user), "json")
            listed = await asyncio.to_thread(server.connections, user=user)
            assert list(listed) == [client.connect_result["client"]]
            await client.close()

        run(reconnect())
    finally:
        server.stop()
