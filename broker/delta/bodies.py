"""What a delta subscriber receives: publication bodies in the form the SDKs decode.

Once a subscription negotiated delta (``delta: "fossil"`` asked, the namespace's ``allowed_delta_types``
allowing it), every publication it receives — live, recovered, held during positioning — carries its
``data`` as the SDK's delta decoder expects: with the JSON protocol a JSON *string* (the payload's JSON
text, or the fossil delta's bytes read as UTF-8), with Protobuf the raw bytes; ``delta: true`` marks a
delta against the previous publication the subscriber received. A subscriber that did not receive that
previous one (it just subscribed, recovered, or missed one) gets the full payload, which the SDK then
uses as its base.
"""

from __future__ import annotations

from typing import Any

import orjson

from broker.delta.fossil import encode_within

# A subscription's base before its subscribe reply went out: what it receives until then is full and
# does not become its base (the SDK may not have counted it).
PENDING = -1
# No base yet: the next publication is sent full.
NO_BASE = 0
ALLOWED_TYPES = frozenset({"fossil"})


def as_json_string(data: bytes) -> bytes:
    """``data`` as the raw JSON text of a JSON string holding it (the JSON protocol's delta form)."""
    return orjson.dumps(data.decode("utf-8", errors="replace"))


def full_body(body: dict[str, Any], binary: bool) -> dict[str, Any]:
    """A publication reply body (``data`` as bytes) as a delta subscriber receives it in full."""
    if binary:
        return body
    return {**body, "data": as_json_string(body.get("data", b""))}


def patch(previous: bytes, data: bytes) -> bytes | None:
    """The fossil delta from ``previous`` to ``data``, or None when sending ``data`` itself is better:
    the delta would be more than half its size, or (for the JSON protocol, which carries it as text) is
    not valid UTF-8."""
    delta = encode_within(previous, data, len(data) // 2)
    if delta is None:
        return None
    try:
        delta.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return delta


def patch_body(body: dict[str, Any], delta: bytes, binary: bool) -> dict[str, Any]:
    return {**body, "data": delta if binary else as_json_string(delta), "delta": True}
