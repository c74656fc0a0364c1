"""The forms a delta subscriber's publications take."""

from __future__ import annotations

import orjson

from broker.delta.bodies import as_json_string, full_body, patch, patch_body
from broker.delta.fossil import apply

DOC = orjson.dumps({"rows": [{"id": i, "name": f"row {i}"} for i in range(40)]})


def test_full_body_is_a_json_string_for_json_and_untouched_for_protobuf() -> None:
    body = {"data": b'{"a": "\\u00e9\\n"}', "offset": 3}
    assert full_body(body, binary=True) is body
    json_form = full_body(body, binary=False)
    assert orjson.loads(json_form["data"]) == body["data"].decode() and json_form["offset"] == 3


def test_patch_applies_and_is_refused_when_not_smaller() -> None:
    edited = DOC.replace(b"row 7", b"row 77")
    delta = patch(DOC, edited)
    assert delta is not None and apply(DOC, delta) == edited
    assert patch(DOC, b'{"tiny": 1}') is None  # nothing to gain over sending it in full
    body = patch_body({"data": edited}, delta, binary=False)
    assert body["delta"] is True and orjson.loads(body["data"]).encode() == delta


def test_json_string_of_non_utf8_data_does_not_raise() -> None:
    assert orjson.loads(as_json_string(b"\xff\xfe")) == "\ufffd\ufffd"
