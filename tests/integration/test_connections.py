"""The connections API over hundreds of real connections on two shards."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.streamclient import StreamClient
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token
from tests.support.waiting import eventually

USERS = 200


@pytest.fixture(scope="module")
def population(server: Server) -> Iterator[dict[str, dict[str, str]]]:
    """USERS users, each with one uni_http_stream and one uni_sse connection; user → client → transport."""
    clients: list[StreamClient] = []
    owners: dict[str, dict[str, str]] = {}
    for i in range(USERS):
        user = f"user-{i}"
        token = make_token(
            user,
            meta={"tenant": f"tenant-{i % 5}", "secret": f"meta-secret-{i}"},
            channels=[f"room-{i % 10}"],
            jti=f"jti-{i}",
        )
        for transport in ("uni_http_stream", "uni_sse"):
            client = StreamClient(server.port, {"token": token, "name": "app", "version": "2.0"}, transport)
            clients.append(client)
    for client in clients:
        connect = client.connect()
        assert connect["subs"]
        owners.setdefault(client.user, {})[connect["client"]] = client.transport
    yield owners
    for client in clients:
        # Nothing the server wrote to any client carries a byte of a meta value.
        assert b"meta-secret" not in client.raw and b"tenant-" not in client.raw
        client.close()


def test_every_user_found_by_user_on_its_shard(server: Server, population) -> None:
    assert len(population) == USERS
    for user, clients in population.items():
        found = server.connections(user=user)
        assert set(found) == set(clients)
        transports = {info["transport"] for info in found.values()}
        assert transports == {"uni_http_stream", "uni_sse"}
        for info in found.values():
            assert info["user"] == user
            assert info["protocol"] == "json"
            assert info["app_name"] == "app" and info["app_version"] == "2.0"
            index = user.split("-")[1]
            assert info["state"]["meta"]["secret"] == f"meta-secret-{index}"
            assert info["state"]["connection_token"]["uid"] == f"jti-{index}"
            assert info["state"]["channels"] == {f"room-{int(index) % 10}": {"source": 1}}


def test_every_user_found_by_cel(server: Server, population) -> None:
    everyone = server.connections(expression='app_name == "app"')
    expected = {client for clients in population.values() for client in clients}
    assert set(everyone) == expected
    for user, clients in list(population.items())[:50]:
        found = server.connections(expression=f'user == "{user}" && transport == "uni_sse"')
        assert set(found) == {c for c, t in clients.items() if t == "uni_sse"}


def test_a_limit_caps_the_answer_and_total_counts_every_match(server: Server, population) -> None:
    everyone = {client for clients in population.values() for client in clients}
    capped = server.api("connections", {"expression": 'app_name == "app"', "limit": 7})["result"]
    assert len(capped["connections"]) == 7 and set(capped["connections"]) <= everyone
    assert capped["total"] == len(everyone)
    one = server.api("connections", {"user": "user-3", "limit": 1})["result"]
    assert len(one["connections"]) == 1 and one["total"] == 2
    whole = server.api("connections", {"expression": 'app_name == "app"'})["result"]
    assert "total" not in whole and set(whole["connections"]) == everyone  # no limit: the shape as before
    for bad in (-1, "3", 1.5, True):
        error = server.api("connections", {"user": "user-3", "limit": bad})["error"]
        assert error["code"] == 107, bad


def test_cel_over_meta_and_channels(server: Server, population) -> None:
    tenant0 = server.connections(expression='meta.tenant == "tenant-0"')
    assert len(tenant0) == 2 * USERS // 5
    assert all(info["state"]["meta"]["tenant"] == "tenant-0" for info in tenant0.values())
    room3 = server.connections(expression='"room-3" in channels && size(channels) == 1')
    assert len(room3) == 2 * USERS // 10
    combined = server.connections(expression='"room-3" in channels', user="user-3")
    assert {info["user"] for info in combined.values()} == {"user-3"}
    nothing = server.connections(expression='has(meta.missing) || meta.missing == "x"')
    assert nothing == {}


def test_bad_expressions_are_bad_requests(server: Server, population) -> None:
    for expression in ["user ==", "unknown_var == 1", 'user.matches("(")', "x" * 5000]:
        reply = server.api("connections", {"user": "", "expression": expression})
        assert reply["error"]["code"] == 107, expression
    reply = server.api("connections", {"user": "", "expression": ""})
    assert reply["error"]["code"] == 107
    # and the server keeps serving
    assert server.connections(user="user-1")


def test_info_counts(server: Server, population) -> None:
    node = server.api("info", {})["result"]["nodes"][0]
    assert node["num_clients"] == 2 * USERS
    assert node["num_users"] == USERS
    assert node["num_channels"] == 10
    assert sum(shard["num_clients"] for shard in node["shards"]) == 2 * USERS
    assert all(shard["num_clients"] > 0 for shard in node["shards"])  # users are spread over both shards


def test_legacy_batch_and_errors(server: Server, population) -> None:
    body = (
        b'{"method":"connections","params":{"user":"user-1"},"id":1}\n'
        b'{"method":"info","params":{}}\n'
        b'{"method":"rpc","params":{"method":"x"}}\n'
    )
    response = requests.post(
        f"{server.url}/api", data=body, headers={"Authorization": f"apikey {API_KEY}"}, timeout=5
    )
    lines = [line for line in response.text.split("\n") if line]
    assert response.status_code == 200 and len(lines) == 3
    import json

    first, second, third = (json.loads(line) for line in lines)
    assert first["id"] == 1 and len(first["result"]["connections"]) == 2
    assert second["result"]["nodes"][0]["num_clients"] == 2 * USERS
    assert third["error"]["code"] == 104


# -- costly expressions --------------------------------------------------------------------------------------

ONES_900 = "[" + ",".join(["1"] * 900) + "]"
# 3.6 KB, within the length, depth, node and nesting limits: ~10**6 evaluations per connection.
NESTED_900 = f"{ONES_900}.all(x, {ONES_900}.all(y, x == y))"


def test_too_costly_expression_is_refused_and_nothing_stalls(server: Server, population) -> None:
    pids = server.shard_pids()
    assert len(pids) == 2
    started = time.monotonic()
    reply = server.api("connections", {"user": "", "expression": NESTED_900}, timeout=20)
    elapsed = time.monotonic() - started
    assert reply["error"]["code"] == 107, (reply, elapsed)
    assert "expression too costly: estimated" in reply["error"]["message"]
    # Also with a user (answered by one shard) and with two thousand parentheses.
    reply = server.api("connections", {"user": "user-1", "expression": NESTED_900}, timeout=20)
    assert reply["error"]["code"] == 107
    deep = "(" * 2000 + 'user == "x"' + ")" * 2000
    reply = server.api("connections", {"user": "", "expression": deep}, timeout=20)
    assert reply["error"]["code"] == 107 and "levels of brackets" in reply["error"]["message"]
    # Both shards kept serving: same processes, every connection still there, /health answers.
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert server.shard_pids() == pids
    everyone = server.api("connections", {"user": "", "expression": 'app_name == "app"'}, timeout=5)
    assert "unavailable_shards" not in everyone["result"]
    assert len(everyone["result"]["connections"]) == 2 * USERS


def test_long_scan_leaves_the_shard_responsive(tmp_path: Path) -> None:
    """A long (admitted) scan yields: a publication reaches a client of the same shard meanwhile."""
    extra = {"connections_expression_max_cost": 100_000_000, "api_shard_timeout": "60s"}
    ones = "[" + ",".join(["1"] * 600) + "]"
    expression = f'{ones}.all(x, {ones}.all(y, x == y)) && app_name == "scan"'
    with Server(tmp_path, shards=1, **extra) as srv:
        clients = []
        for i in range(20):
            token = make_token(f"scan-{i}", channels=["news"])
            clients.append(StreamClient(srv.port, {"token": token, "name": "scan"}, timeout=20))
        try:
            for client in clients:
                client.connect()
            listener = clients[0]
            outcome: dict[str, Any] = {}

            def scan() -> None:
                reply = srv.api("connections", {"user": "", "expression": expression}, timeout=60)
                outcome["reply"] = reply
                outcome["done_at"] = time.monotonic()

            scanner = threading.Thread(target=scan)
            scanner.start()
            try:
                # A pause: nothing outside the shard shows that the scan (seconds long) has begun.
                time.sleep(0.3)
                published = srv.api("publish", {"channel": "news", "data": {"n": 1}}, timeout=20)
                assert "error" not in published
                push = listener.read_until("pub")
                delivered_at = time.monotonic()
                assert push["pub"]["data"] == {"n": 1}
                assert "done_at" not in outcome, "the publication waited for the scan"
            finally:
                scanner.join(timeout=60)
            assert not scanner.is_alive()
            assert outcome["done_at"] > delivered_at
            assert len(outcome["reply"]["result"]["connections"]) == 20
        finally:
            for client in clients:
                client.close()


def test_scan_stops_when_the_router_stops_waiting(tmp_path: Path) -> None:
    extra = {"connections_expression_max_cost": 100_000_000, "api_shard_timeout": "1s"}
    ones = "[" + ",".join(["1"] * 600) + "]"
    expression = f"{ones}.all(x, {ones}.all(y, x == y))"  # ~0.1 s per connection
    with Server(tmp_path, shards=1, **extra) as srv:
        clients = [
            StreamClient(srv.port, {"token": make_token(f"late-{i}"), "name": "late"}, timeout=20)
            for i in range(40)
        ]
        try:
            for client in clients:
                client.connect()
            reply = srv.api("connections", {"user": "", "expression": expression}, timeout=20)
            assert reply["result"] == {"connections": {}, "unavailable_shards": [0]}
            # The shard gave up too, without scanning the remaining connections, and keeps serving.
            assert len(srv.connections(user="late-1")) == 1
            stopped = eventually(
                lambda: re.search(r"connections scan stopped: deadline passed after (\d+) of 40", srv.log()),
                timeout=10,
                what="the shard to log that it stopped the scan",
            )
            assert int(stopped.group(1)) < 40
            assert "Traceback" not in srv.log()
        finally:
            for client in clients:
                client.close()
