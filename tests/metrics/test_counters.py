"""Shard counters: bounded labels, in-flight gauge back to nothing, snapshots that add up."""

from __future__ import annotations

import orjson

from broker.metrics.counters import ShardCounters, add_snapshots, client_key


def test_client_names_other_than_the_sdks_are_one_label() -> None:
    assert client_key("websocket", "js", "5.0.0") == ("websocket", "js", "5.0.0")
    assert client_key("websocket", "my-own-app", "1") == ("websocket", "", "")
    assert client_key("sse", "python", "x" * 100) == ("sse", "python", "")


def test_inflight_returns_to_nothing_and_keeps_no_empty_label_sets() -> None:
    counters = ShardCounters()
    keys = [client_key("websocket", "js", f"5.{n}") for n in range(3)]
    for key in keys * 2:
        counters.connected(key)
    assert sum(counters.inflight.values()) == 6 and counters.connects == {"websocket": 6}
    for key in keys * 2:
        counters.left(key)
    assert counters.inflight == {}
    counters.left(keys[0])  # never below zero, never a stray entry
    assert counters.inflight == {}


def test_snapshots_are_json_and_add_up_over_shards() -> None:
    shards = [ShardCounters(), ShardCounters()]
    for n, counters in enumerate(shards):
        counters.command("subscribe", 0.5)
        counters.command("subscribe", 0.25)
        counters.reply_error("history", 102)
        counters.server_disconnect(3503)
        counters.server_unsubscribe(2500)
        counters.sent_to_client("websocket", 3, 300 + n)
        counters.received_from_client("websocket", 10)
        counters.broker_message_sent("publication")
        counters.broker_message_received("join")
    snapshots = [orjson.loads(orjson.dumps(counters.snapshot())) for counters in shards]
    total = add_snapshots([*snapshots, {"a_counter_of_a_newer_shard": [["x", 1]]}])
    assert total["commands"][("subscribe",)] == [4, 1.5]
    assert total["reply_errors"][("history", 102)] == [2]
    assert total["disconnects"][(3503,)] == [2]
    assert total["unsubscribes"][(2500,)] == [2]
    assert total["sent"][("websocket",)] == [6, 601]
    assert total["received"][("websocket",)] == [2, 20]
    assert total["broker_sent"][("publication",)] == [2]
    assert total["broker_received"][("join",)] == [2]
    assert "a_counter_of_a_newer_shard" not in total
