"""redis_address forms, the keys that fill in for them, bad input, and channels spread over shards."""

from __future__ import annotations

from collections import Counter

import pytest

from broker.engine.redis_address import (
    Defaults,
    RedisAddressError,
    RedisShard,
    jump_hash,
    parse_address,
    parse_addresses,
    shard_index,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:6380", RedisShard("standalone", (("127.0.0.1", 6380),))),
        ("localhost", RedisShard("standalone", (("localhost", 6379),))),
        ("redis://u:p%40ss@h:1/2", RedisShard("standalone", (("h", 1),), db=2, user="u", password="p@ss")),
        ("rediss://h:1?db=3", RedisShard("standalone", (("h", 1),), db=3, tls=True)),
        ("redis://[::1]:7000", RedisShard("standalone", (("::1", 7000),))),
        ("redis+cluster://a:1,b:2,c:3", RedisShard("cluster", (("a", 1), ("b", 2), ("c", 3)))),
        (
            "redis+sentinel://s1:26379,s2:26379?sentinel_master_name=mymaster&sentinel_password=x",
            RedisShard(
                "sentinel",
                (("s1", 26379), ("s2", 26379)),
                sentinel_master_name="mymaster",
                sentinel_password="x",
            ),
        ),
    ],
)
def test_address_forms(address: str, expected: RedisShard):
    assert parse_address(address) == expected


def test_flat_keys_fill_in_what_an_address_leaves_out():
    defaults = Defaults(user="app", password="secret", db=4, tls=True)
    shard = parse_address("redis://h:1", defaults)
    assert (shard.user, shard.password, shard.db, shard.tls) == ("app", "secret", 4, True)
    own = parse_address("redis://me:mine@h:1/5", defaults)
    assert (own.user, own.password, own.db) == ("me", "mine", 5)


def test_several_addresses_are_several_shards_but_a_cluster_stands_alone():
    assert [s.hosts for s in parse_addresses(["a:1", "b:2"])] == [(("a", 1),), (("b", 2),)]
    with pytest.raises(RedisAddressError, match="only redis_address"):
        parse_addresses(["redis+cluster://a:1", "b:2"])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("http://h:1", "unknown scheme"),
        ("redis://h:99999", "bad port"),
        ("redis://h:port", "bad port"),
        ("redis://", "no host"),
        ("redis://a:1,b:2", "several hosts"),
        ("redis://h:1/x", "database must be a number"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+sentinel://s:1", "sentinel_master_name is required"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(address: str, reason: str):
    with pytest.raises(RedisAddressError, match=reason):
        parse_address(address)


@pytest.mark.parametrize("value", ["", [], [""], ["a:1", 5]])
def test_an_empty_or_ill_typed_redis_address_is_refused(value: object):
    with pytest.raises(RedisAddressError):
        parse_addresses(value)  # type: ignore[arg-type]


def test_channels_spread_evenly_and_a_new_shard_moves_only_its_share():
    channels = [f"chat:{i}" for i in range(20_000)]
    four = [shard_index(c, 4) for c in channels]
    counts = Counter(four)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) < 1.1 * min(counts.values())
    five = [shard_index(c, 5) for c in channels]
    moved = sum(a != b for a, b in zip(four, five, strict=True))
    assert all(b == 4 for a, b in zip(four, five, strict=True) if a != b)  # only to the new shard
    assert 0.17 < moved / len(channels) < 0.23
    assert [shard_index(c, 4) for c in channels[:100]] == four[:100]  # stable
    assert shard_index("anything", 1) == 0


def test_jump_hash_stays_in_range():
    assert all(0 <= jump_hash(k, 7) < 7 for k in range(1000))
    with pytest.raises(ValueError):
        jump_hash(1, 0)


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    # The reference implementation's published vectors: another implementation places keys the same.
    [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520)],
)
def test_jump_hash_matches_the_reference_vectors(key: int, buckets: int, expected: int):
    assert jump_hash(key, buckets) == expected


@pytest.mark.parametrize(
    ("channel", "expected"),
    # Pinned: a change here moves channels between Redis shards of a running deployment.
    [
        ("chat:1", [0, 0, 0, 0, 0, 15, 15]),
        ("news", [1, 2, 3, 3, 3, 3, 81]),
        ("user#42", [1, 2, 2, 2, 2, 13, 69]),
        ("", [1, 1, 1, 1, 1, 13, 90]),
    ],
)
def test_a_channels_shard_is_stable(channel: str, expected: list[int]):
    assert [shard_index(channel, n) for n in (2, 3, 4, 5, 8, 16, 100)] == expected


def test_channels_are_hashed_with_fnv1a_64():
    # FNV-1a 64's published vectors, as channels: "" → offset basis, "a", "foobar".
    for text, value in [("", 0xCBF29CE484222325), ("a", 0xAF63DC4C8601EC8C), ("foobar", 0x85944171F73967E8)]:
        assert shard_index(text, 1000) == jump_hash(value, 1000)
