"""The params of each server API method, validated once into a small immutable value.

``from_json`` takes the decoded JSON object and raises the client error the API answers with (100-range
codes, messages as clients see them); nothing here does I/O. ``to_shard`` is what the shard that carries
out the method receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from broker import errors
from broker.label_filter import compile_label_filter

Params = dict[str, Any]


class ChannelNames(Protocol):
    """Channel name rules (``broker.channels.ChannelRules``)."""

    def validate_name(self, channel: str) -> None: ...


def string(params: Params, key: str, required: bool = False) -> str:
    value = params.get(key)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise errors.BAD_REQUEST.with_message(f"{key} must be a string")
    if required and not value:
        raise errors.BAD_REQUEST.with_message(f"{key} required")
    return value


def channel_name(params: Params, rules: ChannelNames, key: str = "channel") -> str:
    channel = string(params, key, required=True)
    rules.validate_name(channel)  # 107 bad name, 102 unknown namespace
    return channel


def _unix_seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _publication(params: Params) -> Params:
    out: Params = {}
    if params.get("b64data"):
        if not isinstance(params["b64data"], str):
            raise errors.BAD_REQUEST.with_message("b64data must be a string")
        out["b64data"] = params["b64data"]
    elif params.get("data") is not None:
        out["data"] = params["data"]
    else:
        raise errors.BAD_REQUEST.with_message("data required")
    tags = params.get("tags")
    if tags is not None:
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise errors.BAD_REQUEST.with_message("tags must map strings to strings")
        out["tags"] = tags
    if params.get("delta") is not None and not isinstance(params["delta"], bool):
        raise errors.BAD_REQUEST.with_message("delta must be a boolean")
    out.update(_present(params, ("skip_history", "idempotency_key", "delta")))
    return out


def _present(params: Params, keys: tuple[str, ...]) -> Params:
    """The ``keys`` given a value (not null), passed on as they are."""
    return {key: params[key] for key in keys if params.get(key) is not None}


def _targets(params: Params) -> Params:
    """Which connections: ``client`` and ``session`` narrow a user's down when given; ``label_filter``
    (v6 PRO) narrows them by labels, and ``all_users`` takes every user's instead of one."""
    out: Params = {key: string(params, key) for key in ("client", "session")}
    label_filter = params.get("label_filter") or None
    if label_filter is not None:
        compile_label_filter(label_filter)  # 107 with the reason
        out["label_filter"] = label_filter
    if _all_users(params):
        out["all_users"] = True
    return out


def _all_users(params: Params) -> bool:
    value = params.get("all_users", False)
    if not isinstance(value, bool):
        raise errors.BAD_REQUEST.with_message("all_users must be a boolean")
    return value


def target_user(params: Params) -> str:
    """The user a targeted operation is about; "" with ``all_users`` (every user's connections)."""
    if _all_users(params):
        if string(params, "user"):
            raise errors.BAD_REQUEST.with_message("user and all_users exclude each other")
        return ""
    return string(params, "user", required=True)


@dataclass(frozen=True, slots=True)
class NoParams:
    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """presence, presence_stats, history_remove: one channel."""

    channel: str

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        return cls(channel_name(params, rules))

    def to_shard(self) -> Params:
        return {"channel": self.channel}


@dataclass(frozen=True, slots=True)
class PublishParams:
    channel: str
    publication: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        channel = channel_name(params, rules)
        return cls(channel, _publication(params))

    def to_shard(self) -> Params:
        return {**self.publication, "channel": self.channel}


@dataclass(frozen=True, slots=True)
class BroadcastParams:
    """Channel names are checked one by one later: a bad one is an error in its own response."""

    channels: list[str]
    publication: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise errors.BAD_REQUEST.with_message("channels required")
        return cls(channels, _publication(params))


_SUBSCRIBE_OPTIONS = ("info", "b64info", "data", "b64data", "expire_at", "override", "recover_since")


@dataclass(frozen=True, slots=True)
class SubscribeParams:
    user: str
    shard_params: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = target_user(params)
        out: Params = {"user": user, "channel": channel_name(params, rules), **_targets(params)}
        out.update(
            _present(params, ("info", "b64info", "data", "b64data", "expire_at", "override", "recover_since"))
        )
        expire_at = params.get("expire_at")
        if expire_at is not None and not _unix_seconds(expire_at):
            raise errors.BAD_REQUEST.with_message("expire_at must be unix seconds")
        return cls(user, out)

    def to_shard(self) -> Params:
        return self.shard_params


@dataclass(frozen=True, slots=True)
class UnsubscribeParams:
    user: str
    channel: str
    targets: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = target_user(params)
        channel = channel_name(params, rules)
        return cls(user, channel, _targets(params))

    def to_shard(self) -> Params:
        return {"user": self.user, "channel": self.channel, **self.targets}


@dataclass(frozen=True, slots=True)
class RefreshParams:
    user: str
    shard_params: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = target_user(params)
        out: Params = {"user": user, **_targets(params)}
        expired = params.get("expired", False)
        if not isinstance(expired, bool):
            raise errors.BAD_REQUEST.with_message("expired must be a boolean")
        expire_at = params.get("expire_at", 0) or 0
        if not _unix_seconds(expire_at) or expire_at < 0:
            raise errors.BAD_REQUEST.with_message("expire_at must be unix seconds")
        out.update({"expired": expired, "expire_at": expire_at, **_present(params, ("info", "b64info"))})
        return cls(user, out)

    def to_shard(self) -> Params:
        return self.shard_params


@dataclass(frozen=True, slots=True)
class DisconnectParams:
    user: str
    shard_params: Params

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        user = target_user(params)
        _targets(params)
        whitelist = params.get("whitelist") or []
        if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
            raise errors.BAD_REQUEST.with_message("whitelist must be a list of client ids")
        spec = params.get("disconnect")
        if spec is not None:
            if not isinstance(spec, dict):
                raise errors.BAD_REQUEST.with_message("disconnect must be an object")
            code = spec.get("code", 0)
            reason = spec.get("reason", "")
            if not _unix_seconds(code) or not 3000 <= code <= 4999:
                raise errors.BAD_REQUEST.with_message("disconnect code must be within 3000..4999")
            if not isinstance(reason, str) or len(reason.encode()) > 123:
                raise errors.BAD_REQUEST.with_message(
                    "disconnect reason must be a string of at most 123 bytes"
                )
        return cls(user, params)

    def to_shard(self) -> Params:
        return self.shard_params


@dataclass(frozen=True, slots=True)
class HistoryParams:
    channel: str
    limit: int
    reverse: bool
    since: Params | None = field(default=None)

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        channel = channel_name(params, rules)
        limit = params.get("limit", 0) or 0
        if not _unix_seconds(limit):
            raise errors.BAD_REQUEST.with_message("limit must be an integer")
        since = params.get("since")
        if since is not None and not isinstance(since, dict):
            raise errors.BAD_REQUEST.with_message("since must be an object")
        return cls(channel, limit, bool(params.get("reverse")), since)

    def to_shard(self) -> Params:
        out: Params = {"channel": self.channel, "limit": self.limit, "reverse": self.reverse}
        if self.since is not None:
            out["since"] = self.since
        return out


@dataclass(frozen=True, slots=True)
class ChannelsParams:
    pattern: str

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        return cls(string(params, "pattern"))


@dataclass(frozen=True, slots=True)
class ConnectionsParams:
    user: str
    expression: str
    limit: int  # 0: every match; otherwise at most this many, and the answer carries "total"
    label_filter: Params | None = None  # a FilterNode over the connections' labels
    # Switchboard extensions: leave one connection out (a messenger's "other sessions" list), and order
    # the answer by connection time ("connected_at_ms" oldest first, "-connected_at_ms" newest first).
    exclude_client: str = ""
    sort: str = ""

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        if params.get("all_users") not in (None, False):
            raise errors.BAD_REQUEST.with_message("all_users is not supported yet")
        user = string(params, "user")
        expression = string(params, "expression")
        label_filter = params.get("label_filter") or None
        if label_filter is not None:
            compile_label_filter(label_filter)  # 107 with the reason
        if not user and not expression and label_filter is None:
            raise errors.BAD_REQUEST.with_message("user, expression or label_filter required")
        limit = params.get("limit", 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise errors.BAD_REQUEST.with_message("limit must be a non-negative integer")
        sort = string(params, "sort")
        if sort not in CONNECTION_SORTS:
            raise errors.BAD_REQUEST.with_message('sort must be "connected_at_ms" or "-connected_at_ms"')
        return cls(user, expression, limit, label_filter, string(params, "exclude_client"), sort)

    def shard_params(self, timeout: float) -> Params:
        """What each shard (and each other node) is asked."""
        out: Params = {
            "user": self.user,
            "expression": self.expression,
            "timeout": timeout,
            "limit": self.limit,
        }
        if self.label_filter is not None:
            out["label_filter"] = self.label_filter
        if self.exclude_client:
            out["exclude_client"] = self.exclude_client
        if self.sort:
            out["sort"] = self.sort
        return out


CONNECTION_SORTS = ("", "connected_at_ms", "-connected_at_ms")


@dataclass(frozen=True, slots=True)
class BatchParams:
    """The commands stay as they came until their number is checked against the batch limit."""

    commands: list[Any]
    parallel: bool

    @classmethod
    def from_json(cls, params: Params, rules: ChannelNames) -> Self:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise errors.BAD_REQUEST.with_message("commands required")
        return cls(commands, bool(params.get("parallel")))

    def methods(self) -> list[tuple[str, Any]]:
        """Each command as (method, its params); a command is an object with exactly one method."""
        parsed: list[tuple[str, Any]] = []
        for command in self.commands:
            if not isinstance(command, dict) or len(command) != 1:
                raise errors.BAD_REQUEST.with_message("each command has exactly one method")
            ((method, method_params),) = command.items()
            parsed.append((method, method_params))
        return parsed
