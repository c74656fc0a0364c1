"""Sans-I/O core of the unidirectional HTTP transports (uni_http_stream, uni_sse).

The client sends one ConnectRequest (a JSON body or the ``cf_connect`` query) and then only reads.
``UniSession`` takes that request and the current time, and produces bytes: the HTTP response head,
the connect push, pings, pushes and finally a disconnect push and the end of the stream. No socket,
loop or clock lives here; the shard's transport adapter writes ``data_to_send()`` to its socket.

Pushes on unidirectional transports are not wrapped in ``{"push": ...}`` (reference §3).
"""

from __future__ import annotations

from typing import Any

import orjson

from broker import errors
from broker.config import Config
from broker.errors import ClientError, Disconnect
from broker.protocol.connect import (
    ChannelValidator,
    ConnectVerifier,
    apply_credentials,
    authenticate,
    check_channel_limit,
    connect_result,
    personal_subscription,
    refresh_proxy_configured,
    subscription_data,
    uni_request_subscriptions,
)
from broker.protocol.state import ConnectionState, position_boot
from broker.publication import publication_body, publications_of

_STREAM_HEADERS = (
    b"Cache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n"
    b"Pragma: no-cache\r\n"
    b"Expire: 0\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n"
)

PING_MESSAGE = b"{}"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class HttpStreamFraming:
    """uni_http_stream: newline-delimited JSON in HTTP/1.1 chunks, one chunk per message."""

    __slots__ = ()
    name = "uni_http_stream"
    content_type = b"application/json"

    def head(self) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: " + self.content_type + b"\r\n" + _STREAM_HEADERS + b"\r\n"

    def prelude(self) -> bytes:
        return b""

    def frame(self, message: bytes) -> bytes:
        return b"%x\r\n%s\n\r\n" % (len(message) + 1, message)

    def end(self) -> bytes:
        return b"0\r\n\r\n"


class SseFraming(HttpStreamFraming):
    """uni_sse: ``data: <json>`` events; the stream starts with a bare CRLF as Centrifugo's does."""

    __slots__ = ()
    name = "uni_sse"
    content_type = b"text/event-stream; charset=utf-8"

    def prelude(self) -> bytes:
        return _chunk(b"\r\n")

    def frame(self, message: bytes) -> bytes:
        event = b"data: %s\n\n" % message
        return b"%x\r\n%s\r\n" % (len(event), event)


HTTP_STREAM = HttpStreamFraming()
SSE = SseFraming()


def _raw_json(value: Any) -> Any:
    """``bytes`` fields of pushes hold raw JSON: embed them as they are."""
    if isinstance(value, bytes):
        return orjson.Fragment(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class _PendingRecovery:
    __slots__ = ("answers", "result", "since")

    def __init__(self, result: dict[str, Any], since: dict[str, tuple[int, str]]) -> None:
        self.result = result
        self.since = since
        self.answers: dict[str, dict[str, Any] | None] = {}


def parse_connect_request(body: bytes) -> dict[str, Any]:
    """The ConnectRequest object; an empty body is an empty request; anything not an object is 3501."""
    if not body.strip():
        return {}
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.DISCONNECT_BAD_REQUEST() from None
    if not isinstance(request, dict):
        raise errors.DISCONNECT_BAD_REQUEST()
    return request


def _string_field(request: dict[str, Any], key: str) -> str:
    value = request.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.DISCONNECT_BAD_REQUEST()
    return value


class UniSession:
    __slots__ = ("_out", "_pending", "closed", "framing", "state")

    def __init__(self, state: ConnectionState, framing: HttpStreamFraming) -> None:
        self.state = state
        self.framing = framing
        self._out: list[bytes] = []
        self.closed = False
        # While recoveries asked for in the ConnectRequest are answered: the connect result, the
        # positions to recover from, and the answers so far.
        self._pending: _PendingRecovery | None = None

    def start(
        self,
        request: dict[str, Any],
        verifier: ConnectVerifier,
        rules: ChannelValidator,
        cfg: Config,
        now: float,
    ) -> Disconnect | None:
        """Authenticate and write the connect push; on failure write a disconnect and close.

        Returns the disconnect that ended the session, or None when the session is live.
        """
        self._out.append(self.framing.head())
        self._out.append(self.framing.prelude())
        try:
            token = _string_field(request, "token")
            self.state.app_name = _string_field(request, "name")
            self.state.app_version = _string_field(request, "version")
            proxied, self.state.connect_proxy = self.state.connect_proxy, None
            creds = authenticate(token, verifier, cfg, now, proxied)
            apply_credentials(self.state, creds, rules, refresh_proxy=refresh_proxy_configured(cfg))
            personal_subscription(self.state, rules, cfg)
            check_channel_limit(self.state, cfg)
            to_recover = uni_request_subscriptions(self.state, request.get("subs"), rules, now)
        except Disconnect as exc:
            ended = exc
        except ClientError as err:
            ended = errors.uni_disconnect_for(err)
        else:
            result = connect_result(
                self.state, cfg, now, uni=True, sub_data=subscription_data(creds), data=creds.data
            )
            if to_recover:
                # The connect push waits for the recoveries: it reports their outcome per channel.
                self._pending = _PendingRecovery(result, to_recover)
                self.state.recovering = {channel: [] for channel in to_recover}
            else:
                self.push({"connect": result})
            return None
        self.disconnect(ended)
        return ended

    def start_from_body(
        self, body: bytes, verifier: ConnectVerifier, rules: ChannelValidator, cfg: Config, now: float
    ) -> Disconnect | None:
        """``start`` with the raw ConnectRequest bytes (a POST body or the ``cf_connect`` query)."""
        try:
            request = parse_connect_request(body)
        except Disconnect as exc:
            self._out.append(self.framing.head())
            self._out.append(self.framing.prelude())
            self.disconnect(exc)
            return exc
        return self.start(request, verifier, rules, cfg, now)

    @property
    def recovery_requests(self) -> dict[str, tuple[int, str]]:
        """Channels to recover before the connect push can be written: channel → (offset, epoch)."""
        return dict(self._pending.since) if self._pending is not None else {}

    def recovered(self, channel: str, found: dict[str, Any] | None) -> bool:
        """One recovery answered (``found`` is None when it failed); True once the session is complete.

        ``found`` is the writer's answer: ``publications`` (wire form), ``epoch``, ``offset``,
        ``recovered``. When the last one arrives, the connect push is written with each channel's
        outcome, followed by the recovered publications and the live ones held meanwhile, in order.
        """
        pending = self._pending
        if pending is None or channel not in pending.since:
            return pending is None
        pending.answers[channel] = found
        if len(pending.answers) < len(pending.since):
            return False
        self._pending = None
        subs = pending.result.setdefault("subs", {})
        held_by_channel = self.state.recovering or {}
        self.state.recovering = None
        follow: list[dict[str, Any]] = []
        positions = self.state.positions if self.state.positions is not None else {}
        for name, answer in pending.answers.items():
            entry: dict[str, Any] = dict(subs.get(name, {}))
            last = 0
            epoch = ""
            if answer is not None:
                epoch = str(answer.get("epoch", ""))
                last = int(answer.get("offset", 0))
                entry.update(
                    {"recoverable": True, "positioned": True, "was_recovering": True, "epoch": epoch}
                )
                entry["offset"] = last
                if answer.get("recovered"):
                    entry["recovered"] = True
                for pub in publications_of(answer):
                    follow.append({"channel": name, "pub": pub})
            for publication in held_by_channel.get(name, []):
                if publication.offset and epoch and publication.epoch != epoch:
                    continue  # of a stream the answer superseded (its writer restarted)
                if publication.offset and publication.offset <= last:
                    continue
                last = max(last, publication.offset)
                follow.append({"channel": name, "pub": publication_body(publication)})
            subs[name] = entry
            positions[name] = (last, epoch)
            self.state.position_boots = position_boot(self.state.position_boots, name, answer)
        self.state.positions = positions
        self.push({"connect": pending.result})
        for body in follow:
            self.push(body)
        return True

    def push(self, message: dict[str, Any]) -> None:
        self.push_encoded(orjson.dumps(message, default=_raw_json))

    def push_encoded(self, message: bytes) -> None:
        if not self.closed:
            self._out.append(self.framing.frame(message))

    def ping(self) -> None:
        if self._pending is None:  # nothing before the connect push
            self.push_encoded(PING_MESSAGE)

    def disconnect(self, disconnect: Disconnect) -> None:
        if self.closed:
            return
        self.push({"disconnect": disconnect.to_dict()})
        self._out.append(self.framing.end())
        self.closed = True

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data
