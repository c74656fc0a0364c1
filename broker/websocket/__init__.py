"""RFC 6455 WebSocket for the server side, without I/O: the opening handshake and the framing.

See :mod:`broker.websocket.frames` for how a shard drives a connection and
:mod:`broker.websocket.handshake` for the router's part.
"""

from broker.websocket.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    ConnectionState,
    Event,
    Message,
    Ping,
    Pong,
    ProtocolError,
    ServerConnection,
    encode_close,
    encode_frame,
    is_valid_close_code,
)
from broker.websocket.handshake import (
    UpgradeError,
    accept_key,
    check_upgrade,
    error_response,
    response_101,
    select_subprotocol,
)

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "ConnectionState",
    "Event",
    "Message",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerConnection",
    "UpgradeError",
    "accept_key",
    "check_upgrade",
    "encode_close",
    "encode_frame",
    "error_response",
    "is_valid_close_code",
    "response_101",
    "select_subprotocol",
]
