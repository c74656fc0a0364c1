from __future__ import annotations

import orjson
import pytest

from broker.jsonlimits import ENVELOPE_LEVELS, loads_writable


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("data", [b"{}", b"1", b'"s"', b'{"a":[1,{"b":null}]}', nested(200)])
def test_ordinary_values_pass(data: bytes) -> None:
    assert loads_writable(data) == orjson.loads(data)


@pytest.mark.parametrize("depth", [255 - ENVELOPE_LEVELS, 256, 1_024])
def test_values_too_deep_to_write_again_are_refused(depth: int) -> None:
    with pytest.raises(ValueError):
        loads_writable(nested(depth))


@pytest.mark.parametrize("data", [b"{bad", nested(1_025), b""])
def test_malformed_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        loads_writable(data)


def test_a_writable_value_survives_its_envelopes() -> None:
    value = loads_writable(nested(254 - ENVELOPE_LEVELS - 1))
    orjson.dumps({"m": "publish", "p": {"data": value}})  # what the router sends to a shard
