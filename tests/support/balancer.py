"""A TCP load balancer for tests: one loopback port in front of several nodes, in a thread of its own.

Each accepted connection goes to the first backend, in the given order, that accepts a TCP connection;
bytes are piped both ways until either side closes. A node that dies closes its clients' connections,
and their reconnects land on the next live node: what a real balancer with connect-time health checks
does, enough for SDK clients to move from node to node.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.loop_thread import LoopThread
from tests.support.server import free_port

CONNECT_TIMEOUT = 1.0


class Balancer(LoopThread):
    name = "balancer"

    def __init__(self, backends: list[int]) -> None:
        super().__init__()
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Balancer:
        super().__enter__()
        return self

    async def serve(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self._pipe(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accepted, "127.0.0.1", self.port)
        self.ready()
        await stop.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for port in self.backends:
            with contextlib.suppress(OSError, TimeoutError):
                upstream = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT)
                break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            for each in (writer, up_writer):
                each.close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            sink.close()
