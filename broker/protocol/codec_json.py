"""The JSON encoding of the client protocol (WebSocket text frames, one JSON object per line).

Decoding: a frame holds newline-separated commands. Each is parsed with orjson and then checked
against ``codec.COMMAND`` by validators compiled once at import: known fields must have their
protocol type (so the session core can trust ``isinstance``-free access), unknown fields are dropped,
zero values and ``null`` are dropped (the shape protobuf decoding yields), and every ``bytes`` field
is turned back into the raw JSON text of its value with ``orjson.dumps`` — which is what a protobuf
client would have sent as bytes, and what the server forwards as a publication's payload. Integers
must be JSON integers in range; 64-bit ones may also come as decimal strings (protobuf's JSON mapping
writes them so). Any violation is ``DISCONNECT_BAD_REQUEST``.

Encoding: ``orjson.dumps`` with a ``default`` hook that embeds ``bytes`` values as raw JSON
(``orjson.Fragment``), so a reply is serialised in one C call without walking it in Python. Raw JSON
may contain newlines only as whitespace, which are removed because a newline ends a message in this
framing (SDKs split frames on ``\\n``). The bytes must be valid JSON; ``is_json_compatible`` is the
check for payloads that came from protobuf clients or the server API (a JSON client that cannot
receive one is disconnected with 3506 by the caller).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from broker import errors
from broker.protocol.codec import (
    BOOL,
    BYTES,
    COMMAND,
    INT32,
    INT64,
    STRING,
    UINT32,
    UINT64,
    Codec,
    Command,
    FieldType,
    ListOf,
    MapOf,
    Message,
    ReplyDict,
)

_BAD: Final = errors.DISCONNECT_BAD_REQUEST


class _Omit:
    """Marker returned by a validator for a value that is absent from the decoded dict."""

    __slots__ = ()


_OMIT: Final = _Omit()

Validator = Callable[[Any], Any]


# ---------------------------------------------------------------------------------------------------
# Scalar validators: return the value to keep, ``_OMIT`` for null / zero, raise for a wrong type.


def _string(value: Any) -> Any:
    if value.__class__ is str:
        return value or _OMIT
    if value is None:
        return _OMIT
    raise _BAD()


def _bool(value: Any) -> Any:
    if value is True:
        return True
    if value is False or value is None:
        return _OMIT
    raise _BAD()


def _raw(value: Any) -> Any:
    # Any JSON value (including a string or a number) is valid raw data; only null means "absent".
    # orjson reads up to 1,024 levels but writes at most 254: deeper data raises JSONEncodeError here.
    if value is None:
        return _OMIT
    return orjson.dumps(value)


def _int_range(low: int, high: int, strings: bool) -> Validator:
    def check(value: Any) -> Any:
        if value.__class__ is int:  # not isinstance: bool is an int subclass
            if low <= value <= high:
                return value or _OMIT
            raise _BAD()
        if value is None:
            return _OMIT
        if strings and value.__class__ is str:
            digits = value[1:] if value[:1] == "-" else value
            if len(digits) <= 20 and digits.isascii() and digits.isdigit():
                return check(int(value))
        raise _BAD()

    return check


_INT_KINDS: Final = {
    UINT32: (0, 2**32 - 1, False),
    INT32: (-(2**31), 2**31 - 1, False),
    UINT64: (0, 2**64 - 1, True),
    INT64: (-(2**63), 2**63 - 1, True),
}
_SCALARS: Final[dict[str, Validator]] = {STRING: _string, BOOL: _bool, BYTES: _raw} | {
    kind: _int_range(*spec) for kind, spec in _INT_KINDS.items()
}
# Map entries and list items are kept even when zero (protobuf keeps them too); null becomes the zero.
_ZEROS: Final[dict[str, Any]] = {
    STRING: "",
    BOOL: False,
    BYTES: b"null",
    UINT32: 0,
    INT32: 0,
    UINT64: 0,
    INT64: 0,
}


def _compile(field: FieldType, memo: dict[int, Validator]) -> Validator:
    if isinstance(field, str):
        return _SCALARS[field]
    if isinstance(field, Message):
        return _compile_message(field, memo)
    if isinstance(field, MapOf):
        return _compile_map(field, memo)
    return _compile_list(field, memo)


def _element(field: FieldType, memo: dict[int, Validator]) -> tuple[Validator, Callable[[], Any]]:
    """Validator and zero-value factory for a map value or list item."""
    check = _compile(field, memo)
    if isinstance(field, str):
        zero = _ZEROS[field]
        return check, lambda: zero
    return check, dict


def _compile_message(message: Message, memo: dict[int, Validator]) -> Validator:
    known = memo.get(id(message))
    if known is not None:
        return known
    fields: dict[str, Validator] = {}

    def check(value: Any) -> Any:
        if value.__class__ is not dict:
            if value is None:
                return _OMIT
            raise _BAD()
        out: dict[str, Any] = {}
        for key, item in value.items():
            field = fields.get(key)
            if field is not None:
                item = field(item)
                if item is not _OMIT:
                    out[key] = item
        return out

    memo[id(message)] = check  # before the fields, for recursive messages (FilterNode)
    for name, field in message.fields.items():
        fields[name] = _compile(field, memo)
    return check


def _compile_map(field: MapOf, memo: dict[int, Validator]) -> Validator:
    check_value, zero = _element(field.value, memo)

    def check(value: Any) -> Any:
        if value.__class__ is not dict:
            if value is None:
                return _OMIT
            raise _BAD()
        if not value:
            return _OMIT
        out: dict[str, Any] = {}
        for key, item in value.items():
            item = check_value(item)
            out[key] = zero() if item is _OMIT else item
        return out

    return check


def _compile_list(field: ListOf, memo: dict[int, Validator]) -> Validator:
    check_item, zero = _element(field.item, memo)

    def check(value: Any) -> Any:
        if value.__class__ is not list:
            if value is None:
                return _OMIT
            raise _BAD()
        if not value:
            return _OMIT
        out = []
        for item in value:
            item = check_item(item)
            out.append(zero() if item is _OMIT else item)
        return out

    return check


_check_command: Final = _compile(COMMAND, {})


def _command(value: Any) -> Command:
    if value.__class__ is not dict:
        raise _BAD()
    command: Command = _check_command(value)
    return command


# ---------------------------------------------------------------------------------------------------
# Encoding


def _embed_raw(value: Any) -> Any:
    """orjson ``default`` hook: ``bytes`` are raw JSON, written as they are minus newlines."""
    if value.__class__ is not bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"cannot encode {type(value).__name__} in a JSON reply")
        value = bytes(value)
    if not value:
        return None  # no raw-JSON form; callers omit empty data (see codec.py)
    if b"\n" in value:
        value = value.replace(b"\n", b"")
    return orjson.Fragment(value)


def is_json_compatible(data: bytes) -> bool:
    """Whether ``data`` can be embedded in a JSON message: one valid JSON value in UTF-8.

    Payloads from JSON clients always are (they were parsed on the way in); check the ones from
    protobuf clients or the server API once per publication before sending it to JSON connections.
    """
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


class JsonCodec(Codec):
    """Newline-delimited JSON; replies are single compact lines, ``join`` puts ``\\n`` between them."""

    __slots__ = ()
    name = "json"
    binary = False
    ping = b"{}"

    def decode_commands(self, data: bytes) -> list[Command]:
        try:
            if b"\n" not in data:
                return [_command(orjson.loads(data))]
            commands = [
                _command(orjson.loads(line)) for line in data.split(b"\n") if line and not line.isspace()
            ]
        except orjson.JSONDecodeError:
            raise _BAD() from None
        except RecursionError:  # absurdly nested tag filters
            raise _BAD() from None
        except orjson.JSONEncodeError:  # a bytes field nested deeper than orjson writes (see _raw)
            raise _BAD() from None
        if not commands:
            raise _BAD()
        return commands

    def encode_reply(self, reply: ReplyDict) -> bytes:
        return orjson.dumps(reply, default=_embed_raw)

    def encode_push(self, push: ReplyDict) -> bytes:
        return orjson.dumps({"push": push}, default=_embed_raw)

    def encode_uni_push(self, push_body: ReplyDict) -> bytes:
        """A push for unidirectional transports, which write the push body without ``{"push": ...}``."""
        return orjson.dumps(push_body, default=_embed_raw)

    def join(self, encoded: Iterable[bytes]) -> bytes:
        return b"\n".join(encoded)


JSON_CODEC: Final = JsonCodec()
