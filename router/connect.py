"""Connection endpoints: read the connect request, pick the user's shard, hand the socket over.

Theory of operation
-------------------
For ``/connection/uni_http_stream`` and ``/connection/uni_sse`` the router reads the whole HTTP request
(the ConnectRequest is the POST body, or the ``cf_connect`` query of a GET), checks the method, the
Origin and the size, and reads the user id from the token *without verifying it*: the user only decides
which shard receives the socket, and a forged token merely picks which shard rejects it. The shard
verifies the token and writes every byte of the response, so after a successful handoff the router
holds nothing of the connection. Anonymous connections are placed by their client id.
"""

from __future__ import annotations

import fnmatch
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from broker.auth import unverified_user
from broker.config import Config
from broker.errors import ClientError, Disconnect
from broker.hashing import shard_for
from broker.ids import new_id
from broker.ipc.handoff import HandoffError, Header, encode
from broker.protocol.codec import get_codec
from broker.proxy.connect_call import ConnectProxy
from router.cluster import Cluster
from router.http import HttpConnection, Request

log = logging.getLogger("switchboard.router")

_CORS_METHODS = "POST, GET, OPTIONS"


@dataclass(frozen=True, slots=True)
class Endpoint:
    transport: str
    methods: frozenset[str]
    body_limit: int
    # Emulation (http_stream, SSE): the body is the first command frame, not a ConnectRequest.
    bidirectional: bool = False


def connect_request_of(body: bytes, bidirectional: bool, protocol: str) -> dict[str, Any] | None:
    """The connect request a body carries ({} when it carries none); None when malformed.

    Unidirectional: the body is a ConnectRequest. Emulation: the body is the first frame of commands
    (newline-delimited JSON, or varint-delimited Protobuf), whose first command is the connect.
    """
    if not body.strip():
        return {}
    if protocol == "protobuf":
        try:
            commands = get_codec("protobuf").decode_commands(body)
        except (ClientError, Disconnect):
            return None
        request: Any = commands[0].get("connect") if commands else None
    else:
        try:
            decoded = orjson.loads(body.split(b"\n", 1)[0] if bidirectional else body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(decoded, dict):
            return None
        request = decoded.get("connect") if bidirectional else decoded
    if request is None and bidirectional:
        return {}  # not a connect: the shard answers it
    return request if isinstance(request, dict) else None


def endpoints(cfg: Config) -> dict[str, Endpoint]:
    found: dict[str, Endpoint] = {}
    if cfg.uni_http_stream:
        found[cfg.uni_http_stream_handler_prefix] = Endpoint(
            "uni_http_stream", frozenset({"POST"}), cfg.uni_http_stream_max_request_body_size
        )
    if cfg.uni_sse:
        found[cfg.uni_sse_handler_prefix] = Endpoint(
            "uni_sse", frozenset({"GET", "POST"}), cfg.uni_sse_max_request_body_size
        )
    if cfg.http_stream:
        found[cfg.http_stream_handler_prefix] = Endpoint(
            "http_stream", frozenset({"POST"}), cfg.http_stream_max_request_body_size, bidirectional=True
        )
    if cfg.sse:
        found[cfg.sse_handler_prefix] = Endpoint(
            "sse", frozenset({"GET", "POST"}), cfg.sse_max_request_body_size, bidirectional=True
        )
    return found


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """No Origin header: allowed (not a browser); otherwise it must match one of the glob patterns."""
    if not origin:
        return True
    origin = origin.lower()
    return any(pattern == "*" or fnmatch.fnmatchcase(origin, pattern.lower()) for pattern in allowed)


class ConnectHandler:
    def __init__(self, cfg: Config, cluster: Cluster, proxy: ConnectProxy | None = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.endpoints = endpoints(cfg)
        self.proxy = proxy if proxy is not None and proxy.enabled else None
        self.keeper = proxy  # keeps the request headers later proxy calls forward

    def handle(
        self, endpoint: Endpoint, request: Request, conn: HttpConnection
    ) -> Coroutine[Any, Any, None] | None:
        if request.method == "OPTIONS":
            conn.respond(HTTPStatus.OK, headers={"Access-Control-Allow-Methods": _CORS_METHODS})
            return None
        if request.method not in endpoint.methods:
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return None
        if not origin_allowed(request.header("origin"), self.cfg.allowed_origins):
            log.info("%s: origin %r not allowed", endpoint.transport, request.header("origin"))
            conn.respond(HTTPStatus.FORBIDDEN, b"Invalid origin", "text/plain", keep_alive=False)
            return None
        body = request.body
        if request.method == "GET":
            body = (request.query_arg("cf_connect") or "").encode()
        if len(body) > endpoint.body_limit:  # a cf_connect query (a body over it is 413 in router.http)
            conn.respond(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                b"Request Entity Too Large",
                "text/plain",
                keep_alive=False,
            )
            return None
        protocol = "json"
        if endpoint.bidirectional and request.header("content-type").startswith("application/octet-stream"):
            protocol = "protobuf"
        request_fields = connect_request_of(body, endpoint.bidirectional, protocol)
        if request_fields is None:
            log.info("%s: malformed connect request", endpoint.transport)
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain", keep_alive=False)
            return None
        token = request_fields.get("token")
        token = token if isinstance(token, str) else ""
        client = new_id()
        if self.proxy is not None and not token and (request_fields or not endpoint.bidirectional):
            if self.proxy.in_shards:
                call, headers = self.proxy.prepare(
                    request_fields,
                    client=client,
                    transport=endpoint.transport,
                    protocol=protocol,
                    request_headers=request.headers,
                )
                ask = orjson.dumps({"b": call, "h": headers})
                kept = self._kept(request, request_fields)
                header = Header(endpoint.transport, client, protocol, headers=kept, ask=ask)
                self._hand_off(conn, shard_for("", client, self.cluster.size), header, body)
                return None
            return self._proxied(endpoint, request, conn, request_fields, client, protocol, body)
        user = unverified_user(token, self.cfg.token_user_id_claim) if token else ""
        self._hand_off(
            conn,
            shard_for(user, client, self.cluster.size),
            Header(endpoint.transport, client, protocol, headers=self._kept(request, request_fields)),
            body,
        )
        return None

    async def _proxied(
        self,
        endpoint: Endpoint,
        request: Request,
        conn: HttpConnection,
        fields: dict[str, Any],
        client: str,
        protocol: str,
        body: bytes,
    ) -> None:
        """A client without a token: the backend names the user (and so the shard) first."""
        assert self.proxy is not None
        outcome = await self.proxy.decide(
            fields,
            client=client,
            transport=endpoint.transport,
            protocol=protocol,
            request_headers=request.headers,
        )
        if conn.transport is None or conn.transport.is_closing():
            return  # the client left while the backend decided
        index = shard_for(outcome.user, client, self.cluster.size)
        header = Header(endpoint.transport, client, protocol, outcome.to_json(), self._kept(request, fields))
        self._hand_off(conn, index, header, body)

    def _kept(self, request: Request, fields: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]] | None:
        return self.keeper.kept_headers(request.headers, fields) if self.keeper is not None else None

    def _hand_off(self, conn: HttpConnection, index: int, header: Header, body: bytes) -> None:
        try:
            message = encode(header, body)
        except HandoffError:
            conn.respond(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                b"Request Entity Too Large",
                "text/plain",
                keep_alive=False,
            )
            return
        transport = conn.detach()
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if isinstance(sock, socket.socket) or hasattr(sock, "fileno") else -1
        if fd < 0:
            transport.abort()
            return

        def done(ok: bool) -> None:
            if ok:
                # The shard holds its own descriptor now; this closes only the router's copy.
                transport.abort()
                return
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            transport.close()

        self.cluster.hand_off(index, message, fd, done)
