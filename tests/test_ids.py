import uuid

from broker.ids import new_id


def test_ids_are_unique_version_4_uuids():
    ids = [new_id() for _ in range(2000)]  # crosses several refills of the random pool
    assert len(set(ids)) == len(ids)
    for value in ids[:50]:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and str(parsed) == value
