"""Memory history engine costs per operation (run with ``pytest -m slow bench/test_bench_engine.py -s``)."""

from __future__ import annotations

import time

import pytest

from broker.engine import MemoryStreams, StreamPosition
from broker.publication import Publication

pytestmark = pytest.mark.slow


def _per_op(label: str, count: int, started: float) -> float:
    micros = (time.perf_counter() - started) / count * 1e6
    print(f"{label}: {micros:.2f} µs/op")
    return micros


def test_bench_engine() -> None:
    engine = MemoryStreams()
    channels = [f"chat:{i}" for i in range(10_000)]
    rounds = 20
    started = time.perf_counter()
    for r in range(rounds):
        for ch in channels:
            engine.publish(
                Publication(ch, b"x" * 100),
                history_size=1000,
                history_ttl=300.0,
                history_meta_ttl=3600.0,
                now=r,
            )
    publish_us = _per_op("publish (10k channels)", rounds * len(channels), started)

    hot = "hot"
    for _ in range(5000):
        engine.publish(
            Publication(hot, b"x"), history_size=5000, history_ttl=300.0, history_meta_ttl=3600.0, now=0
        )
    top = engine.position(hot, now=1.0, history_meta_ttl=3600.0)
    reads = 20_000
    started = time.perf_counter()
    for _ in range(reads):
        engine.recover(
            hot, since=StreamPosition(top.offset - 10, top.epoch), limit=300, now=1.0, history_meta_ttl=3600.0
        )
    recover_us = _per_op("recover 10 of 5000", reads, started)

    started = time.perf_counter()
    dropped = engine.sweep(rounds + 300.0)
    print(f"sweep of {dropped} expirations: {(time.perf_counter() - started) * 1e3:.1f} ms")
    # Loose ceilings: a regression to scanning the deque or the whole channel map would blow through them.
    assert publish_us < 50
    assert recover_us < 50
