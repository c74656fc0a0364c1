"""What a subscribe request asks for, decided without I/O: refused, or a :class:`SubscribePlan`.

The session (``broker.protocol.client``) carries the plan out: it records the token, arms the expiry,
subscribes through its host and, for a positioned subscription, asks the channel's writer for the stream
position or the publications to recover. Keeping the decision pure lets it be table-tested branch by
branch without a host.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from broker import errors
from broker.channel_options import ChannelOptions
from broker.channels.rules import ChannelRules, SubscribeDecision
from broker.errors import ClientError
from broker.protocol.connect import ttl_seconds
from broker.protocol.state import ConnectionState
from broker.proxy.events import SubscribeGrant
from broker.publication import Publication


class SubscribePlan(NamedTuple):
    """A granted subscription and the shape it takes (immutable).

    A NamedTuple rather than a frozen dataclass: one is built per subscribe, and a tuple is built in
    half the time of a frozen dataclass (whose fields are set through ``object.__setattr__``).

    ``positioned`` subscriptions hold live publications until the writer reports the stream position;
    ``recover`` additionally asks the writer for what was missed since the client's offset and epoch.
    ``join_leave`` is only set when the client asked, the channel sends them and the client may see
    presence (join/leave pushes reveal who is there).
    """

    channel: str
    decision: SubscribeDecision
    join_leave: bool
    recoverable: bool
    positioned: bool
    recover: bool

    @property
    def records_token(self) -> bool:
        """A subscription token was presented: its uid, issue time and channel info are kept."""
        return self.decision.claims is not None

    def result(self, now: float) -> dict[str, Any]:
        """The subscribe reply's fields known before any writer answer."""
        decision = self.decision
        result: dict[str, Any] = {}
        if decision.expire_at:
            result["expires"] = True
            result["ttl"] = ttl_seconds(decision.expire_at, now)
        if decision.data is not None:
            result["data"] = decision.data
        if self.recoverable:
            result["recoverable"] = True
        if self.positioned:
            result["positioned"] = True
        return result


def plan_subscribe(
    rules: ChannelRules, state: ConnectionState, request: dict[str, Any], now: float
) -> SubscribePlan:
    """Decide a subscribe request without asking any proxy; raises the refusal."""
    return plan_for(rules, state, request, decide_subscribe(rules, state, request, now, proxy=False))


def decide_subscribe(
    rules: ChannelRules,
    state: ConnectionState,
    request: dict[str, Any],
    now: float,
    *,
    waiting: int = 0,
    proxy: bool = True,
) -> SubscribeDecision:
    """Whether the subscription is granted (or, ``ask_proxy``, up to the subscribe proxy); raises the
    refusal (a :class:`ClientError` or a disconnect). ``waiting``: subscriptions of the connection still
    waiting for a proxy's answer, counted against the channel limit."""
    channel = request_channel(request)
    return rules.check_subscribe(
        channel,
        state.user,
        state.client,
        request_string(request, "token"),
        now,
        channel_count=len(state.channels) + waiting,
        already_subscribed=channel in state.channels,
        proxy_available=proxy,
    )


def granted_by_proxy(
    rules: ChannelRules,
    state: ConnectionState,
    channel: str,
    decision: SubscribeDecision,
    grant: SubscribeGrant,
    now: float,
) -> SubscribeDecision:
    """The decision once the subscribe proxy granted it: its overrides, expiry, channel info and data.

    Raises when the connection cannot take it any more (subscribed meanwhile by the server, or over
    the channel limit) or when the grant has already expired.
    """
    if channel in state.channels:
        raise errors.ALREADY_SUBSCRIBED()
    limit = rules.client_channel_limit
    if limit > 0 and len(state.channels) >= limit:
        raise errors.LIMIT_EXCEEDED()
    if grant.expire_at and grant.expire_at <= int(now):
        raise errors.EXPIRED()
    options = decision.options
    if grant.override:
        changes: dict[str, Any] = dict(grant.override)
        options = dataclasses.replace(options, **changes)
    return dataclasses.replace(
        decision,
        options=options,
        expire_at=grant.expire_at,
        ask_proxy=False,
        granted_info=grant.info,
        granted_data=grant.data,
    )


def plan_for(
    rules: ChannelRules, state: ConnectionState, request: dict[str, Any], decision: SubscribeDecision
) -> SubscribePlan:
    """The shape of a granted subscription: join/leave, recovery and positioning, as asked and allowed."""
    channel = request_channel(request)
    options = decision.options
    join_leave = (
        bool(request.get("join_leave")) and options.join_leave and _may(rules.check_presence, channel, state)
    )
    # A client asking to recover wants a recoverable subscription: the SDKs' state loaders (getState,
    # get_state) send ``recover`` with the position they loaded and no ``recoverable``.
    asks = bool(request.get("recoverable")) or bool(request.get("recover"))
    recoverable = options.history_enabled and (
        options.force_recovery or (asks and _history_permitted(rules, channel, state, options))
    )
    positioned = recoverable or (
        options.history_enabled
        and (
            options.force_positioning
            or (bool(request.get("positioned")) and _history_permitted(rules, channel, state, options))
        )
    )
    recover = recoverable and bool(request.get("recover"))
    return SubscribePlan(channel, decision, join_leave, recoverable, positioned, recover)


def held_to_deliver(held: list[Publication], epoch: str, top: int) -> tuple[list[Publication], int]:
    """Live publications held while positioning that still follow the position ``top`` in ``epoch``.

    Returns them in order with the offset the client will be at after them. Held publications of
    another epoch belong to a stream the writer's answer superseded (the writer restarted); those at or
    below the position are already part of it or of the recovered publications. Publications without
    an offset (history off) always pass.
    """
    live: list[Publication] = []
    last = top
    for publication in held:
        if publication.offset:
            if publication.epoch != epoch or publication.offset <= last:
                continue
            last = publication.offset
        live.append(publication)
    return live, last


def _history_permitted(
    rules: ChannelRules, channel: str, state: ConnectionState, options: ChannelOptions
) -> bool:
    """Positioning and recovery are for clients allowed to read the channel's history."""
    if options.allow_recovery or options.allow_positioning:
        return True
    return _may(rules.check_history, channel, state)


def _may(check: Any, channel: str, state: ConnectionState) -> bool:
    try:
        check(channel, state.user, subscribed=True)
    except ClientError:
        return False
    return True


def request_string(request: dict[str, Any], key: str) -> str:
    """A string field of a request ("" when absent); any other type is a bad request."""
    value = request.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.DISCONNECT_BAD_REQUEST()
    return value


def request_channel(request: dict[str, Any]) -> str:
    channel = request_string(request, "channel")
    if not channel:
        raise errors.DISCONNECT_BAD_REQUEST()
    return channel
