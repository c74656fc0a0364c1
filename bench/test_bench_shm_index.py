"""Micro-benchmarks for the shared-memory count index (``pytest -m slow bench/test_bench_shm_index.py``).

The table holds 20,000 keys in 131,072 slots (load 0.15, like the router's channel index at rest). Reads
are what the router does per request; ``set`` on an existing key is what a shard does per (un)subscribe;
inserting a new key takes the cross-process lock. ``dict.get`` is the in-process baseline.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker.ipc.shm_index import CountIndex

pytestmark = pytest.mark.slow

KEYS = [f"chat:room-{i}" for i in range(20000)]
HIT = KEYS[12345]
MISS = "chat:room-absent"


def make(columns: int, capacity: int = 1 << 17) -> CountIndex:
    idx = CountIndex.create(
        f"sbbench-{os.getpid()}-{uuid.uuid4().hex[:8]}", capacity=capacity, columns=columns
    )
    for i, key in enumerate(KEYS):
        idx.set(key, i % columns, i + 1)
    return idx


@pytest.fixture(params=[2, 8], ids=lambda c: f"{c}cols")
def index(request: pytest.FixtureRequest) -> Iterator[CountIndex]:
    idx = make(request.param)
    yield idx
    idx.close()
    idx.unlink()


@pytest.fixture
def index2() -> Iterator[CountIndex]:
    idx = make(2)
    yield idx
    idx.close()
    idx.unlink()


def test_get_hit(benchmark: Any, index2: CountIndex) -> None:
    assert benchmark(index2.get, HIT, 1) == 12346


def test_get_miss(benchmark: Any, index2: CountIndex) -> None:
    assert benchmark(index2.get, MISS, 1) == 0


def test_row(benchmark: Any, index: CountIndex) -> None:
    assert sum(benchmark(index.row, HIT)) == 12346


def test_total(benchmark: Any, index2: CountIndex) -> None:
    assert benchmark(index2.total, HIT) == 12346


def test_nonzero_columns(benchmark: Any, index: CountIndex) -> None:
    assert len(benchmark(index.nonzero_columns, HIT)) == 1


def test_set_existing(benchmark: Any, index2: CountIndex) -> None:
    values = itertools.cycle(range(1, 1000))
    benchmark(lambda: index2.set(HIT, 1, next(values)))


def test_insert_new_key(benchmark: Any) -> None:
    """A fresh key each round: hashing, the lock (two flock calls), the probe and the publication."""
    idx = make(2, capacity=1 << 18)
    fresh = (f"chat:new-{i}" for i in itertools.count())
    try:
        benchmark.pedantic(idx.set, setup=lambda: ((next(fresh), 0, 1), {}), rounds=50000, iterations=1)
    finally:
        idx.close()
        idx.unlink()


def test_insert_then_delete(benchmark: Any, index2: CountIndex) -> None:
    def cycle() -> None:
        index2.set("chat:ephemeral", 0, 1)
        index2.set("chat:ephemeral", 0, 0)

    benchmark(cycle)


def test_items(benchmark: Any, index2: CountIndex) -> None:
    assert benchmark.pedantic(lambda: sum(1 for _ in index2.items()), rounds=5) == len(KEYS)


def test_dict_get_baseline(benchmark: Any) -> None:
    table = {key: [i + 1, 0] for i, key in enumerate(KEYS)}
    assert benchmark(table.get, HIT) == [12346, 0]
