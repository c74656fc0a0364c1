"""Where the Redis engine connects: ``redis_address`` and its companion keys, parsed without I/O.

Forms, one string or a list of them (a list is several independent Redis *shards*; channels are spread
over them by a consistent hash, so adding none moves nothing):

* ``host:port`` and ``redis://[user[:password]@]host:port[/db]``; ``rediss://`` for TLS;
* ``redis+cluster://host:port[,host:port…]`` — one Redis Cluster, found from any of its nodes;
* ``redis+sentinel://host:port[,host:port…]?sentinel_master_name=name`` — a master found through Sentinel.

Query parameters ``db``, ``user``, ``password``, ``tls``, ``sentinel_master_name``,
``sentinel_password`` refine one address; the ``redis_user``, ``redis_password``, ``redis_db`` and
``redis_tls`` keys apply where an address says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlencode

DEFAULT_PORT = 6379
KINDS = ("standalone", "cluster", "sentinel")


class RedisAddressError(ValueError):
    """A ``redis_address`` that cannot be used; the message names the address and what is wrong."""


@dataclass(frozen=True, slots=True)
class RedisShard:
    """One Redis deployment the engine talks to."""

    kind: str  # one of KINDS
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    user: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    sentinel_master_name: str = ""
    sentinel_password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Defaults:
    """The flat keys that fill in what an address leaves out."""

    user: str = ""
    password: str = ""
    db: int = 0
    tls: bool = False


def parse_addresses(value: str | list[str], defaults: Defaults = Defaults()) -> list[RedisShard]:
    """Every shard named by ``redis_address``; raises :class:`RedisAddressError` on a bad one."""
    addresses = [value] if isinstance(value, str) else list(value)
    if not addresses or not all(isinstance(a, str) and a.strip() for a in addresses):
        raise RedisAddressError("redis_address must be a non-empty string or a list of them")
    shards = [parse_address(address.strip(), defaults) for address in addresses]
    if len(shards) > 1 and any(shard.kind == "cluster" for shard in shards):
        raise RedisAddressError("a Redis Cluster address must be the only redis_address")
    return shards


class RedisKeySource(Protocol):
    """The config keys that say where Redis is (:class:`broker.config.Config` has them all)."""

    redis_address: list[str]
    redis_cluster_address: list[str]
    redis_sentinel_address: list[str]
    redis_sentinel_master_name: str
    redis_sentinel_password: str
    redis_user: str
    redis_password: str
    redis_db: int
    redis_tls: bool


def redis_shards(cfg: RedisKeySource) -> list[RedisShard]:
    """The shards the config names. ``redis_cluster_address`` / ``redis_sentinel_address`` (older
    spellings) win over ``redis_address`` when set, as in Centrifugo."""
    defaults = Defaults(cfg.redis_user, cfg.redis_password, cfg.redis_db, cfg.redis_tls)
    if cfg.redis_cluster_address:
        return parse_addresses("redis+cluster://" + ",".join(cfg.redis_cluster_address), defaults)
    if cfg.redis_sentinel_address:
        if not cfg.redis_sentinel_master_name:
            raise RedisAddressError("redis_sentinel_address needs redis_sentinel_master_name")
        query = urlencode(
            {
                "sentinel_master_name": cfg.redis_sentinel_master_name,
                **({"sentinel_password": cfg.redis_sentinel_password} if cfg.redis_sentinel_password else {}),
            }
        )
        hosts = ",".join(cfg.redis_sentinel_address)
        return parse_addresses(f"redis+sentinel://{hosts}?{query}", defaults)
    return parse_addresses(cfg.redis_address, defaults)


def parse_address(address: str, defaults: Defaults = Defaults()) -> RedisShard:
    scheme = "redis"
    rest = address
    if "://" in address:
        scheme, _, rest = address.partition("://")
    kinds = {
        "redis": ("standalone", False),
        "rediss": ("standalone", True),
        "redis+cluster": ("cluster", False),
        "rediss+cluster": ("cluster", True),
        "redis+sentinel": ("sentinel", False),
        "rediss+sentinel": ("sentinel", True),
    }
    if scheme not in kinds:
        raise RedisAddressError(f"redis_address {address!r}: unknown scheme {scheme!r}")
    kind, tls = kinds[scheme]
    before_query, _, query_text = rest.partition("?")
    netloc, _, path = before_query.partition("/")
    userinfo, _, hostpart = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts = tuple(_host_port(address, item) for item in hostpart.split(",") if item)
    if not hosts:
        raise RedisAddressError(f"redis_address {address!r}: no host")
    if kind == "standalone" and len(hosts) > 1:
        raise RedisAddressError(
            f"redis_address {address!r}: several hosts need redis+cluster or redis+sentinel"
        )
    query = {key: values[-1] for key, values in parse_qs(query_text).items()}
    db = _db(address, query.get("db") or path.strip("/"), defaults.db)
    if kind == "cluster" and db:
        raise RedisAddressError(f"redis_address {address!r}: Redis Cluster has only database 0")
    master = query.get("sentinel_master_name", "")
    if kind == "sentinel" and not master:
        raise RedisAddressError(f"redis_address {address!r}: sentinel_master_name is required")
    return RedisShard(
        kind=kind,
        hosts=hosts,
        db=db,
        user=unquote(user) or query.get("user", "") or defaults.user,
        password=unquote(password) or query.get("password", "") or defaults.password,
        tls=tls or _flag(query.get("tls")) or defaults.tls,
        sentinel_master_name=master,
        sentinel_password=query.get("sentinel_password", ""),
    )


def _host_port(address: str, item: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if item.startswith("["):
        host, _, after = item[1:].partition("]")
        if after and not after.startswith(":"):
            raise RedisAddressError(f"redis_address {address!r}: bad host {item!r}")
        port = after[1:]
    elif item.count(":") > 1:
        host, port = item, ""  # a bare IPv6 address
    else:
        host, _, port = item.partition(":")
    if not host:
        raise RedisAddressError(f"redis_address {address!r}: empty host in {item!r}")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisAddressError(f"redis_address {address!r}: bad port {port!r}")
    return host, int(port)


def _db(address: str, text: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit():
        raise RedisAddressError(f"redis_address {address!r}: database must be a number, not {text!r}")
    return int(text)


def _flag(text: str | None) -> bool:
    return (text or "").lower() in ("1", "true", "yes", "on")


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: adding a bucket moves only 1/n of the keys."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b, j = -1, 0
    key &= 0xFFFFFFFFFFFFFFFF
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_index(channel: str, shards: int) -> int:
    """Which of ``shards`` Redis shards keeps ``channel`` (stable across restarts and nodes)."""
    if shards == 1:
        return 0
    return jump_hash(_fnv1a64(channel.encode("utf-8")), shards)


def _fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value
