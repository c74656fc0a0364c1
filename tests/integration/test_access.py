"""Session management through the server API (with the `cent` client): revoked tokens, invalidated user
tokens and blocked users, on connections spread over two shards, and after a shard restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
from cent import (
    BlockUserRequest,
    Client,
    DeleteUserStatusRequest,
    GetUserStatusRequest,
    InvalidateUserTokensRequest,
    RevokeTokenRequest,
    UnblockUserRequest,
    UpdateUserStatusRequest,
)

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import API_KEY, Server
from tests.support.tokens import make_token, subscription_token
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("access"), shards=2) as srv:
        yield srv


def cent(server: Server) -> Client:
    return Client(f"{server.url}/api", API_KEY, timeout=5)


async def refused_code(server: Server, token: str) -> int:
    """Connect with ``token``; the close code the server answers with (0: connected)."""
    client = await WsClient.open(server.port)
    try:
        reply = await client.connect(token)
    except AssertionError:  # closed instead of answering: the code says why
        return (await client.closed())[0]
    assert "connect" in reply, reply
    await client.close()
    return 0


def test_revoking_a_token_closes_every_connection_using_it_and_refuses_it_later(server: Server) -> None:
    first, second = users_on_shards("revoke")

    async def scenario() -> None:
        shared = {"jti": "token-to-revoke"}
        tokens = [make_token(first, **shared), make_token(first, **shared), make_token(second, **shared)]
        clients = [await WsClient.connected(server.port, token) for token in tokens]
        bystander = await WsClient.connected(server.port, make_token(first, jti="another-token"))
        started = time.monotonic()
        await asyncio.to_thread(cent(server).revoke_token, RevokeTokenRequest(uid="token-to-revoke"))
        for client in clients:
            assert (await client.closed(timeout=1.0))[0] == 3500
        elapsed = time.monotonic() - started
        print(f"revoke to close: {elapsed * 1000:.1f} ms for 3 connections on 2 shards")
        assert elapsed < 1.0
        assert bystander.is_open
        assert await refused_code(server, tokens[0]) == 3500
        assert await refused_code(server, make_token(first, jti="fresh")) == 0  # a new token works
        await bystander.close()

    run(scenario())


def test_invalidating_a_users_tokens_logs_them_out_everywhere(server: Server) -> None:
    async def scenario() -> None:
        old = make_token("invalidate-me", iat=int(time.time()) - 100)
        client = await WsClient.connected(server.port, old)
        other = await WsClient.connected(
            server.port, make_token("invalidate-other", iat=int(time.time()) - 100)
        )
        request = InvalidateUserTokensRequest(user="invalidate-me", issued_before=int(time.time()) - 10)
        await asyncio.to_thread(cent(server).invalidate_user_tokens, request)
        assert (await client.closed(timeout=1.0))[0] == 3500
        assert other.is_open
        assert await refused_code(server, old) == 3500
        assert await refused_code(server, make_token("invalidate-me")) == 0  # issued after the cut-off
        await other.close()

    run(scenario())


def test_block_and_unblock_a_user(server: Server) -> None:
    async def scenario() -> None:
        token = make_token("blocked-user")
        client = await WsClient.connected(server.port, token)
        await asyncio.to_thread(cent(server).block_user, BlockUserRequest(user="blocked-user"))
        assert (await client.closed(timeout=1.0))[0] == 3503
        assert await refused_code(server, token) == 3503
        await asyncio.to_thread(cent(server).unblock_user, UnblockUserRequest(user="blocked-user"))
        assert await refused_code(server, token) == 0
        # A block with an expiry ends by itself.
        until = int(time.time()) + 2
        await asyncio.to_thread(
            cent(server).block_user, BlockUserRequest(user="blocked-user", expire_at=until)
        )
        assert await refused_code(server, token) == 3503
        await asyncio.sleep(max(0.0, until - time.time()) + 1.1)
        assert await refused_code(server, token) == 0

    run(scenario())


def test_refresh_with_a_revoked_token_is_refused(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("refresher", jti="first"))
        await asyncio.to_thread(cent(server).revoke_token, RevokeTokenRequest(uid="revoked-before-use"))
        await client.send_commands(
            {"id": client.next_id(), "refresh": {"token": make_token("refresher", jti="revoked-before-use")}}
        )
        assert (await client.closed())[0] == 3500

    run(scenario())


def test_bad_params_are_107(server: Server) -> None:
    for method, params in (
        ("revoke_token", {}),
        ("revoke_token", {"uid": "x", "expire_at": -5}),
        ("block_user", {"user": ""}),
        ("invalidate_user_tokens", {"user": "u", "issued_before": "yesterday"}),
        ("invalidate_user_tokens", {"user": "u", "channel": 5}),
        ("unblock_user", {"user": 7}),
    ):
        assert server.api(method, params)["error"]["code"] == 107, (method, params)


def test_a_restarted_shard_keeps_refusing(server: Server) -> None:
    user = users_on_shards("restart-blocked")[1]
    server.api("block_user", {"user": user})
    pids = server.shard_pids()
    os.kill(pids[1], signal.SIGKILL)
    eventually(
        lambda: server.shard_pids().get(1) not in (None, pids[1]), timeout=20, what="shard 1 restarted"
    )
    assert run(refused_code(server, make_token(user))) == 3503
    server.api("unblock_user", {"user": user})
    assert run(refused_code(server, make_token(user))) == 0


def test_user_status_active_online_and_delete(server: Server) -> None:
    """update_user_status / get_user_status / delete_user_status, and the client's RPC of the same name."""
    first, second = users_on_shards("status")

    async def scenario() -> None:
        api = cent(server)
        before = int(time.time())
        client = await WsClient.connected(server.port, make_token(first))
        reply = await client.command("rpc", {"method": "update_user_status", "data": {}})
        assert reply == {"id": reply["id"], "rpc": {}}
        await asyncio.to_thread(api.update_user_status, UpdateUserStatusRequest(users=[second]))
        statuses = await asyncio.to_thread(api.get_user_status, GetUserStatusRequest(users=[first, second]))
        by_user = {s.user: s for s in statuses.statuses}
        assert [s.user for s in statuses.statuses] == [first, second]  # in the order asked
        assert by_user[first].active >= before and by_user[first].online >= before  # connected: online now
        assert by_user[second].active >= before and by_user[second].online == 0  # never connected
        await client.close()
        gone = time.time()
        await asyncio.sleep(0.3)
        after = (await asyncio.to_thread(api.get_user_status, GetUserStatusRequest(users=[first]))).statuses[
            0
        ]
        assert int(gone) - 1 <= after.online <= int(gone) + 1  # when its last connection closed
        await asyncio.to_thread(api.delete_user_status, DeleteUserStatusRequest(users=[first, second]))
        cleared = await asyncio.to_thread(api.get_user_status, GetUserStatusRequest(users=[first, second]))
        assert [(s.active, s.online) for s in cleared.statuses] == [(0, 0), (0, 0)]

    run(scenario())


def test_user_status_bad_params(server: Server) -> None:
    for params in ({}, {"users": []}, {"users": [""]}, {"users": "u"}, {"users": ["u"] * 1001}):
        assert server.api("get_user_status", params)["error"]["code"] == 107, params


def test_anonymous_clients_cannot_update_a_status(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token(""))
        reply = await client.command("rpc", {"method": "update_user_status", "data": {}})
        assert reply["error"]["code"] == 103
        await client.close()

    run(scenario())


def test_invalidating_a_users_subscription_tokens_for_one_channel(server: Server) -> None:
    """``invalidate_user_tokens`` with ``channel``: the user's subscription tokens for that channel issued
    before then end their connections (3500) and are refused later; the user's connection tokens, other
    channels' tokens and other users' tokens for that channel stay good."""
    user, other = users_on_shards("sub-invalidated")

    async def scenario() -> None:
        old = subscription_token(user, "$private-a", iat=int(time.time()) - 60)
        holder = await WsClient.connected(server.port, make_token(user))
        assert "subscribe" in await holder.subscribe("$private-a", token=old)
        elsewhere = await WsClient.connected(server.port, make_token(user))
        assert "subscribe" in await elsewhere.subscribe(
            "$private-b", token=subscription_token(user, "$private-b")
        )
        stranger = await WsClient.connected(server.port, make_token(other))
        assert "subscribe" in await stranger.subscribe(
            "$private-a", token=subscription_token(other, "$private-a")
        )
        params = {"user": user, "channel": "$private-a", "issued_before": int(time.time()) - 30}
        assert server.api("invalidate_user_tokens", params) == {"result": {}}
        assert (await holder.closed(timeout=1.0))[0] == 3500
        assert elsewhere.is_open and stranger.is_open
        again = await WsClient.connected(server.port, make_token(user))  # the connection token is good
        await again.send_commands(
            {"id": again.next_id(), "subscribe": {"channel": "$private-a", "token": old}}
        )
        assert (await again.closed())[0] == 3500
        fresh = await WsClient.connected(server.port, make_token(user))
        assert "subscribe" in await fresh.subscribe(
            "$private-a", token=subscription_token(user, "$private-a")
        )
        for client in (elsewhere, stranger, fresh):
            await client.close()

    run(scenario())


def test_revoking_a_subscription_token(server: Server) -> None:
    """A private channel's subscription token, revoked by its jti: its connection ends (3500), and the
    token is refused at the next subscribe."""

    async def scenario() -> None:
        token = subscription_token("sub-revoked", "$private-room", jti="sub-jti")
        client = await WsClient.connected(server.port, make_token("sub-revoked"))
        assert "subscribe" in await client.subscribe("$private-room", token=token)
        bystander = await WsClient.connected(server.port, make_token("sub-bystander"))
        await asyncio.to_thread(cent(server).revoke_token, RevokeTokenRequest(uid="sub-jti"))
        assert (await client.closed(timeout=1.0))[0] == 3500
        assert bystander.is_open
        again = await WsClient.connected(server.port, make_token("sub-revoked"))
        await again.send_commands(
            {"id": again.next_id(), "subscribe": {"channel": "$private-room", "token": token}}
        )
        assert (await again.closed())[0] == 3500
        await bystander.close()

    run(scenario())
