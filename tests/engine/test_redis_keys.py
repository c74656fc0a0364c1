"""Redis names: readable for ordinary channels, one Cluster slot per channel (and per user) whatever the
text, never two channels on one key."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from broker.engine.redis_keys import RedisKeys, tag

ODD = ["chat:1", "a}b", "}x", "}", "{x}", "{", "a\\b", "\\)", "\\}", "}}{{", "чат:₁", "x" * 300, " "]


def slot(name: str) -> int:
    return int(key_slot(name.encode()))


def channel_names(keys: RedisKeys, channel: str) -> list[str]:
    return [
        keys.publications(channel),
        keys.stream(channel),
        keys.meta(channel),
        keys.result(channel, "idem-1"),
        keys.result(channel, "{other}"),
        keys.presence_data(channel),
        keys.presence_expire(channel),
    ]


def test_ordinary_names_read_as_they_are():
    keys = RedisKeys()
    assert channel_names(keys, "chat:1") == [
        "switchboard.client.{chat:1}",
        "switchboard.stream.{chat:1}",
        "switchboard.meta.{chat:1}",
        "switchboard.result.{chat:1}.idem-1",
        "switchboard.result.{chat:1}.{other}",
        "switchboard.presence.data.{chat:1}",
        "switchboard.presence.expire.{chat:1}",
    ]
    assert keys.control == "switchboard.control"
    assert keys.node("n-1") == "switchboard.node.n-1"
    assert keys.user_nodes("42") == "switchboard.user.nodes.{42}"
    assert keys.user_expire("42") == "switchboard.user.expire.{42}"
    assert RedisKeys("sbt_1").stream("c") == "sbt_1.stream.{c}"


@pytest.mark.parametrize("channel", ODD)
def test_every_name_of_a_channel_is_in_one_slot(channel: str):
    names = channel_names(RedisKeys(), channel)
    assert len({slot(name) for name in names}) == 1, names


@pytest.mark.parametrize("user", ODD)
def test_both_keys_of_a_user_are_in_one_slot(user: str):
    keys = RedisKeys()
    assert slot(keys.user_nodes(user)) == slot(keys.user_expire(user))


def test_without_the_escape_a_leading_brace_would_split_a_channel():
    # What the escape prevents: Redis hashes the whole key when the tag is empty.
    assert slot("p.stream.{}x}") != slot("p.meta.{}x}")
    assert tag("}x") == "{\\)x}"


def test_the_tag_is_the_same_slot_as_the_plain_text_for_ordinary_channels():
    # Channels spread over the Cluster as the channel names do, nothing else shifts them.
    for channel in ("chat:1", "news", "user#42"):
        assert slot(RedisKeys().stream(channel)) == slot(channel)


def test_distinct_channels_never_share_a_name():
    texts = ["}", "\\)", "\\\\)", "\\}", "\\", "\\\\", ")", "a}", "a\\)", "a\\\\)", *ODD]
    keys = RedisKeys()
    for build in (keys.stream, keys.publications, keys.user_nodes):
        names = [build(text) for text in texts]
        assert len(set(names)) == len(set(texts))
    results = {keys.result(channel, key) for channel in texts for key in ("k", "}k", ".k")}
    assert len(results) == 3 * len(set(texts))


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b"])
def test_a_prefix_that_would_break_the_tags_is_refused(prefix: str):
    with pytest.raises(ValueError, match="redis_prefix"):
        RedisKeys(prefix)
