"""The official SDKs against a two-shard server: centrifuge-js (npm ``centrifuge`` 5.x, in Node.js) and
centrifuge-python (PyPI ``centrifuge-python``), each in JSON and Protobuf.

Each scenario in ``scenarios.py`` runs once per client library and protocol. centrifuge-js clients are
``node/scenario.mjs`` in child processes (``make sdk-deps`` installs them); centrifuge-python clients run on
this process's event loop.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from tests.sdk import scenarios
from tests.sdk.common import PROTOCOLS, SHARDS, run
from tests.support.server import Server

CLIENT_LIBRARIES = ("js", "python")


@pytest.fixture(params=CLIENT_LIBRARIES)
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_connect_subscribe_and_receive_api_publication(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.connect_subscribe_and_receive_api_publication(server, sdk, protocol))


def test_publication_from_client_on_other_shard(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.publication_from_client_on_other_shard(server, sdk, protocol, sdk, protocol))


@pytest.mark.parametrize("other_protocol", PROTOCOLS)
def test_publications_between_the_two_libraries_on_other_shards(
    server: Server, sdk: str, protocol: str, other_protocol: str
) -> None:
    other = "js" if sdk == "python" else "python"
    run(scenarios.publication_from_client_on_other_shard(server, sdk, protocol, other, other_protocol))


def test_private_channel_with_subscription_token(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.private_channel_with_subscription_token(server, sdk, protocol))


def test_server_side_subscription_from_token_channels(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.server_side_subscription_from_token(server, sdk, protocol))


def test_token_refresh_through_get_token(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.token_refresh_through_get_token(server, sdk, protocol))


@pytest.mark.parametrize(
    ("disconnect", "code", "reason"),
    [({"code": 4501, "reason": "test"}, 4501, "test"), (None, 3503, "force disconnect")],
    ids=["custom", "default"],
)
def test_disconnect_by_api(
    server: Server, sdk: str, protocol: str, disconnect: dict[str, Any] | None, code: int, reason: str
) -> None:
    run(scenarios.disconnect_by_api(server, sdk, protocol, disconnect, code, reason))


def test_connections_list_every_session(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.connections_list_every_session(server, sdk, protocol))


def test_server_api_subscribe_broadcast_unsubscribe(server: Server, sdk: str, protocol: str) -> None:
    run(scenarios.server_api_subscribe_broadcast_unsubscribe(server, sdk, protocol))


@pytest.fixture(scope="module")
def features_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A two-shard server whose namespaces also have history, recovery, presence and join/leave."""
    extra = scenarios.FEATURES_EXTRA
    with Server(tmp_path_factory.mktemp("sdk-features"), shards=SHARDS, **extra) as srv:
        yield srv


def run_logged(server: Server, coro: Coroutine[Any, Any, None], timeout: float = 90.0) -> None:
    """``run``, printing the end of the server's log when the scenario fails."""
    try:
        run(coro, timeout)
    except BaseException:
        print(f"server log (tail):\n{server.log_tail()}")
        raise


def test_recovery_after_reconnect(features_server: Server, sdk: str, protocol: str) -> None:
    run_logged(features_server, scenarios.recovery_after_reconnect(features_server, sdk, protocol))


def test_presence_and_join_leave_across_shards(features_server: Server, sdk: str, protocol: str) -> None:
    run_logged(
        features_server, scenarios.presence_and_join_leave_across_shards(features_server, sdk, protocol)
    )


def test_history_from_sdk_matches_api(features_server: Server, sdk: str, protocol: str) -> None:
    run_logged(features_server, scenarios.history_from_sdk_matches_api(features_server, sdk, protocol))


def test_recovery_across_shard_restart(features_server: Server, sdk: str, protocol: str) -> None:
    run_logged(features_server, scenarios.recovery_across_shard_restart(features_server, sdk, protocol))


def test_publications_across_writer_restart(features_server: Server, sdk: str) -> None:
    scenario = scenarios.publications_across_writer_restart(features_server, sdk, "json")
    run_logged(features_server, scenario)


def test_publications_across_router_restart(features_server: Server, sdk: str) -> None:
    scenario = scenarios.publications_across_router_restart(features_server, sdk, "json")
    run_logged(features_server, scenario)
