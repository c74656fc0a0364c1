"""Connections by user in shared memory: one writer, readers in other processes, never a torn or
foreign answer, and None ("ask the shard") whenever the segment cannot be trusted."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from broker.ipc.user_index import STALE_AFTER, UserIndexReader, UserIndexWriter, remove_segment


@pytest.fixture
def name() -> Iterator[str]:
    segment = f"switchboard-test-users-{uuid.uuid4().hex[:8]}"
    yield segment
    remove_segment(segment)


def fragment(user: str, version: int, clients: int = 1) -> bytes:
    body = {f"{user}-c{n}": {"user": user, "version": version} for n in range(clients)}
    return orjson.dumps(body)[1:-1]


def test_put_get_update_and_remove(name: str) -> None:
    writer = UserIndexWriter.create(name, capacity=64, heap_bytes=64 * 1024)
    reader = UserIndexReader.attach(name)
    assert reader is not None
    assert reader.get("nobody") == b""  # known to have no connection: an empty answer, not "ask"
    writer.put("ann", fragment("ann", 1))
    writer.put("bob", fragment("bob", 1, clients=3))
    assert reader.get("ann") == fragment("ann", 1)
    assert orjson.loads(b"{" + reader.get("bob") + b"}") == orjson.loads(b"{" + fragment("bob", 1, 3) + b"}")
    writer.put("ann", fragment("ann", 2))
    assert reader.get("ann") == fragment("ann", 2)
    writer.put("ann", b"")
    assert reader.get("ann") == b""
    assert reader.get("bob") == fragment("bob", 1, 3)
    # Any str a client can send is a user id.
    odd = "\udcff-\u0000-ünï"
    writer.put(odd, fragment("odd", 1))
    assert reader.get(odd) == fragment("odd", 1)
    reader.close()
    writer.remove_segment()


def test_a_full_heap_is_compacted_and_readers_keep_reading(name: str) -> None:
    writer = UserIndexWriter.create(name, capacity=64, heap_bytes=4096)
    reader = UserIndexReader.attach(name)
    assert reader is not None
    for version in range(200):  # 200 rewrites of 3 users through a 4 KiB heap
        for user in ("a", "b", "c"):
            writer.put(user, fragment(user, version))
            assert reader.get(user) == fragment(user, version)
    assert writer.compactions >= 3 and writer.complete
    reader.close()
    writer.remove_segment()


def test_tombstones_are_cleared_by_a_rebuild(name: str) -> None:
    writer = UserIndexWriter.create(name, capacity=16, heap_bytes=64 * 1024)
    reader = UserIndexReader.attach(name)
    assert reader is not None
    for n in range(200):  # each user comes and goes: tombstones pile up until a rebuild
        writer.put(f"u{n}", fragment(f"u{n}", n))
        assert reader.get(f"u{n}") == fragment(f"u{n}", n)
        writer.put(f"u{n}", b"")
        assert reader.get(f"u{n}") == b""
    assert writer.compactions > 0 and writer.complete
    reader.close()
    writer.remove_segment()


def test_users_that_do_not_fit_make_readers_ask_the_shard_until_they_fit_again(name: str) -> None:
    writer = UserIndexWriter.create(name, capacity=16, heap_bytes=64 * 1024)  # 8 users at most
    reader = UserIndexReader.attach(name)
    assert reader is not None
    for n in range(10):
        writer.put(f"u{n}", fragment(f"u{n}", 0))
    assert not writer.complete
    assert reader.get("u0") is None and reader.get("u9") is None  # incomplete: nobody is answered
    for n in range(4):
        writer.put(f"u{n}", b"")
    writer.retry_if_incomplete()
    assert writer.complete
    assert reader.get("u9") == fragment("u9", 0) and reader.get("u0") == b""
    # One user larger than the heap: kept aside, and readers told to ask.
    writer.put("huge", b'"x":"' + b"y" * 70_000 + b'"')
    assert reader.get("u9") is None
    writer.put("huge", b"")
    writer.retry_if_incomplete()
    assert reader.get("u9") == fragment("u9", 0)
    reader.close()
    writer.remove_segment()


def test_a_segment_without_heartbeat_is_not_read(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = UserIndexWriter.create(name, capacity=16, heap_bytes=4096)
    writer.put("ann", fragment("ann", 1))
    reader = UserIndexReader.attach(name)
    assert reader is not None
    assert reader.fresh(time.time_ns())
    assert not reader.fresh(time.time_ns() + int((STALE_AFTER + 0.1) * 1e9))
    writer.beat()
    assert reader.fresh(time.time_ns())
    reader.close()
    writer.remove_segment()
    assert UserIndexReader.attach(name) is None
    assert UserIndexReader.attach("bad/name") is None


def _churn(name: str, rounds: int) -> None:
    writer = UserIndexWriter.create(name, capacity=64, heap_bytes=8 * 1024)
    for version in range(rounds):
        for n in range(20):
            user = f"user-{n}"
            writer.put(
                user, fragment(user, version, clients=1 + (version + n) % 4) if (version + n) % 5 else b""
            )
        writer.beat()
    writer.close()


def test_a_reader_in_another_process_never_sees_a_torn_or_foreign_answer(name: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_churn, args=(name, 3000))
    writer.start()
    try:
        reader = None
        deadline = time.monotonic() + 30
        while reader is None and time.monotonic() < deadline:
            reader = UserIndexReader.attach(name)
        assert reader is not None
        answered = asked = 0
        while writer.is_alive() and time.monotonic() < deadline:
            for n in range(20):
                user = f"user-{n}"
                found = reader.get(user)
                if found is None:
                    asked += 1
                    continue
                answered += 1
                decoded = orjson.loads(b"{" + found + b"}")  # never torn: always whole JSON
                assert all(info["user"] == user for info in decoded.values()), (user, decoded)
                versions = {info["version"] for info in decoded.values()}
                assert len(versions) <= 1, versions  # one write, never a mix
        assert answered > 1000, (answered, asked)
        reader.close()
    finally:
        writer.join(60)
        if writer.is_alive():
            writer.kill()
            writer.join(5)
    assert writer.exitcode == 0


def test_a_new_incarnation_retires_the_old_segment_for_readers_still_attached(name: str) -> None:
    first = UserIndexWriter.create(name, capacity=16, heap_bytes=4096)
    first.put("ann", fragment("ann", 1))
    reader = UserIndexReader.attach(name)
    assert reader is not None and reader.fresh(time.time_ns())
    second = UserIndexWriter.create(name, capacity=16, heap_bytes=4096)  # the restarted shard
    assert not reader.fresh(time.time_ns())  # the old one is not read any more
    assert reader.get("ann") is None
    again = UserIndexReader.attach(name)
    assert again is not None and again.fresh(time.time_ns()) and again.get("ann") == b""
    for segment in (reader, again):
        segment.close()
    first.close()
    second.remove_segment()


def test_the_pages_written_stay_near_one_and_a_half_times_what_is_live(name: str) -> None:
    writer = UserIndexWriter.create(name, capacity=64, heap_bytes=16 * 1024 * 1024)
    reader = UserIndexReader.attach(name)
    assert reader is not None
    payload = b'"c":"' + b"x" * 1000 + b'"'
    for version in range(5000):  # 5 MB written over three ~1 KB users
        user = f"u{version % 3}"
        writer.put(user, payload[:-1] + str(version).encode() + b'"')
    assert writer.touched <= 1.5 * 3 * 1100 + 64 * 1024, writer.touched
    assert reader.get("u1") == payload[:-1] + b'4999"'  # 4999 % 3 == 1: u1 was written last
    reader.close()
    writer.remove_segment()


@pytest.mark.parametrize("pattern", ["u{}", "{}", "user-{:08d}", "tenant:{}:user"])
def test_sequential_user_ids_spread_over_the_table(name: str, pattern: str) -> None:
    """Ids that differ in a digit or two must not pile up in a few slots: with linear probing that made
    every insert walk thousands of slots, and one rebuild of a shard's users took the shard away from its
    event loop long enough to be killed for a missed heartbeat."""
    users = [pattern.format(k) for k in range(0, 120_000, 6)]  # 20,000 ids, as one shard of six holds
    writer = UserIndexWriter.create(name, capacity=65_536, heap_bytes=8 * 1024 * 1024)
    for user in users:
        writer.put(user, fragment(user, 1))
    writer.retry_if_incomplete()  # and a whole rebuild, as after a compaction
    writer._rebuild()
    assert writer.complete
    # Uniform hashing at this load (~0.3 after the rebuild) passes over about one slot per insert.
    assert writer.probes < 3 * len(users), writer.probes
    reader = UserIndexReader.attach(name)
    assert reader is not None
    assert all(reader.get(user) == fragment(user, 1) for user in users[::97])
    reader.close()
    writer.remove_segment()


def test_rewrites_compact_the_heap_without_rehashing_anyone(name: str) -> None:
    """Latency updates rewrite every user now and then: the heap is slid together in place, the
    table is left alone, and every user reads back its latest fragment throughout."""
    users = [f"u{k}" for k in range(2_000)]
    writer = UserIndexWriter.create(name, capacity=8_192, heap_bytes=4 * 1024 * 1024)
    reader = UserIndexReader.attach(name)
    assert reader is not None
    for user in users:
        writer.put(user, fragment(user, 0))
    slots = dict(writer._slots)
    probes = writer.probes
    for version in range(1, 6):
        for user in users:
            writer.put(user, fragment(user, version))
        assert all(reader.get(user) == fragment(user, version) for user in users[::37])
    assert writer.compactions >= 3
    assert writer._slots == slots and writer.probes == probes  # nobody moved in the table
    assert writer.touched <= 1.5 * writer._live + 64 * 1024 + 1024  # the heap stays near 1.5x live
    reader.close()
    writer.remove_segment()
