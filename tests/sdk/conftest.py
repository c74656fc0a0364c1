from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import Server
from tests.sdk.common import SERVER_EXTRA, SHARDS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A two-shard server with the namespaces the SDK tests use (see ``common.SERVER_EXTRA``)."""
    with Server(tmp_path_factory.mktemp("sdk"), shards=SHARDS, extra=SERVER_EXTRA) as srv:
        yield srv
