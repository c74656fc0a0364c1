"""kill -9 of the supervisor: its children learn it at once (PR_SET_PDEATHSIG), every client is told 3001
"shutdown" (reconnect allowed) rather than dropped, nothing is left running, and the next start on the same
port and runtime directory succeeds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import Server, alive
from tests.support.tokens import make_token
from tests.support.waiting import eventually


def test_supervisor_killed_tells_every_client_and_leaves_nothing_behind(tmp_path: Path) -> None:
    server = Server(tmp_path, shards=2).start()
    try:
        children = [*server.shard_pids().values(), server.router_pid()]

        async def scenario() -> None:
            clients = [
                await WsClient.connected(server.port, make_token(user), protocol)
                for user in users_on_shards("orphan")
                for protocol in ("json", "protobuf")
            ]
            server.signal(signal.SIGKILL)
            for client in clients:
                assert await client.closed(10) == (3001, "shutdown"), client.protocol

        run(scenario())
        server.wait_exit(5)
        # A zombie counts as gone: the children here are the supervisor's, not the test's.
        eventually(
            lambda: [pid for pid in children if alive(pid)],
            until=lambda left: not left,
            timeout=15,
            interval=0.1,
            what="every child to exit (the last value: those left)",
        )

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
