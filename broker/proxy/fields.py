"""What every proxy's requests and answers share: payload fields, integers, malformed answers."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


class MalformedAnswer(ValueError):
    """A proxy answer that is not one of Centrifugo's shapes."""


def put_data(request: dict[str, Any], data: bytes | None, binary: bool) -> None:
    """The client's payload: raw JSON as ``data``, or base64 as ``b64data`` with binary encoding.

    A Protobuf client's payload need not be JSON; such bytes go as ``b64data`` whatever the encoding,
    so that the request stays valid JSON."""
    if not data:
        return
    if not binary:
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            binary = True
    if binary:
        request["b64data"] = base64.b64encode(data).decode()
    else:
        request["data"] = orjson.Fragment(data)


def int_field(spec: dict[str, Any], key: str) -> int:
    value = spec.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedAnswer(f"{key} must be an integer")
    return value


def raw_field(result: dict[str, Any], key: str) -> bytes | None:
    """``key`` as raw JSON bytes, from the JSON value or from ``b64<key>``."""
    if result.get(key) is not None:
        return orjson.dumps(result[key])
    encoded = result.get("b64" + key)
    if encoded is None:
        return None
    if not isinstance(encoded, str):
        raise MalformedAnswer(f"b64{key} must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedAnswer(f"b64{key} is not base64") from None
