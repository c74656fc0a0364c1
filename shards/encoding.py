"""How a push is written for each kind of connection, so that fan-out encodes it once per kind.

A publication reaching a shard is encoded at most once per *kind* of connection subscribed to it — the
protocol and the transport framing together — and the same bytes are written to every connection of
that kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from broker.protocol.codec import get_codec
from broker.protocol.uni import HTTP_STREAM, SSE
from broker.websocket.frames import OP_BINARY, OP_TEXT, encode_frame
from shards.emulation import PROTOBUF_STREAM

PushEncoder = Callable[[dict[str, Any]], bytes]

JSON = get_codec("json")
PROTOBUF = get_codec("protobuf")


def uni_json(body: dict[str, Any]) -> bytes:
    """Unidirectional pushes are the push body itself, without the ``{"push": ...}`` wrapper."""
    return orjson.dumps(body, default=_raw_json)


def _raw_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return orjson.Fragment(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


ENCODERS: dict[str, PushEncoder] = {
    "ws-json": lambda body: encode_frame(OP_TEXT, JSON.encode_push(body)),
    "ws-protobuf": lambda body: encode_frame(OP_BINARY, PROTOBUF.encode_push(body)),
    "uni_http_stream": lambda body: HTTP_STREAM.frame(uni_json(body)),
    "uni_sse": lambda body: SSE.frame(uni_json(body)),
    "uni_websocket": lambda body: encode_frame(OP_TEXT, uni_json(body)),
    "http_stream-json": lambda body: HTTP_STREAM.frame(JSON.encode_push(body)),
    "http_stream-protobuf": lambda body: PROTOBUF_STREAM.frame(PROTOBUF.encode_push(body)),
    "sse-json": lambda body: SSE.frame(JSON.encode_push(body)),
}

# Kinds whose clients decode publication data as JSON: binary data they cannot read ends them (3506).
JSON_KINDS = frozenset(
    {"ws-json", "uni_http_stream", "uni_sse", "uni_websocket", "http_stream-json", "sse-json"}
)


def publication_push(channel: str, pub: dict[str, Any]) -> dict[str, Any]:
    return {"channel": channel, "pub": pub}
