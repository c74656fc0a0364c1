"""How a publication is written into Redis: one byte string, in streams and on PUB/SUB alike.

The *body* is the publication's ZeroMQ frames (:meth:`broker.publication.Publication.to_frames`, so the
header is spelled in one place) without the topic, packed as ``v1`` + three little-endian u32 lengths +
header + data + conn_info + chan_info (chan_info is the rest). Payload bytes are never re-encoded.

A stream entry stores the body alone: its offset is the entry id and its epoch the stream meta's. On
PUB/SUB a message is ``p1:<offset>:<epoch>:`` + body, offset ``0`` and epoch empty for a publication
without history. The Lua script that assigns the offset writes that prefix in front of the body it
was given, so the publication is encoded once, by the publisher, and never parsed in Redis. The
``v1`` / ``p1`` tags leave room for another format beside this one.
"""

from __future__ import annotations

import struct

import orjson

from broker.publication import Publication

BODY_VERSION = b"v1"
MESSAGE_TAG = b"p1:"
_LENGTHS = struct.Struct("<III")
_START = len(BODY_VERSION) + _LENGTHS.size


class MalformedMessage(ValueError):
    """Bytes from Redis that are not a publication in a format this version reads."""


def encode_body(publication: Publication) -> bytes:
    """The publication as Redis keeps it; an offset and epoch already set ride along but are not read
    back (the reader takes them from where Redis keeps them)."""
    _, header, data, conn_info, chan_info = publication.to_frames()
    lengths = _LENGTHS.pack(len(header), len(data), len(conn_info))
    return b"".join((BODY_VERSION, lengths, header, data, conn_info, chan_info))


def decode_body(body: bytes, offset: int = 0, epoch: str = "") -> Publication:
    if body[: len(BODY_VERSION)] != BODY_VERSION or len(body) < _START:
        raise MalformedMessage(f"not a v1 publication body: {body[:16]!r}")
    header_len, data_len, conn_len = _LENGTHS.unpack_from(body, len(BODY_VERSION))
    data_at = _START + header_len
    conn_at = data_at + data_len
    chan_at = conn_at + conn_len
    if chan_at > len(body):
        raise MalformedMessage("publication body shorter than its lengths")
    frames = [b"", body[_START:data_at], body[data_at:conn_at], body[conn_at:chan_at], body[chan_at:]]
    try:
        publication = Publication.from_frames(frames)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise MalformedMessage(f"bad publication header: {exc}") from None
    publication.offset, publication.epoch = offset, epoch
    return publication


def encode_message(publication: Publication) -> bytes:
    """The PUB/SUB form, as the Lua script builds it (tests, and publishes made outside a script)."""
    position = b"%d:%s:" % (publication.offset, publication.epoch.encode())
    return MESSAGE_TAG + position + encode_body(publication)


def decode_message(message: bytes) -> Publication:
    """A publication received on a channel's PUB/SUB name, with the offset and epoch Redis gave it."""
    if not message.startswith(MESSAGE_TAG):
        raise MalformedMessage(f"not a p1 message: {message[:16]!r}")
    offset_end = message.find(b":", len(MESSAGE_TAG))
    epoch_end = message.find(b":", offset_end + 1) if offset_end >= 0 else -1
    if epoch_end < 0:
        raise MalformedMessage("p1 message without offset and epoch")
    offset_text = message[len(MESSAGE_TAG) : offset_end]
    if not offset_text.isdigit():
        raise MalformedMessage(f"bad offset {offset_text!r}")
    epoch = message[offset_end + 1 : epoch_end].decode("ascii", "replace")
    return decode_body(message[epoch_end + 1 :], int(offset_text), epoch)
