"""The peer mesh over a fake requester: no sockets, no other shards."""

from __future__ import annotations

import asyncio
from typing import Any

from broker import errors
from broker.hashing import writer_for
from broker.ipc.control import RemoteError, ShardUnavailable
from broker.publication import Publication
from shards.peer_mesh import PeerMesh


class FakeRequester:
    """Answers by shard index; ``None`` means the shard is not there, an exception is its error."""

    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers
        self.asked: list[tuple[int, str, Any]] = []

    async def request(self, identity: bytes, method: str, params: Any, timeout: float) -> Any:
        index = int(identity.decode().rpartition("-")[2])
        self.asked.append((index, method, params))
        await asyncio.sleep(0.01)
        answer = self.answers.get(index)
        if answer is None:
            raise ShardUnavailable(f"shard-{index} is not connected")
        if isinstance(answer, Exception):
            raise answer
        return answer


def run_mesh(
    size: int, answers: dict[int, Any], act: Any, local: Any = None
) -> tuple[list[Any], FakeRequester]:
    async def scenario() -> tuple[list[Any], FakeRequester]:
        tasks: set[asyncio.Task[Any]] = set()
        mesh = PeerMesh(
            0,
            size,
            local or (lambda method, params: {"local": method}),
            lambda c: tasks.add(asyncio.ensure_future(c)),
        )
        mesh.requester = requester = FakeRequester(answers)
        got: list[Any] = []
        act(mesh, lambda err, result: got.append((err.code if err else None, result)))
        for _ in range(100):
            if not tasks or all(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        return got, requester

    return asyncio.run(scenario())


def channel_written_by(index: int, size: int) -> str:
    return next(f"ch{i}" for i in range(1000) if writer_for(f"ch{i}", size) == index)


def test_identical_questions_to_a_writer_share_one_request():
    channel = channel_written_by(1, 2)

    def act(mesh: PeerMesh, done: Any) -> None:
        for _ in range(3):
            mesh.writer_query(channel, "position", {"channel": channel}, done)

    got, requester = run_mesh(2, {1: {"offset": 5, "epoch": "e"}}, act)
    assert got == [(None, {"offset": 5, "epoch": "e"})] * 3
    assert len(requester.asked) == 1


def test_a_question_to_this_shard_is_answered_without_a_request():
    channel = channel_written_by(0, 2)
    got, requester = run_mesh(2, {}, lambda mesh, done: mesh.writer_query(channel, "position", {}, done))
    assert got == [(None, {"local": "position"})] and requester.asked == []


def test_a_missing_writer_is_error_100_and_a_writers_own_error_is_passed_on():
    channel = channel_written_by(1, 2)
    got, _ = run_mesh(2, {}, lambda mesh, done: mesh.writer_query(channel, "history", {}, done))
    assert got == [(errors.INTERNAL.code, None)]
    got, _ = run_mesh(
        2,
        {1: RemoteError(108, "not available")},
        lambda mesh, done: mesh.writer_query(channel, "history", {}, done),
    )
    assert got == [(108, None)]


def test_a_publication_goes_to_its_writer_as_params():
    channel = channel_written_by(2, 3)
    publication = Publication(channel, b'{"a":1}', user="u", client="c")
    got, requester = run_mesh(
        3, {2: {"offset": 1}}, lambda mesh, done: mesh.publish_remote(2, publication, done)
    )
    assert got == [(None, {"offset": 1})]
    [(index, method, params)] = requester.asked
    assert (index, method, params["channel"]) == (2, "publish", channel)


def test_a_cluster_query_merges_every_answer_and_skips_a_silent_shard():
    def act(mesh: PeerMesh, done: Any) -> None:
        mesh.cluster_query("presence", {"channel": "x"}, lambda parts: sorted(map(str, parts)), done)

    got, requester = run_mesh(3, {1: {"one": 1}}, act)
    assert got == [(None, sorted([str({"local": "presence"}), str({"one": 1})]))]
    assert sorted(i for i, _, _ in requester.asked) == [1, 2]
