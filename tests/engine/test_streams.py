"""The memory engine's streams (sans-I/O). Time is the ``now`` the test passes: no loop, no sleeping."""

from __future__ import annotations

import itertools

import pytest

from broker import errors
from broker.engine import MemoryStreams, PublishResult, StreamPosition, new_epoch
from broker.publication import Publication

SIZE = 10
TTL = 60.0
META_TTL = 3600.0
CH = "chat:1"


def make_engine() -> MemoryStreams:
    counter = itertools.count(1)
    # Predictable epochs make "a new epoch" assertions exact.
    return MemoryStreams(epoch_factory=lambda: f"epoch{next(counter):03d}")


@pytest.fixture
def engine() -> MemoryStreams:
    return make_engine()


def pub(
    engine: MemoryStreams, data: bytes = b"x", *, now: float = 0.0, channel: str = CH, **kw: object
) -> PublishResult:
    options: dict[str, object] = {"history_size": SIZE, "history_ttl": TTL, "history_meta_ttl": META_TTL}
    options.update(kw)
    return engine.publish(Publication(channel, data), now=now, **options)  # type: ignore[arg-type]


def hist(
    engine: MemoryStreams,
    *,
    limit: int = -1,
    since: StreamPosition | None = None,
    reverse: bool = False,
    now: float = 0.0,
    channel: str = CH,
) -> tuple[list[int], StreamPosition]:
    result = engine.history(
        channel, limit=limit, since=since, reverse=reverse, now=now, history_meta_ttl=META_TTL
    )
    return [p.offset for p in result.publications], result.position


# -- publish ----------------------------------------------------------------------------------------


def test_offsets_start_at_one_and_grow_by_one(engine: MemoryStreams) -> None:
    results = [pub(engine, bytes([i])) for i in range(5)]
    assert [r.offset for r in results] == [1, 2, 3, 4, 5]
    assert {r.epoch for r in results} == {"epoch001"}
    assert not any(r.duplicate for r in results)
    offsets, position = hist(engine)
    assert offsets == [1, 2, 3, 4, 5]
    assert position == StreamPosition(5, "epoch001")


def test_publish_sets_offset_and_epoch_on_the_publication(engine: MemoryStreams) -> None:
    p = Publication(CH, b"hello")
    engine.publish(p, history_size=SIZE, history_ttl=TTL, history_meta_ttl=META_TTL, now=0.0)
    assert (p.offset, p.epoch) == (1, "epoch001")
    stored = engine.history(CH, limit=-1, since=None, reverse=False, now=1.0, history_meta_ttl=META_TTL)
    assert stored.publications[0] is p


def test_trimmed_to_history_size(engine: MemoryStreams) -> None:
    for i in range(25):
        pub(engine, now=float(i))
    offsets, position = hist(engine, now=25.0)
    assert offsets == list(range(16, 26))
    assert position.offset == 25


def test_smaller_history_size_trims_on_next_publish(engine: MemoryStreams) -> None:
    for _ in range(10):
        pub(engine)
    pub(engine, history_size=3)
    assert hist(engine)[0] == [9, 10, 11]


def test_channels_are_independent(engine: MemoryStreams) -> None:
    pub(engine, channel="a")
    pub(engine, channel="a")
    pub(engine, channel="b")
    assert hist(engine, channel="a")[1] == StreamPosition(2, "epoch001")
    assert hist(engine, channel="b")[1] == StreamPosition(1, "epoch002")


def test_channel_without_history(engine: MemoryStreams) -> None:
    p = Publication(CH, b"x")
    result = engine.publish(p, history_size=0, history_ttl=0.0, history_meta_ttl=META_TTL, now=0.0)
    assert result == PublishResult(0, "", False)
    assert (p.offset, p.epoch) == (0, "")
    assert engine.num_streams == 0  # nothing created for it
    # Size without ttl (or the reverse) is no history either.
    assert pub(engine, history_ttl=0.0) == PublishResult(0, "", False)
    assert pub(engine, history_size=0) == PublishResult(0, "", False)
    assert engine.num_streams == 0


def test_skip_history_stores_nothing_and_gets_no_offset(engine: MemoryStreams) -> None:
    pub(engine)
    p = Publication(CH, b"skipped")
    result = engine.publish(
        p, history_size=SIZE, history_ttl=TTL, history_meta_ttl=META_TTL, now=1.0, skip_history=True
    )
    assert result == PublishResult(0, "", False)
    assert p.offset == 0 and p.epoch == ""
    assert pub(engine, now=2.0).offset == 2  # the skipped one did not take an offset
    assert hist(engine, now=2.0)[0] == [1, 2]


def test_skip_history_does_not_keep_the_stream_alive(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    pub(engine, now=TTL - 1, skip_history=True)
    assert hist(engine, now=TTL)[0] == []


# -- idempotency ------------------------------------------------------------------------------------


def test_idempotency_key_within_window_is_a_duplicate(engine: MemoryStreams) -> None:
    first = pub(engine, now=0.0, idempotency_key="k1", history_ttl=1000.0)
    again = Publication(CH, b"again")
    second = engine.publish(
        again,
        history_size=SIZE,
        history_ttl=1000.0,
        history_meta_ttl=META_TTL,
        now=299.0,
        idempotency_key="k1",
    )
    assert second == PublishResult(first.offset, first.epoch, True)
    assert again.offset == 0  # not stored, not numbered
    assert hist(engine, now=299.0)[0] == [1]


def test_idempotency_key_after_window_publishes_again(engine: MemoryStreams) -> None:
    pub(engine, now=0.0, idempotency_key="k1", history_ttl=1000.0)
    result = pub(engine, now=300.0, idempotency_key="k1", history_ttl=1000.0)
    assert result == PublishResult(2, "epoch001", False)
    # The window restarts from the second publish.
    assert pub(engine, now=599.0, idempotency_key="k1", history_ttl=1000.0).duplicate


def test_idempotency_keys_are_per_channel_and_custom_ttl(engine: MemoryStreams) -> None:
    pub(engine, channel="a", idempotency_key="k")
    assert not pub(engine, channel="b", idempotency_key="k").duplicate
    pub(engine, channel="c", idempotency_key="short", idempotency_ttl=5.0)
    assert pub(engine, channel="c", idempotency_key="short", now=4.9).duplicate
    assert not pub(engine, channel="c", idempotency_key="short", now=5.0).duplicate


def test_idempotency_without_history(engine: MemoryStreams) -> None:
    first = pub(engine, history_size=0, idempotency_key="k")
    assert first == PublishResult(0, "", False)
    assert pub(engine, history_size=0, idempotency_key="k", now=10.0) == PublishResult(0, "", True)


# -- expiry -----------------------------------------------------------------------------------------


def test_ttl_expiry_drops_publications_and_keeps_position(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    pub(engine, now=10.0)
    assert hist(engine, now=10.0 + TTL - 0.1)[0] == [1, 2]  # ttl counts from the last publish
    offsets, position = hist(engine, now=10.0 + TTL)
    assert offsets == []
    assert position == StreamPosition(2, "epoch001")
    # The next publish continues the same epoch.
    assert pub(engine, now=100.0) == PublishResult(3, "epoch001", False)
    assert hist(engine, now=100.0)[0] == [3]


def test_meta_expiry_restarts_the_stream(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    pub(engine, now=0.0)
    assert pub(engine, now=META_TTL) == PublishResult(1, "epoch002", False)
    assert hist(engine, now=META_TTL)[0] == [1]


def test_reads_keep_the_meta_alive(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    engine.position(CH, now=META_TTL - 1, history_meta_ttl=META_TTL)
    assert engine.position(CH, now=2 * META_TTL - 2, history_meta_ttl=META_TTL) == StreamPosition(
        1, "epoch001"
    )
    assert engine.position(CH, now=4 * META_TTL, history_meta_ttl=META_TTL) == StreamPosition(0, "epoch002")


def test_meta_ttl_shorter_than_ttl_does_not_lose_publications(engine: MemoryStreams) -> None:
    pub(engine, now=0.0, history_ttl=100.0, history_meta_ttl=10.0)
    assert hist(engine, now=50.0)[1] == StreamPosition(1, "epoch001")


def test_meta_ttl_zero_never_expires(engine: MemoryStreams) -> None:
    pub(engine, now=0.0, history_meta_ttl=0.0)
    far = 10.0**9
    assert engine.position(CH, now=far, history_meta_ttl=0.0) == StreamPosition(1, "epoch001")


# -- position ---------------------------------------------------------------------------------------


def test_position_on_empty_channel_creates_a_stable_epoch(engine: MemoryStreams) -> None:
    first = engine.position(CH, now=0.0, history_meta_ttl=META_TTL)
    assert first == StreamPosition(0, "epoch001")
    assert engine.position(CH, now=1.0, history_meta_ttl=META_TTL) == first
    # A client positioned on the empty stream sees the first publish continue it.
    assert pub(engine, now=2.0) == PublishResult(1, "epoch001", False)


def test_new_epoch_shape() -> None:
    epochs = {new_epoch() for _ in range(100)}
    assert len(epochs) == 100
    assert all(len(e) == 8 and e.isalnum() and e.isascii() for e in epochs)
    assert MemoryStreams().position(CH, now=0.0, history_meta_ttl=META_TTL).epoch.isalnum()


# -- history ----------------------------------------------------------------------------------------


@pytest.fixture
def seven(engine: MemoryStreams) -> MemoryStreams:
    for _ in range(7):
        pub(engine)
    return engine


def test_limit_zero_gives_only_the_position(seven: MemoryStreams) -> None:
    assert hist(seven, limit=0) == ([], StreamPosition(7, "epoch001"))


def test_limit_all_and_n(seven: MemoryStreams) -> None:
    assert hist(seven, limit=-1)[0] == [1, 2, 3, 4, 5, 6, 7]
    assert hist(seven, limit=3)[0] == [1, 2, 3]
    assert hist(seven, limit=100)[0] == [1, 2, 3, 4, 5, 6, 7]


def test_since(seven: MemoryStreams) -> None:
    assert hist(seven, since=StreamPosition(4, "epoch001"))[0] == [5, 6, 7]
    assert hist(seven, since=StreamPosition(4, ""))[0] == [5, 6, 7]  # empty epoch: not checked
    assert hist(seven, since=StreamPosition(4, "epoch001"), limit=2)[0] == [5, 6]
    assert hist(seven, since=StreamPosition(0, "epoch001"))[0] == [1, 2, 3, 4, 5, 6, 7]
    assert hist(seven, since=StreamPosition(7, "epoch001"))[0] == []
    assert hist(seven, since=StreamPosition(50, "epoch001"))[0] == []


def test_since_before_what_is_stored_starts_at_the_oldest(engine: MemoryStreams) -> None:
    for _ in range(15):
        pub(engine)
    assert hist(engine, since=StreamPosition(2, "epoch001"), limit=3)[0] == [6, 7, 8]


def test_since_with_another_epoch_is_unrecoverable(seven: MemoryStreams) -> None:
    with pytest.raises(errors.ClientError) as raised:
        hist(seven, since=StreamPosition(3, "other"))
    assert raised.value.code == 112
    with pytest.raises(errors.ClientError) as raised:
        hist(seven, since=StreamPosition(3, "other"), limit=0)
    assert raised.value.code == 112


def test_reverse(seven: MemoryStreams) -> None:
    assert hist(seven, reverse=True)[0] == [7, 6, 5, 4, 3, 2, 1]
    assert hist(seven, reverse=True, limit=3)[0] == [7, 6, 5]
    assert hist(seven, reverse=True, limit=0)[0] == []


def test_reverse_with_since_pages_backwards(seven: MemoryStreams) -> None:
    assert hist(seven, reverse=True, since=StreamPosition(5, "epoch001"))[0] == [4, 3, 2, 1]
    assert hist(seven, reverse=True, since=StreamPosition(5, "epoch001"), limit=2)[0] == [4, 3]
    assert hist(seven, reverse=True, since=StreamPosition(3, "epoch001"), limit=2)[0] == [2, 1]
    assert hist(seven, reverse=True, since=StreamPosition(1, "epoch001"))[0] == []
    assert hist(seven, reverse=True, since=StreamPosition(100, "epoch001"), limit=2)[0] == [7, 6]


def test_reverse_since_offset_zero_is_a_bad_request(seven: MemoryStreams) -> None:
    with pytest.raises(errors.ClientError) as raised:
        hist(seven, reverse=True, since=StreamPosition(0, "epoch001"))
    assert raised.value.code == 107


def test_history_of_unknown_channel(engine: MemoryStreams) -> None:
    assert hist(engine, channel="nobody") == ([], StreamPosition(0, "epoch001"))


def test_reading_from_either_end_of_a_long_stream(engine: MemoryStreams) -> None:
    for _ in range(5000):
        pub(engine, history_size=3000)
    # Stored: 2001..5000.
    assert hist(engine, since=StreamPosition(2001, ""), limit=3)[0] == [2002, 2003, 2004]
    assert hist(engine, since=StreamPosition(4996, ""))[0] == [4997, 4998, 4999, 5000]
    assert hist(engine, since=StreamPosition(3500, ""), limit=2)[0] == [3501, 3502]
    assert hist(engine, reverse=True, since=StreamPosition(2004, ""))[0] == [2003, 2002, 2001]
    assert hist(engine, reverse=True, since=StreamPosition(4000, ""), limit=2)[0] == [3999, 3998]
    assert len(hist(engine)[0]) == 3000


# -- remove_history ---------------------------------------------------------------------------------


def test_remove_history_keeps_the_position(seven: MemoryStreams) -> None:
    seven.remove_history(CH, now=1.0)
    assert hist(seven, now=1.0) == ([], StreamPosition(7, "epoch001"))
    assert pub(seven, now=2.0).offset == 8
    seven.remove_history("never-published", now=3.0)  # no error, nothing created
    assert seven.num_streams == 1


# -- recovery ---------------------------------------------------------------------------------------


def recover(
    engine: MemoryStreams, offset: int, epoch: str = "epoch001", limit: int = 300
) -> tuple[list[int], StreamPosition, bool]:
    pubs, position, recovered = engine.recover(
        CH, since=StreamPosition(offset, epoch), limit=limit, now=0.0, history_meta_ttl=META_TTL
    )
    return [p.offset for p in pubs], position, recovered


def test_recover_exact(seven: MemoryStreams) -> None:
    assert recover(seven, 4) == ([5, 6, 7], StreamPosition(7, "epoch001"), True)
    assert recover(seven, 4, epoch="") == ([5, 6, 7], StreamPosition(7, "epoch001"), True)
    assert recover(seven, 0) == ([1, 2, 3, 4, 5, 6, 7], StreamPosition(7, "epoch001"), True)


def test_recover_at_top_with_nothing_missed(seven: MemoryStreams) -> None:
    assert recover(seven, 7) == ([], StreamPosition(7, "epoch001"), True)


def test_recover_empty_stream_at_top(engine: MemoryStreams) -> None:
    epoch = engine.position(CH, now=0.0, history_meta_ttl=META_TTL).epoch
    assert recover(engine, 0, epoch=epoch) == ([], StreamPosition(0, epoch), True)


def test_recover_after_expiry_with_missed_publications(engine: MemoryStreams) -> None:
    pub(engine, now=-TTL - 10)
    pub(engine, now=-TTL - 5)
    # Publications expired but the client at offset 1 missed offset 2.
    assert recover(engine, 1) == ([], StreamPosition(2, "epoch001"), False)
    assert recover(engine, 2) == ([], StreamPosition(2, "epoch001"), True)


def test_recover_gap_after_trim(engine: MemoryStreams) -> None:
    for _ in range(15):
        pub(engine)
    offsets, position, recovered = recover(engine, 2)
    assert not recovered
    assert offsets == list(range(6, 16))  # returned anyway; the caller decides
    assert position == StreamPosition(15, "epoch001")


def test_recover_epoch_changed(seven: MemoryStreams) -> None:
    assert recover(seven, 4, epoch="gone") == ([], StreamPosition(7, "epoch001"), False)


def test_recover_limit_too_small(seven: MemoryStreams) -> None:
    offsets, _, recovered = recover(seven, 2, limit=3)
    assert offsets == [3, 4, 5]
    assert not recovered
    assert recover(seven, 2, limit=5)[2]  # exactly enough
    assert recover(seven, 2, limit=0)[2]  # no limit


def test_recover_ahead_of_the_stream(seven: MemoryStreams) -> None:
    assert recover(seven, 9) == ([], StreamPosition(7, "epoch001"), False)


def cache(
    engine: MemoryStreams, offset: int, epoch: str = "epoch001"
) -> tuple[list[int], StreamPosition, bool]:
    pubs, position, recovered = engine.recover_cache(
        CH, since=StreamPosition(offset, epoch), now=0.0, history_meta_ttl=META_TTL
    )
    return [p.offset for p in pubs], position, recovered


def test_recover_cache_gives_the_latest_only(seven: MemoryStreams) -> None:
    assert cache(seven, 2) == ([7], StreamPosition(7, "epoch001"), True)
    assert cache(seven, 0, epoch="") == ([7], StreamPosition(7, "epoch001"), True)
    assert cache(seven, 3, epoch="old") == ([7], StreamPosition(7, "epoch001"), True)
    assert cache(seven, 7) == ([], StreamPosition(7, "epoch001"), True)  # already up to date


def test_recover_cache_when_latest_is_not_stored(seven: MemoryStreams) -> None:
    seven.remove_history(CH, now=0.0)
    assert cache(seven, 2) == ([], StreamPosition(7, "epoch001"), False)
    assert cache(seven, 7) == ([], StreamPosition(7, "epoch001"), True)


def test_recover_cache_empty_channel(engine: MemoryStreams) -> None:
    assert cache(engine, 0, epoch="") == ([], StreamPosition(0, "epoch001"), False)


# -- sweep ------------------------------------------------------------------------------------------


def test_sweep_drops_expired_publications_then_metas(engine: MemoryStreams) -> None:
    pub(engine, channel="a", now=0.0)
    pub(engine, channel="b", now=100.0)
    assert engine.sweep(TTL - 1) == 0
    assert engine.sweep(TTL) == 1  # a's publications
    assert engine.sweep(100 + TTL) == 1  # b's publications
    assert engine.num_streams == 2  # positions stay
    assert engine.sweep(META_TTL) == 1  # a's meta
    assert engine.num_streams == 1
    assert engine.sweep(100 + META_TTL) == 1
    assert engine.num_streams == 0
    assert engine.sweep(10 * META_TTL) == 0


def test_sweep_follows_later_deadlines(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    pub(engine, now=50.0)  # publications now live until 50 + TTL
    assert engine.sweep(TTL) == 0
    assert hist(engine, now=TTL)[0] == [1, 2]
    assert engine.sweep(50 + TTL) == 1
    engine.position(CH, now=1000.0, history_meta_ttl=META_TTL)  # a read extends the meta
    assert engine.sweep(50 + META_TTL) == 0
    assert engine.sweep(1000 + META_TTL) == 1


def test_sweep_heap_stays_small_under_many_publishes(engine: MemoryStreams) -> None:
    for i in range(10_000):
        pub(engine, now=i * 0.001)
    assert len(engine._timers) <= 2


def test_sweep_drops_idempotency_results(engine: MemoryStreams) -> None:
    pub(engine, idempotency_key="k", history_size=0)
    pub(engine, idempotency_key="k2", idempotency_ttl=10.0, history_size=0)
    assert engine.num_idempotency_results == 2
    assert engine.sweep(10.0) == 1
    assert engine.sweep(300.0) == 1
    assert engine.num_idempotency_results == 0


def test_sweep_skips_a_stream_replaced_after_meta_expiry(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    pub(engine, now=META_TTL)  # the old stream is dropped on access and a new one starts
    assert engine.sweep(META_TTL) == 0
    assert hist(engine, now=META_TTL)[1] == StreamPosition(1, "epoch002")


def test_sweep_with_remove_history(engine: MemoryStreams) -> None:
    pub(engine, now=0.0)
    engine.remove_history(CH, now=1.0)
    assert engine.sweep(TTL) == 0  # nothing left to drop
    assert engine.sweep(META_TTL) == 1


def test_sweep_budget_spreads_a_mass_expiry(engine: MemoryStreams) -> None:
    for i in range(10):
        pub(engine, channel=f"c{i}", idempotency_key="k")
    assert engine.sweep(META_TTL, budget=4) == 4
    assert engine.sweep(META_TTL, budget=4) == 4
    assert engine.num_streams == 2
    assert engine.sweep(META_TTL, budget=4) == 4  # two streams, then two idempotency results
    assert engine.sweep(META_TTL) == 8
    assert engine.num_streams == 0 and engine.num_idempotency_results == 0


# -- scale ------------------------------------------------------------------------------------------


def test_many_channels() -> None:
    engine = make_engine()
    for round_ in range(3):
        for i in range(5000):
            pub(engine, channel=f"ch:{i}", now=float(round_))
    assert engine.num_streams == 5000
    assert hist(engine, channel="ch:4999", now=2.0)[1].offset == 3
    assert len(engine._timers) <= 5000
    assert engine.sweep(2 + TTL) == 5000
    assert engine.sweep(2 + META_TTL) == 5000
    assert engine.num_streams == 0
