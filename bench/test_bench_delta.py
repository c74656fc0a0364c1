"""Micro-benchmarks for delta compression and config loading (``make bench``).

* fossil encoding of a ~4 KB JSON document with one field edited (the case delta is for), of 64 KB of
  bytes with one insertion, and of 64 KB with nothing in common (the worst case: one index lookup per
  byte, no copy) — each is done once per publication on a shard with delta subscribers;
* the same with the server's limit (a delta over half the payload is not sent), which ends the scan
  early;
* building the config from a v6 document and from its v4/v5 equivalent (each process does it at start).
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from broker.config import build
from broker.delta.fossil import encode, encode_within

pytestmark = pytest.mark.slow

DOC = orjson.dumps({"rows": [{"id": i, "title": f"row {i}", "price": i * 3, "stock": 10} for i in range(80)]})
EDITED = DOC.replace(b'"price":90,', b'"price":91,')
BIG = os.urandom(65536)
BIG_EDITED = BIG[:30000] + b"inserted" + BIG[30000:]
UNRELATED = os.urandom(65536)
assert 3500 < len(DOC) < 4500 and EDITED != DOC

V6: dict[str, Any] = {
    "client": {"token": {"hmac_secret_key": "k"}, "allowed_origins": ["https://a"]},
    "http_api": {"key": "k"},
    "channel": {"namespaces": [{"name": "chat", "presence": True, "history_size": 10, "history_ttl": "5m"}]},
}
V5: dict[str, Any] = {
    "token_hmac_secret_key": "k",
    "allowed_origins": ["https://a"],
    "api_key": "k",
    "namespaces": [{"name": "chat", "presence": True, "history_size": 10, "history_ttl": "5m"}],
}


def test_fossil_4kb_document_one_edit(benchmark: Any) -> None:
    delta = benchmark(encode, DOC, EDITED)
    assert len(delta) < 50


def test_fossil_64kb_one_insert(benchmark: Any) -> None:
    benchmark(encode, BIG, BIG_EDITED)


def test_fossil_64kb_nothing_in_common(benchmark: Any) -> None:
    benchmark(encode, BIG, UNRELATED)


def test_fossil_64kb_nothing_in_common_with_the_servers_limit(benchmark: Any) -> None:
    assert benchmark(encode_within, BIG, UNRELATED, len(UNRELATED) // 2) is None


def test_config_build_v6(benchmark: Any) -> None:
    benchmark(build, V6, {}, {})


def test_config_build_v5(benchmark: Any) -> None:
    benchmark(build, V5, {}, {})
