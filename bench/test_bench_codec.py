"""Micro-benchmarks for the client protocol codecs (run with ``make bench`` or ``pytest -m slow bench``).

Per encoding (JSON, protobuf):

* decoding one connect command as centrifuge-js sends it (token, name, version);
* decoding ten subscribe commands batched in one WebSocket message (what a page with many
  subscriptions sends right after connecting);
* encoding one publication push with a 100-byte payload — done once per publication and encoding,
  then shared by every subscriber, so it bounds the fan-out rate per channel rather than per client.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker.protocol.codec import Codec
from broker.protocol.codec_json import JSON_CODEC
from broker.protocol.codec_protobuf import PROTOBUF_CODEC
from broker.protocol.proto import client_pb2

pytestmark = pytest.mark.slow

pb: Any = client_pb2

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "x" * 120 + "." + "s" * 43
CONNECT: dict[str, Any] = {"id": 1, "connect": {"token": TOKEN, "name": "js", "version": "5.7.4"}}
SUBSCRIBES = [{"id": i, "subscribe": {"channel": f"chat:room-{i}", "flag": 1}} for i in range(2, 12)]
PAYLOAD = b'{"text":"' + b"x" * 89 + b'"}'
PUSH = {"channel": "chat:room-1", "pub": {"data": PAYLOAD, "offset": 123456}}
assert len(PAYLOAD) == 100


def json_frame(commands: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(command) for command in commands)


def protobuf_frame(commands: list[dict[str, Any]]) -> bytes:
    out = b""
    for command in commands:
        payload = pb.Command(**command).SerializeToString()
        assert len(payload) < 0x4000
        if len(payload) < 0x80:
            out += bytes([len(payload)]) + payload
        else:
            out += bytes([len(payload) & 0x7F | 0x80, len(payload) >> 7]) + payload
    return out


CODECS = {"json": (JSON_CODEC, json_frame), "protobuf": (PROTOBUF_CODEC, protobuf_frame)}


@pytest.mark.parametrize("name", list(CODECS))
def test_decode_connect(benchmark: Any, name: str) -> None:
    codec, make_frame = CODECS[name]
    data = make_frame([CONNECT])
    commands = benchmark(codec.decode_commands, data)
    assert commands[0]["connect"]["token"] == TOKEN


@pytest.mark.parametrize("name", list(CODECS))
def test_decode_ten_batched_subscribes(benchmark: Any, name: str) -> None:
    codec, make_frame = CODECS[name]
    data = make_frame(SUBSCRIBES)
    commands = benchmark(codec.decode_commands, data)
    assert commands == SUBSCRIBES


@pytest.mark.parametrize("name", list(CODECS))
def test_encode_publication_push(benchmark: Any, name: str) -> None:
    codec: Codec = CODECS[name][0]
    encoded = benchmark(codec.encode_push, PUSH)
    assert len(encoded) > len(PAYLOAD)
