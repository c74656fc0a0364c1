"""Sans-I/O core of a bidirectional client session (WebSocket, JSON or Protobuf).

Theory of operation
-------------------
``ClientSession.receive(message, now)`` takes one complete transport message (a WebSocket message),
decodes the commands in it with the session's codec and handles each one; the replies it produces are
collected and ``data_to_send()`` returns them framed as one transport message. When a command calls for
the connection to end (a protocol violation, an invalid token …), ``disconnect`` holds the reason and the
adapter closes the transport with it. There is no socket, loop or clock here: ``now`` is passed in, and
everything that needs the rest of the server (the hub, the data plane, other shards) goes through the
:class:`SessionHost` the shard provides. Work that finishes later (a publish that must reach the channel's
writer shard) completes through a callback that queues the reply, so replies may come out of order —
the SDKs match them by id.

Session rules (Centrifugo's): the first command must be ``connect``; a second connect, a command other
than ``send`` without an id, or one without a known request is disconnect 3501. After a connect error
reply the session is unusable and further commands are 3501 too. An empty command is a pong; before the
connect it is 3501, after it a pong with no ping outstanding is ignored, as Centrifugo does (a client
may answer a ping twice, or late). The server pings every ``ping_interval``, never while a ping is
outstanding; a client that does not answer within ``pong_timeout`` is disconnected with 3012 (checked by
the owner's timer, see :meth:`ClientSession.ping_due`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from broker import errors
from broker.auth import TokenExpired, TokenInvalid
from broker.config import Config
from broker.delta import bodies as delta_bodies
from broker.errors import ClientError, Disconnect
from broker.merge import merge_presence, merge_presence_stats
from broker.protocol.codec import history_result
from broker.protocol.connect import (
    apply_credentials,
    authenticate,
    check_channel_limit,
    connect_result,
    personal_subscription,
    subscription_data,
    ttl_seconds,
)
from broker.protocol.state import (
    SERVER_SIDE_SOURCES,
    SOURCE_SUBSCRIBE_PROXY,
    ConnectionState,
    position_boot,
)
from broker.protocol.subscribe_plan import (
    SubscribePlan,
    decide_subscribe,
    granted_by_proxy,
    held_to_deliver,
    plan_for,
)
from broker.protocol.subscribe_plan import request_channel as _channel
from broker.protocol.subscribe_plan import request_string as _string
from broker.proxy.events import Refusal, parse_publish, parse_subscribe, publish_request, subscribe_request
from broker.proxy.fields import MalformedAnswer
from broker.proxy.rpc import parse_rpc_answer, rpc_request
from broker.proxy.table import ProxySpec, ProxyTable
from broker.publication import (
    Publication,
    client_info_from_json,
    publication_body,
    publications_of,
    reply_from_wire,
)


class SessionStatus(enum.IntEnum):
    """Where a session is in its life; an IntEnum so that logs name it and ``is`` stays cheap."""

    CONNECTING = 0
    CONNECTED = 1
    FAILED = 2
    CLOSED = 3


CONNECTING, CONNECTED, FAILED, CLOSED = SessionStatus

_REQUEST_KEYS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)

Done = Callable[[ClientError | None, dict[str, Any] | None], None]
# A proxy call's end: the backend's decoded JSON answer (None: the call failed) and the time it came.
Answered = Callable[[Any, float], None]

log = logging.getLogger("switchboard.proxy")

USER_STATUS_RPC = "update_user_status"


class Codec(Protocol):
    name: str
    binary: bool  # Protobuf: payloads travel as bytes (delta subscribers' data too)

    def decode_commands(self, data: bytes) -> list[dict[str, Any]]: ...

    def encode_reply(self, reply: dict[str, Any]) -> bytes: ...

    def join(self, encoded: list[bytes]) -> bytes: ...

    def encode_push(self, push: dict[str, Any]) -> bytes: ...


class SessionHost(Protocol):
    """What a session needs from the process that owns it."""

    @property
    def cfg(self) -> Config: ...

    @property
    def verifier(self) -> Any: ...

    @property
    def rules(self) -> Any: ...

    def admit(self, session: ClientSession, ready: Callable[[], None]) -> Disconnect | None:
        """Register a session that just connected (indexes, limits); a Disconnect refuses it.

        ``ready`` is called once its server-side channels deliver publications (maybe at once)."""

    def subscribe(self, session: ClientSession, channel: str, source: int, ready: Callable[[], None]) -> None:
        """Subscribe; ``ready`` once publications of the channel are sure to reach the session."""

    def unsubscribe(self, session: ClientSession, channel: str) -> None: ...

    def publish(self, publication: Publication, done: Done, skip_history: bool = False) -> None: ...

    def expiry_changed(self, session: ClientSession) -> None: ...

    def update_user_status(self, user: str) -> None:
        """The client's ``update_user_status`` RPC: ``user`` is active now."""
        ...

    def access_refuses(
        self, user: str, token_uid: str, token_issued_at: int, now: float
    ) -> Disconnect | None:
        """Why the session management API refuses this user or token (blocked, revoked), or None."""
        ...

    def subscription_token_refused(
        self, user: str, channel: str, token_uid: str, token_issued_at: int, now: float
    ) -> bool:
        """Whether the session management API refuses this subscription token (revoked, invalidated)."""
        ...

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Done) -> None:
        """Ask every shard and merge the answers (presence)."""

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Done) -> None:
        """Ask the channel's writer shard (history)."""

    def sub_expiry_changed(self, session: ClientSession, channel: str) -> None: ...

    def command_handled(self, method: str, seconds: float) -> None:
        """A command was handled in ``seconds`` (waits for another shard or a backend not included)."""

    def reply_failed(self, method: str, code: int) -> None:
        """An error reply with ``code`` went out for a ``method`` command."""

    @property
    def proxies(self) -> ProxyTable: ...

    def proxy(self, spec: ProxySpec, body: dict[str, Any], done: Answered) -> None:
        """POST ``body`` to the backend of ``spec`` with the connection's headers; ``done(answer, now)``
        with the decoded JSON, ``done(None, now)`` when the call failed (the host logs why)."""


class ClientSession:
    __slots__ = ("_out", "codec", "disconnect", "host", "ping_sent_at", "state", "status")

    def __init__(self, state: ConnectionState, codec: Codec, host: SessionHost) -> None:
        self.state = state
        self.codec = codec
        self.host = host
        self.status = CONNECTING
        self._out: list[bytes] = []
        self.disconnect: Disconnect | None = None
        self.ping_sent_at = 0.0

    # -- input -----------------------------------------------------------------------------------

    def receive(self, message: bytes, now: float) -> None:
        if self.status is CLOSED:
            return
        try:
            commands = self.codec.decode_commands(message)
            for command in commands:
                self._handle(command, now)
                if self.status is CLOSED:
                    break
        except Disconnect as exc:
            self.close(exc)

    def _handle(self, command: dict[str, Any], now: float) -> None:
        command_id = command.get("id", 0)
        request_key = next((key for key in _REQUEST_KEYS if command.get(key) is not None), None)
        if request_key is None:
            if command_id:
                raise errors.DISCONNECT_BAD_REQUEST()  # a command without a known request
            self._on_pong(now)
            return
        request = command[request_key]
        if not isinstance(request, dict):
            raise errors.DISCONNECT_BAD_REQUEST()
        if request_key == "send":
            self._require_connected()
            # There is no handler for asynchronous messages from clients.
            raise errors.DISCONNECT_NOT_AVAILABLE()
        if not command_id:
            raise errors.DISCONNECT_BAD_REQUEST()
        started = perf_counter()
        if request_key == "connect":
            self._on_connect(command_id, request, now)
            self.host.command_handled("connect", perf_counter() - started)
            return
        self._require_connected()
        handler = _HANDLERS.get(request_key)
        if handler is None:
            raise errors.DISCONNECT_BAD_REQUEST()  # ping requests are not routed
        try:
            handler(self, command_id, request, now)
        except ClientError as err:
            self._error(command_id, err, request_key)
        self.host.command_handled(request_key, perf_counter() - started)

    def _require_connected(self) -> None:
        if self.status is not CONNECTED:
            raise errors.DISCONNECT_BAD_REQUEST()

    def _on_pong(self, now: float) -> None:
        if self.status is not CONNECTED:
            raise errors.DISCONNECT_BAD_REQUEST()
        if self.ping_sent_at:
            self.state.ping_pong_latency_ms = max(0, int((now - self.ping_sent_at) * 1000))
        self.ping_sent_at = 0.0  # an extra pong (no ping outstanding) changes nothing

    # -- connect ---------------------------------------------------------------------------------

    def _on_connect(self, command_id: int, request: dict[str, Any], now: float) -> None:
        if self.status is not CONNECTING:
            raise errors.DISCONNECT_BAD_REQUEST()
        host = self.host
        state = self.state
        try:
            token = _string(request, "token")
            state.app_name = _string(request, "name")
            state.app_version = _string(request, "version")
            proxied, state.connect_proxy = state.connect_proxy, None
            creds = authenticate(token, host.verifier, host.cfg, now, proxied)
            apply_credentials(state, creds, host.rules, refresh_proxy=host.proxies.refresh is not None)
            personal_subscription(state, host.rules, host.cfg)
            check_channel_limit(state, host.cfg)
        except ClientError as err:
            self.status = FAILED
            self._error(command_id, err, "connect")
            return
        result = connect_result(
            state, host.cfg, now, uni=False, sub_data=subscription_data(creds), data=creds.data
        )
        self.status = CONNECTED
        refused = host.admit(self, lambda: self._deferred_reply(command_id, "connect", result))
        if refused is not None:
            raise refused()

    # -- channels --------------------------------------------------------------------------------

    def _on_subscribe(self, command_id: int, request: dict[str, Any], now: float) -> None:
        kind = request.get("type") or 0
        if kind:
            # Only streams are served: shared poll is not available, other types (map) not permitted.
            raise errors.NOT_AVAILABLE() if kind == SHARED_POLL else errors.PERMISSION_DENIED()
        delta = request.get("delta") or ""
        if delta and delta not in delta_bodies.ALLOWED_TYPES:
            raise errors.DISCONNECT_BAD_REQUEST()  # a delta type no server knows, as Centrifugo answers
        state = self.state
        rules = self.host.rules
        pending = state.proxy_pending
        if pending and _channel(request) in pending:
            raise errors.ALREADY_SUBSCRIBED()
        decision = decide_subscribe(rules, state, request, now, waiting=len(pending) if pending else 0)
        self._refuse_subscription_token(_channel(request), decision, now)
        if not decision.ask_proxy:
            self._start_subscription(command_id, plan_for(rules, state, request, decision), request, now)
            return
        channel = _channel(request)
        spec = rules.proxy_for("subscribe", decision.options)
        if spec is None:
            raise errors.NOT_AVAILABLE()
        data = request.get("data")
        body = subscribe_request(
            state, spec, channel, _string(request, "token"), data if isinstance(data, bytes) else None
        )
        if state.proxy_pending is None:
            state.proxy_pending = set()
        state.proxy_pending.add(channel)

        def answered(answer: Any, at: float) -> None:
            waiting = state.proxy_pending
            if waiting is None or channel not in waiting:
                return  # the client unsubscribed meanwhile: nothing to grant
            waiting.discard(channel)
            if not waiting:
                state.proxy_pending = None
            if self.status is not CONNECTED:
                return
            try:
                outcome = _proxy_outcome("subscribe", answer, parse_subscribe)
                if isinstance(outcome, Refusal):
                    self._refused(command_id, outcome, "subscribe")
                    return
                granted = granted_by_proxy(rules, state, channel, decision, outcome, at)
                self._start_subscription(command_id, plan_for(rules, state, request, granted), request, at)
            except ClientError as err:
                self._error(command_id, err, "subscribe")
            except Disconnect as exc:
                self.close(exc)

        self.host.proxy(spec, body, answered)

    def _start_subscription(
        self, command_id: int, plan: SubscribePlan, request: dict[str, Any], now: float
    ) -> None:
        self._record_subscription(plan)
        result = plan.result(now)
        channel = plan.channel
        source = plan.decision.source
        options = plan.decision.options
        if request.get("delta") and request["delta"] in options.allowed_delta_types:
            result["delta"] = True
            if self.state.delta is None:
                self.state.delta = {}
            self.state.delta[channel] = delta_bodies.PENDING
        if source == SOURCE_SUBSCRIBE_PROXY and self.host.rules.proxy_for("sub_refresh", options):
            # The sub_refresh proxy prolongs it: the client has nothing to refresh.
            result.pop("expires", None)
            result.pop("ttl", None)
        if not plan.positioned:
            self.host.subscribe(self, channel, source, lambda: self._subscribed(command_id, channel, result))
        else:
            # Hold live publications until the stream position (and any recovery) is known, then merge.
            state = self.state
            if state.recovering is None:
                state.recovering = {}
            state.recovering[channel] = []
            self.host.subscribe(
                self, channel, source, lambda: self._ask_position(command_id, plan, request, result)
            )
        # Armed once subscribed: what refreshes it depends on where the subscription came from.
        if plan.decision.expire_at:
            self._set_sub_expiry(channel, float(plan.decision.expire_at))

    def _subscribed(self, command_id: int, channel: str, result: dict[str, Any]) -> None:
        self._deferred_reply(command_id, "subscribe", result)
        self._delta_ready(channel)

    def _delta_ready(self, channel: str) -> None:
        """The subscribe reply is out: a delta subscription takes its next publication as its base."""
        deltas = self.state.delta
        if deltas is not None and deltas.get(channel) == delta_bodies.PENDING:
            deltas[channel] = delta_bodies.NO_BASE

    def _refused(self, command_id: int, refusal: Refusal, method: str) -> None:
        """A proxy's ``error`` (a reply to the command) or ``disconnect`` (the connection ends)."""
        if refusal.disconnect is not None:
            self.close(refusal.disconnect)
        elif refusal.error is not None:
            self._error(command_id, refusal.error, method)

    def _record_subscription(self, plan: SubscribePlan) -> None:
        """Keep what the session must know of a granted subscription: token, expiry, join/leave."""
        state = self.state
        channel = plan.channel
        decision = plan.decision
        if plan.records_token:
            if state.sub_tokens is None:
                state.sub_tokens = {}
            state.sub_tokens[channel] = (decision.token_uid, decision.token_issued_at)
        if decision.info is not None:
            if state.chan_info is None:
                state.chan_info = {}
            state.chan_info[channel] = decision.info
        if plan.join_leave:
            if state.join_leave is None:
                state.join_leave = set()
            state.join_leave.add(channel)

    def _ask_position(
        self, command_id: int, plan: SubscribePlan, request: dict[str, Any], result: dict[str, Any]
    ) -> None:
        """Once subscribed, ask the writer for the stream position, or for what was missed."""
        channel = plan.channel
        recovering = plan.recover

        def answered(err: ClientError | None, found: dict[str, Any] | None) -> None:
            self._position_known(command_id, channel, request, result, recovering, err, found)

        if recovering:
            params = {
                "channel": channel,
                "since": {"offset": _offset(request), "epoch": _string(request, "epoch")},
                "limit": self.host.cfg.client_recovery_max_publication_limit,
            }
            self.host.writer_query(channel, "recover", params, answered)
        else:
            self.host.writer_query(channel, "position", {"channel": channel}, answered)

    def _position_known(
        self,
        command_id: int,
        channel: str,
        request: dict[str, Any],
        result: dict[str, Any],
        recovering: bool,
        err: ClientError | None,
        found: dict[str, Any] | None,
    ) -> None:
        state = self.state
        held = state.recovering.pop(channel, []) if state.recovering is not None else []
        if not state.recovering:
            state.recovering = None
        if self.status is not CONNECTED or channel not in state.channels:
            return
        if err is not None or found is None:
            self._error(command_id, err or errors.INTERNAL, "subscribe")
            self.host.unsubscribe(self, channel)
            self.forget_channel(channel)
            return
        epoch = str(found.get("epoch", ""))
        top = int(found.get("offset", 0))
        result["epoch"] = epoch
        result["offset"] = top
        if recovering:
            recovered = bool(found.get("recovered"))
            if not recovered and _flags(request) & REJECT_UNRECOVERED:
                # The SDK reloads its state (getState) rather than go on with a gap.
                self._error(command_id, errors.UNRECOVERABLE_POSITION(), "subscribe")
                self.host.unsubscribe(self, channel)
                self.forget_channel(channel)
                return
            publications = publications_of(found)
            if result.get("delta"):
                publications = [delta_bodies.full_body(p, self.codec.binary) for p in publications]
            result["was_recovering"] = True
            if recovered:
                result["recovered"] = True
                result["offset"] = _offset(request)
            if publications:
                result["publications"] = publications
        if state.positions is None:
            state.positions = {}
        self._reply(command_id, "subscribe", result)
        live, last = held_to_deliver(held, epoch, top)
        for publication in live:
            body = publication_body(publication)
            if result.get("delta"):
                body = delta_bodies.full_body(body, self.codec.binary)
            self._out.append(self.codec.encode_push({"channel": channel, "pub": body}))
        self._delta_ready(channel)
        state.positions[channel] = (last, epoch)
        state.position_boots = position_boot(state.position_boots, channel, found)

    def _on_unsubscribe(self, command_id: int, request: dict[str, Any], now: float) -> None:
        channel = _channel(request)
        pending = self.state.proxy_pending
        if pending and channel in pending:
            pending.discard(channel)  # the subscribe proxy's answer will find nothing to grant
        source = self.state.channels.get(channel)
        # Server-side subscriptions belong to the server: a client cannot drop them.
        if source is not None and source not in SERVER_SIDE_SOURCES:
            self.host.unsubscribe(self, channel)
            self.forget_channel(channel)
        self._reply(command_id, "unsubscribe", {})

    def forget_channel(self, channel: str) -> None:
        """Drop per-channel session details (token ids, channel info, expiry) of a left channel."""
        state = self.state
        for table in (state.sub_tokens, state.chan_info, state.sub_expires):
            if table is not None:
                table.pop(channel, None)
        if state.join_leave is not None:
            state.join_leave.discard(channel)
        if state.positions is not None:
            state.positions.pop(channel, None)
        if state.position_boots is not None:
            state.position_boots.pop(channel, None)
        if state.recovering is not None:
            state.recovering.pop(channel, None)
        if state.delta is not None:
            state.delta.pop(channel, None)
            if not state.delta:
                state.delta = None

    def _on_publish(self, command_id: int, request: dict[str, Any], now: float) -> None:
        state = self.state
        channel = _channel(request)
        data = request.get("data")
        if not isinstance(data, bytes) or not data:
            raise errors.BAD_REQUEST()
        rules = self.host.rules
        decision = rules.check_publish(
            channel, state.user, subscribed=channel in state.channels, proxy_available=True
        )
        if not decision.ask_proxy:
            self._publish(command_id, channel, data, False)
            return
        spec = rules.proxy_for("publish", decision.options)
        if spec is None:
            raise errors.NOT_AVAILABLE()

        def answered(answer: Any, at: float) -> None:
            if self.status is not CONNECTED:
                return
            try:
                outcome = _proxy_outcome("publish", answer, parse_publish)
            except ClientError as err:
                self._error(command_id, err, "publish")
                return
            if isinstance(outcome, Refusal):
                self._refused(command_id, outcome, "publish")
                return
            self._publish(command_id, channel, outcome.data or data, outcome.skip_history)

        self.host.proxy(spec, publish_request(state, spec, channel, data), answered)

    def _publish(self, command_id: int, channel: str, data: bytes, skip_history: bool) -> None:
        state = self.state
        chan_info = state.chan_info.get(channel, b"") if state.chan_info else b""
        publication = Publication(
            channel,
            data,
            user=state.user,
            client=state.client,
            conn_info=state.info or b"",
            chan_info=chan_info,
        )

        def done(err: ClientError | None, result: dict[str, Any] | None) -> None:
            if self.status is not CONNECTED:
                return
            if err is not None:
                self._error(command_id, err, "publish")
            else:
                self._reply(command_id, "publish", {})

        self.host.publish(publication, done, skip_history)

    def _on_presence(self, command_id: int, request: dict[str, Any], now: float) -> None:
        channel = _channel(request)
        self.host.rules.check_presence(channel, self.state.user, subscribed=channel in self.state.channels)

        def done(err: ClientError | None, result: dict[str, Any] | None) -> None:
            if err is not None or result is None:
                self._deferred_error(command_id, err, "presence")
                return
            presence = {
                client: client_info_from_json(info) for client, info in result.get("presence", {}).items()
            }
            self._deferred_reply(command_id, "presence", {"presence": presence})

        self.host.cluster_query("presence", {"channel": channel}, merge_presence, done)

    def _on_presence_stats(self, command_id: int, request: dict[str, Any], now: float) -> None:
        channel = _channel(request)
        self.host.rules.check_presence_stats(
            channel, self.state.user, subscribed=channel in self.state.channels
        )

        def done(err: ClientError | None, result: dict[str, Any] | None) -> None:
            if err is not None or result is None:
                self._deferred_error(command_id, err, "presence_stats")
                return
            self._deferred_reply(command_id, "presence_stats", result)

        self.host.cluster_query("presence_stats", {"channel": channel}, merge_presence_stats, done)

    def _deferred_reply(self, command_id: int, key: str, result: dict[str, Any]) -> None:
        if self.status is CONNECTED:
            self._reply(command_id, key, result)

    def _deferred_error(self, command_id: int, err: ClientError | None, method: str) -> None:
        if self.status is CONNECTED:
            self._error(command_id, err or errors.INTERNAL, method)

    def _on_history(self, command_id: int, request: dict[str, Any], now: float) -> None:
        channel = _channel(request)
        self.host.rules.check_history(channel, self.state.user, subscribed=channel in self.state.channels)
        limit = request.get("limit", 0)
        if not isinstance(limit, int):
            raise errors.BAD_REQUEST()
        params: dict[str, Any] = {
            "channel": channel,
            "limit": self.host.rules.history_limit(limit),
            "reverse": bool(request.get("reverse")),
        }
        since = request.get("since")
        if isinstance(since, dict):
            params["since"] = {
                "offset": int(since.get("offset") or 0),
                "epoch": str(since.get("epoch") or ""),
            }

        def done(err: ClientError | None, found: dict[str, Any] | None) -> None:
            if err is not None or found is None:
                self._deferred_error(command_id, err, "history")
                return
            publications = [reply_from_wire(p) for p in found.get("publications", [])]
            self._deferred_reply(
                command_id, "history", history_result(publications, str(found["epoch"]), int(found["offset"]))
            )

        self.host.writer_query(channel, "history", params, done)

    def _on_rpc(self, command_id: int, request: dict[str, Any], now: float) -> None:
        method = request.get("method", "")
        data = request.get("data", b"")
        if not isinstance(method, str) or not isinstance(data, bytes):
            raise errors.BAD_REQUEST()
        if method == USER_STATUS_RPC:
            # Built in, as in Centrifugo PRO: the user proves to be active (get_user_status "active").
            if not self.state.user:
                raise errors.PERMISSION_DENIED()
            self.host.update_user_status(self.state.user)
            self._reply(command_id, "rpc", {})
            return
        spec = self.host.proxies.for_rpc(method)
        if spec is None:
            raise errors.NOT_AVAILABLE()  # no RPC handler for it (Centrifugo v6 answers 108)

        def answered(answer: Any, at: float) -> None:
            if self.status is not CONNECTED:
                return
            try:
                outcome = _proxy_outcome("rpc", answer, parse_rpc_answer)
            except ClientError as err:
                self._error(command_id, err, "rpc")
                return
            if outcome.disconnect is not None:
                self.close(outcome.disconnect)
            elif outcome.error is not None:
                self._error(command_id, outcome.error, "rpc")
            else:
                self._reply(command_id, "rpc", {"data": outcome.data} if outcome.data is not None else {})

        body = rpc_request(
            self.state,
            method=method,
            data=data,
            binary_encoding=spec.binary_encoding,
            include_meta=spec.include_connection_meta,
        )
        self.host.proxy(spec, body, answered)

    # -- token refresh ---------------------------------------------------------------------------

    def _on_refresh(self, command_id: int, request: dict[str, Any], now: float) -> None:
        token = _string(request, "token")
        if not token:
            raise errors.DISCONNECT_BAD_REQUEST()
        state = self.state
        try:
            claims = self.host.verifier.verify_connect_token(token, now)
        except TokenExpired:
            raise errors.CONNECTION_EXPIRED() from None
        except TokenInvalid:
            raise errors.INVALID_TOKEN() from None
        if claims.user != state.user:
            raise errors.INVALID_TOKEN()
        expire_at = float(claims.expire_at) if claims.expire_at is not None else float(claims.exp or 0)
        if expire_at and expire_at <= now:
            raise errors.CONNECTION_EXPIRED()
        issued_at = int(claims.iat or 0)
        refused = self.host.access_refuses(state.user, claims.jti, issued_at, now)
        if refused is not None:
            raise refused()
        state.expire_at = expire_at
        # The connection now holds this token: revoking it (by jti) or invalidating by iat applies to it.
        state.token_uid, state.token_issued_at = claims.jti, issued_at
        if claims.info is not None:
            state.info = claims.info
        if claims.meta is not None:
            state.meta = claims.meta
        self.host.expiry_changed(self)
        self._reply(command_id, "refresh", _expiry_result(expire_at, now))

    def _on_sub_refresh(self, command_id: int, request: dict[str, Any], now: float) -> None:
        state = self.state
        channel = _channel(request)
        if channel not in state.channels:
            raise errors.PERMISSION_DENIED()
        token = _string(request, "token")
        if not token:
            raise errors.BAD_REQUEST()
        try:
            decision = self.host.rules.check_subscribe(channel, state.user, state.client, token, now)
        except ClientError as err:
            if err.code == errors.PERMISSION_DENIED.code:
                # A refresh token that does not verify ends the connection (subscribing only fails).
                raise errors.INVALID_TOKEN() from None
            raise
        self._refuse_subscription_token(channel, decision, now)
        expire_at = float(decision.expire_at)
        if state.sub_tokens is None:
            state.sub_tokens = {}
        state.sub_tokens[channel] = (decision.token_uid, decision.token_issued_at)
        self._set_sub_expiry(channel, expire_at)
        self._reply(command_id, "sub_refresh", _expiry_result(expire_at, now))

    def _refuse_subscription_token(self, channel: str, decision: Any, now: float) -> None:
        """A subscription token that was revoked (its ``jti``) or invalidated (the user's tokens for the
        channel issued before a time) ends the connection (3500), as an invalid one would."""
        if not decision.token_uid and not decision.token_issued_at:
            return  # no subscription token: nothing to refuse
        refused = self.host.subscription_token_refused(
            self.state.user, channel, decision.token_uid, decision.token_issued_at, now
        )
        if refused:
            raise errors.INVALID_TOKEN()

    def _set_sub_expiry(self, channel: str, expire_at: float) -> None:
        state = self.state
        if expire_at:
            if state.sub_expires is None:
                state.sub_expires = {}
            state.sub_expires[channel] = expire_at
        elif state.sub_expires is not None:
            state.sub_expires.pop(channel, None)
        self.host.sub_expiry_changed(self, channel)

    # -- output ----------------------------------------------------------------------------------

    def _reply(self, command_id: int, key: str, result: dict[str, Any]) -> None:
        self._out.append(self.codec.encode_reply({"id": command_id, key: result}))

    def _error(self, command_id: int, err: ClientError, method: str) -> None:
        self.host.reply_failed(method, err.code)
        self._out.append(self.codec.encode_reply({"id": command_id, "error": err.to_dict()}))

    def push(self, push: dict[str, Any]) -> None:
        """Queue a push (subscribe, unsubscribe, refresh …) built by the server."""
        if self.status is CONNECTED:
            self._out.append(self.codec.encode_reply({"push": push}))

    def ping(self, now: float) -> bool:
        """Queue a server ping, unless one is still unanswered; the client must answer before
        ``pong_timeout``. True when a ping was queued."""
        if self.status is not CONNECTED or self.ping_sent_at:
            return False
        self._out.append(self.codec.encode_reply({}))
        self.ping_sent_at = now
        return True

    def ping_due(self, now: float, pong_timeout: float) -> bool:
        """True when a ping went unanswered for longer than ``pong_timeout``."""
        return bool(self.ping_sent_at) and now - self.ping_sent_at > pong_timeout

    def close(self, disconnect: Disconnect) -> None:
        if self.status is not CLOSED:
            self.status = CLOSED
            self.disconnect = disconnect

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = self.codec.join(self._out)
        self._out.clear()
        return data


# SubscribeRequest.type of a shared poll subscription, and the flag asking for 112 over a gap.
SHARED_POLL = 4
REJECT_UNRECOVERED = 2


def _flags(request: dict[str, Any]) -> int:
    value = request.get("flag") or 0
    return value if isinstance(value, int) else 0


def _proxy_outcome(kind: str, answer: Any, parse: Callable[[Any], Any]) -> Any:
    """A proxy's answer parsed; a failed call or a malformed answer is 100 to the one command."""
    if answer is None:
        raise errors.INTERNAL()  # the host logged why the call failed
    try:
        return parse(answer)
    except (MalformedAnswer, ValueError, TypeError) as exc:
        log.error("%s proxy: malformed answer: %s", kind, exc)
        raise errors.INTERNAL() from None


def _offset(request: dict[str, Any]) -> int:
    value = request.get("offset") or 0
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise errors.DISCONNECT_BAD_REQUEST()
    return value


def _expiry_result(expire_at: float, now: float) -> dict[str, Any]:
    if not expire_at:
        return {}
    return {"expires": True, "ttl": ttl_seconds(expire_at, now)}


_HANDLERS: dict[str, Callable[[ClientSession, int, dict[str, Any], float], None]] = {
    "subscribe": ClientSession._on_subscribe,
    "unsubscribe": ClientSession._on_unsubscribe,
    "publish": ClientSession._on_publish,
    "presence": ClientSession._on_presence,
    "presence_stats": ClientSession._on_presence_stats,
    "history": ClientSession._on_history,
    "rpc": ClientSession._on_rpc,
    "refresh": ClientSession._on_refresh,
    "sub_refresh": ClientSession._on_sub_refresh,
}
