import orjson

from broker.ipc.control import RemoteError
from router.api.merge import first_client_error, splice_connections, with_unavailable_shards


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
