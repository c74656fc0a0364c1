"""The opening handshake functions of broker.websocket.handshake."""

from __future__ import annotations

import base64

import pytest

from broker.websocket.handshake import (
    UpgradeError,
    accept_key,
    check_upgrade,
    error_response,
    response_101,
    select_subprotocol,
)

# RFC 6455 section 1.3, the worked example of the opening handshake.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def good_headers(**overrides: str | None) -> dict[str, str]:
    headers = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def test_accept_key_of_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_accept_key_agrees_with_websockets() -> None:
    from websockets.utils import accept_key as reference
    from websockets.utils import generate_key

    for _ in range(20):
        key = generate_key()
        assert accept_key(key) == reference(key)


def test_valid_request() -> None:
    assert check_upgrade("GET", good_headers()) is None


def test_header_names_and_tokens_are_case_insensitive() -> None:
    headers = {
        "upgrade": "WebSocket",
        "CONNECTION": "keep-alive, UPGRADE",
        "sec-websocket-key": RFC_KEY,
        "Sec-Websocket-Version": " 13 ",
    }
    assert check_upgrade("GET", headers) is None


def test_token_lists() -> None:
    assert check_upgrade("GET", good_headers(Upgrade="h2c, websocket")) is None
    assert check_upgrade("GET", good_headers(Connection="keep-alive,Upgrade")) is None


@pytest.mark.parametrize(
    ("method", "overrides", "reason"),
    [
        ("POST", {}, "method must be GET"),
        ("get", {}, "method must be GET"),
        ("GET", {"Upgrade": None}, "missing Upgrade: websocket"),
        ("GET", {"Upgrade": "h2c"}, "missing Upgrade: websocket"),
        ("GET", {"Upgrade": "websocketx"}, "missing Upgrade: websocket"),
        ("GET", {"Connection": None}, "missing Connection: upgrade"),
        ("GET", {"Connection": "keep-alive"}, "missing Connection: upgrade"),
        ("GET", {"Sec-WebSocket-Version": None}, "missing Sec-WebSocket-Version"),
        ("GET", {"Sec-WebSocket-Key": None}, "missing Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": "not base64!"}, "invalid Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}, "invalid Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}, "invalid Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": f"{RFC_KEY}, {RFC_KEY}"}, "invalid Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, "invalid Sec-WebSocket-Key"),
        ("GET", {"Sec-WebSocket-Key": "ÿÿÿÿ"}, "invalid Sec-WebSocket-Key"),
    ],
)
def test_bad_requests(method: str, overrides: dict[str, str | None], reason: str) -> None:
    error = check_upgrade(method, good_headers(**overrides))
    assert error == UpgradeError(400, reason)
    assert str(error) == reason


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", ""])
def test_unsupported_version_is_426(version: str) -> None:
    error = check_upgrade("GET", good_headers(Sec_WebSocket_Version=version))
    assert error is not None and error.status == 426


def test_error_responses() -> None:
    response = error_response(UpgradeError(400, "missing Upgrade: websocket"))
    head, body = response.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"Connection: close" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert body == b"missing Upgrade: websocket\n"

    response = error_response(UpgradeError(426, "unsupported Sec-WebSocket-Version"))
    head, _ = response.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 426 Upgrade Required"
    assert b"Sec-WebSocket-Version: 13" in lines
    assert b"Upgrade: websocket" in lines


def test_select_subprotocol() -> None:
    supported = ["centrifuge-protobuf", "centrifuge-json"]
    assert select_subprotocol(None, supported) is None
    assert select_subprotocol("", supported) is None
    assert select_subprotocol("centrifuge-protobuf", supported) == "centrifuge-protobuf"
    # The server's preference wins over the client's order.
    assert select_subprotocol("centrifuge-json, centrifuge-protobuf", supported) == "centrifuge-protobuf"
    assert select_subprotocol("mqtt,centrifuge-json", supported) == "centrifuge-json"
    assert select_subprotocol("mqtt, wamp", supported) is None
    # Subprotocol names are case-sensitive.
    assert select_subprotocol("Centrifuge-Protobuf", supported) is None
    assert select_subprotocol("centrifuge-protobuf", []) is None


def test_response_101() -> None:
    response = response_101(RFC_KEY, None)
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_response_101_with_subprotocol() -> None:
    response = response_101(RFC_KEY, "centrifuge-protobuf")
    assert response.endswith(b"Sec-WebSocket-Protocol: centrifuge-protobuf\r\n\r\n")
    assert response.count(b"\r\n\r\n") == 1
    assert b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n" in response


@pytest.mark.parametrize("bad", ["", "a b", "x\r\nSet-Cookie: y", "a,b", "é"])
def test_response_101_refuses_unsafe_subprotocol(bad: str) -> None:
    with pytest.raises(ValueError):
        response_101(RFC_KEY, bad)
