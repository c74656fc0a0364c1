"""What a shard counts for Prometheus, in plain dicts.

Bumping a counter costs a dict update on the path that does the work (a connect, a command, a flush of
a socket's queued bytes); nothing here formats or locks. The router reads every shard's
:meth:`ShardCounters.snapshot` in one control round trip per scrape and adds them up
(:mod:`broker.metrics.exposition`). Label values are bounded: transports and methods are fixed sets,
codes are numbers, and a client's name and version become labels only for the official SDKs' names.
"""

from __future__ import annotations

from typing import Any

# The names the official SDKs send in the connect request; any other name is counted under "" so that a
# client cannot make the label set grow (Centrifugo restricts this label the same way).
KNOWN_CLIENT_NAMES = frozenset(
    {"js", "go", "python", "dart", "swift", "java", "csharp", "unity", "flutter", "react-native"}
)
# Longest client version kept as a label; longer ones are counted under "".
_MAX_VERSION = 32

# Labels of connections_inflight: transport, client name, client version.
ClientKey = tuple[str, str, str]


def client_key(transport: str, name: str, version: str) -> ClientKey:
    if name not in KNOWN_CLIENT_NAMES:
        return (transport, "", "")
    return (transport, name, version if len(version) <= _MAX_VERSION else "")


class ShardCounters:
    """Monotonic counters and one gauge (connections in flight) of one shard."""

    __slots__ = (
        "broker_received",
        "broker_sent",
        "commands",
        "connects",
        "disconnects",
        "inflight",
        "received",
        "reply_errors",
        "sent",
        "unsubscribes",
    )

    def __init__(self) -> None:
        self.connects: dict[str, int] = {}  # by transport
        self.inflight: dict[ClientKey, int] = {}
        self.commands: dict[str, list[float]] = {}  # by method: [count, seconds]
        self.reply_errors: dict[tuple[str, int], int] = {}  # by (method, code)
        self.disconnects: dict[int, int] = {}  # server-initiated, by code
        self.unsubscribes: dict[int, int] = {}  # server-initiated, by code
        self.sent: dict[str, list[int]] = {}  # to clients, by transport: [messages, bytes]
        self.received: dict[str, list[int]] = {}  # from clients, by transport: [messages, bytes]
        self.broker_sent: dict[str, int] = {}  # to the data plane, by type (publication, join, leave)
        self.broker_received: dict[str, int] = {}  # from the data plane, by type

    # -- connections -----------------------------------------------------------------------------

    def connected(self, key: ClientKey) -> None:
        """A connection entered the hub (passed connect and every check)."""
        self.connects[key[0]] = self.connects.get(key[0], 0) + 1
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def left(self, key: ClientKey) -> None:
        """A connection counted by :meth:`connected` left the hub."""
        count = self.inflight.get(key, 0) - 1
        if count > 0:
            self.inflight[key] = count
        else:
            self.inflight.pop(key, None)  # a label set with no connection is not kept forever

    def server_disconnect(self, code: int) -> None:
        self.disconnects[code] = self.disconnects.get(code, 0) + 1

    def server_unsubscribe(self, code: int) -> None:
        self.unsubscribes[code] = self.unsubscribes.get(code, 0) + 1

    # -- commands --------------------------------------------------------------------------------

    def command(self, method: str, seconds: float) -> None:
        found = self.commands.get(method)
        if found is None:
            self.commands[method] = [1, seconds]
        else:
            found[0] += 1
            found[1] += seconds

    def reply_error(self, method: str, code: int) -> None:
        key = (method, code)
        self.reply_errors[key] = self.reply_errors.get(key, 0) + 1

    # -- traffic ---------------------------------------------------------------------------------

    def sent_to_client(self, transport: str, messages: int, size: int) -> None:
        found = self.sent.get(transport)
        if found is None:
            self.sent[transport] = [messages, size]
        else:
            found[0] += messages
            found[1] += size

    def received_from_client(self, transport: str, size: int) -> None:
        found = self.received.get(transport)
        if found is None:
            self.received[transport] = [1, size]
        else:
            found[0] += 1
            found[1] += size

    def broker_message_sent(self, kind: str) -> None:
        self.broker_sent[kind] = self.broker_sent.get(kind, 0) + 1

    def broker_message_received(self, kind: str) -> None:
        self.broker_received[kind] = self.broker_received.get(kind, 0) + 1

    # -- reading ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every counter as JSON: lists of ``[label, …, value]`` rows."""
        return {
            "connects": [[t, n] for t, n in self.connects.items()],
            "inflight": [[*key, n] for key, n in self.inflight.items()],
            "commands": [[m, int(c), s] for m, (c, s) in self.commands.items()],
            "reply_errors": [[m, code, n] for (m, code), n in self.reply_errors.items()],
            "disconnects": [[code, n] for code, n in self.disconnects.items()],
            "unsubscribes": [[code, n] for code, n in self.unsubscribes.items()],
            "sent": [[t, m, b] for t, (m, b) in self.sent.items()],
            "received": [[t, m, b] for t, (m, b) in self.received.items()],
            "broker_sent": [[k, n] for k, n in self.broker_sent.items()],
            "broker_received": [[k, n] for k, n in self.broker_received.items()],
        }


def add_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, dict[tuple[Any, ...], list[float]]]:
    """Several shards' snapshots as one: for each counter, its label tuple → summed values."""
    total: dict[str, dict[tuple[Any, ...], list[float]]] = {}
    for snapshot in snapshots:
        for name, rows in snapshot.items():
            width = _LABELS.get(name)
            if width is None:
                continue  # a counter this router does not know (a shard of a newer version)
            merged = total.setdefault(name, {})
            for row in rows:
                labels, values = tuple(row[:width]), row[width:]
                found = merged.get(labels)
                if found is None:
                    merged[labels] = list(values)
                else:
                    for i, value in enumerate(values):
                        found[i] += value
    return total


# How many leading fields of each snapshot row are labels (the rest are values).
_LABELS = {
    "connects": 1,
    "inflight": 3,
    "commands": 1,
    "reply_errors": 2,
    "disconnects": 1,
    "unsubscribes": 1,
    "sent": 1,
    "received": 1,
    "broker_sent": 1,
    "broker_received": 1,
}
