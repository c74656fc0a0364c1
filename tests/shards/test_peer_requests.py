"""What peers ask a shard, answered over a fake shard: no processes, no sockets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from broker import errors
from broker.publication import Publication, publication_params
from shards.peer_requests import PEER_HANDLERS, presence, presence_stats, publish


class FakeWriter:
    """The part of a shard that ``publish`` uses: whether it may write, and the write itself."""

    def __init__(self) -> None:
        self.written: list[tuple[Publication, bool, str]] = []

    def writing(self) -> bool:
        return True

    def write_publication(
        self, publication: Publication, *, skip_history: bool = False, idempotency_key: str = ""
    ) -> dict[str, Any]:
        self.written.append((publication, skip_history, idempotency_key))
        return {"offset": len(self.written), "epoch": "e"}


def test_a_clients_publication_reaches_the_writer_as_it_was_sent():
    sent = Publication(
        "chat", b'{"text":"hi"}', user="42", client="c1", conn_info=b"\x00ci", chan_info=b"[1]"
    )
    writer = FakeWriter()
    assert publish(SimpleNamespace(writer=writer), publication_params(sent)) == {"offset": 1, "epoch": "e"}  # type: ignore[arg-type]
    assert writer.written == [(sent, False, "")]


def test_an_api_publication_keeps_its_tags_options_and_no_client_info():
    writer = FakeWriter()
    params = {
        "channel": "news",
        "data": {"a": 1},
        "tags": {"k": "v"},
        "skip_history": True,
        "idempotency_key": "x",
    }
    publish(SimpleNamespace(writer=writer), params)  # type: ignore[arg-type]
    [(publication, skip_history, key)] = writer.written
    assert publication == Publication("news", b'{"a":1}', tags={"k": "v"})
    assert (skip_history, key) == (True, "x")


@pytest.mark.parametrize(
    "params",
    [{"data": {}}, {"channel": "", "data": {}}, {"channel": "chat"}, {"channel": "chat", "b64data": "!"}],
)
def test_a_publication_without_channel_or_data_is_a_bad_request(params):
    with pytest.raises(errors.ClientError) as info:
        publish(SimpleNamespace(writer=FakeWriter()), params)  # type: ignore[arg-type]
    assert info.value.code == errors.BAD_REQUEST.code


def _subscriber(user: str, client: str, info: bytes | None = None, chan_info: dict[str, bytes] | None = None):
    return SimpleNamespace(state=SimpleNamespace(user=user, client=client, info=info, chan_info=chan_info))


def test_presence_is_this_shards_subscribers_with_their_info():
    hub = SimpleNamespace(
        by_channel={"room": [_subscriber("42", "a", b'{"n":1}', {"room": b"[2]"}), _subscriber("", "b")]}
    )
    shard: Any = SimpleNamespace(hub=hub)
    answer = presence(shard, {"channel": "room"})["presence"]
    assert set(answer) == {"a", "b"}
    assert answer["b"] == {"user": "", "client": "b"}
    assert orjson.dumps(answer["a"]) == b'{"user":"42","client":"a","conn_info":{"n":1},"chan_info":[2]}'
    assert presence(shard, {"channel": "elsewhere"}) == {"presence": {}}
    assert presence_stats(shard, {"channel": "room"}) == {
        "num_clients": 2,
        "num_named_users": 1,
        "anonymous": True,
    }


def test_peers_may_ask_only_what_shards_ask_each_other():
    assert set(PEER_HANDLERS) == {
        "publish",
        "presence",
        "presence_stats",
        "history",
        "position",
        "recover",
        "shard_started",
        "access_rules",
    }
