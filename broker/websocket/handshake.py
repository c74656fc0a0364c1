"""The server side of the RFC 6455 opening handshake, without I/O.

The router parses the HTTP request itself (httptools) and uses these functions to decide whether it is a valid
WebSocket upgrade, which subprotocol to pick and what to answer. No extension (permessage-deflate) is ever
negotiated: the frame parser rejects RSV bits, and compression state per connection would defeat the memory
budget of a shard.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "WEBSOCKET_VERSION",
    "UpgradeError",
    "accept_key",
    "check_upgrade",
    "error_response",
    "response_101",
    "select_subprotocol",
]

# RFC 6455 section 1.3: appended to the client's key before hashing.
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION: Final = "13"


@dataclass(frozen=True, slots=True)
class UpgradeError:
    """Why an upgrade request was refused, and how to answer it.

    ``status`` is 400 except for an unsupported ``Sec-WebSocket-Version``, which gets 426 Upgrade Required
    with ``Sec-WebSocket-Version: 13`` so that the client can retry with a version we speak (RFC 6455 section
    4.4). :func:`error_response` builds the complete HTTP response.
    """

    status: int
    reason: str

    def __str__(self) -> str:
        return self.reason


def accept_key(sec_websocket_key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value proving that we understood the client's key."""
    digest = hashlib.sha1(sec_websocket_key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def _tokens(value: str) -> list[str]:
    """Split a comma-separated header value into lower-cased tokens (RFC 9110 list syntax, no quoting)."""
    return [token.strip().lower() for token in value.split(",")]


def check_upgrade(method: str, headers: Mapping[str, str]) -> UpgradeError | None:
    """Validate a client's opening handshake; return None if it is acceptable, else an :class:`UpgradeError`.

    ``headers`` maps header names (any case) to values; a header received several times should be joined
    with ", " as HTTP list semantics allow. Checks the method, ``Upgrade``, ``Connection``,
    ``Sec-WebSocket-Version`` and ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.1); ``Host`` and ``Origin`` are
    left to the caller's policy.
    """
    if method != "GET":
        return UpgradeError(400, "method must be GET")
    lowered = {name.lower(): value for name, value in headers.items()}
    if "websocket" not in _tokens(lowered.get("upgrade", "")):
        return UpgradeError(400, "missing Upgrade: websocket")
    if "upgrade" not in _tokens(lowered.get("connection", "")):
        return UpgradeError(400, "missing Connection: upgrade")
    version = lowered.get("sec-websocket-version")
    if version is None:
        return UpgradeError(400, "missing Sec-WebSocket-Version")
    if version.strip() != WEBSOCKET_VERSION:
        return UpgradeError(426, "unsupported Sec-WebSocket-Version")
    key = lowered.get("sec-websocket-key")
    if key is None:
        return UpgradeError(400, "missing Sec-WebSocket-Key")
    try:
        raw = base64.b64decode(key.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return UpgradeError(400, "invalid Sec-WebSocket-Key")
    if len(raw) != 16:
        return UpgradeError(400, "invalid Sec-WebSocket-Key")
    return None


def select_subprotocol(header_value: str | None, supported: Sequence[str]) -> str | None:
    """Pick the subprotocol for ``Sec-WebSocket-Protocol``, or None to answer without one.

    The server's order in ``supported`` decides among the protocols the client offers, because the server
    knows which encoding it prefers (e.g. ``centrifuge-protobuf`` over JSON). Matching is exact: subprotocol
    names are case-sensitive tokens.
    """
    if not header_value:
        return None
    offered = {token.strip() for token in header_value.split(",")}
    for name in supported:
        if name in offered:
            return name
    return None


def _is_token(value: str) -> bool:
    # RFC 9110 tchar, enough to keep a header value from smuggling CR/LF or separators into the response.
    return bool(value) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in value)


def response_101(key: str, subprotocol: str | None = None) -> bytes:
    """Return the complete ``101 Switching Protocols`` response for the client's ``Sec-WebSocket-Key``."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key.strip())}",
    ]
    if subprotocol is not None:
        if not _is_token(subprotocol):
            raise ValueError(f"invalid subprotocol {subprotocol!r}")
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


_STATUS_TEXT: Final = {400: "Bad Request", 426: "Upgrade Required"}


def error_response(error: UpgradeError) -> bytes:
    """Return a complete HTTP response refusing the upgrade; the connection should be closed after it."""
    body = error.reason.encode("utf-8") + b"\n"
    lines = [f"HTTP/1.1 {error.status} {_STATUS_TEXT.get(error.status, 'Error')}"]
    if error.status == 426:
        # RFC 9110 15.5.22: a 426 names the protocol to upgrade to; RFC 6455 4.4 adds the version.
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade, close",
            f"Sec-WebSocket-Version: {WEBSOCKET_VERSION}",
        ]
    else:
        lines.append("Connection: close")
    lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
