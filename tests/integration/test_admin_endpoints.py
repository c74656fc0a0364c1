"""The admin page's endpoints on a real server: login tokens, what they open and what they do not,
insecure mode, a handler prefix, and garbage."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import jwt
import pytest
import requests

from tests.support.server import API_KEY, Server
from tests.support.waiting import eventually

PASSWORD = "endpoints-password"
SECRET = "endpoints-secret-of-at-least-32-bytes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {"admin": True, "admin_password": PASSWORD, "admin_secret": SECRET}
    with Server(tmp_path_factory.mktemp("admin-endpoints"), shards=1, **config) as srv:
        yield srv


def admin_api(server: Server, token: str, body: object, prefix: str = "") -> requests.Response:
    return requests.post(
        f"{server.url}{prefix}/admin/api", json=body, headers={"Authorization": f"token {token}"}, timeout=5
    )


def login(server: Server, password: str = PASSWORD, prefix: str = "") -> requests.Response:
    return requests.post(f"{server.url}{prefix}/admin/auth", data={"password": password}, timeout=5)


def test_login_gives_a_token_that_runs_api_methods(server: Server) -> None:
    response = login(server)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    token = response.json()["token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 24 * 3600
    info = admin_api(server, token, {"method": "info", "params": {}}).json()
    assert info["result"]["nodes"][0]["num_clients"] == 0
    unknown = admin_api(server, token, {"method": "no_such_method", "params": {}}).json()
    assert unknown["error"]["code"] == 104
    bad_params = admin_api(server, token, {"method": "publish", "params": ["x"]}).json()
    assert bad_params["error"]["code"] == 107
    # JSON login works too (a script may post JSON).
    assert requests.post(f"{server.url}/admin/auth", json={"password": PASSWORD}, timeout=5).ok


def test_wrong_password_forged_expired_and_api_key_tokens_are_refused(server: Server) -> None:
    started = time.monotonic()
    assert login(server, "guess").status_code == 400
    assert time.monotonic() - started >= 0.5  # a guess costs time
    assert login(server, "").status_code == 400
    now = int(time.time())
    forged = jwt.encode(
        {"sub": "switchboard-admin", "iat": now, "exp": now + 60},
        "another-secret-of-at-least-32-bytes",
        algorithm="HS256",
    )
    expired = jwt.encode(
        {"sub": "switchboard-admin", "iat": now - 90, "exp": now - 30}, SECRET, algorithm="HS256"
    )
    other_subject = jwt.encode({"sub": "someone", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    unsigned = jwt.encode({"sub": "switchboard-admin", "exp": now + 60}, None, algorithm="none")
    for token in (forged, expired, other_subject, unsigned, API_KEY, ""):
        assert admin_api(server, token, {"method": "info"}).status_code == 401, token
    # The API key does not open the admin API, and an admin token does not open /api.
    token = login(server).json()["token"]
    api = requests.post(
        f"{server.url}/api/info", json={}, headers={"Authorization": f"token {token}"}, timeout=5
    )
    assert api.status_code == 401


def test_garbage_is_answered_and_the_server_goes_on(server: Server) -> None:
    token = login(server).json()["token"]
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    url = f"{server.url}/admin/api"
    for body in (b"{", b"[]", b'{"method": 5}', b'{"method": "info"' + b"]" * 5, b"[" * 60_000, b"\xff\xfe"):
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 400, body
    as_text = {"Authorization": f"token {token}", "Content-Type": "text/plain"}
    assert requests.post(url, data=b'{"method":"info"}', headers=as_text, timeout=5).status_code == 415
    huge = requests.post(f"{server.url}/admin/auth", data=b"password=" + b"x" * 200_000, timeout=5)
    assert huge.status_code == 413
    assert requests.get(url, timeout=5).status_code == 405
    assert requests.delete(f"{server.url}/", timeout=5).status_code == 405
    assert admin_api(server, token, {"method": "info"}).ok
    assert "Traceback" not in server.log()


def test_the_page_and_its_files_are_served_with_a_strict_policy(server: Server) -> None:
    page = requests.get(f"{server.url}/", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    for name in ("admin.js", "admin.css", "favicon.svg"):
        assert requests.get(f"{server.url}/admin/static/{name}", timeout=5).status_code == 200
    for text in (page.text, requests.get(f"{server.url}/admin/static/admin.js", timeout=5).text):
        assert "http://" not in text and "https://" not in text  # nothing from anywhere else
        assert API_KEY not in text
    settings = requests.get(f"{server.url}/admin/settings", timeout=5).json()
    assert settings["insecure"] is False and settings["version"]


def test_insecure_mode_and_a_handler_prefix(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"admin": True, "admin_insecure": True, "admin_handler_prefix": "/ops"}
    with Server(tmp_path_factory.mktemp("admin-insecure"), shards=1, **config) as srv:
        assert requests.get(f"{srv.url}/", timeout=5).status_code == 404
        redirect = requests.get(f"{srv.url}/ops", timeout=5, allow_redirects=False)
        assert redirect.status_code == 302 and redirect.headers["location"] == "/ops/"
        assert requests.get(f"{srv.url}/ops/", timeout=5).status_code == 200
        assert requests.get(f"{srv.url}/ops/admin/settings", timeout=5).json()["insecure"] is True
        assert admin_api(srv, "", {"method": "info"}, prefix="/ops").json()["result"]["nodes"]


def test_admin_switched_off_serves_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    with Server(tmp_path_factory.mktemp("admin-off"), shards=1) as srv:
        assert requests.get(f"{srv.url}/", timeout=5).status_code == 404
        assert requests.post(f"{srv.url}/admin/auth", data={"password": ""}, timeout=5).status_code == 404


def test_a_session_token_outlives_a_router_restart_and_metrics_heal(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """kill -9 of the router: the supervisor starts another; the page's token (signed, not stored) still
    opens the admin API, and /metrics sees every shard again."""
    config = {"admin": True, "admin_password": PASSWORD, "admin_secret": SECRET, "prometheus": True}
    with Server(tmp_path_factory.mktemp("admin-restart"), shards=2, **config) as srv:
        token = login(srv).json()["token"]
        old = srv.router_pid()
        os.kill(old, signal.SIGKILL)
        answer = eventually(
            lambda: admin_api(srv, token, {"method": "info"}).json(),
            timeout=20,
            what="the restarted router to answer the admin API",
            retry_on=(AssertionError, requests.RequestException, ValueError),
        )
        assert answer["result"]["nodes"][0]["num_clients"] == 0
        assert srv.router_pid() != old
        text = requests.get(f"{srv.url}/metrics", timeout=5).text
        assert 'switchboard_shard_up{shard="0"} 1' in text and 'switchboard_shard_up{shard="1"} 1' in text
