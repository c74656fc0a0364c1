"""The protobuf client protocol codec, checked against the generated classes and the reference numbers."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from broker import errors
from broker.errors import Disconnect
from broker.protocol import codec
from broker.protocol.codec import (
    get_codec,
    history_result,
    presence_result,
    presence_stats_result,
)
from broker.protocol.codec_json import JSON_CODEC
from broker.protocol.codec_protobuf import PROTOBUF_CODEC, _message_to_dict
from broker.protocol.proto import client_pb2
from broker.publication import client_info_reply

pb: Any = client_pb2
MAX_U64 = 2**64 - 1


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(*messages: Any) -> bytes:
    """What an SDK writes: each Command serialised and prefixed with its length."""
    out = b""
    for message in messages:
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        out += varint(len(payload)) + payload
    return out


def split(data: bytes) -> list[bytes]:
    """Split a server frame into its messages (an independent reader of the length prefixes)."""
    out = []
    pos = 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(data[pos : pos + length])
        pos += length
    return out


def replies(data: bytes) -> list[Any]:
    return [pb.Reply.FromString(message) for message in split(data)]


def decode(*messages: Any) -> list[dict[str, Any]]:
    return PROTOBUF_CODEC.decode_commands(frame(*messages))


def test_codec_attributes() -> None:
    assert PROTOBUF_CODEC.name == "protobuf"
    assert PROTOBUF_CODEC.binary is True
    assert get_codec("protobuf") is PROTOBUF_CODEC


# ---------------------------------------------------------------------------------------------------
# client.proto against the reference


EXPECTED_NUMBERS: dict[str, dict[str, int]] = {
    "Command": {
        "id": 1, "connect": 4, "subscribe": 5, "unsubscribe": 6, "publish": 7, "presence": 8,
        "presence_stats": 9, "history": 10, "ping": 11, "send": 12, "rpc": 13, "refresh": 14,
        "sub_refresh": 15,
    },
    "Reply": {
        "id": 1, "error": 2, "push": 4, "connect": 5, "subscribe": 6, "unsubscribe": 7, "publish": 8,
        "presence": 9, "presence_stats": 10, "history": 11, "ping": 12, "rpc": 13, "refresh": 14,
        "sub_refresh": 15,
    },
    "Error": {"code": 1, "message": 2, "temporary": 3},
    "Push": {
        "id": 1, "channel": 2, "pub": 4, "join": 5, "leave": 6, "unsubscribe": 7, "message": 8,
        "subscribe": 9, "connect": 10, "disconnect": 11, "refresh": 12,
    },
    "ClientInfo": {"user": 1, "client": 2, "conn_info": 3, "chan_info": 4},
    "Publication": {
        "data": 4, "info": 5, "offset": 6, "tags": 7, "delta": 8, "time": 9, "channel": 10, "key": 11,
        "removed": 12, "score": 13, "epoch": 14, "prev_data": 15, "version": 16,
    },
    "Join": {"info": 1},
    "Leave": {"info": 1},
    "Unsubscribe": {"code": 2, "reason": 3},
    "Subscribe": {"recoverable": 1, "epoch": 4, "offset": 5, "positioned": 6, "data": 7},
    "Message": {"data": 1},
    "Connect": {
        "client": 1, "version": 2, "data": 3, "subs": 4, "expires": 5, "ttl": 6, "ping": 7, "pong": 8,
        "session": 9, "node": 10, "time": 11,
    },
    "Disconnect": {"code": 1, "reason": 2, "reconnect": 3},
    "Refresh": {"expires": 1, "ttl": 2},
    "ConnectRequest": {
        "token": 1, "data": 2, "subs": 3, "name": 4, "version": 5, "headers": 6, "flag": 7, "dict": 8,
        "profile": 9,
    },
    "ConnectResult": {
        "client": 1, "version": 2, "expires": 3, "ttl": 4, "data": 5, "subs": 6, "ping": 7, "pong": 8,
        "session": 9, "node": 10, "time": 11, "flag": 12, "dict": 13,
    },
    "RefreshRequest": {"token": 1},
    "RefreshResult": {"client": 1, "version": 2, "expires": 3, "ttl": 4},
    "SubscribeRequest": {
        "channel": 1, "token": 2, "recover": 3, "epoch": 6, "offset": 7, "data": 8, "positioned": 9,
        "recoverable": 10, "join_leave": 11, "delta": 12, "tf": 13, "flag": 14, "type": 15, "phase": 16,
        "cursor": 17, "limit": 18, "asc": 19,
    },
    "SubscribeResult": {
        "expires": 1, "ttl": 2, "recoverable": 3, "epoch": 6, "publications": 7, "recovered": 8,
        "offset": 9, "positioned": 10, "data": 11, "was_recovering": 12, "delta": 13, "id": 14, "type": 15,
        "phase": 16, "cursor": 17, "state": 18, "publish_debounce": 19,
    },
    "SubRefreshRequest": {"channel": 1, "token": 2},
    "SubRefreshResult": {"expires": 1, "ttl": 2, "items": 3},
    "UnsubscribeRequest": {"channel": 1},
    "UnsubscribeResult": {},
    "PublishRequest": {"channel": 1, "data": 2, "type": 3, "key": 4, "removed": 5},
    "PublishResult": {},
    "PresenceRequest": {"channel": 1},
    "PresenceResult": {"presence": 1},
    "PresenceStatsRequest": {"channel": 1},
    "PresenceStatsResult": {"num_clients": 1, "num_users": 2},
    "HistoryRequest": {"channel": 1, "limit": 7, "since": 8, "reverse": 9},
    "HistoryResult": {"publications": 1, "epoch": 2, "offset": 3},
    "StreamPosition": {"offset": 1, "epoch": 2},
    "PingRequest": {},
    "PingResult": {},
    "RPCRequest": {"data": 1, "method": 2},
    "RPCResult": {"data": 1},
    "SendRequest": {"data": 1},
    "EmulationRequest": {"node": 1, "session": 2, "data": 3},
}  # fmt: skip

EXPECTED_RESERVED: dict[str, set[int]] = {
    "Command": {2, 3},
    "Reply": {3},
    "Push": {3},
    "Publication": {1, 2, 3},
    "Unsubscribe": {1},
    "Subscribe": {2, 3},
    "SubscribeRequest": {4, 5},
    "SubscribeResult": {4, 5},
    "HistoryRequest": {2, 3, 4, 5, 6},
}

# Types the reference gives explicitly (the rest are strings, bools or messages by their meaning).
EXPECTED_TYPES = {
    ("Command", "id"): FieldDescriptor.TYPE_UINT32,
    ("Reply", "id"): FieldDescriptor.TYPE_UINT32,
    ("Error", "code"): FieldDescriptor.TYPE_UINT32,
    ("Push", "id"): FieldDescriptor.TYPE_INT64,
    ("Publication", "offset"): FieldDescriptor.TYPE_UINT64,
    ("Publication", "score"): FieldDescriptor.TYPE_SINT64,
    ("Publication", "data"): FieldDescriptor.TYPE_BYTES,
    ("ClientInfo", "conn_info"): FieldDescriptor.TYPE_BYTES,
    ("ClientInfo", "chan_info"): FieldDescriptor.TYPE_BYTES,
    ("ConnectRequest", "data"): FieldDescriptor.TYPE_BYTES,
    ("ConnectRequest", "flag"): FieldDescriptor.TYPE_INT64,
    ("SubscribeRequest", "offset"): FieldDescriptor.TYPE_UINT64,
    ("SubscribeRequest", "flag"): FieldDescriptor.TYPE_INT64,
    ("SubscribeResult", "offset"): FieldDescriptor.TYPE_UINT64,
    ("SubscribeResult", "id"): FieldDescriptor.TYPE_INT64,
    ("HistoryRequest", "limit"): FieldDescriptor.TYPE_INT32,
    ("HistoryResult", "offset"): FieldDescriptor.TYPE_UINT64,
    ("StreamPosition", "offset"): FieldDescriptor.TYPE_UINT64,
    ("RPCRequest", "data"): FieldDescriptor.TYPE_BYTES,
    ("SendRequest", "data"): FieldDescriptor.TYPE_BYTES,
    ("Subscribe", "offset"): FieldDescriptor.TYPE_UINT64,
}


def test_field_numbers_match_the_reference() -> None:
    for name, numbers in EXPECTED_NUMBERS.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[name]
        assert {f.name: f.number for f in descriptor.fields} == numbers, name


def test_every_message_is_checked() -> None:
    extra = {"Dictionary", "FilterNode"}  # types of newer fields
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(EXPECTED_NUMBERS) | extra


def test_reserved_numbers() -> None:
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    reserved = {
        message.name: {n for r in message.reserved_range for n in range(r.start, r.end)}
        for message in file_proto.message_type
        if message.reserved_range
    }
    assert reserved == EXPECTED_RESERVED


def test_explicit_types() -> None:
    for (message, field), kind in EXPECTED_TYPES.items():
        assert pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].type == kind, (
            message,
            field,
        )


def test_bytes_fields_are_bytes() -> None:
    raw_fields = {"data", "conn_info", "chan_info", "prev_data"}
    for descriptor in pb.DESCRIPTOR.message_types_by_name.values():
        for field in descriptor.fields:
            if field.name in raw_fields:
                assert field.type == FieldDescriptor.TYPE_BYTES, (descriptor.name, field.name)


_KINDS = {
    FieldDescriptor.TYPE_STRING: codec.STRING,
    FieldDescriptor.TYPE_BYTES: codec.BYTES,
    FieldDescriptor.TYPE_BOOL: codec.BOOL,
    FieldDescriptor.TYPE_INT32: codec.INT32,
    FieldDescriptor.TYPE_UINT32: codec.UINT32,
    FieldDescriptor.TYPE_INT64: codec.INT64,
    FieldDescriptor.TYPE_UINT64: codec.UINT64,
}


def _assert_same(spec: codec.FieldType, field: FieldDescriptor, where: str) -> None:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        assert isinstance(spec, codec.MapOf), where
        value = message_type.fields_by_name["value"]
        assert value.message_type is not None or _KINDS[value.type] == spec.value, where
        if value.message_type is not None:
            assert isinstance(spec.value, codec.Message), where
            _assert_message(spec.value, value.message_type, set())
        return
    if field.is_repeated:
        assert isinstance(spec, codec.ListOf), where
        spec = spec.item
    if message_type is not None:
        assert isinstance(spec, codec.Message), where
        _assert_message(spec, message_type, set())
    else:
        assert spec == _KINDS[field.type], where


def _assert_message(spec: codec.Message, descriptor: Descriptor, seen: set[str]) -> None:
    if descriptor.name in seen:
        return
    seen.add(descriptor.name)
    assert spec.name == descriptor.name
    assert set(spec.fields) == {f.name for f in descriptor.fields}, descriptor.name
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.name in seen:
            continue
        _assert_same(spec.fields[field.name], field, f"{descriptor.name}.{field.name}")


def test_json_schema_agrees_with_client_proto() -> None:
    """The JSON decoder's schema (codec.COMMAND) has exactly the fields and kinds of client.proto."""
    _assert_message(codec.COMMAND, pb.Command.DESCRIPTOR, set())


def test_generator_writes_an_importable_module(tmp_path: Any) -> None:
    pytest.importorskip("grpc_tools")
    from broker.protocol.proto.generate import generate

    path = generate(tmp_path)
    assert path == tmp_path / "client_pb2.py"
    text = path.read_text()
    assert "broker/protocol/proto/client.proto" in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".protoc-")]


# ---------------------------------------------------------------------------------------------------
# Commands


def test_connect_as_an_sdk_sends_it() -> None:
    command = pb.Command(
        id=1,
        connect=pb.ConnectRequest(
            token="JWT",
            data=b"\x00\x01binary",
            name="js",
            version="5.7.4",
            subs={"news": pb.SubscribeRequest(recover=True, offset=MAX_U64, epoch="e")},
            headers={"Authorization": "Bearer x"},
        ),
    )
    assert decode(command) == [
        {
            "id": 1,
            "connect": {
                "token": "JWT",
                "data": b"\x00\x01binary",
                "subs": {"news": {"recover": True, "epoch": "e", "offset": MAX_U64}},
                "name": "js",
                "version": "5.7.4",
                "headers": {"Authorization": "Bearer x"},
            },
        }
    ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (pb.Command(id=1, connect=pb.ConnectRequest()), {"id": 1, "connect": {}}),
        (
            pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="chat", flag=1)),
            {"id": 2, "subscribe": {"channel": "chat", "flag": 1}},
        ),
        (
            pb.Command(
                id=3,
                subscribe=pb.SubscribeRequest(
                    channel="c",
                    recover=True,
                    epoch="e",
                    offset=7,
                    positioned=True,
                    recoverable=True,
                    join_leave=True,
                    delta="fossil",
                    data=b"d",
                    token="t",
                    limit=-5,
                    tf=pb.FilterNode(op="and", nodes=[pb.FilterNode(key="a", vals=["1", "2"])]),
                ),
            ),
            {
                "id": 3,
                "subscribe": {
                    "channel": "c",
                    "token": "t",
                    "recover": True,
                    "epoch": "e",
                    "offset": 7,
                    "data": b"d",
                    "positioned": True,
                    "recoverable": True,
                    "join_leave": True,
                    "delta": "fossil",
                    "tf": {"op": "and", "nodes": [{"key": "a", "vals": ["1", "2"]}]},
                    "limit": -5,
                },
            },
        ),
        (
            pb.Command(id=4, unsubscribe=pb.UnsubscribeRequest(channel="c")),
            {"id": 4, "unsubscribe": {"channel": "c"}},
        ),
        (
            pb.Command(id=5, publish=pb.PublishRequest(channel="c", data=b"\xff\x00")),
            {"id": 5, "publish": {"channel": "c", "data": b"\xff\x00"}},
        ),
        (pb.Command(id=6, presence=pb.PresenceRequest(channel="c")), {"id": 6, "presence": {"channel": "c"}}),
        (
            pb.Command(id=7, presence_stats=pb.PresenceStatsRequest(channel="c")),
            {"id": 7, "presence_stats": {"channel": "c"}},
        ),
        (
            pb.Command(
                id=8,
                history=pb.HistoryRequest(
                    channel="c", limit=10, since=pb.StreamPosition(offset=3, epoch="e"), reverse=True
                ),
            ),
            {
                "id": 8,
                "history": {
                    "channel": "c",
                    "limit": 10,
                    "since": {"offset": 3, "epoch": "e"},
                    "reverse": True,
                },
            },
        ),
        (
            pb.Command(id=9, history=pb.HistoryRequest(channel="c", limit=-1, since=pb.StreamPosition())),
            {"id": 9, "history": {"channel": "c", "limit": -1, "since": {}}},
        ),
        (
            pb.Command(id=10, rpc=pb.RPCRequest(method="m", data=b"{}")),
            {"id": 10, "rpc": {"data": b"{}", "method": "m"}},
        ),
        (pb.Command(id=11, refresh=pb.RefreshRequest(token="t")), {"id": 11, "refresh": {"token": "t"}}),
        (
            pb.Command(id=12, sub_refresh=pb.SubRefreshRequest(channel="$c", token="t")),
            {"id": 12, "sub_refresh": {"channel": "$c", "token": "t"}},
        ),
        (pb.Command(send=pb.SendRequest(data=b"x")), {"send": {"data": b"x"}}),
        (pb.Command(id=13, ping=pb.PingRequest()), {"id": 13, "ping": {}}),
        (pb.Command(), {}),
        (pb.Command(id=MAX_U64 & 0xFFFFFFFF, ping=pb.PingRequest()), {"id": 2**32 - 1, "ping": {}}),
    ],
)
def test_every_command(command: Any, expected: dict[str, Any]) -> None:
    assert decode(command) == [expected]


SDK_JSON_COMMANDS = [
    '{"id":1,"connect":{"token":"JWT","name":"js","version":"5.7.4","data":{"a":1},'
    '"subs":{"news":{"recover":true,"offset":5,"epoch":"e"}},"headers":{"h":"v"}}}',
    '{"id":2,"subscribe":{"channel":"chat","flag":1}}',
    '{"id":3,"subscribe":{"channel":"c","recover":true,"offset":18446744073709551615,"epoch":"e","data":[1]}}',
    '{"id":4,"publish":{"channel":"chat","data":{"text":"привет"}}}',
    '{"id":5,"presence":{"channel":"chat"}}',
    '{"id":6,"presence_stats":{"channel":"chat"}}',
    '{"id":7,"history":{"channel":"chat","limit":10,"since":{"offset":3,"epoch":"e"},"reverse":true}}',
    '{"id":8,"rpc":{"method":"getX","data":{}}}',
    '{"id":9,"refresh":{"token":"JWT2"}}',
    '{"id":10,"sub_refresh":{"channel":"$x","token":"S"}}',
    '{"id":11,"unsubscribe":{"channel":"chat"}}',
    '{"send":{"data":"x"}}',
    "{}",
]


@pytest.mark.parametrize("text", SDK_JSON_COMMANDS)
def test_both_encodings_decode_to_the_same_dict(text: str) -> None:
    (from_json,) = JSON_CODEC.decode_commands(text.encode())
    (from_protobuf,) = decode(pb.Command(**from_json))
    assert from_protobuf == from_json


def test_batched_commands_and_pong() -> None:
    subscribes = [pb.Command(id=i, subscribe=pb.SubscribeRequest(channel=f"ch{i}")) for i in range(2, 12)]
    commands = decode(pb.Command(id=1, connect=pb.ConnectRequest(name="js")), *subscribes, pb.Command())
    assert len(commands) == 12
    assert commands[0] == {"id": 1, "connect": {"name": "js"}}
    assert commands[10] == {"id": 11, "subscribe": {"channel": "ch11"}}
    assert commands[11] == {}
    assert PROTOBUF_CODEC.decode_commands(b"\x00") == [{}]
    assert PROTOBUF_CODEC.decode_commands(b"\x00\x00") == [{}, {}]


def test_multi_byte_length_prefixes() -> None:
    for size in (200, 20_000, 70_000):
        data = bytes(range(256)) * (size // 256 + 1)
        command = pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=data[:size]))
        encoded = frame(command, command)
        assert encoded[0] & 0x80
        commands = PROTOBUF_CODEC.decode_commands(encoded)
        assert [c["publish"]["data"] for c in commands] == [data[:size]] * 2


def test_unknown_fields_are_ignored() -> None:
    unknown = (
        varint(100 << 3 | 0) + varint(5)  # varint field 100
        + varint(101 << 3 | 2) + varint(3) + b"abc"  # length-delimited field 101
        + varint(102 << 3 | 5) + b"\x00\x00\x00\x00"  # fixed32 field 102
        + varint(103 << 3 | 1) + b"\x00" * 8  # fixed64 field 103
    )  # fmt: skip
    inner = pb.SubscribeRequest(channel="c").SerializeToString() + unknown
    command = pb.Command(id=1).SerializeToString() + varint(5 << 3 | 2) + varint(len(inner)) + inner + unknown
    assert PROTOBUF_CODEC.decode_commands(frame(command)) == [{"id": 1, "subscribe": {"channel": "c"}}]
    # Reserved numbers (the v1 method/params) are just unknown fields too.
    legacy = varint(2 << 3 | 0) + varint(1) + varint(3 << 3 | 2) + varint(2) + b"{}"
    assert PROTOBUF_CODEC.decode_commands(frame(pb.Command(id=4).SerializeToString() + legacy)) == [{"id": 4}]


def test_unicode_strings() -> None:
    command = pb.Command(id=1, publish=pb.PublishRequest(channel="чат:日本", data="🎉".encode()))
    assert decode(command) == [{"id": 1, "publish": {"channel": "чат:日本", "data": "🎉".encode()}}]


_VALID = pb.Command(id=1, subscribe=pb.SubscribeRequest(channel="chat")).SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no message at all
        b"\x80",  # truncated varint prefix
        b"\xff\xff",  # truncated varint prefix
        b"\xff\xff\xff\xff\xff\xff\x01" + b"\x00" * 10,  # over-long prefix
        b"\x05\x08\x01",  # length beyond the buffer
        frame(_VALID) + b"\x10",  # valid message, then a truncated one
        frame(_VALID) + b"\x80",  # valid message, then a truncated prefix
        frame(_VALID[:-1]),  # message cut inside the subscribe request
        b"\x03\xff\xff\xff",  # garbage tag
        b"\x02\x08\x80",  # truncated varint field
        b"\x02\x2a\x05",  # sub-message longer than the message
        b"\x01\x0f",  # wire type 7 does not exist
        b"\x03\x08\x01\x04",  # a group end tag out of place
        frame(b"\x2a\x04\x0a\x02\xff\xfe"),  # invalid UTF-8 in a string field
        frame(b"\x2a\x03\x0a\x01\xc3"),  # truncated UTF-8 sequence
        b"\x0b" + b"\x00" * 11,  # a field with number 0
        b'{"id":1}',  # JSON sent to a protobuf connection
        bytes(range(256)),  # random bytes
    ],
)
def test_malformed_input_is_bad_request(data: bytes) -> None:
    with pytest.raises(Disconnect) as caught:
        PROTOBUF_CODEC.decode_commands(data)
    assert caught.value == errors.DISCONNECT_BAD_REQUEST
    assert type(caught.value) is Disconnect


def test_absurdly_nested_filter_is_bad_request() -> None:
    node = b""
    for _ in range(200):
        node = varint(6 << 3 | 2) + varint(len(node)) + node
    inner = varint(13 << 3 | 2) + varint(len(node)) + node
    command = varint(1 << 3) + b"\x01" + varint(5 << 3 | 2) + varint(len(inner)) + inner
    with pytest.raises(Disconnect) as caught:
        PROTOBUF_CODEC.decode_commands(frame(command))
    assert caught.value == errors.DISCONNECT_BAD_REQUEST


# ---------------------------------------------------------------------------------------------------
# Replies and pushes


def roundtrip(message: dict[str, Any]) -> dict[str, Any]:
    (reply,) = replies(PROTOBUF_CODEC.encode_reply(message))
    return _message_to_dict(reply)


def test_ping_is_a_zero_length_message() -> None:
    assert PROTOBUF_CODEC.encode_reply({}) == b"\x00"
    assert PROTOBUF_CODEC.ping == b"\x00"
    assert PROTOBUF_CODEC.join([b"\x00", b"\x00"]) == b"\x00\x00"


def test_byte_exact_small_replies() -> None:
    assert PROTOBUF_CODEC.encode_reply({"id": 2, "subscribe": {}}) == b"\x04\x08\x02\x32\x00"
    assert PROTOBUF_CODEC.encode_reply({"id": 4, "publish": {}}) == b"\x04\x08\x04\x42\x00"
    assert PROTOBUF_CODEC.encode_reply({"id": 1, "error": {"code": 103, "message": "x"}}) == (
        b"\x09\x08\x01\x12\x05\x08\x67\x12\x01x"
    )


def test_connect_reply() -> None:
    message = {
        "id": 1,
        "connect": {
            "client": "c",
            "version": "0.1.0",
            "expires": True,
            "ttl": 3600,
            "data": b"\x00bin",
            "subs": {"news": {"recoverable": True, "epoch": "e", "offset": 4}, "empty": {}},
            "ping": 25,
            "pong": True,
            "time": 1_700_000_000_000,
        },
    }
    (reply,) = replies(PROTOBUF_CODEC.encode_reply(message))
    assert reply.id == 1
    assert reply.connect.client == "c"
    assert reply.connect.data == b"\x00bin"
    assert reply.connect.subs["news"].offset == 4
    assert "empty" in reply.connect.subs
    assert reply.connect.pong is True
    assert _message_to_dict(reply) == message


@pytest.mark.parametrize(
    "message",
    [
        {"id": 2, "subscribe": {}},
        {"id": 2, "subscribe": {"recoverable": True, "epoch": "e", "offset": MAX_U64, "positioned": True}},
        {
            "id": 2,
            "subscribe": {
                "expires": True,
                "ttl": 60,
                "was_recovering": True,
                "recovered": True,
                "data": b"d",
                "delta": True,
                "publications": [
                    {"data": b"1", "offset": 6},
                    {"data": b"2", "offset": 7, "tags": {"a": "b"}},
                ],
            },
        },
        {"id": 3, "unsubscribe": {}},
        {"id": 4, "publish": {}},
        {
            "id": 5,
            "presence": presence_result(
                {"c1": client_info_reply("42", "c1", conn_info=b"{}", chan_info=b"[]")}
            ),
        },
        {"id": 6, "presence_stats": presence_stats_result(2, 1)},
        {"id": 7, "history": history_result([{"data": b"x", "offset": 4, "time": 5}], "e", 6)},
        {"id": 8, "rpc": {"data": b"\x01\x02"}},
        {"id": 9, "refresh": {"client": "c", "version": "v", "expires": True, "ttl": 3600}},
        {"id": 10, "sub_refresh": {"expires": True, "ttl": 60}},
        {"id": 11, "ping": {}},
        {"id": 12, "error": errors.INTERNAL.to_dict()},
    ],
)
def test_every_reply_round_trips(message: dict[str, Any]) -> None:
    assert roundtrip(message) == message


def test_zero_values_are_not_written() -> None:
    # The always-written JSON fields have no meaning in protobuf: zeros are absent, SDKs default them.
    assert roundtrip({"id": 6, "presence_stats": presence_stats_result(0, 0)}) == {
        "id": 6,
        "presence_stats": {},
    }
    assert roundtrip({"id": 7, "history": history_result([], "", 0)}) == {"id": 7, "history": {}}
    assert roundtrip({"id": 5, "presence": presence_result({})}) == {"id": 5, "presence": {}}
    anonymous = roundtrip({"push": {"channel": "c", "join": {"info": client_info_reply("", "cid")}}})
    assert anonymous == {"push": {"channel": "c", "join": {"info": {"client": "cid"}}}}
    (reply,) = replies(PROTOBUF_CODEC.encode_reply({"id": 6, "presence_stats": presence_stats_result(0, 0)}))
    assert reply.HasField("presence_stats")
    assert reply.presence_stats.num_clients == 0


@pytest.mark.parametrize(
    "push",
    [
        {"channel": "chat", "pub": {"data": b'{"text":"hi"}', "offset": 6}},
        {
            "channel": "chat",
            "pub": {
                "data": b"\x00\xff",
                "info": client_info_reply("42", "c1", conn_info=b"{}"),
                "offset": MAX_U64,
                "tags": {"k": "v", "k2": ""},
                "delta": True,
                "time": 1_700_000_000_123,
                "channel": "chat:x",
            },
        },
        {"channel": "chat", "join": {"info": client_info_reply("42", "c1")}},
        {"channel": "chat", "leave": {"info": client_info_reply("42", "c1", chan_info=b"1")}},
        {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}},
        {"message": {"data": b"m"}},
        {
            "channel": "news",
            "subscribe": {"recoverable": True, "epoch": "x", "offset": 3, "positioned": True, "data": b"d"},
        },
        {
            "connect": {
                "client": "c",
                "version": "1",
                "data": b"d",
                "subs": {"a": {}},
                "ping": 25,
                "session": "s",
                "node": "n",
            }
        },
        {"disconnect": {"code": 3001, "reason": "shutdown"}},
        {"refresh": {"expires": True, "ttl": 600}},
        {"id": 7, "pub": {"data": b"by channel id"}},
    ],
)
def test_every_push_round_trips(push: dict[str, Any]) -> None:
    encoded = PROTOBUF_CODEC.encode_push(push)
    assert encoded == PROTOBUF_CODEC.encode_reply({"push": push})
    (reply,) = replies(encoded)
    assert reply.id == 0
    assert reply.HasField("push")
    assert _message_to_dict(reply) == {"push": push}


def test_publication_push_fields_via_generated_classes() -> None:
    data = bytes(range(100))
    (reply,) = replies(
        PROTOBUF_CODEC.encode_push({"channel": "чат", "pub": {"data": data, "offset": MAX_U64}})
    )
    assert reply.push.channel == "чат"
    assert reply.push.pub.data == data
    assert reply.push.pub.offset == MAX_U64
    assert not reply.push.pub.HasField("info")


def test_join_concatenates_prefixed_replies() -> None:
    big = {"id": 9, "rpc": {"data": b"x" * 300}}
    encoded = [
        PROTOBUF_CODEC.encode_reply({"id": 1, "publish": {}}),
        PROTOBUF_CODEC.encode_reply(big),
        b"\x00",
    ]
    frame_bytes = PROTOBUF_CODEC.join(encoded)
    assert frame_bytes == b"".join(encoded)
    decoded = replies(frame_bytes)
    assert [r.id for r in decoded] == [1, 9, 0]
    assert decoded[1].rpc.data == b"x" * 300
    assert decoded[2].ByteSize() == 0


def test_a_dict_that_does_not_fit_the_proto_is_a_server_bug() -> None:
    with pytest.raises(ValueError):
        PROTOBUF_CODEC.encode_reply({"id": 1, "nonsense": {}})
    with pytest.raises(TypeError):
        PROTOBUF_CODEC.encode_reply({"id": "1"})
