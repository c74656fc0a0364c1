"""The unidirectional session core, driven without an event loop."""

from __future__ import annotations

import orjson
import pytest

from broker.auth import TokenVerifier, encode_token
from broker.channels import ChannelRules
from broker.config import build
from broker.protocol.state import SOURCE_CONNECTION_TOKEN, ConnectionState
from broker.protocol.uni import HTTP_STREAM, SSE, UniSession, parse_connect_request

SECRET = "secret-for-tests"
NOW = 1_800_000_000.0


def make_session(framing=HTTP_STREAM) -> UniSession:
    return UniSession(ConnectionState("cid-1", "sess-1", framing.name, "json", NOW), framing)


def messages(data: bytes) -> list[dict]:
    """Decode the JSON messages of an HTTP-stream response (head, then chunks)."""
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunk, body = rest[:size], rest[size + 2 :]
        for line in chunk.split(b"\n"):
            line = line.strip()
            if line.startswith(b"data: "):
                line = line[6:]
            if line:
                out.append(orjson.loads(line))
    return out


@pytest.fixture
def cfg():
    return build({"token_hmac_secret_key": SECRET}, environ={})


@pytest.fixture
def verifier(cfg):
    return TokenVerifier.for_connections(cfg)


def start(session, request, verifier, cfg):
    return session.start(request, verifier, ChannelRules.from_config(cfg), cfg, NOW)


def token(claims: dict) -> str:
    return encode_token(claims, SECRET)


def test_connect_push_then_ping(cfg, verifier):
    session = make_session()
    claims = {"sub": "42", "exp": int(NOW) + 3600, "iat": int(NOW), "jti": "t1", "meta": {"tenant": "acme"}}
    ended = start(session, {"token": token(claims), "name": "terminal", "version": "1.2"}, verifier, cfg)
    assert ended is None
    session.ping()
    out = session.data_to_send()
    head = out.split(b"\r\n\r\n", 1)[0]
    assert b"Content-Type: application/json" in head
    assert b"Transfer-Encoding: chunked" in head
    msgs = messages(out)
    connect = msgs[0]["connect"]
    assert connect["client"] == "cid-1"
    assert connect["session"] == "sess-1"
    assert connect["ping"] == 25
    assert connect["expires"] is True and 3590 <= connect["ttl"] <= 3600
    assert "pong" not in connect
    assert msgs[1] == {}
    state = session.state
    assert (state.user, state.app_name, state.app_version) == ("42", "terminal", "1.2")
    assert state.meta == {"tenant": "acme"}
    assert state.token_uid == "t1" and state.token_issued_at == int(NOW)
    # meta is server-only: it never appears in what the client receives.
    assert b"acme" not in out


def test_token_channels_become_server_side_subscriptions(cfg, verifier):
    session = make_session()
    assert start(session, {"token": token({"sub": "7", "channels": ["news", "chat"]})}, verifier, cfg) is None
    connect = messages(session.data_to_send())[0]["connect"]
    assert connect["subs"] == {"news": {}, "chat": {}}
    assert session.state.channels == {"news": SOURCE_CONNECTION_TOKEN, "chat": SOURCE_CONNECTION_TOKEN}
    info = session.state.connection_info()
    assert info["state"]["channels"] == {"news": {"source": 1}, "chat": {"source": 1}}


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"token": "not.a.token"}, 3500),
        ({"token": encode_token({"sub": "1"}, "other-secret")}, 3500),
        ({}, 3501),
        ({"token": 5}, 3501),
    ],
)
def test_rejections_are_disconnect_pushes(cfg, verifier, request_body, code):
    session = make_session()
    ended = start(session, request_body, verifier, cfg)
    assert ended is not None and ended.code == code
    out = session.data_to_send()
    assert messages(out) == [{"disconnect": {"code": code, "reason": ended.reason}}]
    assert out.endswith(b"0\r\n\r\n")
    assert session.closed
    session.ping()
    assert session.data_to_send() == b""


def test_expired_token_becomes_connection_expired(cfg, verifier):
    session = make_session()
    ended = start(session, {"token": token({"sub": "1", "exp": int(NOW) - 10})}, verifier, cfg)
    assert ended is not None and ended.code == 3005


def test_meta_must_be_an_object(cfg, verifier):
    session = make_session()
    ended = start(session, {"token": token({"sub": "1", "meta": [1, 2]})}, verifier, cfg)
    assert ended is not None and ended.code == 3500


def test_anonymous_allowed_by_config(verifier):
    cfg = build({"token_hmac_secret_key": SECRET, "allow_anonymous_connect_without_token": True}, environ={})
    session = make_session()
    assert start(session, {}, verifier, cfg) is None
    assert session.state.user == ""


def test_client_insecure_accepts_unsigned_claims(verifier):
    cfg = build({"client_insecure": True}, environ={})
    session = make_session()
    assert start(session, {"token": encode_token({"sub": "9"}, "whatever")}, verifier, cfg) is None
    assert session.state.user == "9"


def test_unknown_namespace_in_token_channels(cfg, verifier):
    session = make_session()
    ended = start(session, {"token": token({"sub": "1", "channels": ["nope:x"]})}, verifier, cfg)
    assert ended is not None and ended.code == 3004


def test_sse_framing(cfg, verifier):
    session = make_session(SSE)
    assert start(session, {"token": token({"sub": "1"})}, verifier, cfg) is None
    out = session.data_to_send()
    assert b"Content-Type: text/event-stream; charset=utf-8" in out
    body = out.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"2\r\n\r\n\r\n")  # the bare CRLF that opens the event stream
    assert b'data: {"connect":' in body
    assert messages(out)[0]["connect"]["client"] == "cid-1"


def test_disconnect_is_written_once(cfg, verifier):
    session = make_session()
    start(session, {"token": token({"sub": "1"})}, verifier, cfg)
    session.data_to_send()
    from broker import errors

    session.disconnect(errors.SHUTDOWN)
    session.disconnect(errors.FORCE_DISCONNECT)
    out = session.data_to_send()
    assert out.count(b"disconnect") == 1
    assert b'"code":3001' in out


@pytest.mark.parametrize("body", [b"[1]", b"{bad", b'"x"'])
def test_parse_connect_request_rejects_non_objects(body):
    from broker.errors import Disconnect

    with pytest.raises(Disconnect) as info:
        parse_connect_request(body)
    assert info.value.code == 3501


def test_parse_connect_request_empty_body():
    assert parse_connect_request(b"  ") == {}


def test_token_channels_over_the_limit_are_3505():
    cfg = build({"token_hmac_secret_key": SECRET, "client_channel_limit": 1}, environ={})
    verifier = TokenVerifier.for_connections(cfg)
    session = make_session()
    ended = start(session, {"token": token({"sub": "1", "channels": ["a", "b"]})}, verifier, cfg)
    assert ended is not None and ended.code == 3505


@pytest.mark.parametrize("options", [[], "x", 1, True])
def test_subs_entry_that_is_not_an_object_is_3501(cfg, verifier, options):
    session = make_session()
    ended = start(session, {"token": token({"sub": "1"}), "subs": {"c": options}}, verifier, cfg)
    assert ended is not None and ended.code == 3501
