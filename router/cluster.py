"""The router's view of its shards: a handoff channel and a control channel to each.

``ask`` sends a control request to one shard; ``gather`` sends it to every shard at once and waits for
all of them up to one deadline, reporting the shards that did not answer instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq

from broker.config import Config
from broker.ipc import paths
from broker.ipc.control import Raw, RemoteError, Requester, ShardUnavailable
from broker.ipc.handoff import Done, HandoffSender

log = logging.getLogger("switchboard.router")

CONNECT_GRACE = 0.3


@dataclass(slots=True)
class Gathered:
    results: dict[int, Any]
    missing: list[int]
    errors: dict[int, RemoteError]


class Cluster:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.size = cfg.num_shards
        self._zmq = zmq.Context()
        # Right after the router (re)starts, the shards' sockets reconnect within ~0.1 s: a request is
        # given that long rather than answered "shard unavailable" at once.
        self.control = Requester(loop, self._zmq, paths.control_endpoint(cfg.runtime_path), CONNECT_GRACE)
        self._senders = [
            HandoffSender(loop, paths.handoff_path(cfg.runtime_path, i)) for i in range(self.size)
        ]

    def hand_off(self, index: int, message: bytes, fd: int, done: Done) -> None:
        self._senders[index].send(message, fd, done)

    async def ask(self, index: int, method: str, params: Any, timeout: float | None = None) -> Any:
        return await self.control.request(
            paths.shard_identity(index),
            method,
            params,
            timeout if timeout is not None else self.cfg.api_shard_timeout,
        )

    async def ask_raw(self, index: int, method: str, params: Any, timeout: float | None = None) -> Raw:
        """Like ``ask``, with the result left as the shard's JSON bytes."""
        return await self.control.request_raw(
            paths.shard_identity(index),
            method,
            params,
            timeout if timeout is not None else self.cfg.api_shard_timeout,
        )

    async def until_every_shard_answers(self, timeout: float) -> list[int]:
        """Wait (at most ``timeout`` seconds) until every shard answers; the ones that still do not."""
        deadline = time.monotonic() + timeout
        silent = list(range(self.size))
        while True:
            outcomes = await asyncio.gather(
                *(self.ask(i, "info", {}, min(0.5, timeout)) for i in silent), return_exceptions=True
            )
            # Not logged: at boot the shards are expected to come up a moment after the router.
            silent = [
                i for i, outcome in zip(silent, outcomes, strict=True) if isinstance(outcome, Exception)
            ]
            if not silent or time.monotonic() >= deadline:
                return silent
            await asyncio.sleep(0.05)

    async def gather(
        self,
        method: str,
        params: Any,
        timeout: float | None = None,
        *,
        raw: bool = False,
        only: list[int] | None = None,
    ) -> Gathered:
        """Ask every shard (or the ``only`` ones) at once; with ``raw`` results stay undecoded (``Raw``)."""
        indexes = list(range(self.size)) if only is None else only
        ask = self.ask_raw if raw else self.ask
        outcomes = await asyncio.gather(
            *(ask(i, method, params, timeout) for i in indexes), return_exceptions=True
        )
        gathered = Gathered({}, [], {})
        for index, outcome in zip(indexes, outcomes, strict=True):
            if isinstance(outcome, ShardUnavailable):
                log.warning("shard %d did not answer %s: %s", index, method, outcome)
                gathered.missing.append(index)
            elif isinstance(outcome, RemoteError):
                gathered.errors[index] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                gathered.results[index] = outcome
        return gathered

    def close(self) -> None:
        for sender in self._senders:
            sender.close()
        self.control.close()
        self._zmq.term()
