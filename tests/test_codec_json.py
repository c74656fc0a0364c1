"""The JSON client protocol codec: commands as the SDKs send them, replies as they expect them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker import errors
from broker.errors import Disconnect
from broker.protocol.codec import (
    get_codec,
    history_result,
    presence_result,
    presence_stats_result,
    without_zeros,
)
from broker.protocol.codec_json import JSON_CODEC, is_json_compatible
from broker.publication import client_info_reply

MAX_U64 = 2**64 - 1


def decode(text: str | bytes) -> list[dict[str, Any]]:
    return JSON_CODEC.decode_commands(text.encode() if isinstance(text, str) else text)


def decode_one(text: str) -> dict[str, Any]:
    (command,) = decode(text)
    return command


def lines(frame: bytes) -> list[Any]:
    """Split a frame the way the SDKs do (``data.trim().split('\\n')``) and parse each line."""
    return [orjson.loads(line) for line in frame.strip().split(b"\n")]


def reply(message: dict[str, Any]) -> Any:
    encoded = JSON_CODEC.encode_reply(message)
    assert b"\n" not in encoded
    return orjson.loads(encoded)


def test_codec_attributes() -> None:
    assert JSON_CODEC.name == "json"
    assert JSON_CODEC.binary is False
    assert get_codec("json") is JSON_CODEC
    with pytest.raises(ValueError):
        get_codec("xml")


# ---------------------------------------------------------------------------------------------------
# Commands


def test_connect_as_centrifuge_js_sends_it() -> None:
    command = decode_one(
        '{"id":1,"connect":{"token":"JWT","data":{"k":[1,2,{"x":null}]},"name":"js","version":"5.7.4",'
        '"subs":{"news":{"recover":true,"offset":5,"epoch":"abcd"}},"headers":{"X-Real-Ip":"1.2.3.4"}}}'
    )
    assert command == {
        "id": 1,
        "connect": {
            "token": "JWT",
            "data": b'{"k":[1,2,{"x":null}]}',
            "name": "js",
            "version": "5.7.4",
            "subs": {"news": {"recover": True, "offset": 5, "epoch": "abcd"}},
            "headers": {"X-Real-Ip": "1.2.3.4"},
        },
    }


def test_connect_minimal_and_newer_fields() -> None:
    assert decode_one('{"id":1,"connect":{}}') == {"id": 1, "connect": {}}
    assert decode_one('{"id":1,"connect":{"name":"python","flag":3,"dict":"d1","profile":"p"}}') == {
        "id": 1,
        "connect": {"name": "python", "flag": 3, "dict": "d1", "profile": "p"},
    }


def test_subscribe_with_flag_recovery_and_options() -> None:
    assert decode_one('{"id":2,"subscribe":{"channel":"chat","flag":1}}') == {
        "id": 2,
        "subscribe": {"channel": "chat", "flag": 1},
    }
    command = decode_one(
        '{"id":3,"subscribe":{"channel":"$chat","token":"SUB","recover":true,"epoch":"kWzL","offset":42,'
        '"data":"hello","positioned":true,"recoverable":true,"join_leave":true,"delta":"fossil",'
        '"type":1,"phase":2,"cursor":"c","limit":10,"asc":true}}'
    )
    assert command["subscribe"] == {
        "channel": "$chat",
        "token": "SUB",
        "recover": True,
        "epoch": "kWzL",
        "offset": 42,
        "data": b'"hello"',
        "positioned": True,
        "recoverable": True,
        "join_leave": True,
        "delta": "fossil",
        "type": 1,
        "phase": 2,
        "cursor": "c",
        "limit": 10,
        "asc": True,
    }


def test_subscribe_tag_filter_nested() -> None:
    command = decode_one(
        '{"id":4,"subscribe":{"channel":"c","tf":{"op":"and","nodes":['
        '{"key":"a","cmp":"eq","val":"1"},{"key":"b","cmp":"in","vals":["x","y"]}]}}}'
    )
    assert command["subscribe"]["tf"] == {
        "op": "and",
        "nodes": [{"key": "a", "cmp": "eq", "val": "1"}, {"key": "b", "cmp": "in", "vals": ["x", "y"]}],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"id":5,"unsubscribe":{"channel":"chat"}}', {"id": 5, "unsubscribe": {"channel": "chat"}}),
        (
            '{"id":6,"publish":{"channel":"chat","data":{"text":"hi"}}}',
            {"id": 6, "publish": {"channel": "chat", "data": b'{"text":"hi"}'}},
        ),
        ('{"id":7,"presence":{"channel":"chat"}}', {"id": 7, "presence": {"channel": "chat"}}),
        ('{"id":8,"presence_stats":{"channel":"chat"}}', {"id": 8, "presence_stats": {"channel": "chat"}}),
        (
            '{"id":9,"history":{"channel":"chat","limit":10,"since":{"offset":3,"epoch":"e"},"reverse":true}}',
            {
                "id": 9,
                "history": {
                    "channel": "chat",
                    "limit": 10,
                    "since": {"offset": 3, "epoch": "e"},
                    "reverse": True,
                },
            },
        ),
        (
            '{"id":10,"history":{"channel":"chat","limit":-1}}',
            {"id": 10, "history": {"channel": "chat", "limit": -1}},
        ),
        (
            '{"id":11,"rpc":{"method":"getX","data":{}}}',
            {"id": 11, "rpc": {"method": "getX", "data": b"{}"}},
        ),
        ('{"id":12,"refresh":{"token":"JWT2"}}', {"id": 12, "refresh": {"token": "JWT2"}}),
        (
            '{"id":13,"sub_refresh":{"channel":"$x","token":"SUBJWT"}}',
            {"id": 13, "sub_refresh": {"channel": "$x", "token": "SUBJWT"}},
        ),
        ('{"send":{"data":{"a":1}}}', {"send": {"data": b'{"a":1}'}}),
        ('{"id":14,"ping":{}}', {"id": 14, "ping": {}}),
        ("{}", {}),
    ],
)
def test_every_command(text: str, expected: dict[str, Any]) -> None:
    assert decode_one(text) == expected


def test_zero_null_and_unknown_fields_are_left_out() -> None:
    command = decode_one(
        '{"id":1,"method":7,"subscribe":{"channel":"c","token":"","recover":false,"offset":0,'
        '"epoch":null,"data":null,"future":{"x":[1]},"limit":0},"publish":null,"newcommand":{}}'
    )
    assert command == {"id": 1, "subscribe": {"channel": "c"}}
    assert decode_one('{"id":0}') == {}
    assert decode_one('{"id":1,"connect":{"subs":{},"headers":{}}}') == {"id": 1, "connect": {}}


def test_map_entries_and_list_items_keep_zero_values() -> None:
    command = decode_one('{"id":1,"connect":{"subs":{"a":{},"b":null},"headers":{"h":""}}}')
    assert command["connect"] == {"subs": {"a": {}, "b": {}}, "headers": {"h": ""}}


def test_raw_data_forms() -> None:
    # Every JSON value is valid data; it comes back as compact JSON text.
    for text, raw in [
        ('"str"', b'"str"'),
        ("12.5", b"12.5"),
        ("true", b"true"),
        ("[1, 2,\n 3]", b"[1,2,3]"),
        ('{"nested": {"deep": [null]}}', b'{"nested":{"deep":[null]}}'),
        ('"\\u00e9\\n"', '"é\\n"'.encode()),
    ]:
        assert decode_one('{"id":1,"publish":{"channel":"c","data":' + text.replace("\n", "") + "}}") == {
            "id": 1,
            "publish": {"channel": "c", "data": raw},
        }


def test_uint64_offsets_as_numbers_and_strings() -> None:
    big = decode_one(f'{{"id":1,"subscribe":{{"channel":"c","recover":true,"offset":{MAX_U64}}}}}')
    assert big["subscribe"]["offset"] == MAX_U64
    as_string = decode_one(f'{{"id":1,"history":{{"channel":"c","since":{{"offset":"{MAX_U64}"}}}}}}')
    assert as_string["history"]["since"] == {"offset": MAX_U64}
    assert decode_one('{"id":1,"subscribe":{"channel":"c","flag":"-2"}}')["subscribe"]["flag"] == -2
    assert decode_one('{"id":4294967295,"ping":{}}')["id"] == 2**32 - 1


def test_unicode() -> None:
    command = decode_one('{"id":1,"publish":{"channel":"чат","data":{"t":"日本語 🎉"}}}')
    assert command["publish"]["channel"] == "чат"
    assert orjson.loads(command["publish"]["data"]) == {"t": "日本語 🎉"}


def test_batched_commands() -> None:
    frame = b"\n".join(
        [b'{"id":1,"connect":{"name":"js"}}']
        + [b'{"id":%d,"subscribe":{"channel":"ch%d"}}' % (i, i) for i in range(2, 12)]
        + [b"{}"]
    )
    commands = decode(frame)
    assert len(commands) == 12
    assert commands[0] == {"id": 1, "connect": {"name": "js"}}
    assert commands[5] == {"id": 6, "subscribe": {"channel": "ch6"}}
    assert commands[-1] == {}


def test_trailing_newline_and_empty_lines_are_tolerated() -> None:
    assert decode('{"id":1,"ping":{}}\n') == [{"id": 1, "ping": {}}]
    assert decode('\n{"id":1,"ping":{}}\n\n{}\n \n') == [{"id": 1, "ping": {}}, {}]
    assert decode('{"id":1,"ping":{}}\r\n{}\r\n') == [{"id": 1, "ping": {}}, {}]


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\n",
        b"\n\n  \n",
        b"{",
        b'{"id":1,"connect":{}',
        b"not json",
        b"[]",
        b'[{"id":1}]',
        b"1",
        b'"text"',
        b"null",
        b'{"id":1}\n[1]',
        b'{"id":1}\n{bad',
        b'{"id":1,"connect":{}}{"id":2}',
        b"\xff\xfe{}",
        b'{"id":"1","connect":{}}',
        b'{"id":-1,"connect":{}}',
        b'{"id":1.0,"connect":{}}',
        b'{"id":1.5,"connect":{}}',
        b'{"id":true,"connect":{}}',
        b'{"id":4294967296,"connect":{}}',
        b'{"id":null,"connect":{}}\n{"id":[1]}',
        b'{"id":1,"subscribe":"chat"}',
        b'{"id":1,"subscribe":["chat"]}',
        b'{"id":1,"subscribe":{"channel":5}}',
        b'{"id":1,"subscribe":{"channel":"c","recover":"true"}}',
        b'{"id":1,"subscribe":{"channel":"c","recover":1}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":-1}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":18446744073709551616}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":"12a"}}',
        b'{"id":1,"subscribe":{"channel":"c","offset":"%s"}}' % (b"9" * 5000),
        b'{"id":1,"subscribe":{"channel":"c","limit":2147483648}}',
        b'{"id":1,"subscribe":{"channel":"c","tf":{"nodes":{"op":"and"}}}}',
        b'{"id":1,"subscribe":{"channel":"c","tf":{"vals":[1]}}}',
        b'{"id":1,"connect":{"subs":["a"]}}',
        b'{"id":1,"connect":{"subs":{"a":"b"}}}',
        b'{"id":1,"connect":{"subs":{"a":{"offset":"x"}}}}',
        b'{"id":1,"connect":{"headers":{"a":1}}}',
        b'{"id":1,"connect":{"token":{"t":1}}}',
        b'{"id":1,"connect":{"name":["js"]}}',
        b'{"id":1,"history":{"channel":"c","since":[3,"e"]}}',
        b'{"id":1,"history":{"channel":"c","since":{"epoch":7}}}',
        b'{"id":1,"history":{"channel":"c","reverse":"yes"}}',
        b'{"id":1,"rpc":{"method":{"m":1}}}',
        b'{"id":1,"refresh":{"token":1}}',
    ],
)
def test_malformed_input_is_bad_request(frame: bytes) -> None:
    with pytest.raises(Disconnect) as caught:
        JSON_CODEC.decode_commands(frame)
    assert caught.value == errors.DISCONNECT_BAD_REQUEST
    assert type(caught.value) is Disconnect


@pytest.mark.parametrize("depth", [800, 3000])  # past Python's recursion limit / past orjson's own limit
def test_absurdly_nested_filter_is_bad_request(depth: int) -> None:
    tf = '{"nodes":[' * depth + "{}" + "]}" * depth
    frame = ('{"id":1,"subscribe":{"channel":"c","tf":' + tf + "}}").encode()
    with pytest.raises(Disconnect) as caught:
        JSON_CODEC.decode_commands(frame)
    assert caught.value == errors.DISCONNECT_BAD_REQUEST


def test_moderately_nested_filter_is_accepted() -> None:
    tf = '{"op":"not","nodes":[' * 50 + '{"key":"k"}' + "]}" * 50
    command = decode_one('{"id":1,"subscribe":{"channel":"c","tf":' + tf + "}}")
    node = command["subscribe"]["tf"]
    for _ in range(50):
        node = node["nodes"][0]
    assert node == {"key": "k"}


# ---------------------------------------------------------------------------------------------------
# Replies and pushes


def test_ping_is_an_empty_object() -> None:
    assert JSON_CODEC.encode_reply({}) == b"{}"
    assert JSON_CODEC.ping == b"{}"


def test_connect_reply_matches_the_reference_example() -> None:
    encoded = JSON_CODEC.encode_reply(
        {"id": 1, "connect": {"client": "4f0", "version": "5.4.9", "ping": 25, "pong": True}}
    )
    assert encoded == b'{"id":1,"connect":{"client":"4f0","version":"5.4.9","ping":25,"pong":true}}'


def test_connect_reply_with_data_subs_and_expiry() -> None:
    pub = {"data": b'{"n":1}', "offset": 4}
    out = reply(
        {
            "id": 1,
            "connect": {
                "client": "c",
                "version": "0.1.0",
                "expires": True,
                "ttl": 3600,
                "data": b'{"welcome":true}',
                "subs": {
                    "news": {"recoverable": True, "epoch": "e", "offset": 4, "publications": [pub]},
                    "personal:#42": {},
                },
                "ping": 25,
                "pong": True,
                "time": 1_700_000_000_000,
            },
        }
    )
    assert out["connect"]["data"] == {"welcome": True}
    assert out["connect"]["subs"]["news"]["publications"] == [{"data": {"n": 1}, "offset": 4}]
    assert out["connect"]["subs"]["personal:#42"] == {}
    assert out["connect"]["ttl"] == 3600


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"id": 2, "subscribe": {}}, {"id": 2, "subscribe": {}}),
        (
            {"id": 2, "subscribe": {"recoverable": True, "epoch": "kWzL", "offset": 5, "positioned": True}},
            {"id": 2, "subscribe": {"recoverable": True, "epoch": "kWzL", "offset": 5, "positioned": True}},
        ),
        (
            {
                "id": 2,
                "subscribe": {
                    "expires": True,
                    "ttl": 60,
                    "was_recovering": True,
                    "recovered": True,
                    "publications": [{"data": b"[1]", "offset": 6}, {"data": b"[2]", "offset": 7}],
                    "data": b'"sub-data"',
                    "delta": True,
                },
            },
            {
                "id": 2,
                "subscribe": {
                    "expires": True,
                    "ttl": 60,
                    "was_recovering": True,
                    "recovered": True,
                    "publications": [{"data": [1], "offset": 6}, {"data": [2], "offset": 7}],
                    "data": "sub-data",
                    "delta": True,
                },
            },
        ),
        ({"id": 3, "unsubscribe": {}}, {"id": 3, "unsubscribe": {}}),
        ({"id": 4, "publish": {}}, {"id": 4, "publish": {}}),
        ({"id": 7, "rpc": {"data": b'{"x":1}'}}, {"id": 7, "rpc": {"data": {"x": 1}}}),
        ({"id": 7, "rpc": {}}, {"id": 7, "rpc": {}}),
        (
            {"id": 8, "refresh": {"expires": True, "ttl": 3600}},
            {"id": 8, "refresh": {"expires": True, "ttl": 3600}},
        ),
        (
            {"id": 9, "sub_refresh": {"expires": True, "ttl": 60}},
            {"id": 9, "sub_refresh": {"expires": True, "ttl": 60}},
        ),
        ({"id": 10, "ping": {}}, {"id": 10, "ping": {}}),
        (
            {"id": 11, "error": errors.PERMISSION_DENIED.to_dict()},
            {"id": 11, "error": {"code": 103, "message": "permission denied"}},
        ),
        (
            {"id": 12, "error": errors.INTERNAL.to_dict()},
            {"id": 12, "error": {"code": 100, "message": "internal server error", "temporary": True}},
        ),
    ],
)
def test_every_reply(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert reply(message) == expected


def test_always_written_fields_survive_when_zero() -> None:
    # Builders put them in; the encoder writes every key it is given.
    assert JSON_CODEC.encode_reply({"id": 5, "presence_stats": presence_stats_result(0, 0)}) == (
        b'{"id":5,"presence_stats":{"num_clients":0,"num_users":0}}'
    )
    assert JSON_CODEC.encode_reply({"id": 6, "history": history_result([], "", 0)}) == (
        b'{"id":6,"history":{"publications":[],"epoch":"","offset":0}}'
    )
    assert JSON_CODEC.encode_reply({"id": 4, "presence": presence_result({})}) == (
        b'{"id":4,"presence":{"presence":{}}}'
    )
    anonymous = client_info_reply("", "cid")
    assert JSON_CODEC.encode_reply({"push": {"channel": "c", "join": {"info": anonymous}}}) == (
        b'{"push":{"channel":"c","join":{"info":{"user":"","client":"cid"}}}}'
    )


def test_presence_and_history_with_content() -> None:
    presence = {
        "c1": client_info_reply("42", "c1", conn_info=b'{"name":"Ann"}', chan_info=b'{"role":"admin"}'),
        "c2": client_info_reply("", "c2"),
    }
    out = reply({"id": 4, "presence": presence_result(presence)})
    assert out == {
        "id": 4,
        "presence": {
            "presence": {
                "c1": {
                    "user": "42",
                    "client": "c1",
                    "conn_info": {"name": "Ann"},
                    "chan_info": {"role": "admin"},
                },
                "c2": {"user": "", "client": "c2"},
            }
        },
    }
    pubs = [{"data": b'{"i":%d}' % i, "offset": i} for i in (4, 5)]
    out = reply({"id": 6, "history": history_result(pubs, "kWzL", MAX_U64)})
    assert out == {
        "id": 6,
        "history": {
            "publications": [{"data": {"i": 4}, "offset": 4}, {"data": {"i": 5}, "offset": 5}],
            "epoch": "kWzL",
            "offset": MAX_U64,
        },
    }


def test_without_zeros_drops_every_zero_value() -> None:
    assert without_zeros(
        {"a": "", "b": 0, "c": False, "d": None, "e": b"", "f": [], "g": {}, "h": 1, "i": "x"}
    ) == {
        "h": 1,
        "i": "x",
    }


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        (
            {"channel": "chat", "pub": {"data": b'{"text":"hi"}', "offset": 6}},
            {"channel": "chat", "pub": {"data": {"text": "hi"}, "offset": 6}},
        ),
        (
            {
                "channel": "chat",
                "pub": {
                    "data": b"[1]",
                    "info": client_info_reply("42", "c1", conn_info=b'{"n":1}'),
                    "offset": MAX_U64,
                    "tags": {"k": "v"},
                    "delta": True,
                    "time": 1_700_000_000_123,
                    "channel": "chat:sub",
                },
            },
            {
                "channel": "chat",
                "pub": {
                    "data": [1],
                    "info": {"user": "42", "client": "c1", "conn_info": {"n": 1}},
                    "offset": MAX_U64,
                    "tags": {"k": "v"},
                    "delta": True,
                    "time": 1_700_000_000_123,
                    "channel": "chat:sub",
                },
            },
        ),
        (
            {"channel": "chat", "join": {"info": client_info_reply("42", "c1")}},
            {"channel": "chat", "join": {"info": {"user": "42", "client": "c1"}}},
        ),
        (
            {"channel": "chat", "leave": {"info": client_info_reply("42", "c1")}},
            {"channel": "chat", "leave": {"info": {"user": "42", "client": "c1"}}},
        ),
        (
            {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}},
            {"channel": "news", "unsubscribe": {"code": 2000, "reason": "server unsubscribe"}},
        ),
        ({"message": {"data": b'{"m":1}'}}, {"message": {"data": {"m": 1}}}),
        (
            {
                "channel": "news",
                "subscribe": {"recoverable": True, "epoch": "x", "offset": 3, "positioned": True},
            },
            {
                "channel": "news",
                "subscribe": {"recoverable": True, "epoch": "x", "offset": 3, "positioned": True},
            },
        ),
        (
            {
                "connect": {
                    "client": "c",
                    "version": "1",
                    "data": b"{}",
                    "subs": {"a": {}},
                    "ping": 25,
                    "session": "s",
                }
            },
            {
                "connect": {
                    "client": "c",
                    "version": "1",
                    "data": {},
                    "subs": {"a": {}},
                    "ping": 25,
                    "session": "s",
                }
            },
        ),
        (
            {"disconnect": {"code": 3001, "reason": "shutdown"}},
            {"disconnect": {"code": 3001, "reason": "shutdown"}},
        ),
        ({"refresh": {"expires": True, "ttl": 600}}, {"refresh": {"expires": True, "ttl": 600}}),
    ],
)
def test_every_push(push: dict[str, Any], expected: dict[str, Any]) -> None:
    encoded = JSON_CODEC.encode_push(push)
    assert b"\n" not in encoded
    assert orjson.loads(encoded) == {"push": expected}
    assert JSON_CODEC.encode_reply({"push": push}) == encoded
    # Unidirectional transports write the body without the wrapper.
    assert orjson.loads(JSON_CODEC.encode_uni_push(push)) == expected


def test_reference_push_example_is_byte_exact() -> None:
    assert JSON_CODEC.encode_push({"channel": "chat", "pub": {"data": b'{"text":"hi"}', "offset": 6}}) == (
        b'{"push":{"channel":"chat","pub":{"data":{"text":"hi"},"offset":6}}}'
    )


def test_raw_data_with_newlines_stays_on_one_line() -> None:
    data = b'{\n  "text": "hi",\n  "list": [\n    1,\n    2\n  ]\n}\n'
    encoded = JSON_CODEC.encode_push({"channel": "c", "pub": {"data": data}})
    assert b"\n" not in encoded
    assert orjson.loads(encoded)["push"]["pub"]["data"] == {"text": "hi", "list": [1, 2]}
    # Several replies with such data framed together still split into the right messages.
    frame = JSON_CODEC.join([encoded, JSON_CODEC.encode_reply({"id": 7, "rpc": {"data": data}}), b"{}"])
    assert [list(m) for m in lines(frame)] == [["push"], ["id", "rpc"], []]
    # An escaped newline inside a string is data, not framing, and is kept.
    assert orjson.loads(JSON_CODEC.encode_push({"message": {"data": b'"a\\nb"'}})) == {
        "push": {"message": {"data": "a\nb"}}
    }


def test_bytes_like_values_and_empty_bytes() -> None:
    assert reply({"id": 7, "rpc": {"data": bytearray(b"[1]")}}) == {"id": 7, "rpc": {"data": [1]}}
    assert reply({"id": 7, "rpc": {"data": memoryview(b"[2]")}}) == {"id": 7, "rpc": {"data": [2]}}
    # Empty bytes have no raw JSON form: written as null rather than breaking the message.
    assert reply({"id": 7, "rpc": {"data": b""}}) == {"id": 7, "rpc": {"data": None}}
    with pytest.raises(TypeError):
        JSON_CODEC.encode_reply({"id": 7, "rpc": {"data": object()}})


def test_unicode_output_is_utf8() -> None:
    encoded = JSON_CODEC.encode_push({"channel": "чат", "pub": {"data": '{"t":"日本語 🎉"}'.encode()}})
    assert "чат".encode() in encoded
    assert orjson.loads(encoded)["push"]["pub"]["data"] == {"t": "日本語 🎉"}


def test_join_frames_replies_with_newlines() -> None:
    encoded = [JSON_CODEC.encode_reply({"id": i, "publish": {}}) for i in range(1, 4)]
    frame = JSON_CODEC.join(encoded)
    assert frame == b'{"id":1,"publish":{}}\n{"id":2,"publish":{}}\n{"id":3,"publish":{}}'
    assert lines(frame) == [{"id": 1, "publish": {}}, {"id": 2, "publish": {}}, {"id": 3, "publish": {}}]
    assert JSON_CODEC.join([encoded[0]]) == encoded[0]


def test_is_json_compatible() -> None:
    for ok in (b'{"a":1}', b"[1,2]", b'"s"', b"1", b"true", b"null", b' {"a" : [1]} ', '"é"'.encode()):
        assert is_json_compatible(ok), ok
    for bad in (b"", b"\x00\x01\x02", b"\xff", b"{", b"hello", b'{"a":1}{}', b"\x08\x96\x01"):
        assert not is_json_compatible(bad), bad


def test_decoded_data_can_be_sent_back_unchanged() -> None:
    (command,) = decode('{"id":1,"publish":{"channel":"c","data":{"text":"hé\\n","n":[1.5,null]}}}')
    data = command["publish"]["data"]
    assert is_json_compatible(data)
    pushed = orjson.loads(JSON_CODEC.encode_push({"channel": "c", "pub": {"data": data}}))
    assert pushed["push"]["pub"]["data"] == {"text": "hé\n", "n": [1.5, None]}


@pytest.mark.parametrize("depth", [256, 1_000, 1_024, 5_000])  # orjson writes 254 levels, reads 1,024
@pytest.mark.parametrize("field", ["publish", "rpc", "connect"])
def test_deeply_nested_data_is_bad_request(depth: int, field: str) -> None:
    data = "[" * depth + "]" * depth
    frame = ('{"id":1,"' + field + '":{"channel":"c","data":' + data + "}}").encode()
    with pytest.raises(Disconnect) as caught:
        JSON_CODEC.decode_commands(frame)
    assert caught.value == errors.DISCONNECT_BAD_REQUEST


def test_data_nested_as_deep_as_orjson_writes_is_kept() -> None:
    data = "[" * 250 + "]" * 250
    command = decode_one('{"id":1,"publish":{"channel":"c","data":' + data + "}}")
    assert command["publish"]["data"] == data.encode()
