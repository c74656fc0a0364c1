"""The server HTTP API as the router serves it.

* :mod:`router.api.http` — authentication and the two request styles (``/api/<method>``, legacy ``/api``);
* :mod:`router.api.params` — one validated params type per method;
* :mod:`router.api.methods` — the table of methods: where each is routed, or the handler that gathers
  every shard;
* :mod:`router.api.merge` — shards' answers combined into one.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any

from broker.channels import ChannelRules
from broker.config import Config
from broker.connections_filter import compile_connections_filter
from broker.engine import Engines, engines_for
from broker.ipc.channel_counts import open_counts
from broker.ipc.shm_index import CountIndex
from router.api import http
from router.api.across import Across
from router.api.methods import METHODS, run_method
from router.cluster import Cluster
from router.emulation import deliver as deliver_emulation
from router.http import Request
from router.metrics import ApiTimings
from router.nodes import Nodes
from router.user_index import UserIndexes


class Api:
    def __init__(self, cfg: Config, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.uid = cfg.node_id
        self.started_at = time.monotonic()
        self.rules = ChannelRules.from_config(cfg)
        self._counts: CountIndex | None = None
        compile_connections_filter("true", cfg)  # builds the CEL parser now
        # The other nodes (Redis engine): set by :meth:`join_nodes`; None while this node is alone.
        self.across: Across | None = None
        self.engines: Engines | None = None
        self.nodes: Nodes | None = None
        self.timings = ApiTimings()
        self.user_indexes = UserIndexes(cfg)

    async def join_nodes(self) -> None:
        """With the Redis engine: listen to the other nodes and tell them about this one."""
        if self.cfg.engine != "redis":
            return
        from broker.access.redis_store import RedisAccessStore
        from broker.engine.redis_keys import RedisKeys
        from broker.engine.redis_users import RedisUsers

        self.engines = engines_for(self.cfg, label="router", control=True)
        users = RedisUsers(self.engines.redis, RedisKeys(self.cfg.redis_prefix))
        self.nodes = Nodes(
            self.uid,
            self.cfg.node_display_name,
            self.engines.broker,
            self._for_another_node,
            self._node_info,
            float(self.cfg.node_info_interval),
        )
        await self.nodes.start(float(self.cfg.redis_connect_timeout) + float(self.cfg.redis_io_timeout))
        store = RedisAccessStore(self.engines.redis, self.cfg.redis_prefix)
        self.across = Across(self.cfg, self.rules, self.nodes, users, self.engines.presence, store)

    async def _for_another_node(self, method: str, params: dict[str, Any]) -> Any:
        """What another node asks of this one: an API method on this node alone, or an emulation
        frame for a session held here."""
        if method == "emulation":
            return await deliver_emulation(self.cluster, params)
        return await run_method(self, method, params, here_only=True)

    async def _node_info(self) -> dict[str, Any]:
        answer: dict[str, Any] = await run_method(self, "info", {}, here_only=True)
        node: dict[str, Any] = answer["nodes"][0]
        return node

    async def close(self) -> None:
        self.user_indexes.close()
        if self.nodes is not None:
            await self.nodes.close()
        if self.engines is not None:
            await self.engines.close()

    def authorized(self, request: Request) -> bool:
        return http.authorized(self.cfg, request)

    async def serve_method(self, method: str, request: Request) -> tuple[int, bytes]:
        return await http.serve_method(self.cfg, METHODS, self.call, method, request)

    async def serve_legacy(self, request: Request) -> tuple[int, bytes]:
        return await http.serve_legacy(self.cfg, self.call, request)

    async def call(self, method: str, params: Any) -> Any:
        started = perf_counter()
        try:
            return await run_method(self, method, params)
        finally:
            if method in METHODS:  # a name the client made up is not a label
                self.timings.observe(method, perf_counter() - started)

    def num_nodes(self) -> int:
        return 1 + (len(self.nodes.live()) if self.nodes is not None else 0)

    def shards_with_subscribers(self, channel: str) -> list[int] | None:
        """From the shared channel counts: the shards that have subscribers (None = unknown, ask all)."""
        if self._counts is None and self.cfg.shm_index:
            self._counts = open_counts(self.cfg)
        if self._counts is None:
            return None
        return self._counts.nonzero_columns(channel)
