"""What the server knows about one live client connection.

One ``ConnectionState`` per connection, slotted because a shard holds hundreds of thousands of them.
It is the source for the ``connections`` API (``connection_info``) and for CEL filters (``CEL_GETTERS``);
``meta`` lives here and nowhere in what is written to the client.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import orjson

from broker.publication import client_info_reply

# Subscription sources as reported by the connections API (reference §7).
SOURCE_UNKNOWN = 0
SOURCE_CONNECTION_TOKEN = 1
SOURCE_CONNECT_PROXY = 2
SOURCE_SUBSCRIPTION_TOKEN = 3
SOURCE_SUBSCRIBE_PROXY = 4
SOURCE_USER_LIMITED = 5
SOURCE_CLIENT_ALLOWED = 6
SOURCE_CLIENT_INSECURE = 7
SOURCE_UNI_CONNECT_SUBS = 8
SOURCE_USER_PERSONAL = 9
SOURCE_SERVER_API = 10

# Subscriptions the server made (the client cannot unsubscribe them; their expiry disconnects).
SERVER_SIDE_SOURCES = frozenset({1, 2, 8, 9, 10})


class ConnectionState:
    __slots__ = (
        "app_name",
        "app_version",
        "chan_info",
        "channels",
        "client",
        "connect_proxy",
        "connected_at",
        "delta",
        "expire_at",
        "info",
        "join_leave",
        "labels",
        "meta",
        "ping_pong_latency_ms",
        "position_boots",
        "positions",
        "protocol",
        "proxy_headers",
        "proxy_pending",
        "recovering",
        "refresh_by_proxy",
        "session",
        "sub_expires",
        "sub_tokens",
        "token_issued_at",
        "token_uid",
        "transport",
        "user",
    )

    def __init__(self, client: str, session: str, transport: str, protocol: str, connected_at: float) -> None:
        self.client = client
        self.session = session
        self.transport = transport
        self.protocol = protocol
        self.connected_at = connected_at
        self.user = ""
        self.app_name = ""
        self.app_version = ""
        self.channels: dict[str, int] = {}
        self.meta: dict[str, Any] | None = None
        self.labels: dict[str, str] | None = None  # from the token or the connect proxy, never changed
        self.ping_pong_latency_ms = -1  # from the last ping to its pong; -1 until one was answered
        self.info: bytes | None = None
        self.token_uid = ""
        self.token_issued_at = 0
        self.sub_tokens: dict[str, tuple[str, int]] | None = None
        # Per-channel ClientInfo.chan_info (raw JSON) and subscription expiry (unix seconds), when any.
        self.chan_info: dict[str, bytes] | None = None
        self.sub_expires: dict[str, float] | None = None
        # Channels where the client asked for join/leave pushes (and may see presence).
        self.join_leave: set[str] | None = None
        # Positioned subscriptions: channel → (last offset delivered, epoch), to detect a gap.
        self.positions: dict[str, tuple[int, str]] | None = None
        # The life (boot id) of the writer whose answer positioned each of them.
        self.position_boots: dict[str, str] | None = None
        # Subscriptions waiting for their position or recovery: live publications are held here.
        self.recovering: dict[str, list[Any]] | None = None
        # Subscriptions that negotiated delta: channel → the shard's sequence number of the last
        # publication sent to it (broker.delta.bodies: PENDING before the reply, NO_BASE for none yet).
        self.delta: dict[str, int] | None = None
        self.expire_at = 0.0  # unix seconds; 0 = never
        # What the connect proxy decided before the handoff (a client without a token), until used.
        self.connect_proxy: Any = None
        # Request headers kept for proxy calls: (real, client-supplied), when some proxy forwards any.
        self.proxy_headers: tuple[dict[str, str], dict[str, str]] | None = None
        # Channels whose subscribe waits for the subscribe proxy's answer.
        self.proxy_pending: set[str] | None = None
        # The refresh proxy, not the client, prolongs this connection (its credentials came from the
        # connect proxy): the connect result does not tell the client to refresh.
        self.refresh_by_proxy = False

    def client_info(self, channel: str = "") -> dict[str, Any]:
        """ClientInfo in the reply dict shape (bytes fields stay bytes)."""
        chan_info = self.chan_info.get(channel, b"") if channel and self.chan_info else b""
        return client_info_reply(self.user, self.client, self.info or b"", chan_info)

    def connection_info(self) -> dict[str, Any]:
        """The ConnectionInfo object of the connections API; empty fields are left out."""
        out: dict[str, Any] = {}
        if self.app_name:
            out["app_name"] = self.app_name
        if self.app_version:
            out["app_version"] = self.app_version
        out["transport"] = self.transport
        out["protocol"] = self.protocol
        if self.user:
            out["user"] = self.user
        out["connected_at_ms"] = int(self.connected_at * 1000)
        out["ping_pong_latency_ms"] = self.ping_pong_latency_ms
        if self.labels:
            out["labels"] = self.labels
        state: dict[str, Any] = {}
        if self.channels:
            state["channels"] = {ch: ({"source": src} if src else {}) for ch, src in self.channels.items()}
        if self.token_uid or self.token_issued_at:
            token: dict[str, Any] = {}
            if self.token_uid:
                token["uid"] = self.token_uid
            if self.token_issued_at:
                token["issued_at"] = self.token_issued_at
            state["connection_token"] = token
        if self.sub_tokens:
            state["subscription_tokens"] = {
                ch: _token_info(uid, iat) for ch, (uid, iat) in self.sub_tokens.items()
            }
        if self.meta:
            state["meta"] = self.meta
        if state:
            out["state"] = state
        return out


def _token_info(uid: str, issued_at: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if uid:
        out["uid"] = uid
    if issued_at:
        out["issued_at"] = issued_at
    return out


def _info_map(state: ConnectionState) -> Any:
    if not state.info:
        return {}
    try:
        return orjson.loads(state.info)
    except orjson.JSONDecodeError:
        return {}


# Getters for the CEL variables of the connections API; see README "Filtering connections with CEL".
# Plain attributes are read by attrgetter (C): a scan calls these once per connection.
CEL_GETTERS: dict[str, Callable[[ConnectionState], Any]] = {
    "user": attrgetter("user"),
    "client": attrgetter("client"),
    "session": attrgetter("session"),
    "app_name": attrgetter("app_name"),
    "app_version": attrgetter("app_version"),
    "transport": attrgetter("transport"),
    "protocol": attrgetter("protocol"),
    "channels": lambda s: list(s.channels),
    "meta": lambda s: s.meta if s.meta is not None else {},
    "info": _info_map,
    "labels": lambda s: s.labels if s.labels is not None else {},
    "connected_at_ms": lambda s: int(s.connected_at * 1000),
    "ping_pong_latency_ms": attrgetter("ping_pong_latency_ms"),
}


def position_boot(
    boots: dict[str, str] | None, channel: str, answer: dict[str, Any] | None
) -> dict[str, str] | None:
    """``boots`` with the writer life that gave ``answer`` recorded for ``channel`` (created on need)."""
    boot = answer.get("boot") if answer else None
    if not isinstance(boot, str) or not boot:
        return boots
    if boots is None:
        boots = {}
    boots[channel] = boot
    return boots
