"""The client protocol's in-memory shape and the interface both wire encodings implement.

The session core never sees JSON text or protobuf bytes: it receives commands and builds replies as
plain dicts in the JSON shape of the protocol (field names of ``proto/client.proto``), whichever
encoding the client chose, so that one code path serves both.

Commands (client → server), as returned by ``Codec.decode_commands``:

* keys are the JSON field names; fields that are absent, ``null`` or hold their zero value (``""``,
  ``0``, ``false``, an empty map or list) are left out, in both encodings; unknown fields are dropped;
* a request message that is present but empty stays as ``{}`` (``{"id": 3, "unsubscribe": {}}``), and
  an empty command ``{}`` is a pong;
* ``bytes`` fields (``data`` of connect / subscribe / publish / rpc / send) are Python ``bytes``: the
  payload itself for protobuf clients, the raw JSON text of the value for JSON clients;
* anything malformed raises ``errors.DISCONNECT_BAD_REQUEST`` (3501) and nothing else.

Replies and pushes (server → client) are dicts of the same shape built by the server, with ``bytes``
for every ``bytes`` field (``data``, ``conn_info``, ``chan_info``, ...). Who omits what:

* **the caller** leaves out fields holding zero values, as Centrifugo's JSON does (``omitempty``). The
  JSON encoder writes every key it is given, because walking each reply to drop zeros would cost more
  than not adding them; the protobuf encoder drops zeros anyway (proto3 does not write them).
* the fields Centrifugo *always* writes in JSON — ``ClientInfo.user``/``client``,
  ``PresenceStatsResult.num_clients``/``num_users``, ``HistoryResult.publications``/``epoch``/``offset``
  and ``PresenceResult.presence`` — must therefore be present in the dict even when zero. The builders
  below (``presence_result``, ``presence_stats_result``, ``history_result``, and
  :func:`broker.publication.client_info_reply`) always put them in; build those messages with them.
* an empty ``bytes`` value has no raw-JSON form; callers omit it (the JSON encoder writes ``null`` rather
  than corrupting the line).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any, Final

Command = dict[str, Any]
ReplyDict = dict[str, Any]


class Codec(abc.ABC):
    """One wire encoding of the bidirectional protocol; stateless, one shared instance per encoding.

    Encoded replies are kept as separate ``bytes`` so that a connection can queue them and write many
    in one WebSocket message with ``join``; ``encode_push`` output is meant to be computed once per
    publication and shared by every subscriber using that encoding.
    """

    __slots__ = ()

    name: str
    """Protocol name as reported to proxies and the connections API: ``"json"`` or ``"protobuf"``."""
    binary: bool
    """Whether messages go in binary WebSocket frames (text frames otherwise)."""
    ping: bytes
    """The server ping, an empty Reply, already encoded (same as ``encode_reply({})``)."""

    @abc.abstractmethod
    def decode_commands(self, data: bytes) -> list[Command]:
        """All commands in one client message, in order; raises ``DISCONNECT_BAD_REQUEST`` on bad input."""

    @abc.abstractmethod
    def encode_reply(self, reply: ReplyDict) -> bytes:
        """One Reply (``{"id": 1, "connect": {...}}``, ``{"id": 2, "error": {...}}``, ``{}`` = ping)."""

    def encode_push(self, push: ReplyDict) -> bytes:
        """A Reply carrying only ``push``; what fan-out encodes once and sends to many connections."""
        return self.encode_reply({"push": push})

    @abc.abstractmethod
    def join(self, encoded: Iterable[bytes]) -> bytes:
        """Several encoded replies framed as one WebSocket message."""


def get_codec(name: str) -> Codec:
    """The codec for a protocol name (``"json"`` / ``"protobuf"``); imported lazily to keep the JSON-only
    paths (unidirectional transports) free of the protobuf runtime."""
    if name == "json":
        from broker.protocol.codec_json import JSON_CODEC

        return JSON_CODEC
    if name == "protobuf":
        from broker.protocol.codec_protobuf import PROTOBUF_CODEC

        return PROTOBUF_CODEC
    raise ValueError(f"unknown protocol {name!r}")


# ---------------------------------------------------------------------------------------------------
# Builders for the messages whose JSON form keeps zero-valued fields (reference §1.1).


def presence_result(presence: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """PresenceResult: ``presence`` always written, ``{}`` for an empty channel."""
    return {"presence": presence}


def presence_stats_result(num_clients: int, num_users: int) -> dict[str, Any]:
    """PresenceStatsResult: both counters always written, zeros included."""
    return {"num_clients": num_clients, "num_users": num_users}


def history_result(publications: list[dict[str, Any]], epoch: str, offset: int) -> dict[str, Any]:
    """HistoryResult: ``publications``, ``epoch`` and ``offset`` always written."""
    return {"publications": publications, "epoch": epoch, "offset": offset}


def without_zeros(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` without zero values (``None``, ``""``, ``b""``, ``0``, ``False``, ``{}``, ``[]``).

    For building a message from many optional scalar values in the shape the encoders expect. One level
    only, and not for message-typed fields, whose empty ``{}`` is meaningful (``{"publish": {}}``).
    """
    return {key: value for key, value in fields.items() if value}


# ---------------------------------------------------------------------------------------------------
# The request messages a client sends, as the JSON decoder checks them. The protobuf decoder gets the
# same information from the generated descriptors; a test checks that both agree with client.proto.

STRING: Final = "string"
BYTES: Final = "bytes"
BOOL: Final = "bool"
INT32: Final = "int32"
UINT32: Final = "uint32"
INT64: Final = "int64"
UINT64: Final = "uint64"


class Message:
    """A message type: JSON field name → field type (scalar kind, ``Message``, ``MapOf`` or ``ListOf``)."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, fields: dict[str, FieldType]) -> None:
        self.name = name
        self.fields = fields

    def __repr__(self) -> str:
        return f"Message({self.name})"


class MapOf:
    """``map<string, value>``."""

    __slots__ = ("value",)

    def __init__(self, value: FieldType) -> None:
        self.value = value


class ListOf:
    """``repeated item``."""

    __slots__ = ("item",)

    def __init__(self, item: FieldType) -> None:
        self.item = item


FieldType = str | Message | MapOf | ListOf

SUBSCRIBE_REQUEST = Message(
    "SubscribeRequest",
    {
        "channel": STRING,
        "token": STRING,
        "recover": BOOL,
        "epoch": STRING,
        "offset": UINT64,
        "data": BYTES,
        "positioned": BOOL,
        "recoverable": BOOL,
        "join_leave": BOOL,
        "delta": STRING,
        "flag": INT64,
        "type": INT32,
        "phase": INT32,
        "cursor": STRING,
        "limit": INT32,
        "asc": BOOL,
    },
)
FILTER_NODE = Message(
    "FilterNode",
    {"op": STRING, "key": STRING, "cmp": STRING, "val": STRING, "vals": ListOf(STRING)},
)
FILTER_NODE.fields["nodes"] = ListOf(FILTER_NODE)
SUBSCRIBE_REQUEST.fields["tf"] = FILTER_NODE

CONNECT_REQUEST = Message(
    "ConnectRequest",
    {
        "token": STRING,
        "data": BYTES,
        "subs": MapOf(SUBSCRIBE_REQUEST),
        "name": STRING,
        "version": STRING,
        "headers": MapOf(STRING),
        "flag": INT64,
        "dict": STRING,
        "profile": STRING,
    },
)
_CHANNEL_ONLY = {"channel": STRING}

COMMAND = Message(
    "Command",
    {
        "id": UINT32,
        "connect": CONNECT_REQUEST,
        "subscribe": SUBSCRIBE_REQUEST,
        "unsubscribe": Message("UnsubscribeRequest", dict(_CHANNEL_ONLY)),
        "publish": Message(
            "PublishRequest",
            {"channel": STRING, "data": BYTES, "type": INT32, "key": STRING, "removed": BOOL},
        ),
        "presence": Message("PresenceRequest", dict(_CHANNEL_ONLY)),
        "presence_stats": Message("PresenceStatsRequest", dict(_CHANNEL_ONLY)),
        "history": Message(
            "HistoryRequest",
            {
                "channel": STRING,
                "limit": INT32,
                "since": Message("StreamPosition", {"offset": UINT64, "epoch": STRING}),
                "reverse": BOOL,
            },
        ),
        "ping": Message("PingRequest", {}),
        "send": Message("SendRequest", {"data": BYTES}),
        "rpc": Message("RPCRequest", {"data": BYTES, "method": STRING}),
        "refresh": Message("RefreshRequest", {"token": STRING}),
        "sub_refresh": Message("SubRefreshRequest", {"channel": STRING, "token": STRING}),
    },
)
"""Command and every request message under it."""
