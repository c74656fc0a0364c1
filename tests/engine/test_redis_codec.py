"""The form publications take in Redis: one byte string, compact, round-tripping every field."""

from __future__ import annotations

import pytest

from broker.engine.redis_codec import (
    MalformedMessage,
    decode_body,
    decode_message,
    encode_body,
    encode_message,
)
from broker.publication import Publication


def full() -> Publication:
    return Publication(
        "chat:1",
        b'{"text":"hi"}',
        tags={"a": "b"},
        user="42",
        client="c-1",
        conn_info=b'{"name":"x"}',
        chan_info=b"\x00\xff binary",
        time_ms=1_700_000_000_123,
    )


@pytest.mark.parametrize(
    "publication",
    [
        full(),
        Publication("news", b""),
        Publication("news", b"\x00\x01\x02" * 1000),
        Publication("room", b"", user="u", client="c", kind="join"),
        Publication("room", b"", user="", client="c", kind="leave", chan_info=b"{}"),
    ],
)
def test_a_body_round_trips_every_field(publication: Publication):
    back = decode_body(encode_body(publication), 7, "ep")
    expected = Publication(**{**_fields(publication), "offset": 7, "epoch": "ep"})
    assert back == expected


def test_a_message_carries_the_position_redis_gave():
    publication = full()
    publication.offset, publication.epoch = 12, "AbCd1234"
    assert decode_message(encode_message(publication)) == publication
    # What the Lua script writes: the tag and position in front of the body it was given.
    scripted = b"p1:3:xyz:" + encode_body(Publication("c", b"d"))
    assert decode_message(scripted) == Publication("c", b"d", offset=3, epoch="xyz")
    assert decode_message(b"p1:0::" + encode_body(Publication("c", b"d"))) == Publication("c", b"d")


def test_the_body_costs_little_beyond_the_payload():
    publication = Publication("chat:1", b"x" * 100)
    assert len(encode_body(publication)) - 100 <= 30


def test_an_offset_already_set_is_not_read_back_from_the_body():
    publication = Publication("c", b"d", offset=5, epoch="old")
    assert decode_body(encode_body(publication)) == Publication("c", b"d")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"plain",
        b"p1:",
        b"p1:5",
        b"p1:x:e:v1",
        b"p1:5:e:",
        b"p1:5:e:v2" + b"\x00" * 12,
        b"p1:5:e:v1" + b"\xff" * 12,  # lengths past the end
        b"p1:5:e:v1\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00{}",  # header without a channel
        b"p1:5:e:v1\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00[[",  # not JSON
    ],
)
def test_malformed_messages_are_refused_with_one_error(message: bytes):
    with pytest.raises(MalformedMessage):
        decode_message(message)


def _fields(publication: Publication) -> dict[str, object]:
    return {name: getattr(publication, name) for name in Publication.__dataclass_fields__}
