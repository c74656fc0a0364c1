"""``/metrics`` of a whole node (router + 2 shards), read with prometheus_client's own parser: the
counts equal ``info``'s, the counters add up over the shards, and a 3503 disconnect shows under its code."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import eventually

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(
        tmp_path_factory.mktemp("metrics"), shards=2, prometheus=True, allow_subscribe_for_client=True
    ) as srv:
        yield srv


def scrape(server: Server) -> Samples:
    response = requests.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            # The parser names a counter's samples <family>_total; the text has Centrifugo's names.
            name = family.name if sample.name == family.name + "_total" else sample.name
            assert f"\n{name}" in response.text, name
            samples[(name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def node_info(server: Server) -> dict[str, int]:
    node = server.api("info", {})["result"]["nodes"][0]
    return {key: node[key] for key in ("num_clients", "num_users", "num_channels", "num_subs")}


def gauges(samples: Samples) -> dict[str, int]:
    return {
        "num_clients": int(value(samples, "centrifugo_node_num_clients")),
        "num_users": int(value(samples, "centrifugo_node_num_users")),
        "num_channels": int(value(samples, "centrifugo_node_num_channels")),
        "num_subs": int(value(samples, "centrifugo_node_num_subscriptions")),
    }


def test_counts_equal_info_after_clients_connect_across_shards(server: Server) -> None:
    before = scrape(server)
    users = users_on_shards("metrics-count") * 3  # both shards, and a user with several connections

    async def scenario() -> None:
        clients = []
        for n, user in enumerate(users):
            client = await WsClient.open(server.port)
            assert "connect" in await client.connect(make_token(user), name="js", version="5.0.0")
            assert "subscribe" in await client.subscribe("shared")
            assert "subscribe" in await client.subscribe(f"own-{n % 4}")
            clients.append(client)
        try:
            eventually(
                lambda: gauges(scrape(server)) == node_info(server), timeout=5, what="counts to settle"
            )
            samples = scrape(server)
            assert gauges(samples) == node_info(server)
            assert gauges(samples) == {"num_clients": 6, "num_users": 2, "num_channels": 5, "num_subs": 12}
            connects = value(samples, "centrifugo_transport_connect_count", transport="websocket")
            assert connects - value(before, "centrifugo_transport_connect_count", transport="websocket") == 6
            inflight = value(
                samples,
                "centrifugo_client_connections_inflight",
                transport="websocket",
                client_name="js",
                client_version="5.0.0",
            )
            assert inflight == 6
            # Every connect and both subscribes were timed, by method.
            subscribes = value(
                samples, "centrifugo_client_command_duration_seconds_count", method="subscribe"
            )
            assert (
                subscribes
                - value(before, "centrifugo_client_command_duration_seconds_count", method="subscribe")
                == 12
            )
            assert value(samples, "centrifugo_transport_messages_received", transport="websocket") >= 18
            assert value(samples, "centrifugo_transport_messages_sent_size", transport="websocket") > 0
            for shard in ("0", "1"):
                assert value(samples, "switchboard_shard_up", shard=shard) == 1
                assert value(samples, "switchboard_shard_clients", shard=shard) == 3
                assert value(samples, "switchboard_shard_rss_bytes", shard=shard) > 1_000_000
        finally:
            for client in clients:
                await client.close()

    run(scenario())
    eventually(lambda: node_info(server)["num_clients"] == 0, timeout=5, what="clients to leave")
    assert gauges(scrape(server))["num_clients"] == 0


def test_a_forced_disconnect_shows_under_its_code(server: Server) -> None:
    before = value(scrape(server), "centrifugo_client_num_server_disconnects", code="3503")
    user = users_on_shards("metrics-dc")[1]

    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token(user))
        server.api("disconnect", {"user": user})  # 3503 "force disconnect"
        assert (await client.closed())[0] == 3503

    run(scenario())
    after = value(scrape(server), "centrifugo_client_num_server_disconnects", code="3503")
    assert after - before == 1


def test_publications_and_api_commands_are_counted(server: Server) -> None:
    before = scrape(server)
    user = users_on_shards("metrics-pub")[0]

    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token(user))
        await client.subscribe("feed")
        for n in range(3):
            server.api("publish", {"channel": "feed", "data": {"n": n}})
        assert len(await client.publications("feed", 3)) == 3
        await client.close()

    run(scenario())
    samples = scrape(server)
    sent = "centrifugo_node_messages_sent_count"
    received = "centrifugo_node_messages_received_count"
    assert value(samples, sent, type="publication") - value(before, sent, type="publication") == 3
    assert value(samples, received, type="publication") - value(before, received, type="publication") >= 3
    api = "centrifugo_api_command_duration_seconds_count"
    assert (
        value(samples, api, protocol="http", method="publish")
        - value(before, api, protocol="http", method="publish")
        == 3
    )
    assert value(samples, "centrifugo_node_build", version=next(iter(_versions(samples)))) == 1
    assert value(samples, "process_resident_memory_bytes") > 0  # the router's own process


def _versions(samples: Samples) -> list[str]:
    return [dict(labels)["version"] for name, labels in samples if name == "centrifugo_node_build"]


def test_a_silent_shard_shows_as_down_and_the_scrape_still_answers(server: Server) -> None:
    pid = server.shard_pids()[1]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        samples = scrape(server)
        assert time.monotonic() - started < 10
        assert value(samples, "switchboard_shard_up", shard="1") == 0
        assert value(samples, "switchboard_shard_up", shard="0") == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    server.wait_ready()


def test_metrics_answer_get_only_and_nothing_when_disabled(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert requests.post(f"{server.url}/metrics", timeout=5).status_code == 405
    with Server(tmp_path_factory.mktemp("no-metrics"), shards=1) as plain:
        assert requests.get(f"{plain.url}/metrics", timeout=5).status_code == 404


def test_scrapes_in_parallel_do_not_disturb_each_other(server: Server) -> None:
    async def many() -> list[int]:
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(None, lambda: len(scrape(server))) for _ in range(8)]
        return list(await asyncio.gather(*futures))

    sizes = run(many())
    assert min(sizes) > 20
