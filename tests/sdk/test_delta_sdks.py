"""Delta compression through both official SDKs: a subscriber that asked for ``delta: "fossil"`` decodes the
same data as one that did not, over 100 publications of a document with small edits, with a reconnect
and recovery in the middle (the first publication after it comes in full, then deltas again)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.common import PROTOCOLS, SERVER_EXTRA, SHARDS, api, connection_token, run, unique
from tests.sdk.scenarios import SdkClient, connected, open_client, subscribed
from tests.support.server import Server

PUBLICATIONS = 100
AWAY = range(40, 60)  # published while the delta subscriber is disconnected (it recovers them)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    delta = {
        "name": "delta",
        "history_size": PUBLICATIONS,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_recovery": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
    }
    extra = {**SERVER_EXTRA, "namespaces": [*SERVER_EXTRA["namespaces"], delta]}
    with Server(tmp_path_factory.mktemp("delta-sdks"), shards=SHARDS, **extra) as srv:
        yield srv


def document(n: int) -> dict[str, Any]:
    """A ~4 KB JSON document whose n-th version differs from the one before in a couple of fields."""
    items = [
        {"id": i, "title": f"item number {i}", "price": i * 3, "stock": 10, "tags": ["x", "y"]}
        for i in range(40)
    ]
    doc: dict[str, Any] = {"version": n, "items": copy.deepcopy(items)}
    doc["items"][n % 40]["stock"] = n
    doc["items"][(n * 7) % 40]["title"] = f"edited at {n}"
    return doc


async def received(client: SdkClient, channel: str, count: int) -> dict[int, Any]:
    await client.log.wait_until(
        lambda _: len(client.log.all("publication", channel=channel)) >= count,
        f"{count} publications in {channel}",
        timeout=30,
    )
    return {int(e["offset"]): e["data"] for e in client.log.all("publication", channel=channel)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("sdk", ["js", "python"])
def test_delta_subscriber_decodes_what_a_plain_one_receives(server: Server, sdk: str, protocol: str) -> None:
    async def scenario() -> None:
        channel = unique("delta:doc")
        async with contextlib.AsyncExitStack() as stack:
            plain = await open_client(
                stack, sdk, server, "plain", protocol, connection_token(unique("plain"))
            )
            delta = await open_client(
                stack, sdk, server, "delta", protocol, connection_token(unique("delta"))
            )
            await connected(plain)
            await connected(delta)
            await plain.subscribe(channel, recoverable=True)
            await delta.subscribe(channel, recoverable=True, delta="fossil")
            await subscribed(plain, channel)
            await subscribed(delta, channel)
            for n in range(PUBLICATIONS):
                if n == AWAY.start:
                    await received(delta, channel, n)
                    await delta.disconnect()
                    await delta.log.wait("disconnected")
                if n == AWAY.stop:
                    await delta.connect()
                    await delta.log.wait("subscribed", channel=channel, was_recovering=True, recovered=True)
                await api(server, "publish", {"channel": channel, "data": document(n)})
            expected = {n + 1: document(n) for n in range(PUBLICATIONS)}
            assert await received(plain, channel, PUBLICATIONS) == expected
            assert await received(delta, channel, PUBLICATIONS) == expected

    run(scenario(), 120)
