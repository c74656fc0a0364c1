"""The bidirectional session core, driven without an event loop through a recording host."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broker.auth import TokenVerifier, encode_token
from broker.channels import ChannelRules
from broker.config import build
from broker.errors import ClientError, Disconnect
from broker.protocol.client import CLOSED, CONNECTED, ClientSession, SessionStatus
from broker.protocol.codec import get_codec
from broker.protocol.state import SOURCE_CLIENT_ALLOWED, SOURCE_SUBSCRIPTION_TOKEN, ConnectionState
from broker.proxy.table import ProxySpec, ProxyTable
from broker.publication import Publication

SECRET = "session-secret"
NOW = 1_800_000_000.0


class Host:
    def __init__(self, **config: Any) -> None:
        settings = {"token_hmac_secret_key": SECRET, "allow_subscribe_for_client": True}
        settings.update(config)
        self.cfg = build(settings, environ={})
        self.verifier = TokenVerifier.for_connections(self.cfg)
        self.rules = ChannelRules.from_config(self.cfg)
        self.admitted: list[ClientSession] = []
        self.subscribed: list[tuple[str, int]] = []
        self.unsubscribed: list[str] = []
        self.published: list[Publication] = []
        self.pending_done: list[Any] = []
        self.refuse: Disconnect | None = None
        self.expiry_changes = 0
        self.queries: list[tuple[str, str, dict[str, Any], Any]] = []
        self.skipped_history: list[bool] = []
        self.proxy_calls: list[tuple[str, dict[str, Any], Any]] = []
        self.handled: list[str] = []
        self.failed: list[tuple[str, int]] = []

    def admit(self, session: ClientSession, ready: Any) -> Disconnect | None:
        self.admitted.append(session)
        if self.refuse is None:
            ready()
        return self.refuse

    def subscribe(self, session: ClientSession, channel: str, source: int, ready: Any) -> None:
        session.state.channels[channel] = source
        self.subscribed.append((channel, source))
        ready()

    def unsubscribe(self, session: ClientSession, channel: str) -> None:
        session.state.channels.pop(channel, None)
        self.unsubscribed.append(channel)

    def publish(self, publication: Publication, done: Any, skip_history: bool = False) -> None:
        self.published.append(publication)
        self.pending_done.append(done)
        self.skipped_history.append(skip_history)

    @property
    def proxies(self) -> ProxyTable:
        assert self.rules.proxies is not None
        return self.rules.proxies

    def proxy(self, spec: ProxySpec, body: dict[str, Any], done: Any) -> None:
        self.proxy_calls.append((spec.name, body, done))

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Any) -> None:
        self.queries.append((channel, method, params, done))

    def update_user_status(self, user: str) -> None:
        self.active_users = [*getattr(self, "active_users", []), user]

    def access_refuses(self, user: str, token_uid: str, token_issued_at: int, now: float) -> Any:
        return None

    def subscription_token_refused(
        self, user: str, channel: str, token_uid: str, token_issued_at: int, now: float
    ) -> bool:
        return False

    def expiry_changed(self, session: ClientSession) -> None:
        self.expiry_changes += 1

    def sub_expiry_changed(self, session: ClientSession, channel: str) -> None:
        pass

    def command_handled(self, method: str, seconds: float) -> None:
        assert seconds >= 0
        self.handled.append(method)

    def reply_failed(self, method: str, code: int) -> None:
        self.failed.append((method, code))


def token(user: str, **claims: Any) -> str:
    return encode_token({"sub": user, **claims}, SECRET)


def new_session(host: Host, protocol: str = "json") -> ClientSession:
    state = ConnectionState("cid", "sid", "websocket", protocol, NOW)
    return ClientSession(state, get_codec(protocol), host)


def send(session: ClientSession, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    """Feed JSON commands and decode the replies."""
    session.receive(b"\n".join(orjson.dumps(c) for c in commands), NOW)
    out = session.data_to_send()
    return [orjson.loads(line) for line in out.split(b"\n") if line]


def connected(host: Host | None = None, user: str = "42", **claims: Any) -> tuple[Host, ClientSession]:
    host = host or Host()
    session = new_session(host)
    (reply,) = send(
        session, {"id": 1, "connect": {"token": token(user, **claims), "name": "js", "version": "5"}}
    )
    assert "connect" in reply, reply
    return host, session


def test_connect_result_and_state() -> None:
    host, session = connected(exp=int(NOW) + 100, info={"name": "Ann"})
    assert session.status == CONNECTED
    assert host.admitted == [session]
    state = session.state
    assert (state.user, state.app_name, state.app_version) == ("42", "js", "5")
    assert state.info == b'{"name":"Ann"}'


def test_connect_reply_fields() -> None:
    host = Host()
    session = new_session(host)
    (reply,) = send(
        session, {"id": 7, "connect": {"token": token("1", exp=int(NOW) + 50, channels=["news"])}}
    )
    result = reply["connect"]
    assert reply["id"] == 7
    assert result["client"] == "cid" and result["pong"] is True and result["ping"] == 25
    assert result["expires"] is True and result["ttl"] == 50
    assert result["subs"] == {"news": {}}
    assert "session" not in result


@pytest.mark.parametrize(
    "commands",
    [
        [{"id": 1, "subscribe": {"channel": "x"}}],  # not connected yet
        [{"connect": {"token": "x"}}],  # no id
        [{"id": 1, "nonsense": {}}],  # no known request
    ],
)
def test_protocol_violations_before_connect(commands: list[dict[str, Any]]) -> None:
    session = new_session(Host())
    send(session, *commands)
    assert session.status == CLOSED
    assert session.disconnect is not None and session.disconnect.code == 3501


def test_second_connect_is_a_violation() -> None:
    _, session = connected()
    send(session, {"id": 2, "connect": {"token": token("42")}})
    assert session.disconnect is not None and session.disconnect.code == 3501


def test_expired_token_is_an_error_reply_then_unusable() -> None:
    session = new_session(Host())
    (reply,) = send(session, {"id": 1, "connect": {"token": token("42", exp=int(NOW) - 1)}})
    assert reply == {"id": 1, "error": {"code": 109, "message": "token expired"}}
    send(session, {"id": 2, "subscribe": {"channel": "x"}})
    assert session.disconnect is not None and session.disconnect.code == 3501


@pytest.mark.parametrize(
    ("connect", "code"),
    [({"token": "garbage"}, 3500), ({}, 3501), ({"token": encode_token({"sub": "1"}, "other")}, 3500)],
)
def test_connect_disconnects(connect: dict[str, Any], code: int) -> None:
    session = new_session(Host())
    assert send(session, {"id": 1, "connect": connect}) == []
    assert session.disconnect is not None and session.disconnect.code == code


def test_connection_limit_refusal() -> None:
    host = Host()
    host.refuse = Disconnect(3504, "connection limit")
    session = new_session(host)
    send(session, {"id": 1, "connect": {"token": token("42")}})
    assert session.disconnect == Disconnect(3504, "connection limit")


def test_ping_pong_rules() -> None:
    session = new_session(Host())
    send(session, {})  # a pong before the connect
    assert session.disconnect is not None and session.disconnect.code == 3501
    _, session = connected()
    assert session.ping(NOW)
    assert session.data_to_send() == b"{}"
    assert session.ping_due(NOW + 9, 8.0)
    send(session, {})
    assert not session.ping_due(NOW + 9, 8.0)
    assert session.status == CONNECTED


def test_extra_pongs_are_ignored() -> None:
    _, session = connected()
    assert send(session, {}) == []  # no ping outstanding at all
    session.ping(NOW)
    session.data_to_send()
    assert send(session, {}, {}) == []  # answered twice in one message
    send(session, {})  # and once more, late
    assert session.status == CONNECTED and session.disconnect is None
    assert send(session, {"id": 2, "subscribe": {"channel": "chat"}}) == [{"id": 2, "subscribe": {}}]


def test_no_ping_while_one_is_outstanding() -> None:
    _, session = connected()
    assert session.ping(NOW)
    assert not session.ping(NOW + 1)  # a second tick before the pong: nothing queued
    assert session.data_to_send() == b"{}"
    assert session.ping_due(NOW + 8.5, 8.0)  # the first ping's time still counts
    send(session, {})
    assert session.ping(NOW + 25)
    assert session.data_to_send() == b"{}"


def test_subscribe_allowed_denied_duplicate() -> None:
    host, session = connected()
    assert send(session, {"id": 2, "subscribe": {"channel": "chat"}}) == [{"id": 2, "subscribe": {}}]
    assert host.subscribed == [("chat", SOURCE_CLIENT_ALLOWED)]
    (dup,) = send(session, {"id": 3, "subscribe": {"channel": "chat"}})
    assert dup["error"]["code"] == 105
    (private,) = send(session, {"id": 4, "subscribe": {"channel": "$secret"}})
    assert private["error"]["code"] == 103
    (unknown,) = send(session, {"id": 5, "subscribe": {"channel": "nope:x"}})
    assert unknown["error"]["code"] == 102
    send(session, {"id": 6, "subscribe": {}})
    assert session.disconnect is not None and session.disconnect.code == 3501


def test_private_channel_with_subscription_token() -> None:
    host, session = connected()
    sub = encode_token(
        {"sub": "42", "channel": "$secret", "exp": int(NOW) + 30, "jti": "s1", "iat": 5}, SECRET
    )
    (reply,) = send(session, {"id": 2, "subscribe": {"channel": "$secret", "token": sub}})
    assert reply == {"id": 2, "subscribe": {"expires": True, "ttl": 30}}
    assert host.subscribed == [("$secret", SOURCE_SUBSCRIPTION_TOKEN)]
    assert session.state.sub_tokens == {"$secret": ("s1", 5)}
    assert session.state.sub_expires == {"$secret": NOW + 30}
    (refreshed,) = send(
        session,
        {
            "id": 3,
            "sub_refresh": {
                "channel": "$secret",
                "token": encode_token({"sub": "42", "channel": "$secret", "exp": int(NOW) + 90}, SECRET),
            },
        },
    )
    assert refreshed == {"id": 3, "sub_refresh": {"expires": True, "ttl": 90}}
    other_user = encode_token({"sub": "7", "channel": "$other"}, SECRET)
    send(session, {"id": 4, "subscribe": {"channel": "$other", "token": other_user}})
    assert session.disconnect is not None and session.disconnect.code == 3500


def test_sub_refresh_errors() -> None:
    _, session = connected()
    (not_subscribed,) = send(session, {"id": 2, "sub_refresh": {"channel": "x", "token": "t"}})
    assert not_subscribed["error"]["code"] == 103
    send(session, {"id": 3, "subscribe": {"channel": "x"}})
    (empty,) = send(session, {"id": 4, "sub_refresh": {"channel": "x", "token": ""}})
    assert empty["error"]["code"] == 107


def test_unsubscribe_keeps_server_side_subscriptions() -> None:
    host, session = connected(channels=["news"])
    send(session, {"id": 2, "subscribe": {"channel": "chat"}})
    assert send(session, {"id": 3, "unsubscribe": {"channel": "news"}}) == [{"id": 3, "unsubscribe": {}}]
    assert send(session, {"id": 4, "unsubscribe": {"channel": "chat"}}) == [{"id": 4, "unsubscribe": {}}]
    assert send(session, {"id": 5, "unsubscribe": {"channel": "never"}}) == [{"id": 5, "unsubscribe": {}}]
    assert host.unsubscribed == ["chat"]
    assert "news" in session.state.channels


def test_publish_completes_later() -> None:
    host = Host(allow_publish_for_subscriber=True)
    host, session = connected(host, info={"n": 1})
    (denied,) = send(session, {"id": 2, "publish": {"channel": "chat", "data": {"a": 1}}})
    assert denied["error"]["code"] == 103
    send(session, {"id": 3, "subscribe": {"channel": "chat"}})
    assert send(session, {"id": 4, "publish": {"channel": "chat", "data": {"a": 1}}}) == []
    (publication,) = host.published
    assert publication.data == b'{"a":1}' and publication.user == "42" and publication.conn_info == b'{"n":1}'
    host.pending_done[0](None, {})
    assert orjson.loads(session.data_to_send()) == {"id": 4, "publish": {}}
    send(session, {"id": 5, "publish": {"channel": "chat", "data": {"a": 2}}})
    host.pending_done[1](ClientError(100, "internal server error", True), None)
    assert orjson.loads(session.data_to_send())["error"]["code"] == 100


def test_features_not_enabled() -> None:
    _, session = connected()
    for request in ("presence", "presence_stats", "history"):
        (reply,) = send(session, {"id": 9, request: {"channel": "chat"}})
        assert reply["error"]["code"] == 108, request
    (rpc,) = send(session, {"id": 10, "rpc": {"method": "x"}})
    assert rpc["error"]["code"] == 108  # no RPC handler: not available, as in Centrifugo v6
    send(session, {"send": {"data": {}}})
    assert session.disconnect is not None and session.disconnect.code == 3508


def test_refresh() -> None:
    host, session = connected(exp=int(NOW) + 10)
    (reply,) = send(session, {"id": 2, "refresh": {"token": token("42", exp=int(NOW) + 100, meta={"m": 1})}})
    assert reply == {"id": 2, "refresh": {"expires": True, "ttl": 100}}
    assert session.state.expire_at == NOW + 100 and session.state.meta == {"m": 1}
    assert host.expiry_changes == 1
    send(session, {"id": 3, "refresh": {"token": token("other")}})
    assert session.disconnect is not None and session.disconnect.code == 3500
    _, session = connected()
    send(session, {"id": 2, "refresh": {"token": token("42", exp=int(NOW) - 5)}})
    assert session.disconnect is not None and session.disconnect.code == 3005
    _, session = connected()
    send(session, {"id": 2, "refresh": {"token": ""}})
    assert session.disconnect is not None and session.disconnect.code == 3501


def test_protobuf_session() -> None:
    from broker.protocol.proto import client_pb2

    host = Host()
    session = new_session(host, "protobuf")
    command = client_pb2.Command(id=1, connect=client_pb2.ConnectRequest(token=token("42"), name="py"))
    body = command.SerializeToString()
    session.receive(bytes([len(body)]) + body, NOW)
    out = session.data_to_send()
    reply = client_pb2.Reply()
    reply.ParseFromString(out[1:])
    assert reply.id == 1 and reply.connect.client == "cid" and reply.connect.pong
    assert session.state.protocol == "protobuf" and session.state.app_name == "py"


def test_malformed_frame_is_3501() -> None:
    _, session = connected()
    session.receive(b"{not json", NOW)
    assert session.disconnect is not None and session.disconnect.code == 3501


@pytest.mark.parametrize(
    "claims",
    [
        {"channels": ["a", "b", "c"]},
        {"subs": {"a": {}, "b": {}, "c": {}}},
        {"channels": ["a", "b"], "subs": {"c": {}}},
    ],
)
def test_server_side_subscriptions_over_the_channel_limit_are_3505(claims: dict[str, Any]) -> None:
    host = Host(client_channel_limit=2)
    session = new_session(host)
    assert send(session, {"id": 1, "connect": {"token": token("42", **claims)}}) == []
    assert session.disconnect is not None and session.disconnect.code == 3505
    assert host.admitted == []


def test_personal_channel_counts_toward_the_channel_limit() -> None:
    connected(Host(client_channel_limit=2, user_subscribe_to_personal=True), channels=["a"])
    host = Host(client_channel_limit=2, user_subscribe_to_personal=True)
    session = new_session(host)
    send(session, {"id": 1, "connect": {"token": token("42", channels=["a", "b"])}})
    assert session.disconnect is not None and session.disconnect.code == 3505


def test_far_expiry_ttl_fits_the_protocol() -> None:
    session = new_session(Host())
    (reply,) = send(session, {"id": 1, "connect": {"token": token("42", exp=2**62)}})
    assert reply["connect"]["ttl"] == 2**32 - 1  # uint32 in client.proto


HISTORY_NAMESPACE = {
    "name": "hist",
    "history_size": 10,
    "history_ttl": "60s",
    "allow_subscribe_for_client": True,
    "allow_recovery": True,
}


def test_held_publication_of_a_superseded_epoch_is_dropped() -> None:
    """A publication of the old stream still on its way while a writer restarted must not be delivered
    after the answer of the new one, nor move the position: the next offset 1 would look delivered."""
    host, session = connected(Host(namespaces=[HISTORY_NAMESPACE]))
    request = {"channel": "hist:a", "recoverable": True, "recover": True, "offset": 5, "epoch": "old"}
    assert send(session, {"id": 2, "subscribe": request}) == []
    assert session.state.recovering is not None
    session.state.recovering["hist:a"].append(Publication("hist:a", b'{"n":6}', offset=6, epoch="old"))
    ((channel, method, _, answered),) = host.queries
    assert (channel, method) == ("hist:a", "recover")
    answered(None, {"epoch": "new", "offset": 0, "recovered": False, "publications": []})
    replies = [orjson.loads(line) for line in session.data_to_send().split(b"\n") if line]
    assert [r["id"] for r in replies] == [2], replies
    assert replies[0]["subscribe"]["epoch"] == "new" and "recovered" not in replies[0]["subscribe"]
    assert session.state.positions == {"hist:a": (0, "new")}


def test_reject_unrecovered_turns_a_failed_recovery_into_112() -> None:
    """With flag 2 (the SDKs' getState), a gap is error 112 and the subscription is dropped, so that the
    SDK reloads its state; without it, the subscribe succeeds with recovered: false."""
    for flag, expected in ((3, "error"), (1, "subscribe")):
        host, session = connected(Host(namespaces=[HISTORY_NAMESPACE]))
        request = {
            "channel": "hist:a",
            "recoverable": True,
            "recover": True,
            "offset": 5,
            "epoch": "e",
            "flag": flag,
        }
        send(session, {"id": 2, "subscribe": request})
        ((_, _, _, answered),) = host.queries
        answered(None, {"epoch": "e", "offset": 9, "recovered": False, "publications": []})
        (reply,) = [orjson.loads(line) for line in session.data_to_send().split(b"\n") if line]
        assert expected in reply, reply
        if expected == "error":
            assert reply["error"]["code"] == 112
            assert host.unsubscribed == ["hist:a"] and "hist:a" not in session.state.channels
        else:
            assert reply["subscribe"]["was_recovering"] is True and "recovered" not in reply["subscribe"]


@pytest.mark.parametrize(("kind", "code"), [(4, 108), (1, 103), (2, 103)])
def test_subscription_types_other_than_stream_are_refused(kind: int, code: int) -> None:
    host, session = connected()
    (reply,) = send(session, {"id": 2, "subscribe": {"channel": "chat", "type": kind}})
    assert reply["error"]["code"] == code and host.subscribed == []


def test_session_status_names_itself() -> None:
    assert [status.name for status in SessionStatus] == ["CONNECTING", "CONNECTED", "FAILED", "CLOSED"]
    assert repr(CLOSED) == "<SessionStatus.CLOSED: 3>"
    assert f"{CONNECTED!r}".endswith("CONNECTED: 1>")


def test_every_command_and_every_error_reply_is_told_to_the_host_for_metrics() -> None:
    host, session = connected()
    replies = send(
        session,
        {"id": 2, "subscribe": {"channel": "news"}},
        {"id": 3, "history": {"channel": "nowhere:x"}},
        {"id": 4, "presence": {"channel": "$private"}},
    )
    assert host.handled == ["connect", "subscribe", "history", "presence"]
    assert [reply.get("error", {}).get("code") for reply in replies] == [None, 102, 108]
    assert host.failed == [("history", 102), ("presence", 108)]
