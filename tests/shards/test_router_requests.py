"""What the router asks a shard, answered over a fake shard: no processes, no sockets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from broker import errors
from broker.errors import Disconnect
from shards import peer_requests
from shards.router_requests import ROUTER_HANDLERS, channels, disconnect, publish_many


class FakeShard:
    def __init__(self, connections: list[Any]) -> None:
        self._connections = connections
        self.hub = SimpleNamespace(
            user_connections=lambda user: [c for c in connections if c.state.user == user],
            by_channel={"chat:1": connections[:2], "chat:2": connections[:1], "news": connections},
        )
        self.disconnected: list[tuple[str, Any]] = []
        self.published: list[str] = []
        self.writer = self  # writes the channels itself

    def disconnect(self, conn: Any, reason: Any) -> None:
        self.disconnected.append((conn.state.client, reason))

    def writing(self) -> bool:
        return True

    async def write_publication(self, publication: Any, **_options: Any) -> dict[str, Any]:
        self.published.append(publication.channel)
        return {"offset": len(self.published)}


def _conn(user: str, client: str, session: str = "") -> Any:
    return SimpleNamespace(state=SimpleNamespace(user=user, client=client, session=session))


def _shard() -> Any:
    return FakeShard([_conn("42", "a", "s1"), _conn("42", "b"), _conn("7", "c")])


def test_disconnect_closes_the_users_connections_but_the_whitelisted():
    shard = _shard()
    assert disconnect(shard, {"user": "42", "whitelist": ["b"]}) == {"disconnected": 1}
    assert shard.disconnected == [("a", errors.FORCE_DISCONNECT)]


def test_disconnect_with_a_code_and_reason_of_the_callers_choice():
    shard = _shard()
    spec = {"code": 4000, "reason": "bye"}
    assert disconnect(shard, {"user": "42", "session": "s1", "disconnect": spec}) == {"disconnected": 1}
    assert shard.disconnected == [("a", Disconnect(4000, "bye"))]


def test_channels_counts_local_subscribers_filtered_by_pattern():
    shard = _shard()
    assert channels(shard, {}) == {"channels": {"chat:1": 2, "chat:2": 1, "news": 3}}
    assert channels(shard, {"pattern": "chat:*"}) == {"channels": {"chat:1": 2, "chat:2": 1}}


def test_publish_many_answers_each_channel_in_order_errors_included():
    shard = _shard()
    answer = asyncio.run(publish_many(shard, {"channels": ["a", "", "b"], "data": {"x": 1}}))
    assert answer == {
        "responses": [
            {"result": {"offset": 1}},
            {"error": {"code": errors.BAD_REQUEST.code, "message": errors.BAD_REQUEST.message}},
            {"result": {"offset": 2}},
        ]
    }


def test_the_router_may_ask_the_api_methods_and_shares_the_writers_answers_with_peers():
    assert set(ROUTER_HANDLERS) == {
        "emulation",
        "connections",
        "disconnect",
        "info",
        "metrics",
        "publish",
        "publish_many",
        "subscribe",
        "unsubscribe",
        "refresh",
        "presence",
        "presence_stats",
        "channels",
        "history",
        "history_remove",
        "access",
        "user_status",
    }
    shared = set(ROUTER_HANDLERS) & set(peer_requests.PEER_HANDLERS)
    assert shared == {"publish", "presence", "presence_stats", "history"}
    assert all(ROUTER_HANDLERS[m] is peer_requests.PEER_HANDLERS[m] for m in shared)
