"""The node's families and their text: Centrifugo's names exactly, readable by prometheus_client."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from broker.metrics.counters import ShardCounters
from broker.metrics.exposition import NodeFacts, node_families, render


def shard_answer(clients: int, users: int, channels: list[str], counters: ShardCounters) -> dict[str, Any]:
    return {
        "num_clients": clients,
        "num_users": users,
        "num_anonymous": 0,
        "num_channels": len(channels),
        "num_subs": len(channels),
        "channels": channels,
        "rss": 50_000_000,
        "queue_bytes": 0,
        "loop_lag": 0.002,
        "counters": counters.snapshot(),
    }


def test_a_scrape_adds_the_shards_up_and_names_silent_ones() -> None:
    first, second = ShardCounters(), ShardCounters()
    first.server_disconnect(3503)
    second.server_disconnect(3503)
    second.server_disconnect(3011)
    answers = {0: shard_answer(2, 1, ["a", "b"], first), 2: shard_answer(3, 2, ["b", "c"], second)}
    facts = NodeFacts("1.2.3", 1, {("http", "publish"): [4, 0.01]})
    text = render(node_families(answers, [1], facts)).decode()
    assert "\ncentrifugo_node_num_clients 5\n" in text
    assert "\ncentrifugo_node_num_channels 3\n" in text  # "b" is on both shards: counted once
    assert '\ncentrifugo_client_num_server_disconnects{code="3503"} 2\n' in text
    assert "# TYPE centrifugo_client_num_server_disconnects counter\n" in text
    assert '\ncentrifugo_api_command_duration_seconds_count{protocol="http",method="publish"} 4\n' in text
    assert '\nswitchboard_shard_up{shard="1"} 0\n' in text
    assert '\nswitchboard_shard_loop_lag_seconds{shard="2"} 0.002\n' in text
    parsed = {family.name: family for family in text_string_to_metric_families(text)}
    assert parsed["centrifugo_node_build"].samples[0].labels == {"version": "1.2.3"}
    assert parsed["centrifugo_client_num_server_disconnects"].type == "counter"
    assert parsed["centrifugo_api_command_duration_seconds"].type == "summary"


def test_label_values_and_help_are_escaped() -> None:
    family = Metric("odd", "help with \\ and\nnewline", "gauge")
    family.add_sample("odd", {"v": 'quote " backslash \\ newline \n'}, 1.5)
    text = render([family]).decode()
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.samples[0].labels == {"v": 'quote " backslash \\ newline \n'}
    assert parsed.samples[0].value == 1.5


def test_python_client_counters_keep_their_total_suffix() -> None:
    family = Metric("process_cpu_seconds", "cpu", "counter")
    family.add_sample("process_cpu_seconds_total", {}, 1.25)
    text = render([family]).decode()
    assert "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.25\n" in text
