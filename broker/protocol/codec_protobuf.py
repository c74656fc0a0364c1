"""The protobuf encoding of the client protocol (WebSocket binary frames of varint-prefixed messages).

Parsing and serialising are done by the generated classes (``proto/client_pb2``, upb in C); this
module only frames messages and converts between them and the dict shape of ``codec.py``:

* decoding walks ``ListFields()``, which yields exactly the fields that are set — non-zero scalars,
  present sub-messages, non-empty maps and lists — so zero values are left out just as the JSON
  decoder leaves them out, unknown fields are skipped by the parser, and ``bytes`` stay ``bytes``.
  Each field's conversion is looked up once per ``FieldDescriptor`` and cached.
* encoding hands the reply dict to the generated constructor (``Reply(**reply)``), which accepts nested
  dicts for message fields and maps, and marks a sub-message present even when its dict is empty
  (``{"id": 2, "publish": {}}`` keeps ``publish``). Zero values are not written, as proto3 does.

``encode_reply`` returns the message with its varint length prefix, so ``join`` is a concatenation and
a single reply is already a complete frame. A dict that does not fit ``client.proto`` raises
``ValueError`` or ``TypeError``: that is a server bug, not client input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as ProtoMessage

from broker import errors
from broker.protocol.codec import Codec, Command, ReplyDict
from broker.protocol.proto import client_pb2

_BAD: Final = errors.DISCONNECT_BAD_REQUEST
_MAX_PREFIX_BYTES: Final = 5  # a length prefix beyond 32 bits is garbage whatever the buffer holds

Converter = Callable[[Any], Any]

# FieldDescriptor → (JSON name, conversion); descriptors are long-lived singletons, so they key a cache.
_CONVERTERS: dict[FieldDescriptor, tuple[str, Converter]] = {}


def _identity(value: Any) -> Any:
    return value


def _message_to_dict(message: ProtoMessage) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        entry = _CONVERTERS.get(field)
        if entry is None:
            entry = _CONVERTERS[field] = (field.name, _converter(field))
        name, convert = entry
        out[name] = convert(value)
    return out


def _converter(field: FieldDescriptor) -> Converter:
    """How one field's value becomes its dict form: scalars as they are, containers copied."""
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        value_type = message_type.fields_by_name["value"].message_type
        if value_type is None:
            return dict
        return lambda value: {key: _message_to_dict(item) for key, item in value.items()}
    if field.is_repeated:
        if message_type is None:
            return list
        return lambda value: [_message_to_dict(item) for item in value]
    if message_type is not None:
        return _message_to_dict
    return _identity


def _read_prefix(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """The varint length prefix at ``pos`` and where its message starts."""
    byte = data[pos]
    if byte < 0x80:  # nearly every message is shorter than 128 bytes
        return byte, pos + 1
    length = byte & 0x7F
    shift = 7
    end = min(pos + _MAX_PREFIX_BYTES, size)
    pos += 1
    while pos < end:
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, pos
        shift += 7
    raise _BAD()  # truncated, or longer than any real prefix


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS: Final = [bytes((n,)) for n in range(0x80)]

# The generated module builds its classes at run time; type checkers see them as Any.
_pb2: Any = client_pb2
_Command: Final = _pb2.Command
_Reply: Final = _pb2.Reply


class ProtobufCodec(Codec):
    """Length-delimited protobuf: every message is ``varint(len) || Command/Reply``."""

    __slots__ = ()
    name = "protobuf"
    binary = True
    ping = b"\x00"  # an empty Reply

    def decode_commands(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        pos = 0
        size = len(data)
        if not size:
            raise _BAD()
        while pos < size:
            length, start = _read_prefix(data, pos, size)
            pos = start + length
            if pos > size:
                raise _BAD()
            try:
                message = _Command.FromString(data[start:pos])
                commands.append(_message_to_dict(message))
            except Exception:  # the parser's DecodeError and whatever else malformed input may cause
                raise _BAD() from None
        return commands

    def encode_reply(self, reply: ReplyDict) -> bytes:
        if not reply:
            return b"\x00"
        payload: bytes = _Reply(**reply).SerializeToString()
        return _varint(len(payload)) + payload

    def encode_push(self, push: ReplyDict) -> bytes:
        payload: bytes = _Reply(push=push).SerializeToString()
        return _varint(len(payload)) + payload

    def join(self, encoded: Iterable[bytes]) -> bytes:
        return b"".join(encoded)


PROTOBUF_CODEC: Final = ProtobufCodec()
