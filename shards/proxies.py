"""A shard's calls to the application backend: the proxies of connected clients' events.

One keep-alive pool per proxy per shard process (:class:`broker.proxy.http.ProxyClient`), one deadline
per call (the proxy's timeout). A call that fails (timeout, refused, non-200, not JSON) ends with
``done(None, now)`` and one log line naming the proxy; what that means for the client (100 to the one
command, a retry of a refresh) is the caller's decision. Headers: what the connection kept of its
request (:func:`broker.proxy.http.kept_headers`), filtered again by the called proxy's own lists, plus
its static headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from broker.proxy.http import ProxyClient, ProxyFailed, forwarded_headers
from broker.proxy.table import ProxySpec, ProxyTable

log = logging.getLogger("switchboard.proxy")

Answered = Callable[[Any, float], None]


class ProxyCalls:
    def __init__(self, table: ProxyTable, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.table = table
        self.spawn = spawn
        self._clients: dict[tuple[str, str], ProxyClient] = {}

    def call(
        self,
        spec: ProxySpec,
        body: dict[str, Any],
        kept: tuple[dict[str, str], dict[str, str]] | None,
        done: Answered,
    ) -> None:
        real, supplied = kept if kept is not None else ({}, {})
        headers = forwarded_headers(
            real, supplied, spec.http_headers, spec.emulated_headers, spec.static_http_headers
        )
        key = (spec.name, spec.endpoint)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = ProxyClient(spec.endpoint, spec.timeout)
        self.spawn(self._call(spec.name, client, body, headers, done))

    async def _call(
        self, name: str, client: ProxyClient, body: dict[str, Any], headers: dict[str, str], done: Answered
    ) -> None:
        try:
            answer = await client.call(body, headers)
        except ProxyFailed as exc:
            log.error("%s proxy: %s", name, exc)
            answer = None
        done(answer, time.time())

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
