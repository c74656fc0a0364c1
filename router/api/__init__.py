"""The server HTTP API as the router serves it.

* :mod:`router.api.http` — authentication and the two request styles (``/api/<method>``, legacy ``/api``);
* :mod:`router.api.params` — one validated params type per method;
* :mod:`router.api.methods` — the table of methods: where each is routed, or the handler that gathers
  every shard;
* :mod:`router.api.merge` — shards' answers combined into one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from broker.channels import ChannelRules
from broker.config import Config
from broker.connections_filter import compile_connections_filter
from broker.ipc.channel_counts import open_counts
from broker.ipc.shm_index import CountIndex
from router.api import http
from router.api.methods import METHODS, run_method
from router.cluster import Cluster
from router.http import Request


class Api:
    def __init__(self, cfg: Config, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.uid = str(uuid.uuid4())
        self.started_at = time.monotonic()
        self.rules = ChannelRules.from_config(cfg)
        self._counts: CountIndex | None = None
        compile_connections_filter("true", cfg)  # builds the CEL parser now

    def authorized(self, request: Request) -> bool:
        return http.authorized(self.cfg, request)

    async def serve_method(self, method: str, request: Request) -> tuple[int, bytes]:
        return await http.serve_method(self.cfg, METHODS, self.call, method, request)

    async def serve_legacy(self, request: Request) -> tuple[int, bytes]:
        return await http.serve_legacy(self.cfg, self.call, request)

    async def call(self, method: str, params: Any) -> Any:
        return await run_method(self, method, params)

    def shards_with_subscribers(self, channel: str) -> list[int] | None:
        """From the shared channel counts: the shards that have subscribers (None = unknown, ask all)."""
        if self._counts is None and self.cfg.shm_index:
            self._counts = open_counts(self.cfg)
        if self._counts is None:
            return None
        return self._counts.nonzero_columns(channel)
