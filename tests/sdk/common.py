"""Shared pieces of the official-SDK tests.

The server these tests run against, users placed on chosen shards, connection and subscription tokens,
and :class:`EventLog`: what an SDK client reported, with bounded waits on it. Every wait has a deadline;
nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from broker.hashing import shard_for_user
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import scaled

SHARDS = 2
PROTOCOLS = ("json", "protobuf")
# Seconds the server keeps an expired connection open before closing it (3005).
EXPIRED_CLOSE_DELAY = 1.0

SERVER_EXTRA: dict[str, Any] = {
    "client_expired_close_delay": f"{EXPIRED_CLOSE_DELAY:g}s",
    # Channels without a namespace: any user may subscribe and publish.
    "allow_subscribe_for_client": True,
    "allow_publish_for_client": True,
    "namespaces": [
        # Client-side subscriptions; publishing needs a subscription.
        {"name": "chat", "allow_subscribe_for_client": True, "allow_publish_for_subscriber": True},
        # Server-side subscriptions only (from the token's `channels`); clients cannot subscribe.
        {"name": "news"},
        # Private `$priv:...` channels: a subscription token is the only way in.
        {"name": "priv"},
    ],
}

T = TypeVar("T")


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/connection/websocket"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def users_on_different_shards(prefix: str) -> tuple[str, str]:
    """Two fresh user ids whose connections live on different shards."""
    first = unique(prefix)
    home = shard_for_user(first, SHARDS)
    for n in range(1000):
        second = f"{first}-{n}"
        if shard_for_user(second, SHARDS) != home:
            return first, second
    raise AssertionError("no user on another shard")  # crc32 spreads ids: unreachable in practice


def connection_token(user: str, ttl: float = 3600, **claims: Any) -> str:
    now = int(time.time())
    return make_token(user, iat=now, exp=int(now + ttl), **claims)


async def api(server: Server, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The server API, off the event loop so that SDK clients keep answering pings meanwhile."""
    reply = await asyncio.to_thread(server.api, method, params)
    assert "error" not in reply, f"{method} {params} failed: {reply}"
    return reply.get("result", {})


async def connections(server: Server, user: str = "", expression: str = "") -> dict[str, Any]:
    result = await api(server, "connections", {"user": user, "expression": expression})
    assert not result.get("unavailable_shards"), result
    return dict(result["connections"])


def channel_sources(info: dict[str, Any]) -> dict[str, int]:
    """``{channel: source}`` of one ConnectionInfo."""
    channels = info.get("state", {}).get("channels", {})
    return {name: int(value.get("source", 0)) for name, value in channels.items()}


Event = dict[str, Any]


def matches(event: Event, name: str, fields: dict[str, Any]) -> bool:
    return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())


class EventLog:
    """Events reported by one SDK client, in arrival order, with bounded waits."""

    def __init__(self, label: str, diagnostics: Callable[[], str] | None = None) -> None:
        self.label = label
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._diagnostics = diagnostics

    def add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    def all(self, name: str, **fields: Any) -> list[Event]:
        return [e for e in self.events if matches(e, name, fields)]

    def after(self, index: int, name: str, **fields: Any) -> list[Event]:
        return [e for e in self.events[index:] if matches(e, name, fields)]

    def describe(self) -> str:
        lines = [f"{self.label}: {len(self.events)} events"]
        lines += [json.dumps(e, default=str) for e in self.events[-60:]]
        if self._diagnostics is not None:
            lines.append(self._diagnostics())
        return "\n".join(lines)

    async def wait(self, name: str, timeout: float = 10.0, start: int = 0, **fields: Any) -> Event:
        """The first event ``name`` (from index ``start``) whose fields equal ``fields``."""
        return await self.wait_until(lambda e: matches(e, name, fields), f"{name} {fields}", timeout, start)

    async def wait_until(
        self, predicate: Callable[[Event], bool], what: str, timeout: float = 10.0, start: int = 0
    ) -> Event:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            changed = self._changed
            for event in self.events[start:]:
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout}s\n{self.describe()}")
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def quiet(self, seconds: float, names: Iterable[str], start: int = 0) -> None:
        """Assert that none of ``names`` happens (from index ``start``) within ``seconds``."""
        await asyncio.sleep(seconds)  # the point: a stretch of time in which nothing may happen
        unexpected = [e for e in self.events[start:] if e.get("event") in set(names)]
        assert not unexpected, f"unexpected {unexpected}\n{self.describe()}"


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one test's coroutine with an overall deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, scaled(timeout))

    return asyncio.run(bounded())
