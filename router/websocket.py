"""WebSocket endpoints on the router: finish the upgrade, read the first message, hand the socket over.

Theory of operation
-------------------
Centrifugo's client sends its identity in the first WebSocket message (the connect command), so the
router must speak WebSocket just long enough to read it: it checks the upgrade request (method, headers,
Origin), picks the protocol (subprotocol ``centrifuge-protobuf`` or ``?format=protobuf`` /
``?cf_protocol=protobuf``, JSON otherwise), writes the 101, then collects bytes until one complete
message has arrived. It decodes that message only to read the token's ``sub`` (unverified, as for the
HTTP transports) and hands the socket to the user's shard with **every byte read after the HTTP
request**: the shard parses the same frames again from the start, so nothing is lost or replayed. A
client that sends nothing within ``client_stale_close_delay`` is closed with 3502 "stale".
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import orjson

from broker import errors
from broker.auth import unverified_user
from broker.config import Config
from broker.errors import Disconnect
from broker.hashing import shard_for
from broker.ids import new_id
from broker.ipc.handoff import HandoffError, Header, encode
from broker.protocol.codec import get_codec
from broker.proxy.connect_call import ConnectProxy
from broker.websocket.frames import Close, Message, ProtocolError, ServerConnection, encode_close
from broker.websocket.handshake import check_upgrade, error_response, response_101, select_subprotocol
from router.cluster import Cluster
from router.connect import origin_allowed
from router.http import HttpConnection, Request

log = logging.getLogger("switchboard.router")

SUBPROTOCOLS = ("centrifuge-protobuf", "centrifuge-json")
_FLUSH_RETRY = 0.005
_FLUSH_ATTEMPTS = 200


class WebSocketEndpoints:
    def __init__(self, cfg: Config, cluster: Cluster, proxy: ConnectProxy | None = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.proxy = proxy if proxy is not None and proxy.enabled else None
        self.keeper = proxy  # keeps the request headers later proxy calls forward
        self.paths: dict[str, str] = {}
        if not cfg.websocket_disable:
            self.paths[cfg.websocket_handler_prefix] = "websocket"
        if cfg.uni_websocket:
            self.paths[cfg.uni_websocket_handler_prefix] = "uni_websocket"

    def upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        transport_name = self.paths.get(request.path)
        if transport_name is None:
            conn.respond(HTTPStatus.NOT_FOUND, b"404 page not found", "text/plain", keep_alive=False)
            return
        problem = check_upgrade(request.method, request.headers)
        if problem is not None:
            log.info("%s: refused upgrade: %s", transport_name, problem)
            conn.write_and_close(error_response(problem))
            return
        if not origin_allowed(request.header("origin"), self.cfg.allowed_origins):
            log.info("%s: origin %r not allowed", transport_name, request.header("origin"))
            conn.respond(HTTPStatus.FORBIDDEN, b"Invalid origin", "text/plain", keep_alive=False)
            return
        protocol = "json"
        subprotocol: str | None = None
        if transport_name == "websocket":
            subprotocol = select_subprotocol(request.header("sec-websocket-protocol"), SUBPROTOCOLS)
            wanted = request.query_arg("format") or request.query_arg("cf_protocol")
            if subprotocol == "centrifuge-protobuf" or wanted == "protobuf":
                protocol = "protobuf"
        transport = conn.detach()
        transport.write(response_101(request.header("sec-websocket-key"), subprotocol))
        reader = FirstMessage(self, transport, transport_name, protocol, request.headers)
        conn.hand_to(reader)
        if rest:
            reader.feed(rest)


class FirstMessage:
    """Collects the bytes of an upgraded socket until its first complete WebSocket message."""

    __slots__ = (
        "_buffer",
        "_done",
        "_parser",
        "_stale",
        "endpoints",
        "headers",
        "protocol",
        "transport",
        "transport_name",
    )

    def __init__(
        self,
        endpoints: WebSocketEndpoints,
        transport: asyncio.Transport,
        name: str,
        protocol: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.headers = headers or {}  # the upgrade request's, for the connect proxy
        self.transport = transport
        self.transport_name = name
        self.protocol = protocol
        self._buffer = bytearray()
        self._parser = ServerConnection(max_message_size=endpoints.cfg.websocket_message_size_limit)
        self._done = False
        loop = asyncio.get_running_loop()
        self._stale: asyncio.TimerHandle | None = loop.call_later(
            endpoints.cfg.client_stale_close_delay, self._close, errors.STALE
        )

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        for event in self._parser.receive_data(data):
            if type(event) is Message:
                self._hand_off(event.payload)
                return
            if type(event) is Close:
                self._finish()
                self.transport.write(self._parser.data_to_send())
                self.transport.close()
                return
            if type(event) is ProtocolError:
                self._finish()
                self.transport.write(self._parser.data_to_send())
                self.transport.close()
                return
        control = self._parser.data_to_send()
        if control:
            self.transport.write(control)  # pongs to pings sent before the first message

    def connection_lost(self) -> None:
        self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._stale is not None:
            self._stale.cancel()
            self._stale = None

    def _close(self, disconnect: Disconnect) -> None:
        self._finish()
        if not self.transport.is_closing():
            self.transport.write(encode_close(disconnect.code, disconnect.reason))
            self.transport.close()

    def _hand_off(self, first_message: bytes) -> None:
        self._finish()
        request = self._connect_request(first_message)
        token = request.get("token") if request is not None else None
        proxy = self.endpoints.proxy
        if proxy is not None and request is not None and not token:
            if proxy.in_shards:
                self._hand_off_to_ask(proxy, request)
                return
            # What the client sends next stays in the socket for the shard to read.
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._hand_off_proxied(proxy, request))
            return
        cfg = self.endpoints.cfg
        user = unverified_user(token if isinstance(token, str) else "", cfg.token_user_id_claim)
        client = new_id()
        self._place(
            shard_for(user, client, self.endpoints.cluster.size),
            Header(self.transport_name, client, self.protocol, headers=self._kept(request)),
        )

    def _kept(self, request: dict[str, Any] | None) -> tuple[dict[str, str], dict[str, str]] | None:
        keeper = self.endpoints.keeper
        return keeper.kept_headers(self.headers, request) if keeper is not None else None

    def _hand_off_to_ask(self, proxy: ConnectProxy, request: dict[str, Any]) -> None:
        """A client without a token, the shards calling the backend: to a shard picked by client id."""
        client = new_id()
        body, headers = proxy.prepare(
            request,
            client=client,
            transport=self.transport_name,
            protocol=self.protocol,
            request_headers=self.headers,
        )
        ask = orjson.dumps({"b": body, "h": headers})
        header = Header(self.transport_name, client, self.protocol, headers=self._kept(request), ask=ask)
        self._place(shard_for("", client, self.endpoints.cluster.size), header)

    async def _hand_off_proxied(self, proxy: ConnectProxy, request: dict[str, Any]) -> None:
        """A client without a token: the backend names the user (and so the shard) first."""
        client = new_id()
        transport_name = "websocket" if self.transport_name == "websocket" else self.transport_name
        outcome = await proxy.decide(
            request,
            client=client,
            transport=transport_name,
            protocol=self.protocol,
            request_headers=self.headers,
        )
        if self.transport.is_closing():
            return
        index = shard_for(outcome.user, client, self.endpoints.cluster.size)
        header = Header(self.transport_name, client, self.protocol, outcome.to_json(), self._kept(request))
        self._place(index, header)

    def _place(self, index: int, header: Header) -> None:
        try:
            message = encode(header, bytes(self._buffer))
        except HandoffError:
            self._close(errors.DISCONNECT_BAD_REQUEST)
            return
        self._buffer = bytearray()
        self._send_when_flushed(index, message, _FLUSH_ATTEMPTS)

    def _send_when_flushed(self, index: int, message: bytes, attempts: int) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        # The 101 (and any pong) must have left before the shard writes on the same socket.
        if transport.get_write_buffer_size() and attempts > 0:
            asyncio.get_running_loop().call_later(
                _FLUSH_RETRY, self._send_when_flushed, index, message, attempts - 1
            )
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            transport.abort()
            return

        def done(ok: bool) -> None:
            if ok:
                # The shard holds its own descriptor now; this closes only the router's copy.
                transport.abort()
            else:
                self._close(errors.DISCONNECT_INTERNAL)

        self.endpoints.cluster.hand_off(index, message, fd, done)

    def _connect_request(self, first_message: bytes) -> dict[str, Any] | None:
        """The connect request in the first message, or None when it is not one (the shard refuses it)."""
        try:
            if self.transport_name == "uni_websocket":
                request: Any = orjson.loads(first_message)
            else:
                commands = get_codec(self.protocol).decode_commands(first_message)
                request = commands[0].get("connect") if commands else None
        except (Disconnect, orjson.JSONDecodeError):
            return None
        return request if isinstance(request, dict) else None
