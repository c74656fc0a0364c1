"""The Redis test support itself: a server answers, restarts empty on its port, and a cluster forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import redis_server
from tests.support.redis_server import RedisCluster, RedisServer, command

pytestmark = pytest.mark.skipif(not redis_server.available(), reason="redis-server is installed by make test")


def test_a_server_answers_forgets_on_restart_and_stops(tmp_path: Path):
    with RedisServer(tmp_path) as server:
        assert command(server.port, "SET", "k", "v") == b"+OK\r\n"
        assert command(server.port, "GET", "k") == b"$1\r\nv\r\n"
        pid = server.pid
        server.restart()
        assert server.pid != pid
        assert command(server.port, "GET", "k") == b"$-1\r\n"  # nothing persisted
    assert not server.running


def test_three_masters_form_a_cluster_that_covers_every_slot(tmp_path: Path):
    with RedisCluster(tmp_path) as cluster:
        info = command(cluster.nodes[0].port, "CLUSTER", "INFO")
        assert b"cluster_slots_assigned:16384" in info and b"cluster_known_nodes:3" in info
        assert cluster.address.startswith("redis+cluster://127.0.0.1:")
    assert not any(node.running for node in cluster.nodes)
