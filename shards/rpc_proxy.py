"""A shard's calls to the RPC proxy: a client's ``rpc`` command, answered by the application backend.

One keep-alive pool per shard process (:class:`broker.proxy.http.ProxyClient`), one deadline per call
(``proxy_rpc_timeout``). A call that fails (timeout, refused, non-200, garbage) answers that command
with 100, with one log line; the connection and every other client go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from broker.config import Config
from broker.protocol.state import ConnectionState
from broker.proxy.connect import MalformedAnswer
from broker.proxy.http import ProxyClient, ProxyFailed
from broker.proxy.rpc import RpcOutcome, parse_rpc_answer, rpc_request

log = logging.getLogger("switchboard.proxy")


class RpcProxy:
    def __init__(self, cfg: Config, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.cfg = cfg
        self.spawn = spawn
        self.client = ProxyClient(cfg.proxy_rpc_endpoint, float(cfg.proxy_rpc_timeout))
        self.headers = dict(cfg.proxy_static_http_headers)

    def call(
        self, state: ConnectionState, method: str, data: bytes, done: Callable[[RpcOutcome | None], None]
    ) -> None:
        body = rpc_request(
            client=state.client,
            transport=state.transport,
            protocol=state.protocol,
            user=state.user,
            method=method,
            data=data,
            meta=state.meta if self.cfg.proxy_include_connection_meta else None,
            binary_encoding=self.cfg.proxy_binary_encoding,
        )
        self.spawn(self._call(body, done))

    async def _call(self, body: dict[str, Any], done: Callable[[RpcOutcome | None], None]) -> None:
        try:
            outcome: RpcOutcome | None = parse_rpc_answer(await self.client.call(body, self.headers))
        except (ProxyFailed, MalformedAnswer) as exc:
            log.error("rpc proxy: %s", exc)
            outcome = None
        done(outcome)

    async def close(self) -> None:
        await self.client.close()
