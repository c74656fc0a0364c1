import base64

import orjson

from broker.ipc.control import RemoteError
from broker.publication import api_publication
from router.api.merge import (
    first_client_error,
    merge_info,
    splice_connections,
    with_unavailable_shards,
)


def test_splice_joins_every_shards_connections() -> None:
    parts = [
        b'{"connections":{"a":{"user":"1"}}}',
        b'{"connections":{}}',
        b'{"connections":{"b":{"user":"2"}}}',
    ]
    assert orjson.loads(splice_connections(parts)) == {
        "connections": {"a": {"user": "1"}, "b": {"user": "2"}}
    }


def test_splice_of_no_answers_is_empty() -> None:
    assert orjson.loads(splice_connections([])) == {"connections": {}}
    assert orjson.loads(splice_connections([b'{"connections":{}}'])) == {"connections": {}}


def test_unavailable_shards_are_named() -> None:
    merged = with_unavailable_shards(splice_connections([b'{"connections":{"a":{}}}']), [1, 3])
    assert orjson.loads(merged) == {"connections": {"a": {}}, "unavailable_shards": [1, 3]}


def test_no_unavailable_shards_leaves_answer_alone() -> None:
    merged = splice_connections([b'{"connections":{"a":{}}}'])
    assert with_unavailable_shards(merged, []) == merged


def test_first_error_is_lowest_shards() -> None:
    error = first_client_error({2: RemoteError(108, "not available"), 0: RemoteError(107, "bad request")})
    assert error is not None and (error.code, error.message) == (107, "bad request")
    assert first_client_error({}) is None


def test_info_adds_up_shards_counts_anonymous_once_and_lists_silent_shards():
    def stats(clients: int, users: int, anonymous: int, channels: list[str]) -> dict[str, object]:
        return {
            "num_clients": clients,
            "num_users": users,
            "num_anonymous": anonymous,
            "num_subs": clients,
            "num_channels": len(channels),
            "channels": channels,
            "pid": 1,
            "uptime": 5,
            "rss": 100,
        }

    node = merge_info({0: stats(3, 2, 1, ["a", "b"]), 2: stats(4, 1, 2, ["b", "c"])}, [1])
    assert (node["num_clients"], node["num_users"], node["num_subs"], node["num_channels"]) == (7, 4, 7, 3)
    assert [shard["index"] for shard in node["shards"]] == [0, 1, 2]
    assert node["shards"][1] == {"index": 1, "unavailable": True}
    assert node["shards"][0]["num_clients"] == 3 and "channels" not in node["shards"][0]


def test_an_api_publication_keeps_json_as_is_and_binary_as_base64():
    wire = {"b64data": base64.b64encode(b'{"a":1}').decode(), "offset": 3}
    assert orjson.loads(orjson.dumps(api_publication(wire))) == {"data": {"a": 1}, "offset": 3}
    binary = {"b64data": base64.b64encode(b"\xff\x00").decode(), "offset": 4}
    assert api_publication(binary)["data"] == base64.b64encode(b"\xff\x00").decode()


def test_limit_connections_sorts_the_merged_answers_by_connection_time() -> None:
    from router.api.merge import limit_connections

    answers = [
        {"connections": {"a": {"connected_at_ms": 1}, "c": {"connected_at_ms": 5}}, "total": 3},
        {"connections": {"b": {"connected_at_ms": 3}}, "total": 1},
    ]
    newest = limit_connections(answers, 2, "-connected_at_ms")
    assert list(newest["connections"]) == ["c", "b"] and newest["total"] == 4
    oldest = limit_connections(answers, 0, "connected_at_ms")
    assert list(oldest["connections"]) == ["a", "b", "c"] and "total" not in oldest
