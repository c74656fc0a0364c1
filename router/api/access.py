"""Session management methods: ``revoke_token``, ``invalidate_user_tokens``, ``block_user``,
``unblock_user`` (Centrifugo PRO's shapes, answered ``{}``).

Each becomes one change (:mod:`broker.access.rules`) that every shard of the node applies — and, with the
Redis engine, every other node (:mod:`router.api.across` sends it on) — so that the connections it refuses
are closed wherever they live and later connects are refused everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Self

from broker import errors
from router.api.params import ChannelNames, Params, string


def _expire_at(params: Params) -> int:
    value = params.get("expire_at", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.BAD_REQUEST.with_message("expire_at must be Unix seconds (0: never)")
    return value


@dataclass(frozen=True, slots=True)
class AccessParams:
    """One session management call, as the change every shard applies."""

    change: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        raise NotImplementedError  # each method has its own subclass

    def to_shard(self) -> Params:
        return self.change


class RevokeTokenParams(AccessParams):
    __slots__ = ()

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        uid = string(params, "uid", required=True)
        return cls({"kind": "revoke_token", "uid": uid, "expire_at": _expire_at(params)})


class InvalidateUserTokensParams(AccessParams):
    __slots__ = ()

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = string(params, "user", required=True)
        channel = string(params, "channel")
        issued_before: Any = params.get("issued_before")
        if issued_before is None or issued_before == 0:
            issued_before = int(time.time())  # "now": every token issued so far
        if isinstance(issued_before, bool) or not isinstance(issued_before, int) or issued_before < 0:
            raise errors.BAD_REQUEST.with_message("issued_before must be Unix seconds")
        change = {"kind": "invalidate_user_tokens", "user": user, "issued_before": issued_before}
        if channel:
            change["channel"] = channel  # that channel's subscription tokens, not the connection tokens
        return cls({**change, "expire_at": _expire_at(params)})


class BlockUserParams(AccessParams):
    __slots__ = ()

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = string(params, "user", required=True)
        return cls({"kind": "block_user", "user": user, "expire_at": _expire_at(params)})


class UnblockUserParams(AccessParams):
    __slots__ = ()

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        return cls({"kind": "unblock_user", "user": string(params, "user", required=True)})


MAX_STATUS_USERS = 1000  # users in one user status call: each is a store read (and an index read)


@dataclass(frozen=True, slots=True)
class UserStatusParams:
    """``update_user_status`` / ``get_user_status`` / ``delete_user_status``: ``users``, a list of ids."""

    users: list[str]

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        users = params.get("users")
        if not isinstance(users, list) or not users or not all(isinstance(u, str) and u for u in users):
            raise errors.BAD_REQUEST.with_message("users must be a non-empty list of user ids")
        if len(users) > MAX_STATUS_USERS:
            raise errors.BAD_REQUEST.with_message(f"at most {MAX_STATUS_USERS} users in one call")
        return cls(list(dict.fromkeys(users)))


STATUS_OPS = {"update_user_status": "update", "get_user_status": "get", "delete_user_status": "delete"}


ACCESS_PARAMS: dict[str, type[AccessParams]] = {
    "revoke_token": RevokeTokenParams,
    "invalidate_user_tokens": InvalidateUserTokensParams,
    "block_user": BlockUserParams,
    "unblock_user": UnblockUserParams,
}
