"""One error taxonomy for clients and the server API.

Client errors travel in a reply's ``error`` field ``(code, message, temporary)``; disconnects close a
connection with ``(code, reason, reconnect)``. Codes and texts match Centrifugo's so that the official
SDKs react the same way (retry, reconnect or give up). Exception text is never sent to a client: callers
raise these errors, and anything else is logged and mapped to ``INTERNAL``.

The module-level constants are values (to compare codes, to pass to ``close_with``), never raised as they
are: raising an exception object links the raising frames into its ``__traceback__``, and a shared object
raised again and again would keep every frame it passed through, with their sessions and buffers, alive.
Calling a constant makes a fresh exception to raise: ``raise errors.BAD_REQUEST()``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientError(Exception):
    code: int
    message: str
    temporary: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.temporary:
            out["temporary"] = True
        return out

    def with_message(self, message: str) -> ClientError:
        return ClientError(self.code, message, self.temporary)

    def __call__(self) -> ClientError:
        """A fresh copy to raise (see the module docstring)."""
        return ClientError(self.code, self.message, self.temporary)


@dataclass(frozen=True, slots=True)
class Disconnect(Exception):
    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        # The SDKs' rule: terminal for 3500-3999 and 4500-4999, reconnect otherwise.
        return not (3500 <= self.code <= 3999 or 4500 <= self.code <= 4999)

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason}

    def __call__(self) -> Disconnect:
        """A fresh copy to raise (see the module docstring)."""
        return Disconnect(self.code, self.reason)


# Client / API error codes (reference §2.1, §6.1).
INTERNAL = ClientError(100, "internal server error", True)
UNAUTHORIZED = ClientError(101, "unauthorized")
UNKNOWN_CHANNEL = ClientError(102, "unknown channel")
PERMISSION_DENIED = ClientError(103, "permission denied")
METHOD_NOT_FOUND = ClientError(104, "method not found")
ALREADY_SUBSCRIBED = ClientError(105, "already subscribed")
LIMIT_EXCEEDED = ClientError(106, "limit exceeded")
BAD_REQUEST = ClientError(107, "bad request")
NOT_AVAILABLE = ClientError(108, "not available")
TOKEN_EXPIRED = ClientError(109, "token expired")
EXPIRED = ClientError(110, "expired")
TOO_MANY_REQUESTS = ClientError(111, "too many requests", True)
UNRECOVERABLE_POSITION = ClientError(112, "unrecoverable position")

# Disconnect codes (reference §2.3).
SHUTDOWN = Disconnect(3001, "shutdown")
DISCONNECT_INTERNAL = Disconnect(3004, "internal server error")
CONNECTION_EXPIRED = Disconnect(3005, "connection expired")
SUBSCRIPTION_EXPIRED = Disconnect(3006, "subscription expired")
SLOW = Disconnect(3008, "slow")
WRITE_ERROR = Disconnect(3009, "write error")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
FORCE_RECONNECT = Disconnect(3011, "force reconnect")
NO_PONG = Disconnect(3012, "no pong")
DISCONNECT_TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
INVALID_TOKEN = Disconnect(3500, "invalid token")
DISCONNECT_BAD_REQUEST = Disconnect(3501, "bad request")
STALE = Disconnect(3502, "stale")
FORCE_DISCONNECT = Disconnect(3503, "force disconnect")
CONNECTION_LIMIT = Disconnect(3504, "connection limit")
CHANNEL_LIMIT = Disconnect(3505, "channel limit")
INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
DISCONNECT_PERMISSION_DENIED = Disconnect(3507, "permission denied")
DISCONNECT_NOT_AVAILABLE = Disconnect(3508, "not available")
TOO_MANY_ERRORS = Disconnect(3509, "too many errors")

# Unidirectional transports cannot receive an error reply, so a connect error becomes a disconnect.
_UNI_CONNECT_ERROR_TO_DISCONNECT = {
    TOKEN_EXPIRED.code: CONNECTION_EXPIRED,
    EXPIRED.code: CONNECTION_EXPIRED,
    TOO_MANY_REQUESTS.code: DISCONNECT_TOO_MANY_REQUESTS,
    PERMISSION_DENIED.code: DISCONNECT_PERMISSION_DENIED,
}


def uni_disconnect_for(error: ClientError) -> Disconnect:
    return _UNI_CONNECT_ERROR_TO_DISCONNECT.get(error.code, DISCONNECT_INTERNAL)
