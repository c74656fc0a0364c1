"""A shard's per-connection timers with a fake shard: expiry of connections and subscriptions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker import errors
from broker.config import build
from broker.protocol.state import SOURCE_SERVER_API, ConnectionState
from shards.connection import ClientConnection
from shards.timers import ConnectionTimers


class Conn(ClientConnection):
    def __init__(self, client: str, now: float) -> None:
        super().__init__(
            SimpleNamespace(unregister=lambda conn: None),
            ConnectionState(client, "s", "websocket", "json", now),
            "json-ws",
        )  # type: ignore[arg-type]
        self.closed_with: Any = None
        self.pinged: list[float] = []

    def close_with(self, disconnect: Any) -> None:
        self.closed_with = disconnect

    def ping(self, now: float) -> None:
        self.pinged.append(now)

    def check_pong(self, now: float) -> None:
        pass


class Host:
    def __init__(self) -> None:
        self.hub = SimpleNamespace(by_client={})
        self.unsubscribed: list[tuple[str, str, int]] = []

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None:
        self.unsubscribed.append((conn.state.client, channel, code))


def setup(now: float = 1000.0) -> tuple[ConnectionTimers, Host]:
    cfg = build({"token_hmac_secret_key": "x", "ping_interval": "5s", "pong_timeout": "2s"}, environ={})
    host = Host()
    return ConnectionTimers(cfg, host, now), host  # type: ignore[arg-type]


def test_a_connection_expires_at_its_time_unless_refreshed():
    timers, host = setup()
    a, b = Conn("a", 1000.0), Conn("b", 1000.0)
    a.state.expire_at = b.state.expire_at = 1010.0
    for conn in (a, b):
        host.hub.by_client[conn.state.client] = conn
        timers.track(conn)
    b.state.expire_at = 2000.0
    timers.expiry_changed(b)
    timers.tick(1011.0 + timers.cfg.client_expired_close_delay)
    assert a.closed_with is errors.CONNECTION_EXPIRED and b.closed_with is None


def test_every_connection_is_pinged_once_per_interval():
    timers, _ = setup()
    conns = [Conn(f"c{i}", 1000.0 + i % 5) for i in range(10)]
    for conn in conns:
        timers.track(conn)
    for second in range(1001, 1006):
        timers.tick(float(second))
    assert all(len(conn.pinged) == 1 for conn in conns)
    timers.untrack(conns[0])
    for second in range(1006, 1011):
        timers.tick(float(second))
    assert len(conns[0].pinged) == 1 and all(len(conn.pinged) == 2 for conn in conns[1:])


def test_an_expired_subscription_is_ended_2501_or_the_connection_closed_when_server_side():
    timers, host = setup()
    client, server_side = Conn("a", 1000.0), Conn("b", 1000.0)
    client.state.channels["news"] = 0
    server_side.state.channels["news"] = SOURCE_SERVER_API
    for conn in (client, server_side):
        conn.state.sub_expires = {"news": 1005.0}
        host.hub.by_client[conn.state.client] = conn
        timers.sub_expiry_changed(conn, "news")
    timers.tick(1006.0 + timers.cfg.client_expired_sub_close_delay)
    assert host.unsubscribed == [("a", "news", 2501)]
    assert server_side.closed_with is errors.SUBSCRIPTION_EXPIRED


def test_forgotten_connections_leave_no_timer_behind():
    timers, _ = setup()
    conn = Conn("a", 1000.0)
    conn.state.expire_at = 1100.0
    conn.state.sub_expires = {"x": 1100.0}
    timers.track(conn)
    timers.sub_expiry_changed(conn, "x")
    timers.untrack(conn)
    assert (len(timers.expiry), len(timers.sub_expiry), len(timers.pings)) == (0, 0, 0)


class Silent(Conn):
    """A connection whose pongs are checked: ``checked`` records when."""

    def __init__(self, client: str, now: float) -> None:
        super().__init__(client, now)
        self.checked: list[float] = []

    def check_pong(self, now: float) -> None:
        self.checked.append(now)


def test_no_pong_is_checked_until_the_loop_kept_time_after_a_stall():
    timers, _ = setup()
    conns = [Silent(f"c{i}", 1000.0 + i % 5) for i in range(10)]
    for conn in conns:
        timers.track(conn)
    for second in range(1001, 1011):
        timers.tick(float(second))
    checked = sum(len(conn.checked) for conn in conns)
    assert checked > 0  # on time: every pinged bucket is checked pong_timeout + 1 s later
    timers.tick(1040.0)  # 30 s in one step: pongs may be unread in the sockets
    for second in range(1041, 1043):
        timers.tick(float(second))
    assert sum(len(conn.checked) for conn in conns) == checked  # nobody blamed yet
    for second in range(1043, 1050):
        timers.tick(float(second))
    assert sum(len(conn.checked) for conn in conns) > checked  # kept time for a pong timeout: checked again
    assert all(len(conn.pinged) >= 2 for conn in conns)  # pings went on all along
