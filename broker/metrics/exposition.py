"""The node's metrics as Prometheus metric families, and their text exposition.

Families are built with ``prometheus_client``'s metric types from the shards' answers to one ``metrics``
request (see ``shards.router_requests.metrics``) and the router's own API timings. Names are
Centrifugo's where Centrifugo has the metric, so its dashboards and alerts work unchanged; our own
per-shard gauges are ``switchboard_shard_*``.

The text is written the way Centrifugo's (Go) client writes it: a counter's samples carry the family's
name as declared (``centrifugo_client_num_server_disconnects``), where ``prometheus_client``'s own writer
would append ``_total`` and break every query written for Centrifugo. The Python client's families that
do end in ``_total`` (the process collector's) keep it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric

from broker.metrics.counters import add_snapshots

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the router knows of the node itself."""

    version: str
    num_nodes: int
    # API commands served by this router: (protocol, method) → [count, seconds].
    api_commands: Mapping[tuple[str, str], list[float]]


def _family(name: str, doc: str, kind: str, rows: Iterable[tuple[dict[str, str], float]]) -> Metric:
    family = Metric(name, doc, kind)
    for labels, value in rows:
        family.add_sample(name, labels, value)
    return family


def _summary(name: str, doc: str, rows: Iterable[tuple[dict[str, str], float, float]]) -> Metric:
    """A summary without quantiles: ``_count`` and ``_sum`` per label set."""
    family = Metric(name, doc, "summary")
    for labels, count, seconds in rows:
        family.add_sample(name + "_count", labels, count)
        family.add_sample(name + "_sum", labels, seconds)
    return family


def node_families(
    answers: Mapping[int, Mapping[str, Any]], missing: Iterable[int], facts: NodeFacts
) -> list[Metric]:
    """Every family of one scrape: node counts and counters added up over the shards that answered,
    and one row per shard (a shard that did not answer shows ``switchboard_shard_up 0``)."""
    channels: set[str] = set()
    clients = users = subs = 0
    anonymous = False
    for stats in answers.values():
        clients += int(stats["num_clients"])
        users += int(stats["num_users"])
        subs += int(stats["num_subs"])
        anonymous = anonymous or int(stats["num_anonymous"]) > 0
        channels.update(stats.get("channels", ()))
    total = add_snapshots([stats.get("counters", {}) for stats in answers.values()])

    def rows(name: str, *labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (dict(zip(labels, map(str, key), strict=True)), values[-1])
            for key, values in total.get(name, {}).items()
        ]

    def traffic(name: str, index: int) -> list[tuple[dict[str, str], float]]:
        return [({"transport": str(key[0])}, values[index]) for key, values in total.get(name, {}).items()]

    families = [
        _family("centrifugo_node_num_clients", "Number of clients connected.", "gauge", [({}, clients)]),
        _family(
            "centrifugo_node_num_users",
            "Number of unique users connected.",
            "gauge",
            [({}, users + (1 if anonymous else 0))],
        ),
        _family(
            "centrifugo_node_num_channels",
            "Number of channels with one or more subscribers.",
            "gauge",
            [({}, len(channels))],
        ),
        _family("centrifugo_node_num_subscriptions", "Number of subscriptions.", "gauge", [({}, subs)]),
        _family(
            "centrifugo_node_num_nodes", "Number of nodes in the cluster.", "gauge", [({}, facts.num_nodes)]
        ),
        _family("centrifugo_node_build", "Node build info.", "gauge", [({"version": facts.version}, 1)]),
        _family(
            "centrifugo_node_messages_sent_count",
            "Number of messages sent by node to broker.",
            "counter",
            rows("broker_sent", "type"),
        ),
        _family(
            "centrifugo_node_messages_received_count",
            "Number of messages received from broker.",
            "counter",
            rows("broker_received", "type"),
        ),
        _family(
            "centrifugo_transport_connect_count",
            "Number of connections accepted, by transport.",
            "counter",
            rows("connects", "transport"),
        ),
        _family(
            "centrifugo_client_connections_inflight",
            "Number of inflight client connections.",
            "gauge",
            rows("inflight", "transport", "client_name", "client_version"),
        ),
        _summary(
            "centrifugo_client_command_duration_seconds",
            "Client command duration summary (time a shard spent handling it).",
            [
                ({"method": str(key[0])}, values[0], values[1])
                for key, values in total.get("commands", {}).items()
            ],
        ),
        _family(
            "centrifugo_client_num_reply_errors",
            "Number of errors in replies sent to clients.",
            "counter",
            rows("reply_errors", "method", "code"),
        ),
        _family(
            "centrifugo_client_num_server_disconnects",
            "Number of server initiated disconnects.",
            "counter",
            rows("disconnects", "code"),
        ),
        _family(
            "centrifugo_client_num_server_unsubscribes",
            "Number of server initiated unsubscribes.",
            "counter",
            rows("unsubscribes", "code"),
        ),
        _family(
            "centrifugo_transport_messages_sent",
            "Number of messages sent to client connections over specific transport.",
            "counter",
            traffic("sent", 0),
        ),
        _family(
            "centrifugo_transport_messages_sent_size",
            "Size in bytes of messages sent to client connections over specific transport.",
            "counter",
            traffic("sent", 1),
        ),
        _family(
            "centrifugo_transport_messages_received",
            "Number of messages received from client connections over specific transport.",
            "counter",
            traffic("received", 0),
        ),
        _family(
            "centrifugo_transport_messages_received_size",
            "Size in bytes of messages received from client connections over specific transport.",
            "counter",
            traffic("received", 1),
        ),
        _summary(
            "centrifugo_api_command_duration_seconds",
            "Duration of API per command.",
            [
                ({"protocol": protocol, "method": method}, values[0], values[1])
                for (protocol, method), values in facts.api_commands.items()
            ],
        ),
    ]
    families += _shard_families(answers, missing)
    return families


def _shard_families(answers: Mapping[int, Mapping[str, Any]], missing: Iterable[int]) -> list[Metric]:
    def per_shard(key: str) -> list[tuple[dict[str, str], float]]:
        return [({"shard": str(index)}, float(answers[index][key])) for index in sorted(answers)]

    up = [({"shard": str(index)}, 1.0) for index in answers] + [({"shard": str(i)}, 0.0) for i in missing]
    up.sort(key=lambda row: int(row[0]["shard"]))
    return [
        _family("switchboard_shard_up", "1 if the shard answered this scrape, else 0.", "gauge", up),
        _family(
            "switchboard_shard_clients", "Clients connected to the shard.", "gauge", per_shard("num_clients")
        ),
        _family(
            "switchboard_shard_rss_bytes", "Resident memory of the shard process.", "gauge", per_shard("rss")
        ),
        _family(
            "switchboard_shard_queue_bytes",
            "Bytes written to clients that their sockets have not taken yet.",
            "gauge",
            per_shard("queue_bytes"),
        ),
        _family(
            "switchboard_shard_loop_lag_seconds",
            "How late the shard's event loop ran its last one-second tick.",
            "gauge",
            per_shard("loop_lag"),
        ),
    ]


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4, one HELP and TYPE line per family."""
    lines: list[str] = []
    for family in families:
        name = family.name
        if (
            family.type == "counter"
            and family.samples
            and all(s.name == name + "_total" for s in family.samples)
        ):
            name += "_total"  # a prometheus_client counter (its samples end in _total)
        kind = family.type if family.type in ("counter", "gauge", "summary", "histogram") else "untyped"
        lines.append(f"# HELP {name} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {name} {kind}")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sample.labels.items())
                lines.append(f"{sample.name}{{{labels}}} {_number(sample.value)}")
            else:
                lines.append(f"{sample.name} {_number(sample.value)}")
    lines.append("")
    return "\n".join(lines).encode()
