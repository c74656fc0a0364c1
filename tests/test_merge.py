from broker.merge import glob_matcher, merge_channels, merge_presence, merge_presence_stats


def test_presence_merges_maps() -> None:
    merged = merge_presence([{"presence": {"a": {"user": "1"}}}, {"presence": {"b": {"user": "2"}}}, {}])
    assert merged == {"presence": {"a": {"user": "1"}, "b": {"user": "2"}}}


def test_presence_stats_counts_anonymous_once() -> None:
    parts = [
        {"num_clients": 3, "num_named_users": 2, "anonymous": True},
        {"num_clients": 2, "num_named_users": 1, "anonymous": True},
    ]
    assert merge_presence_stats(parts) == {"num_clients": 5, "num_users": 4}
    assert merge_presence_stats([]) == {"num_clients": 0, "num_users": 0}


def test_channels_sum_counts() -> None:
    merged = merge_channels([{"channels": {"a": 2, "b": 1}}, {"channels": {"a": 3}}])
    assert merged == {"channels": {"a": {"num_clients": 5}, "b": {"num_clients": 1}}}


def test_glob() -> None:
    assert glob_matcher("chat:*").match("chat:index")
    assert not glob_matcher("chat:*").match("news")
    assert glob_matcher("{chat,news}:?").match("news:1")
    assert not glob_matcher("{chat,news}:?").match("news:12")
    assert glob_matcher("room[0-9]").match("room5")
