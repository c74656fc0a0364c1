from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.sdk.common import SERVER_EXTRA, SHARDS
from tests.support.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A two-shard server with the namespaces the SDK tests use (see ``common.SERVER_EXTRA``)."""
    with Server(tmp_path_factory.mktemp("sdk"), shards=SHARDS, **SERVER_EXTRA) as srv:
        yield srv


@pytest.fixture(autouse=True)
def sdk_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """centrifuge-python logs every frame at debug level: shown with a failing test's report."""
    caplog.set_level(logging.DEBUG, logger="centrifuge")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failing SDK test's report carries the end of the server's log."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("server")
    if report.failed and isinstance(server, Server):
        report.sections.append(("server log (tail)", server.log_tail()))
