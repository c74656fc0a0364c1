from broker.hashing import shard_for, shard_for_user, stable_hash


def test_stable_across_processes():
    # crc32 is fixed; Python's hash() would change with PYTHONHASHSEED.
    assert stable_hash("42") == 841265288
    assert shard_for("42", "any-client", 2) == 841265288 % 2


def test_anonymous_spread_by_client():
    placed = {shard_for("", f"client-{i}", 4) for i in range(200)}
    assert placed == {0, 1, 2, 3}
    assert shard_for_user("", 4) is None


def test_users_spread_evenly():
    counts = [0, 0]
    for i in range(10_000):
        counts[shard_for(str(i), "", 2)] += 1
    assert min(counts) > 4_500
