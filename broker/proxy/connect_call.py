"""The connect proxy's call: who a client without a token is, asked of the backend.

Where the call is made: a client without a token is known only once the backend has named its user,
and the user decides the shard (every connection of a user lives on the user's shard, which is what
makes ``connections`` by user one shard's answer). Two placements, picked by
``proxy_connect_placement`` (see the README and ``bench/RESULTS.md`` for the measurement):

* ``shard`` (default): the router only builds the request (:meth:`ConnectProxy.prepare`) and hands
  the socket, with it, to a shard picked by the client id; that shard calls the backend
  (:meth:`ConnectProxy.ask`) and adopts the connection when the user is its own, or hands the socket
  on to the user's shard (``shards/rehome.py``). The call's CPU moves off the single router onto the
  shards, at the price of a second handoff for half the connections (with 2 shards);
* ``router``: the router, which reads the connect request anyway to place a connection, calls the
  backend, then hands the socket to the user's shard with the decision
  (:class:`broker.proxy.connect.Outcome`) in the handoff header.

Measured (``bench/connect_proxy_bench.py``, 2 shards on 2 cores): the shards' placement connects
1.2-1.3x as many clients per second as the router's and spends less server CPU per connect (about
280 µs against 330 µs), because the router is one process and the call is most of its work.

Either way the shard applies the decision exactly as it applies a verified token (``meta`` included,
never sent to a client). A failed call (timeout, refused, non-200, garbage) decides nothing: the
connection goes on to a shard with a *failed* outcome, which answers the connect with 100 (temporary:
the SDK tries again), or, for a unidirectional client, its disconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from broker.config import Config
from broker.proxy.connect import KIND_FAILED, Outcome, connect_request, parse_answer
from broker.proxy.fields import MalformedAnswer
from broker.proxy.http import ProxyClient, ProxyFailed, forwarded_headers, kept_headers
from broker.proxy.table import proxy_table

log = logging.getLogger("switchboard.proxy")


class ConnectProxy:
    def __init__(self, cfg: Config) -> None:
        table = proxy_table(cfg)
        spec = table.connect
        self.spec = spec
        self.client = ProxyClient(spec.endpoint, spec.timeout) if spec is not None else None
        # What every connection keeps of its request for the proxies called later (subscribe, rpc …).
        self.real_names = table.forwarded_header_names
        self.emulated_names = table.emulated_header_names
        self.placement = cfg.proxy_connect_placement

    def kept_headers(
        self, request_headers: Mapping[str, str], request: Mapping[str, Any] | None
    ) -> tuple[dict[str, str], dict[str, str]] | None:
        """The headers a connection keeps for later proxy calls; None when no proxy forwards any."""
        if not self.real_names and not self.emulated_names:
            return None
        emulated = request.get("headers") if request is not None else None
        real, supplied = kept_headers(
            request_headers,
            emulated if isinstance(emulated, Mapping) else None,
            self.real_names,
            self.emulated_names,
        )
        return (real, supplied) if real or supplied else None

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def prepare(
        self,
        request: Mapping[str, Any],
        *,
        client: str,
        transport: str,
        protocol: str,
        request_headers: Mapping[str, str],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers of the call for a ConnectRequest (``request``) without a token."""
        assert self.spec is not None
        spec = self.spec
        subs = request.get("subs")
        body = connect_request(
            client=client,
            transport=transport,
            protocol=protocol,
            name=_text(request.get("name")),
            version=_text(request.get("version")),
            data=_data(request.get("data")),
            channels=sorted(subs) if isinstance(subs, dict) else None,
            binary_encoding=spec.binary_encoding,
        )
        emulated = request.get("headers")
        headers = forwarded_headers(
            request_headers,
            emulated if isinstance(emulated, Mapping) else None,
            spec.http_headers,
            spec.emulated_headers,
            spec.static_http_headers,
        )
        return body, headers

    async def ask(self, body: dict[str, Any], headers: Mapping[str, str]) -> Outcome:
        """The backend's decision for a prepared call."""
        assert self.client is not None
        try:
            return parse_answer(await self.client.call(body, headers))
        except (ProxyFailed, MalformedAnswer) as exc:
            log.error("connect proxy: %s", exc)
            return Outcome(KIND_FAILED)

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
        body, headers = self.prepare(
            request, client=client, transport=transport, protocol=protocol, request_headers=request_headers
        )
        return await self.ask(body, headers)

    @property
    def in_shards(self) -> bool:
        """The shards make the call (``proxy_connect_placement: shard``)."""
        return self.placement == "shard"

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
