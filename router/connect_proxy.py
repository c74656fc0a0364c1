"""The connect proxy, called by the router before it hands a connection over.

Where the call is made: a client without a token is known only once the backend has named its user,
and the user decides the shard (every connection of a user lives on the user's shard, which is what
makes ``connections`` by user one shard's answer). The router already reads the connect request to
place a connection, so it calls the backend there, then hands the socket to the user's shard with the
decision (:class:`broker.proxy.connect.Outcome`) in the handoff header; the shard applies it exactly as
it applies a verified token (``meta`` included, never sent to a client). The other way — a shard calls
the backend, then moves the socket to the user's shard — would pass every such socket twice.

A failed call (timeout, refused, non-200, garbage) decides nothing: the connection goes on to a shard
with a *failed* outcome, which answers the connect with 100 (temporary: the SDK tries again), or, for
a unidirectional client, its disconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from broker.config import Config
from broker.proxy.connect import KIND_FAILED, MalformedAnswer, Outcome, connect_request, parse_answer
from broker.proxy.http import ProxyClient, ProxyFailed, forwarded_headers

log = logging.getLogger("switchboard.proxy")


class ConnectProxy:
    def __init__(self, cfg: Config) -> None:
        self.client = (
            ProxyClient(cfg.proxy_connect_endpoint, float(cfg.proxy_connect_timeout))
            if cfg.proxy_connect_endpoint
            else None
        )
        self.allowed = frozenset(name.lower() for name in cfg.proxy_http_headers)
        self.emulation_allowed = frozenset(name.lower() for name in cfg.proxy_emulated_headers)
        self.static = dict(cfg.proxy_static_http_headers)
        self.binary = cfg.proxy_binary_encoding

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def decide(
        self,
        request: Mapping[str, Any],
        *,
        client: str,
        transport: str,
        protocol: str,
        request_headers: Mapping[str, str],
    ) -> Outcome:
        """The backend's decision for a ConnectRequest (``request``) without a token."""
        assert self.client is not None
        subs = request.get("subs")
        body = connect_request(
            client=client,
            transport=transport,
            protocol=protocol,
            name=_text(request.get("name")),
            version=_text(request.get("version")),
            data=_data(request.get("data")),
            channels=sorted(subs) if isinstance(subs, dict) else None,
            binary_encoding=self.binary,
        )
        emulated = request.get("headers")
        headers = forwarded_headers(
            request_headers,
            emulated if isinstance(emulated, Mapping) else None,
            self.allowed,
            self.emulation_allowed,
            self.static,
        )
        try:
            return parse_answer(await self.client.call(body, headers))
        except (ProxyFailed, MalformedAnswer) as exc:
            log.error("connect proxy: %s", exc)
            return Outcome(KIND_FAILED)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _data(value: Any) -> bytes | None:
    """The ConnectRequest's data: raw JSON (JSON protocol) or the bytes themselves (Protobuf)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value or None
    return orjson.dumps(value)
