"""A server of the tests that runs on an asyncio loop in a thread of its own (a balancer, a backend)."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType


class LoopThread:
    """Subclasses implement :meth:`serve`: set up, call ``ready()``, then ``await stop.wait()``."""

    name = "loop-thread"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    async def serve(self, stop: asyncio.Event) -> None:
        raise NotImplementedError

    def ready(self) -> None:
        self._ready.set()

    def __enter__(self) -> LoopThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self.serve(self._stop)

        self._loop.run_until_complete(main())
        self._loop.close()
