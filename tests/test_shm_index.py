"""Tests for broker.ipc.shm_index: single-process semantics, reclamation, and real concurrent processes."""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from broker.ipc.shm_index import _H_HEAP_EPOCH, MAX_VALUE, CountIndex, key_hash

PREFIX = f"sbtest-shm-{os.getpid()}-"
SHM_DIR = Path("/dev/shm")
SPAWN = multiprocessing.get_context("spawn")

# Two 60-byte keys with the same crc32 and the same adler32 (found by a birthday search over variants
# of "M" * 60 that preserve adler32), to exercise the full-hash collision path.
TWIN_A = "NKNNKNLOLMMMLOLMMMNKNLOLLOLNKNNKNMMMMMMLOLMMMLOLNKNNKNLOLLOL"
TWIN_B = "NKNMMMLOLMMMMMMLOLMMMLOLMMMNKNNKNNKNLOLMMMLOLLOLMMMLOLLOLMMM"


def leftovers() -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(PREFIX + "*"))


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    yield
    leaked = leftovers()
    for name in leaked:
        CountIndex.remove(name)
    assert not leaked, f"segments left in /dev/shm: {leaked}"


@pytest.fixture
def name() -> str:
    return PREFIX + uuid.uuid4().hex[:12]


@pytest.fixture
def index(name: str) -> Iterator[CountIndex]:
    idx = CountIndex.create(name, capacity=256, columns=4)
    yield idx
    idx.close()
    idx.unlink()


# --------------------------------------------------------------------------- single process


def test_set_get_row_total_nonzero_columns(index: CountIndex) -> None:
    assert index.set("chat:room-1", 0, 3)
    assert index.set("chat:room-1", 2, 5)
    assert index.set("user-42", 1, 1)
    assert index.get("chat:room-1", 0) == 3
    assert index.get("chat:room-1", 1) == 0
    assert index.row("chat:room-1") == [3, 0, 5, 0]
    assert index.total("chat:room-1") == 8
    assert index.nonzero_columns("chat:room-1") == [0, 2]
    assert "user-42" in index and "user-43" not in index
    assert sorted(index.items()) == [("chat:room-1", [3, 0, 5, 0]), ("user-42", [0, 1, 0, 0])]
    assert len(index) == 2
    assert index.set("chat:room-1", 0, 7)  # n -> m without the lock
    assert index.row("chat:room-1") == [7, 0, 5, 0]


def test_missing_key_and_zero_deletes(index: CountIndex) -> None:
    assert index.get("nope", 3) == 0
    assert index.row("nope") == [0, 0, 0, 0]
    assert index.total("nope") == 0 and index.nonzero_columns("nope") == []
    assert index.set("nope", 1, 0)  # setting zero on a missing key records nothing
    assert len(index) == 0
    index.set("k", 0, 1)
    index.set("k", 3, 2)
    index.set("k", 0, 0)
    assert len(index) == 1 and index.row("k") == [0, 0, 0, 2]
    index.set("k", 3, 0)
    assert len(index) == 0 and list(index.items()) == [] and "k" not in index
    # The only slot used was followed by an empty one, so no tombstone remains.
    assert index.stats()["tombstones"] == 0


def test_arguments_are_checked(index: CountIndex, name: str) -> None:
    with pytest.raises(IndexError):
        index.get("k", 4)
    with pytest.raises(IndexError):
        index.set("k", -1, 1)
    with pytest.raises(IndexError):
        index.row("k")[4]
    with pytest.raises(ValueError):
        index.set("k", 0, MAX_VALUE + 1)
    with pytest.raises(ValueError):
        index.set("k", 0, -1)
    with pytest.raises(ValueError):
        index.set("x" * 70000, 0, 1)
    assert index.set("k", 0, MAX_VALUE) and index.get("k", 0) == MAX_VALUE
    with pytest.raises(ValueError):
        CountIndex.create("a/b", capacity=8, columns=1)
    with pytest.raises(ValueError):
        CountIndex.create(name + "x", capacity=8, columns=0)
    with pytest.raises(FileExistsError):
        CountIndex.create(name, capacity=8, columns=1)


def test_non_ascii_and_surrogate_keys(index: CountIndex) -> None:
    for key in ("canal:café", "频道", "emoji:🎉", "lone:\udcff", ""):
        assert index.set(key, 1, 9)
    assert dict(index.items()) == {
        k: [0, 9, 0, 0] for k in ("canal:café", "频道", "emoji:🎉", "lone:\udcff", "")
    }
    assert index.get("lone:\udcff", 1) == 9


def test_capacity_rounds_up_and_attach_reads_header(name: str) -> None:
    idx = CountIndex.create(name, capacity=100, columns=3, heap_bytes=1000)
    try:
        other = CountIndex.attach(name)
        assert (other.capacity, other.columns, other.heap_bytes) == (128, 3, 1000)
        idx.set("a", 2, 4)
        assert other.row("a") == [0, 0, 4]
        other.close()
        other.close()  # idempotent
    finally:
        idx.close()
        idx.unlink()


def test_attach_rejects_a_foreign_segment(name: str) -> None:
    from multiprocessing import shared_memory

    foreign = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        with pytest.raises(ValueError, match="not a CountIndex"):
            CountIndex.attach(name)
    finally:
        foreign.close()
        foreign.unlink()


def test_full_table_returns_false_and_recovers(name: str) -> None:
    idx = CountIndex.create(name, capacity=16, columns=2, max_load=0.5)
    try:
        keys = [f"key-{i}" for i in range(8)]
        assert all(idx.set(k, 0, 1) for k in keys)
        assert not idx.set("one-too-many", 0, 1)
        assert "one-too-many" not in idx
        assert idx.set(keys[0], 1, 5) and idx.set(keys[0], 0, 2)  # existing keys still update
        idx.set(keys[3], 0, 0)
        assert idx.set("one-too-many", 1, 1)
        assert len(idx) == 8
        assert dict(idx.items())["one-too-many"] == [0, 1]
    finally:
        idx.close()
        idx.unlink()


def test_heap_full_of_live_text_returns_false(name: str) -> None:
    idx = CountIndex.create(name, capacity=64, columns=1, heap_bytes=80)
    try:
        assert idx.set("a" * 30, 0, 1) and idx.set("b" * 30, 0, 1)
        assert not idx.set("c" * 30, 0, 1)  # 90 bytes of live text > 7/8 of 80
        idx.set("a" * 30, 0, 0)
        assert idx.set("c" * 30, 0, 1)  # compaction reclaimed "a"'s text
        assert dict(idx.items()) == {"b" * 30: [1], "c" * 30: [1]}
    finally:
        idx.close()
        idx.unlink()


def check_invariants(idx: CountIndex, model: dict[str, list[int]]) -> None:
    assert dict(idx.items()) == model
    for key, row in model.items():
        assert idx.row(key) == row
    stats = idx.stats()
    assert stats["live"] == len(model)
    assert stats["heap_live"] == sum(len(k.encode()) for k in model)
    assert stats["live"] + stats["tombstones"] <= stats["capacity"]


def test_many_keys_with_churn_against_a_model(name: str) -> None:
    idx = CountIndex.create(name, capacity=1024, columns=3, heap_bytes=10000)
    rnd = random.Random(5)
    model: dict[str, list[int]] = {}
    try:
        for step in range(30000):
            key = f"chat:room-{rnd.randrange(700)}"
            column = rnd.randrange(3)
            value = rnd.choice((0, 0, 1, 2, 3, 1000))
            row = model.get(key, [0, 0, 0])
            if idx.set(key, column, value):
                row[column] = value
            else:
                assert value and not any(row) and len(model) == idx.stats()["max_live"]
            if any(row):
                model[key] = row
            else:
                model.pop(key, None)
            if step % 3000 == 0:
                check_invariants(idx, model)
        check_invariants(idx, model)
        assert idx.stats()["heap_epoch"] > 0, "the heap should have been compacted"
    finally:
        idx.close()
        idx.unlink()


def test_unique_keys_forever_do_not_fill_the_table_with_tombstones(name: str) -> None:
    """Channels come and go: tombstones must be purged so that inserts keep succeeding."""
    idx = CountIndex.create(name, capacity=256, columns=1)
    rnd = random.Random(9)
    live: list[str] = []
    try:
        for n in range(20000):
            if (len(live) < 100 and rnd.random() < 0.55) or not live:
                key = f"ephemeral-{n}"
                assert idx.set(key, 0, 1), idx.stats()
                live.append(key)
            else:
                key = live.pop(rnd.randrange(len(live)))
                assert idx.set(key, 0, 0)
            stats = idx.stats()
            assert stats["live"] + stats["tombstones"] <= stats["max_fill"] + 1
        assert sorted(k for k, _ in idx.items()) == sorted(live)
        for key in live:
            assert idx.get(key, 0) == 1
    finally:
        idx.close()
        idx.unlink()


def test_keys_with_the_same_64_bit_hash_stay_apart(index: CountIndex) -> None:
    assert TWIN_A != TWIN_B and key_hash(TWIN_A.encode()) == key_hash(TWIN_B.encode())
    assert zlib.crc32(TWIN_A.encode()) == zlib.crc32(TWIN_B.encode())
    index.set(TWIN_A, 0, 1)
    index.set(TWIN_B, 0, 5)  # same column, A nonzero: B must get a row of its own
    index.set(TWIN_B, 0, 0)
    assert index.row(TWIN_A) == [1, 0, 0, 0] and len(index) == 1
    index.set(TWIN_B, 1, 2)
    assert index.row(TWIN_A) == [1, 0, 0, 0]
    assert index.row(TWIN_B) == [0, 2, 0, 0]
    assert dict(index.items()) == {TWIN_A: [1, 0, 0, 0], TWIN_B: [0, 2, 0, 0]}
    index.set(TWIN_B, 1, 3)
    index.set(TWIN_A, 0, 0)
    assert index.row(TWIN_A) == [0, 0, 0, 0] and index.row(TWIN_B) == [0, 3, 0, 0]
    assert len(index) == 1


def test_reset_column(index: CountIndex) -> None:
    index.set("a", 1, 4)
    index.set("a", 2, 1)
    index.set("b", 1, 7)
    index.reset_column(1)
    assert dict(index.items()) == {"a": [0, 0, 1, 0]}
    assert len(index) == 1


# --------------------------------------------------------------------------- several processes
# Children are module-level functions started with the "spawn" method, like the real shards.


def writer_child(name: str, column: int, keys: list[str], start: Event, seconds: float) -> None:
    """Write increasing counts (low byte repeats the counter: a torn read would not) and churn keys."""
    idx = CountIndex.attach(name)
    start.wait(10)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and n < 1 << 23:
        n += 1
        value = n << 8 | (n & 0xFF)
        for key in keys:
            if not idx.set(key, column, value):
                os._exit(3)
        # Short-lived keys: inserts, deletes, tombstone reuse and purges while the reader probes.
        temp = f"temp-{column}-{n % 50}"
        if not idx.set(temp, column, 0 if idx.get(temp, column) else 1):
            os._exit(4)
    idx.close()


def test_reader_never_sees_torn_decreasing_or_missing_counts(name: str) -> None:
    idx = CountIndex.create(name, capacity=512, columns=2)
    keys = [f"stable-{i}" for i in range(40)]
    for key in keys:  # both columns start at 1 so that every key is live before the race starts
        idx.set(key, 0, 1 << 8 | 1)
        idx.set(key, 1, 1 << 8 | 1)
    start = SPAWN.Event()
    writers = [SPAWN.Process(target=writer_child, args=(name, c, keys, start, 1.5)) for c in (0, 1)]
    try:
        for w in writers:
            w.start()
        start.set()
        last = {key: [0, 0] for key in keys}
        reads = 0
        deadline = time.monotonic() + 10
        while any(w.is_alive() for w in writers) and time.monotonic() < deadline:
            for key in keys:
                row = idx.row(key)
                reads += 1
                for column, value in enumerate(row):
                    assert value & 0xFF == (value >> 8) & 0xFF, f"torn value {value:#x}"
                    assert value >= last[key][column], f"{key}[{column}] went back"
                    assert value, f"{key} missing"
                last[key] = row
            if reads % 4000 == 0:
                for key, row in idx.items():
                    assert key.startswith(("stable-", "temp-")) and len(row) == 2
        for w in writers:
            w.join(10)
            assert w.exitcode == 0
        assert reads > 1000
        assert all(row[0] > 1 << 8 and row[1] > 1 << 8 for row in last.values())
    finally:
        for w in writers:
            if w.is_alive():
                w.kill()
        idx.close()
        idx.unlink()


def inserter_child(name: str, column: int, count: int, start: Event) -> None:
    idx = CountIndex.attach(name)
    start.wait(10)
    for i in range(count):
        if not idx.set(f"w{column}-key-{i}", column, i + 1):
            os._exit(3)
    idx.close()


def test_concurrent_inserts_of_new_keys_are_not_lost(name: str) -> None:
    idx = CountIndex.create(name, capacity=8192, columns=2, heap_bytes=64000)
    start = SPAWN.Event()
    count = 2000
    children = [SPAWN.Process(target=inserter_child, args=(name, c, count, start)) for c in (0, 1)]
    try:
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert len(idx) == 2 * count
        expected = {
            f"w{c}-key-{i}": [i + 1 if c == 0 else 0, i + 1 if c == 1 else 0]
            for c in (0, 1)
            for i in range(count)
        }
        assert dict(idx.items()) == expected
    finally:
        idx.close()
        idx.unlink()


def attach_child(name: str) -> None:
    idx = CountIndex.attach(name)
    if (idx.capacity, idx.columns) != (64, 3) or idx.row("from-parent") != [5, 0, 0]:
        os._exit(3)
    idx.set("from-child", 2, 11)
    idx.close()


def test_attach_by_name_from_another_process(name: str) -> None:
    idx = CountIndex.create(name, capacity=64, columns=3)
    try:
        idx.set("from-parent", 0, 5)
        child = SPAWN.Process(target=attach_child, args=(name,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert idx.row("from-child") == [0, 0, 11]
        # The child's exit must not have removed the segment (no resource tracker involved).
        assert (SHM_DIR / name).exists()
    finally:
        idx.close()
        idx.unlink()


def crashing_child(name: str) -> None:
    """Die holding the lock in the middle of a heap compaction: one key's text is overwritten."""
    idx = CountIndex.attach(name)
    with idx._lock():
        header, refs, heap = idx._header, idx._refs, idx._heap
        header[_H_HEAP_EPOCH] |= 1  # heap epoch odd: compaction in progress
        ref = refs[next(i for i, w in enumerate(idx._hashes.tolist()) if w > 1)]
        heap[ref >> 16 : (ref >> 16) + (ref & 0xFFFF)] = b"#" * (ref & 0xFFFF)
        os._exit(0)


def test_repair_after_a_process_died_holding_the_lock(name: str) -> None:
    idx = CountIndex.create(name, capacity=64, columns=1)
    try:
        for i in range(10):
            idx.set(f"key-{i}", 0, i + 1)
        child = SPAWN.Process(target=crashing_child, args=(name,))
        child.start()
        child.join(30)
        assert idx.set("after", 0, 1)  # takes the lock: repairs first
        items = dict(idx.items())
        assert len(items) == 10 and items["after"] == [1]
        assert all(items[k] == [int(k[4:]) + 1] for k in items if k != "after")
        assert idx.stats()["heap_epoch"] % 2 == 0 and len(idx) == 10
    finally:
        idx.close()
        idx.unlink()


def test_unlink_removes_the_name_but_not_existing_mappings(name: str) -> None:
    idx = CountIndex.create(name, capacity=16, columns=1)
    other = CountIndex.attach(name)
    idx.set("k", 0, 2)
    assert (SHM_DIR / name).exists()
    idx.unlink()
    idx.unlink()  # idempotent
    assert not (SHM_DIR / name).exists()
    with pytest.raises(FileNotFoundError):
        CountIndex.attach(name)
    assert other.get("k", 0) == 2  # still mapped
    other.close()
    idx.close()
    assert not CountIndex.remove(name)


def test_replace_a_leftover_segment(name: str) -> None:
    old = CountIndex.create(name, capacity=16, columns=1)
    old.set("stale", 0, 1)
    old.close()  # a crashed run: closed but never unlinked
    new = CountIndex.create(name, capacity=16, columns=2, replace=True)
    try:
        assert new.columns == 2 and "stale" not in new
    finally:
        new.close()
        new.unlink()
