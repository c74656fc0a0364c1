"""Connections to the Redis shards a node uses, built from the config, and the check made at start.

With several addresses in ``redis_address`` every channel and every user lives on one shard, picked by
a consistent hash (:func:`broker.engine.redis_address.shard_index`); node control (info, requests
between nodes) lives on the first. Calls fail fast: one quick retry for a connection Redis dropped,
then the error, so that a client's publish during an outage is answered 100 promptly instead of waiting
out a backoff.
"""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from broker.engine.redis_address import RedisKeySource, RedisShard, redis_shards, shard_index

Client = Redis | RedisCluster

# Connections one process keeps to one Redis server at most.
POOL_SIZE = 64


class RedisUnreachable(Exception):
    """Redis did not answer at start; the message names the address."""


class Timeouts:
    __slots__ = ("connect", "io", "skip_verify")

    def __init__(self, connect: float, io: float, skip_verify: bool = False) -> None:
        self.connect, self.io, self.skip_verify = connect, io, skip_verify


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), 1)


def _common(shard: RedisShard, timeouts: Timeouts) -> dict[str, Any]:
    options: dict[str, Any] = {
        "username": shard.user or None,
        "password": shard.password or None,
        "socket_connect_timeout": timeouts.connect,
        "socket_timeout": timeouts.io,
        "retry": _retry(),
    }
    if shard.tls:
        options["ssl"] = True
        if timeouts.skip_verify:
            options["ssl_cert_reqs"] = ssl.CERT_NONE
            options["ssl_check_hostname"] = False
    return options


def _sentinel(shard: RedisShard, timeouts: Timeouts, options: dict[str, Any]) -> Sentinel:
    """The Sentinels that name the master; ``options`` are for the master's connections."""
    sentinel_options = {
        "password": shard.sentinel_password or None,
        "socket_connect_timeout": timeouts.connect,
        "socket_timeout": timeouts.io,
    }
    return Sentinel(list(shard.hosts), sentinel_kwargs=sentinel_options, **options)


def client_for(shard: RedisShard, timeouts: Timeouts) -> Client:
    """An asyncio client for one shard (a plain server, a Cluster, or a Sentinel-watched master)."""
    options = _common(shard, timeouts)
    if shard.kind == "cluster":
        options.pop("retry")
        nodes = [ClusterNode(host, port) for host, port in shard.hosts]
        return RedisCluster(startup_nodes=nodes, max_connections=POOL_SIZE, **options)
    if shard.kind == "sentinel":
        master: Redis = _sentinel(shard, timeouts, options).master_for(
            shard.sentinel_master_name, db=shard.db
        )
        return master
    host, port = shard.hosts[0]
    # A bounded pool that waits (up to the IO timeout) for a free connection: a burst of connects or
    # publishes queues for Redis instead of failing at the pool's edge or opening sockets without end.
    if options.pop("ssl", False):
        options["connection_class"] = SSLConnection
    pool = BlockingConnectionPool(
        host=host, port=port, db=shard.db, max_connections=POOL_SIZE, timeout=timeouts.io, **options
    )
    return Redis(connection_pool=pool)


def pubsub_client_for(shard: RedisShard, timeouts: Timeouts) -> Redis:
    """The client whose connection carries a shard's PUB/SUB: no read timeout, since a subscriber waits
    for messages as long as it takes.

    On a Redis Cluster this connection carries node control (classic PUB/SUB, which the cluster
    propagates to every node, so the first host serves); channels use sharded PUB/SUB on each slot's
    master (:meth:`RedisShards.pubsub_client_at`). With Sentinel, the master it names at each
    (re)connect.
    """
    options = _common(shard, timeouts)
    options["socket_timeout"] = None
    # No retry inside the client: a lost connection must reach the link, which resubscribes and tells
    # the shards that publications may have been lost meanwhile.
    options["retry"] = Retry(NoBackoff(), 0)
    if shard.kind == "sentinel":
        master: Redis = _sentinel(shard, timeouts, options).master_for(
            shard.sentinel_master_name, db=shard.db
        )
        return master
    host, port = shard.hosts[0]
    db = 0 if shard.kind == "cluster" else shard.db
    return Redis(host=host, port=port, db=db, **options)


class RedisShards:
    """Every shard's client; which one holds a channel or a user."""

    def __init__(self, shards: list[RedisShard], timeouts: Timeouts) -> None:
        self.shards = shards
        self.timeouts = timeouts
        self.clients: list[Client] = [client_for(shard, timeouts) for shard in shards]

    @classmethod
    def from_config(cls, cfg: Any) -> RedisShards:
        timeouts = Timeouts(
            float(cfg.redis_connect_timeout), float(cfg.redis_io_timeout), cfg.redis_tls_skip_verify
        )
        return cls(redis_shards(cfg), timeouts)

    def index_of(self, name: str) -> int:
        return shard_index(name, len(self.clients)) if len(self.clients) > 1 else 0

    def for_name(self, name: str) -> Client:
        """The client of the shard that holds a channel's or a user's keys."""
        return self.clients[self.index_of(name)]

    @property
    def control(self) -> Client:
        return self.clients[0]

    def pubsub_client(self, index: int) -> Redis:
        return pubsub_client_for(self.shards[index], self.timeouts)

    def pubsub_client_at(self, index: int, host: str, port: int) -> Redis:
        """A subscriber connection to one master of shard ``index``'s Redis Cluster."""
        options = _common(self.shards[index], self.timeouts)
        options["socket_timeout"] = None
        options["retry"] = Retry(NoBackoff(), 0)
        return Redis(host=host, port=port, **options)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def describe(shard: RedisShard) -> str:
    hosts = ",".join(f"{host}:{port}" for host, port in shard.hosts)
    return f"{shard.kind} Redis at {hosts}"


def check_reachable(
    cfg: RedisKeySource, connect_timeout: float, io_timeout: float, skip_verify: bool = False
) -> None:
    """PING every shard once (blocking; called at start); raises :class:`RedisUnreachable`."""
    for shard in redis_shards(cfg):
        host, port = shard.hosts[0]
        options: dict[str, Any] = {
            "username": shard.user or None,
            "password": shard.password or None,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": io_timeout,
            "ssl": shard.tls,
        }
        if shard.tls and skip_verify:
            options.update(ssl_cert_reqs=ssl.CERT_NONE, ssl_check_hostname=False)
        try:
            if shard.kind == "sentinel":
                sentinel = redis.sentinel.Sentinel(
                    list(shard.hosts),
                    sentinel_kwargs={"password": shard.sentinel_password or None},
                    **options,
                )
                sentinel.master_for(shard.sentinel_master_name, db=shard.db).ping()
            elif shard.kind == "cluster":
                redis.Redis(host=host, port=port, **options).ping()
            else:
                redis.Redis(host=host, port=port, db=shard.db, **options).ping()
        except redis.RedisError as exc:
            raise RedisUnreachable(f"cannot reach the {describe(shard)}: {exc}") from None
