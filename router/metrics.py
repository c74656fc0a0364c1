"""``/metrics``: the whole node in one Prometheus scrape.

A scrape costs the shards one control round trip: every shard is asked ``metrics`` at once (a scatter-
gather with the API's shard deadline) and answers its counts and counters from memory; the router adds
them up (:mod:`broker.metrics.exposition`) with its own API timings and its process metrics
(``prometheus_client``'s process collector). A shard that does not answer in time is shown as
``switchboard_shard_up{shard=…} 0`` rather than failing the scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric

from broker import __version__
from broker.metrics.exposition import NodeFacts, node_families, render
from router.cluster import Cluster

log = logging.getLogger("switchboard.router")


class ApiTimings:
    """Server API commands served by this router, by (protocol, method): count and seconds."""

    def __init__(self) -> None:
        self.commands: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, seconds: float) -> None:
        found = self.commands.get(("http", method))
        if found is None:
            self.commands[("http", method)] = [1, seconds]
        else:
            found[0] += 1
            found[1] += seconds


class MetricsEndpoint:
    def __init__(
        self, cluster: Cluster, timeout: float, timings: ApiTimings, num_nodes: Callable[[], int]
    ) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.timings = timings
        self.num_nodes = num_nodes
        self._process = ProcessCollector(registry=None)

    async def scrape(self) -> bytes:
        gathered = await self.cluster.gather("metrics", {}, self.timeout)
        for index, err in sorted(gathered.errors.items()):
            log.warning("metrics: shard %d failed: %s", index, err)
        facts = NodeFacts(__version__, self.num_nodes(), self.timings.commands)
        missing = sorted({*gathered.missing, *gathered.errors})
        families: list[Metric] = node_families(gathered.results, missing, facts)
        families += self._process.collect()
        return render(families)
