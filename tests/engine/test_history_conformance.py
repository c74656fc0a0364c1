"""The history engine interface, as every implementation must behave (Centrifugo's stream semantics)."""

from __future__ import annotations

import pytest

from broker import errors
from broker.engine import StreamPosition
from broker.publication import Publication
from tests.engine.conftest import EngineUnderTest

SIZE, TTL, META_TTL = 5, 60.0, 3600.0


async def publish(
    e: EngineUnderTest, data: bytes = b"x", channel: str = "ch", **options: object
) -> tuple[int, str, bool]:
    settings: dict[str, object] = {"history_size": SIZE, "history_ttl": TTL, "history_meta_ttl": META_TTL}
    settings.update(options)
    result = await e.history.publish(Publication(channel, data), now=e.clock.now(), **settings)  # type: ignore[arg-type]
    return result.offset, result.epoch, result.duplicate


async def read(
    e: EngineUnderTest,
    channel: str = "ch",
    *,
    limit: int = -1,
    since: StreamPosition | None = None,
    reverse: bool = False,
) -> tuple[list[bytes], StreamPosition]:
    found = await e.history.history(
        channel, limit=limit, since=since, reverse=reverse, now=e.clock.now(), history_meta_ttl=META_TTL
    )
    return [p.data for p in found.publications], found.position


def test_offsets_count_from_one_in_one_epoch_and_the_publication_carries_them(
    history_engine: EngineUnderTest,
):
    engine = history_engine

    async def scenario() -> None:
        publication = Publication("ch", b"a")
        first = await engine.history.publish(
            publication, history_size=SIZE, history_ttl=TTL, history_meta_ttl=META_TTL, now=engine.clock.now()
        )
        assert (first.offset, publication.offset, publication.epoch) == (1, 1, first.epoch)
        rest = [await publish(engine, b"%d" % i) for i in range(3)]
        assert [offset for offset, _, _ in rest] == [2, 3, 4]
        assert {epoch for _, epoch, _ in rest} == {first.epoch} and first.epoch

    engine.run(scenario)


def test_history_keeps_the_last_size_publications_and_reads_forward_backward_and_since(
    history_engine: EngineUnderTest,
):
    engine = history_engine

    async def scenario() -> None:
        for i in range(1, 8):
            await publish(engine, b"%d" % i)
        data, top = await read(engine)
        assert data == [b"3", b"4", b"5", b"6", b"7"] and top.offset == 7
        assert (await read(engine, limit=2))[0] == [b"3", b"4"]
        assert (await read(engine, limit=2, reverse=True))[0] == [b"7", b"6"]
        assert (await read(engine, since=StreamPosition(5, top.epoch)))[0] == [b"6", b"7"]
        assert (await read(engine, since=StreamPosition(5, top.epoch), reverse=True))[0] == [b"4", b"3"]
        assert (await read(engine, limit=0)) == ([], top)

    engine.run(scenario)


def test_a_wrong_epoch_is_unrecoverable_and_reverse_from_zero_is_a_bad_request(
    history_engine: EngineUnderTest,
):
    engine = history_engine

    async def scenario() -> None:
        await publish(engine)
        with pytest.raises(errors.ClientError) as caught:
            await read(engine, since=StreamPosition(1, "another"))
        assert caught.value.code == errors.UNRECOVERABLE_POSITION.code
        with pytest.raises(errors.ClientError) as caught:
            await read(engine, since=StreamPosition(0, ""), reverse=True)
        assert caught.value.code == errors.BAD_REQUEST.code

    engine.run(scenario)


def test_without_history_or_with_skip_history_nothing_is_kept(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        assert await publish(engine, channel="off", history_size=0) == (0, "", False)
        await publish(engine, b"kept")
        assert await publish(engine, b"skipped", skip_history=True) == (0, "", False)
        assert (await read(engine))[0] == [b"kept"]

    engine.run(scenario)


def test_a_repeated_idempotency_key_returns_the_first_result_as_a_duplicate(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        first = await publish(engine, b"a", idempotency_key="k", idempotency_ttl=1)
        again = await publish(engine, b"a", idempotency_key="k", idempotency_ttl=1)
        assert again == (first[0], first[1], True)
        assert (await read(engine))[0] == [b"a"]
        await engine.clock.advance(1.5)  # the window of the first publish is over
        later = await publish(engine, b"b", idempotency_key="k", idempotency_ttl=1)
        assert later[2] is False and later[0] == 2

    engine.run(scenario)


def test_publications_expire_after_history_ttl_but_the_position_stays(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        await publish(engine, b"a", history_ttl=1)
        _, top = await read(engine)
        await engine.clock.advance(1.5)
        assert await read(engine) == ([], top)

    engine.run(scenario)


def test_a_stream_whose_meta_expired_starts_over_in_a_new_epoch(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        # The position outlives the publications, so both go after a second here.
        _, epoch, _ = await publish(engine, b"a", history_ttl=1, history_meta_ttl=1)
        await engine.clock.advance(1.5)
        offset, new_epoch, _ = await publish(engine, b"b", history_ttl=1, history_meta_ttl=1)
        assert offset == 1 and new_epoch != epoch

    engine.run(scenario)


def test_remove_history_drops_publications_and_keeps_the_position(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        for _ in range(3):
            await publish(engine)
        _, top = await read(engine)
        await engine.history.remove_history("ch", now=engine.clock.now())
        assert await read(engine) == ([], top)
        assert (await publish(engine))[0] == 4

    engine.run(scenario)


def test_position_creates_the_meta_of_a_new_stream(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        top = await engine.history.position("fresh", now=engine.clock.now(), history_meta_ttl=META_TTL)
        assert top.offset == 0 and top.epoch
        offset, epoch, _ = await publish(engine, channel="fresh")
        assert (offset, epoch) == (1, top.epoch)

    engine.run(scenario)


def test_recovery_closes_a_gap_exactly_or_says_it_cannot(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        for i in range(1, 5):
            await publish(engine, b"%d" % i)
        _, top = await read(engine)

        async def recover(since: StreamPosition, limit: int = 0) -> tuple[list[bytes], bool]:
            outcome = await engine.history.recover(
                "ch", since=since, limit=limit, now=engine.clock.now(), history_meta_ttl=META_TTL
            )
            assert outcome.position == top
            return [p.data for p in outcome.publications], outcome.recovered

        assert await recover(StreamPosition(2, top.epoch)) == ([b"3", b"4"], True)
        assert await recover(StreamPosition(4, top.epoch)) == ([], True)
        assert (await recover(StreamPosition(2, top.epoch), limit=1))[1] is False
        assert await recover(StreamPosition(2, "old")) == ([], False)
        for i in range(5, 10):
            await publish(engine, b"%d" % i)
        top = (await read(engine))[1]
        assert (await recover(StreamPosition(1, top.epoch)))[1] is False  # trimmed away

    engine.run(scenario)


def test_cache_recovery_gives_the_latest_publication(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        for i in range(1, 4):
            await publish(engine, b"%d" % i)
        _, top = await read(engine)
        outcome = await engine.history.recover_cache(
            "ch", since=StreamPosition(1, top.epoch), now=engine.clock.now(), history_meta_ttl=META_TTL
        )
        assert ([p.data for p in outcome.publications], outcome.recovered) == ([b"3"], True)
        current = await engine.history.recover_cache(
            "ch", since=top, now=engine.clock.now(), history_meta_ttl=META_TTL
        )
        assert (current.publications, current.recovered) == ([], True)

    engine.run(scenario)


def test_channels_are_independent_streams(history_engine: EngineUnderTest):
    engine = history_engine

    async def scenario() -> None:
        await publish(engine, b"a", channel="one")
        await publish(engine, b"b", channel="one")
        assert (await publish(engine, b"c", channel="two"))[0] == 1
        assert (await read(engine, "two"))[0] == [b"c"]

    engine.run(scenario)
