"""The shard's connection index."""

from __future__ import annotations

from broker.protocol.state import ConnectionState
from shards.hub import Hub


class Conn:
    def __init__(self, client: str, user: str, channels: tuple[str, ...] = ()):
        self.state = ConnectionState(client, "s-" + client, "uni_http_stream", "json", 0.0)
        self.state.user = user
        for ch in channels:
            self.state.channels[ch] = 1


def test_add_remove_keeps_every_index_consistent():
    hub = Hub()
    a, b, c = Conn("a", "u1", ("x", "y")), Conn("b", "u1", ("y",)), Conn("c", "u2")
    for conn in (a, b, c):
        hub.add(conn)
    assert hub.user_connections("u1") == {a, b}
    assert hub.by_channel["y"] == {a, b}
    assert hub.stats() == {
        "num_clients": 3,
        "num_users": 2,
        "num_anonymous": 0,
        "num_channels": 2,
        "num_subs": 3,
    }
    assert hub.remove(a)
    assert not hub.remove(a)
    assert "x" not in hub.by_channel
    assert hub.by_channel["y"] == {b}
    hub.remove(b)
    assert "u1" not in hub.by_user and "y" not in hub.by_channel
    assert len(hub) == 1


def test_subscribe_and_unsubscribe_follow_at_once():
    hub = Hub()
    a = Conn("a", "u1")
    hub.add(a)
    hub.subscribe(a, "news", 10)
    assert hub.by_channel["news"] == {a}
    assert a.state.channels == {"news": 10}
    hub.unsubscribe(a, "news")
    assert "news" not in hub.by_channel and a.state.channels == {}


def test_candidates_intersect_hints():
    hub = Hub()
    a, b, c = Conn("a", "u1", ("x",)), Conn("b", "u2", ("x", "y")), Conn("c", "u2", ())
    for conn in (a, b, c):
        hub.add(conn)
    assert set(hub.candidates()) == {a, b, c}
    assert set(hub.candidates(users={"u2"})) == {b, c}
    assert set(hub.candidates(users={"u2"}, channels={"x"})) == {b}
    assert set(hub.candidates(channels={"x", "y"})) == {b}
    assert set(hub.candidates(clients={"a", "zzz"})) == {a}
    assert set(hub.candidates(users={"nobody"})) == set()


def test_anonymous_counted_apart():
    hub = Hub()
    hub.add(Conn("a", ""))
    hub.add(Conn("b", ""))
    assert hub.stats()["num_users"] == 0
    assert hub.stats()["num_anonymous"] == 2


def test_candidates_by_app_name_and_transport():
    hub = Hub()
    web, ios, sse = Conn("a", "u1"), Conn("b", "u1"), Conn("c", "u2")
    web.state.app_name, ios.state.app_name, sse.state.app_name = "web", "ios", "web"
    sse.state.transport = "sse"
    for conn in (web, ios, sse):
        hub.add(conn)
    assert set(hub.candidates(app_names={"web"})) == {web, sse}
    assert set(hub.candidates(app_names={"web"}, transports=frozenset({"sse"}))) == {sse}
    assert set(hub.candidates(transports=frozenset({"uni_http_stream"}))) == {web, ios}
    assert set(hub.candidates(app_names={"nothing"})) == set()
    assert set(hub.candidates(users={"u1"}, app_names={"ios", "web"})) == {web, ios}
    hub.remove(sse)
    hub.remove(web)
    assert hub.by_app_name == {"ios": {ios}}  # nothing left behind by the ones that left


def test_a_user_with_one_connection_holds_no_set_and_every_lookup_agrees():
    hub = Hub()
    a, b, c = Conn("a", "u1"), Conn("b", "u1"), Conn("c", "u1")
    anon = [Conn(f"n{k}", "") for k in range(3)]
    for conn in (a, *anon):
        hub.add(conn)
    assert hub.by_user["u1"] is a  # the connection itself, not a one-element set
    assert list(hub.user_connections("u1")) == [a]
    assert hub.user_connections("nobody") == ()
    assert hub.stats()["num_anonymous"] == 3 and hub.stats()["num_users"] == 1
    hub.add(b)
    hub.add(c)
    assert set(hub.user_connections("u1")) == {a, b, c}
    assert set(hub.candidates(users=["u1", "nobody"])) == {a, b, c}
    hub.remove(b)
    hub.remove(a)
    assert list(hub.user_connections("u1")) == [c]
    assert set(hub.candidates(users=["u1"])) == {c}
    hub.remove(c)
    assert "u1" not in hub.by_user and hub.user_connections("u1") == ()
    assert not hub.remove(c)
    for conn in anon:
        hub.remove(conn)
    assert hub.by_user == {} and len(hub) == 0
