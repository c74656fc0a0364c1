"""The channel writer without processes: a list stands in for its PUB socket."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from broker import errors
from broker.channels import ChannelRules
from broker.config import build
from broker.engine import MemoryHistory, StreamPosition
from broker.hashing import shard_for
from broker.ipc.control import Raw
from broker.publication import Publication
from shards.writer import ChannelWriter

T = TypeVar("T")


class Sink:
    def __init__(self, accept: bool = True) -> None:
        self.sent: list[Publication] = []
        self.accept = accept

    def publish(self, publication: Publication) -> bool:
        self.sent.append(publication)
        return self.accept


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The memory engine never suspends: one step of a fresh loop completes any writer call."""
    return asyncio.run(coroutine)


def make_writer(size: int = 2, accept: bool = True) -> tuple[ChannelWriter, Sink]:
    cfg = build(
        {
            "token_hmac_secret_key": "x",
            "namespaces": [{"name": "hi", "history_size": 3, "history_ttl": "60s", "join_leave": True}],
        },
        environ={},
    )
    writer = ChannelWriter(
        ChannelRules.from_config(cfg), 0, size, cfg.global_history_meta_ttl, MemoryHistory()
    )
    sink = Sink(accept)
    writer.sink = sink
    return writer, sink


def test_history_channels_get_consecutive_offsets_in_one_epoch_and_are_sent_in_order():
    writer, sink = make_writer()
    results = [run(writer.write_publication(Publication("hi:a", b"%d" % i))) for i in range(3)]
    assert [r["offset"] for r in results] == [1, 2, 3]
    assert len({r["epoch"] for r in results}) == 1
    assert [p.offset for p in sink.sent] == [1, 2, 3]
    assert all(p.time_ms > 0 for p in sink.sent)


def test_a_channel_without_history_is_sent_without_a_position():
    writer, sink = make_writer()
    assert run(writer.write_publication(Publication("plain", b"1"))) == {}
    assert sink.sent[0].offset == 0


def test_a_repeated_idempotency_key_answers_the_first_result_and_sends_nothing():
    writer, sink = make_writer()
    first = run(writer.write_publication(Publication("hi:a", b"1"), idempotency_key="k"))
    again = run(writer.write_publication(Publication("hi:a", b"1"), idempotency_key="k"))
    assert again == first and len(sink.sent) == 1


def test_a_publication_the_pub_socket_refuses_is_an_internal_error():
    writer, _ = make_writer(accept=False)
    with pytest.raises(errors.ClientError) as caught:
        run(writer.write_publication(Publication("plain", b"1")))
    assert caught.value.code == errors.INTERNAL.code


def test_members_follow_joins_and_leaves_and_a_restarted_shard_loses_its_clients():
    writer, sink = make_writer(size=4)
    clients = [f"c{i}" for i in range(40)]
    for client in clients:
        run(
            writer.write_publication(
                Publication("hi:room", b"", user="u-" + client, client=client, kind="join")
            )
        )
    run(writer.write_publication(Publication("hi:room", b"", user="u-c0", client="c0", kind="leave")))
    on_shard_2 = {c for c in clients[1:] if shard_for("u-" + c, c, 4) == 2}
    assert on_shard_2, "some clients must live on shard 2 for this test to mean anything"
    sink.sent.clear()
    assert run(writer.forget_shard(2)) == len(on_shard_2)
    assert {p.client for p in sink.sent} == on_shard_2 and {p.kind for p in sink.sent} == {"leave"}
    assert set(writer.members["hi:room"]) == set(clients[1:]) - on_shard_2
    assert run(writer.forget_shard(2)) == 0


def test_publications_wait_until_the_writer_is_opened():
    async def scenario() -> list[str]:
        writer, _ = make_writer()
        order: list[str] = []
        held = asyncio.ensure_future(writer.until_writing(lambda: order.append("written")))
        await asyncio.sleep(0.01)
        order.append("opening")
        writer.open_writing("test")
        await asyncio.wait_for(held, 1)
        return order

    assert asyncio.run(scenario()) == ["opening", "written"]


def test_stream_reads_need_history_and_recovery_answers_are_reused_while_the_top_stands():
    writer, _ = make_writer()
    with pytest.raises(errors.ClientError) as caught:
        run(writer.position("plain"))
    assert caught.value.code == errors.NOT_AVAILABLE.code
    for i in range(2):
        run(writer.write_publication(Publication("hi:a", b"%d" % i)))
    top = run(writer.position("hi:a"))
    encoded: list[object] = []

    def encode(outcome: object) -> Raw:
        encoded.append(outcome)
        return Raw(b"{}")

    since = StreamPosition(1, top.epoch)
    first = run(writer.recover("hi:a", since, 0, encode))
    assert run(writer.recover("hi:a", since, 0, encode)) is first and len(encoded) == 1
    run(writer.write_publication(Publication("hi:a", b"3")))
    assert run(writer.recover("hi:a", since, 0, encode)) is not first and len(encoded) == 2
    assert len(run(writer.history("hi:a", limit=-1, since=None, reverse=False)).publications) == 3
    run(writer.remove_history("hi:a"))
    assert run(writer.history("hi:a", limit=-1, since=None, reverse=False)).publications == []


def test_a_held_write_that_is_itself_a_coroutine_is_awaited():
    async def scenario() -> dict[str, object]:
        writer, _ = make_writer()
        held = asyncio.ensure_future(
            writer.until_writing(lambda: writer.write_publication(Publication("hi:a", b"1")))
        )
        await asyncio.sleep(0.01)
        writer.open_writing("test")
        return await asyncio.wait_for(held, 1)

    assert asyncio.run(scenario())["offset"] == 1
