"""disconnect across shards, bad input of every kind, and the server going on serving."""

from __future__ import annotations

import socket
import time

import requests

from tests.integration.streamclient import StreamClient
from tests.support.server import Server
from tests.support.tokens import API_KEY, SECRET, make_token


def connect_many(server: Server, user: str, count: int, **claims) -> list[tuple[StreamClient, str]]:
    out = []
    for _ in range(count):
        client = StreamClient(server.port, {"token": make_token(user, **claims)})
        out.append((client, client.connect()["client"]))
    return out


def test_disconnect_one_client(server: Server) -> None:
    conns = connect_many(server, "dis-one", 3)
    victim_client, victim = conns[0]
    assert server.api("disconnect", {"user": "dis-one", "client": victim}) == {"result": {}}
    assert victim_client.read_until("disconnect") == {
        "disconnect": {"code": 3503, "reason": "force disconnect"}
    }
    assert victim_client.read() is None and victim_client.ended
    assert set(server.connections(user="dis-one")) == {c for _, c in conns[1:]}
    for client, _ in conns:
        client.close()


def test_disconnect_user_with_whitelist_and_custom_code(server: Server) -> None:
    conns = connect_many(server, "dis-all", 4)
    keep = conns[1][1]
    reply = server.api(
        "disconnect",
        {"user": "dis-all", "whitelist": [keep], "disconnect": {"code": 4501, "reason": "banned"}},
    )
    assert reply == {"result": {}}
    for client, client_id in conns:
        if client_id == keep:
            continue
        assert client.read_until("disconnect") == {"disconnect": {"code": 4501, "reason": "banned"}}
    assert set(server.connections(user="dis-all")) == {keep}
    server.api("disconnect", {"user": "dis-all"})
    assert server.connections(user="dis-all") == {}
    for client, _ in conns:
        client.close()


def test_disconnect_users_on_both_shards(server: Server) -> None:
    users = [f"spread-{i}" for i in range(20)]
    conns = {user: connect_many(server, user, 1)[0] for user in users}
    for user in users:
        server.api("disconnect", {"user": user})
    for client, _ in conns.values():
        assert client.read_until("disconnect")["disconnect"]["code"] == 3503
        client.close()
    assert server.connections(expression='user.startsWith("spread-")') == {}


def test_disconnect_validation(server: Server) -> None:
    assert server.api("disconnect", {})["error"]["code"] == 107
    assert server.api("disconnect", {"user": 5})["error"]["code"] == 107
    assert server.api("disconnect", {"user": "x", "disconnect": {"code": 1}})["error"]["code"] == 107
    assert server.api("disconnect", {"user": "x", "whitelist": "abc"})["error"]["code"] == 107


def test_bad_tokens(server: Server) -> None:
    cases = [
        ({"token": "garbage"}, 3500),
        ({"token": make_token("u", secret="wrong-secret")}, 3500),
        ({"token": make_token("u", meta=["not", "an", "object"])}, 3500),
        ({"token": make_token("u", channel="not-allowed-here")}, 3500),
        ({"token": make_token("u", exp=int(time.time()) - 5)}, 3005),
        ({}, 3501),
    ]
    for body, code in cases:
        client = StreamClient(server.port, body)
        message = client.read()
        assert message is not None and message["disconnect"]["code"] == code, body
        assert client.read() is None
        client.close()
    # alg none is never accepted
    import base64

    import orjson

    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    unsigned = f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg({'sub': 'u'})}."
    client = StreamClient(server.port, {"token": unsigned})
    assert client.read() == {"disconnect": {"code": 3500, "reason": "invalid token"}}
    client.close()
    assert SECRET  # the good secret still works afterwards
    good = StreamClient(server.port, {"token": make_token("after-bad")})
    assert good.connect()["client"]
    good.close()


def test_api_key_in_the_url_as_the_readme_documents(server: Server) -> None:
    url = server.url
    by_query = requests.post(f"{url}/api/info", params={"api_key": API_KEY}, data=b"{}", timeout=5)
    assert by_query.status_code == 200 and by_query.json()["result"]["nodes"]
    legacy = requests.post(
        f"{url}/api", params={"api_key": API_KEY}, data=b'{"method": "info", "params": {}}', timeout=5
    )
    assert legacy.status_code == 200 and "result" in legacy.json()
    wrong = requests.post(f"{url}/api/info", params={"api_key": "wrong"}, data=b"{}", timeout=5)
    assert wrong.status_code == 401


def test_bad_http_requests(server: Server) -> None:
    url = server.url
    assert requests.post(f"{url}/api/info", data=b"{}", timeout=5).status_code == 401
    assert (
        requests.post(f"{url}/api/info", data=b"{}", headers={"X-API-Key": "wrong"}, timeout=5).status_code
        == 401
    )
    headers = {"X-API-Key": API_KEY}
    assert (
        requests.post(f"{url}/api/connections", data=b"{not json", headers=headers, timeout=5).status_code
        == 400
    )
    assert requests.post(f"{url}/api/nope", data=b"{}", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{url}/api/info", headers=headers, timeout=5).status_code == 405
    legacy = requests.post(f"{url}/api", data=b'{"method":"nope"}', headers=headers, timeout=5)
    assert legacy.status_code == 400
    body = requests.post(f"{url}/api/connections", data=b"[1,2]", headers=headers, timeout=5).json()
    assert body["error"]["code"] == 107
    transport_mode = requests.post(
        f"{url}/api/connections",
        data=b"{}",
        headers={**headers, "X-Centrifugo-Error-Mode": "transport"},
        timeout=5,
    )
    assert transport_mode.status_code == 400 and transport_mode.json()["code"] == 107
    stream = f"{url}/connection/uni_http_stream"
    assert requests.get(stream, timeout=5).status_code == 405
    assert requests.options(stream, timeout=5).status_code == 200
    assert requests.post(stream, data=b"{broken", timeout=5).status_code == 400
    assert requests.post(stream, data=b"x" * 70_000, timeout=5).status_code == 413
    assert (
        requests.post(stream, data=b"{}", headers={"Origin": "https://evil.example"}, timeout=5).status_code
        == 403
    )
    # raw garbage on the socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01\x02 not http\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    # still serving
    assert server.api("info", {})["result"]["nodes"][0]["uid"]


def test_uni_sse_get_with_cf_connect(server: Server) -> None:
    import urllib.parse

    import orjson

    query = urllib.parse.quote(orjson.dumps({"token": make_token("sse-get"), "name": "browser"}).decode())
    with requests.get(
        f"{server.url}/connection/uni_sse?cf_connect={query}", stream=True, timeout=5
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))
        connect = orjson.loads(first[6:])["connect"]
        found = server.connections(user="sse-get")
        assert list(found) == [connect["client"]]
        assert found[connect["client"]]["transport"] == "uni_sse"
