"""What the session management API has decided, and the checks every shard makes against it (sans-I/O).

Three kinds of entry, each with an ``expire_at`` (Unix seconds; 0: never) after which it is forgotten:

* a revoked token: its ``jti`` (``uid``) is refused, whoever holds it;
* invalidated user tokens: the user's tokens issued before ``issued_before`` (their ``iat``) are refused —
  the "log out everywhere after a password change" case; with a ``channel``, the user's subscription
  tokens for that channel instead;
* a blocked user: refused whatever the token, until unblocked.

Every shard holds the same :class:`AccessRules` (the API sends each change to every shard, and a shard
that starts asks a peer for the whole set), so a connection is checked where it lives without asking
anyone: at connect, after the token is read or the connect proxy answered, and at refresh. A change
also ends the connections it now refuses (:meth:`AccessRules.refuses`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker import errors
from broker.errors import Disconnect

KINDS = ("revoke_token", "invalidate_user_tokens", "block_user", "unblock_user")


class BadEntry(ValueError):
    """A change that does not have the shape of one (a peer or the router sent garbage)."""


@dataclass(slots=True)
class AccessRules:
    revoked: dict[str, float] = field(default_factory=dict)  # token uid (jti) → expire_at
    invalidated: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # user → (issued_before, expire_at)
    blocked: dict[str, float] = field(default_factory=dict)  # user → expire_at
    # (user, channel) → (issued_before, expire_at): the user's subscription tokens for that channel.
    invalidated_channels: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def apply(self, change: dict[str, Any]) -> None:
        """One change as the API made it: ``{"kind", ...the method's params}`` (already checked)."""
        kind = change.get("kind")
        expire_at = _seconds(change.get("expire_at", 0))
        if kind == "revoke_token":
            self.revoked[_text(change, "uid")] = expire_at
        elif kind == "invalidate_user_tokens":
            user = _text(change, "user")
            before = _seconds(change.get("issued_before", 0))
            channel = change.get("channel")
            if channel is None:
                self.invalidated[user] = _widened(self.invalidated.get(user), before, expire_at)
            else:
                key = (user, _text(change, "channel"))
                self.invalidated_channels[key] = _widened(
                    self.invalidated_channels.get(key), before, expire_at
                )
        elif kind == "block_user":
            self.blocked[_text(change, "user")] = expire_at
        elif kind == "unblock_user":
            self.blocked.pop(_text(change, "user"), None)
        else:
            raise BadEntry(f"unknown kind {kind!r}")

    def refuses(self, user: str, token_uid: str, token_issued_at: int, now: float) -> Disconnect | None:
        """Why a connection of ``user`` with that token may not be (or stay) connected, or None."""
        if user and _live(self.blocked.get(user), now):
            return errors.FORCE_DISCONNECT
        if token_uid and _live(self.revoked.get(token_uid), now):
            return errors.INVALID_TOKEN
        invalidated = self.invalidated.get(user) if user else None
        if invalidated is not None and _live(invalidated[1], now) and token_issued_at < invalidated[0]:
            return errors.INVALID_TOKEN
        return None

    def refuses_subscription_token(
        self, user: str, channel: str, token_uid: str, token_issued_at: int, now: float
    ) -> bool:
        """Whether a subscription token (its ``jti`` and ``iat``) for ``channel`` is refused."""
        if token_uid and _live(self.revoked.get(token_uid), now):
            return True
        invalidated = self.invalidated_channels.get((user, channel)) if user else None
        return invalidated is not None and _live(invalidated[1], now) and token_issued_at < invalidated[0]

    def forget_expired(self, now: float) -> int:
        """Drop entries past their ``expire_at``; how many went."""
        gone = 0
        for table in (self.revoked, self.blocked):
            for key in [k for k, expire_at in table.items() if not _live(expire_at, now)]:
                del table[key]
                gone += 1
        for user in [u for u, (_, expire_at) in self.invalidated.items() if not _live(expire_at, now)]:
            del self.invalidated[user]
            gone += 1
        channels = self.invalidated_channels
        for pair in [k for k, (_, expire_at) in channels.items() if not _live(expire_at, now)]:
            del channels[pair]
            gone += 1
        return gone

    def snapshot(self) -> list[dict[str, Any]]:
        """Every entry as a change, for a shard that starts."""
        out: list[dict[str, Any]] = [
            {"kind": "revoke_token", "uid": uid, "expire_at": at} for uid, at in self.revoked.items()
        ]
        out += [
            {"kind": "invalidate_user_tokens", "user": user, "issued_before": before, "expire_at": at}
            for user, (before, at) in self.invalidated.items()
        ]
        out += [
            {
                "kind": "invalidate_user_tokens",
                "user": user,
                "channel": channel,
                "issued_before": before,
                "expire_at": at,
            }
            for (user, channel), (before, at) in self.invalidated_channels.items()
        ]
        out += [{"kind": "block_user", "user": user, "expire_at": at} for user, at in self.blocked.items()]
        return out

    def __len__(self) -> int:
        return len(self.revoked) + len(self.invalidated) + len(self.invalidated_channels) + len(self.blocked)


def _widened(known: tuple[float, float] | None, before: float, expire_at: float) -> tuple[float, float]:
    """Invalidations only widen: a later call with an older ``issued_before`` keeps the newer one."""
    if known is not None and known[0] > before:
        return known[0], (max(expire_at, known[1]) if expire_at and known[1] else 0)
    return before, expire_at


def _live(expire_at: float | None, now: float) -> bool:
    return expire_at is not None and (expire_at == 0 or expire_at > now)


def _text(change: dict[str, Any], key: str) -> str:
    value = change.get(key)
    if not isinstance(value, str) or not value:
        raise BadEntry(f"{key} must be a non-empty string")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadEntry(f"expected a non-negative number of seconds, got {value!r}")
    return float(value)
