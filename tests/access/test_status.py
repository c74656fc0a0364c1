"""The in-memory user status store (the Redis one runs in tests/integration/test_multinode.py)."""

from __future__ import annotations

import asyncio

from broker.access.status import MemoryUserStatus


def test_active_online_delete_and_expiry() -> None:
    async def scenario() -> None:
        store = MemoryUserStatus(ttl=100)
        await store.set_active(["a", "b"], 1000)
        await store.set_online(["a"], 1005)
        await store.set_online(["a"], 1001)  # an older time never moves it back
        assert await store.get(["a", "b", "c"]) == {"a": (1000, 1005), "b": (1000, 0)}
        await store.delete(["b"])
        assert await store.get(["b"]) == {}
        assert store.forget_expired(1104) == 0 and store.forget_expired(1105) == 1 and len(store) == 0

    asyncio.run(scenario())
