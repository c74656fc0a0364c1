"""What ``/metrics`` costs, piece by piece, at 10,000 connections on 2 shards with a channel each.

* the hot-path counters (a dict update per flush, per command);
* a shard's answer to the router's ``metrics`` request: counts, 5,000 channel names (so that the router
  counts a channel on both shards once) and the counters, encoded;
* the router's side: decoding two answers, adding them up, writing the text.

The whole-server numbers (latency, CPU per scrape under 10k connections) are in
``bench.connections_bench``; this file shows where that time goes.
"""

from __future__ import annotations

from typing import Any

import orjson

from broker.metrics.counters import ShardCounters, client_key
from broker.metrics.exposition import NodeFacts, node_families, render

CHANNELS_PER_SHARD = 5_000


def busy_counters() -> ShardCounters:
    counters = ShardCounters()
    for n in range(CHANNELS_PER_SHARD):
        counters.connected(client_key("websocket", "js", f"5.{n % 3}"))
        counters.command("connect", 0.0002)
        counters.command("subscribe", 0.0001)
        counters.sent_to_client("websocket", 2, 300)
        counters.received_from_client("websocket", 120)
    for code in (3000, 3001, 3008, 3500, 3503):
        counters.server_disconnect(code)
    counters.reply_error("subscribe", 103)
    return counters


def hub_channels(index: int) -> dict[str, set[Any]]:
    """A shard hub's channel index: what ``metrics`` lists the names of."""
    return {f"personal:{index}-{n}": set() for n in range(CHANNELS_PER_SHARD)}


def shard_answer(index: int, counters: ShardCounters, by_channel: dict[str, set[Any]]) -> bytes:
    channels = list(by_channel)
    answer: dict[str, Any] = {
        "num_clients": CHANNELS_PER_SHARD,
        "num_users": CHANNELS_PER_SHARD,
        "num_anonymous": 0,
        "num_channels": CHANNELS_PER_SHARD,
        "num_subs": CHANNELS_PER_SHARD,
        "index": index,
        "uptime": 100,
        "pid": 1000 + index,
        "rss": 80_000_000,
        "channels": channels,
        "counters": counters.snapshot(),
        "queue_bytes": 0,
        "loop_lag": 0.001,
    }
    return orjson.dumps(answer)


def test_counter_on_the_flush_path(benchmark: Any) -> None:
    counters = ShardCounters()
    benchmark(counters.sent_to_client, "websocket", 3, 900)


def test_counter_on_the_command_path(benchmark: Any) -> None:
    counters = ShardCounters()
    benchmark(counters.command, "subscribe", 0.0001)


def test_shard_answer_with_5000_channels(benchmark: Any) -> None:
    counters = busy_counters()
    encoded = benchmark(shard_answer, 0, counters, hub_channels(0))
    benchmark.extra_info["answer bytes"] = len(encoded)


def test_router_adds_two_shards_and_writes_the_text(benchmark: Any) -> None:
    answers = [shard_answer(index, busy_counters(), hub_channels(index)) for index in range(2)]
    facts = NodeFacts("1.0", 1, {("http", "publish"): [10, 0.01]})

    def scrape() -> bytes:
        decoded = {index: orjson.loads(answer) for index, answer in enumerate(answers)}
        return render(node_families(decoded, [], facts))

    text = benchmark(scrape)
    assert b"centrifugo_node_num_channels 10000\n" in text
    benchmark.extra_info["text bytes"] = len(text)
