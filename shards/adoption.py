"""The connection object for a socket the router handed over, by the transport it was upgraded to."""

from __future__ import annotations

import time

from broker.emulation import TRANSPORTS as EMULATION_TRANSPORTS
from broker.emulation import session_id
from broker.ids import new_id
from broker.ipc.handoff import Header
from broker.protocol.codec import get_codec
from broker.protocol.state import ConnectionState
from broker.protocol.uni import HTTP_STREAM, SSE
from broker.proxy.connect import Outcome
from shards.connection import ClientConnection, ConnectionHost
from shards.emulation import EmulationConnection
from shards.uni import UniConnection
from shards.ws import UniWsConnection, WsConnection

UNI_FRAMINGS = {"uni_http_stream": HTTP_STREAM, "uni_sse": SSE}


def connection_for(host: ConnectionHost, header: Header, data: bytes) -> ClientConnection | None:
    """A new connection for ``header.transport`` with the bytes the router already read; None if unknown."""
    transport = header.transport
    session = session_id(host.index) if transport in EMULATION_TRANSPORTS else new_id()
    state = ConnectionState(header.client, session, transport, header.protocol, time.time())
    if header.proxied:
        state.connect_proxy = Outcome.from_json(header.proxied)
    state.proxy_headers = header.headers
    if transport in EMULATION_TRANSPORTS:
        return EmulationConnection(host, state, get_codec(header.protocol), data)
    if transport in UNI_FRAMINGS:
        return UniConnection(host, state, UNI_FRAMINGS[transport], data)
    if transport == "websocket":
        return WsConnection(host, state, get_codec(header.protocol), data)
    if transport == "uni_websocket":
        return UniWsConnection(host, state, data)
    return None
