"""The README walkthrough, step by step, with the real CLI, curl and the cent client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cent import Client, ConnectionsRequest, DisconnectRequest, InfoRequest

from tests.support.server import Process, Server, free_port, wait_healthy
from tests.support.waiting import eventually

SWITCHBOARD = [sys.executable, "-m", "broker"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SWITCHBOARD, *args], cwd=cwd, capture_output=True, text=True, timeout=30, env=env)


REPO_ROOT = Path(__file__).resolve().parents[2]


def readme_walkthrough_commands() -> list[str]:
    """The command lines of the README walkthrough's first block, comments stripped."""
    section = (REPO_ROOT / "README.md").read_text().split("## Walkthrough", 1)[1]
    block = section.split("```", 2)[1]
    return [code for line in block.splitlines() if (code := line.split("#", 1)[0].strip())]


def makefile_config_command() -> str:
    """The command `make run` writes config.json with, as a shell line (the config file rule)."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("$(CONFIG):"))
    recipe = lines[rule + 1].strip()
    return recipe.replace("$(BIN)/", "").replace("$(CONFIG)", "config.json")


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


# How the walkthrough's server is started: the README's line (v6 names), the same with the v5 alias
# the README mentions, and a server configured by v6 environment variables alone (no file).
FORMS = ["v6", "v5-alias", "env-only"]


def shards_up(url: str, api_key: str) -> bool:
    answer = requests.post(f"{url}/api/info", json={}, headers={"X-API-Key": api_key}, timeout=5).json()
    shards = answer["result"]["nodes"][0]["shards"]
    assert len(shards) == 2 and not any(shard.get("unavailable") for shard in shards), shards
    return True


@pytest.fixture(params=FORMS)
def walkthrough_server(tmp_path: Path, request: pytest.FixtureRequest):
    """What `make run` leaves behind (config.json), then the README walkthrough's commands verbatim.

    The walkthrough's server runs on :8000; here the environment moves it to a free loopback port and a
    private runtime directory, which the README's command line does not set, so it still wins over them.
    """
    form = request.param
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the walkthrough runs in the repository directory
    made = shell(makefile_config_command(), tmp_path, env)
    assert made.returncode == 0, made.stderr
    document = json.loads((tmp_path / "config.json").read_text())
    assert list(document) == ["client", "admin", "http_api"]
    config = {
        "api_key": document["http_api"]["key"],
        "secret": document["client"]["token"]["hmac_secret_key"],
    }
    refused = run_cli("genconfig", cwd=tmp_path)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    port = free_port()
    server_env = dict(
        env,
        CENTRIFUGO_HTTP_SERVER_PORT=str(port),
        CENTRIFUGO_HTTP_SERVER_ADDRESS="127.0.0.1",
        SWITCHBOARD_NODE_SHARDS="2",
        SWITCHBOARD_NODE_RUNTIME_DIR=str(tmp_path / "run"),
    )
    *steps, serve = readme_walkthrough_commands()
    assert serve == "CENTRIFUGO_UNI_HTTP_STREAM_ENABLED=true switchboard -c config.json", serve
    if form == "v5-alias":
        serve = serve.replace("CENTRIFUGO_UNI_HTTP_STREAM_ENABLED=true", "CENTRIFUGO_UNI_HTTP_STREAM=1")
    elif form == "env-only":
        (tmp_path / "config.json").unlink()
        env["CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"] = config["secret"]
        server_env["CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY"] = config["secret"]
        server_env["CENTRIFUGO_HTTP_API_KEY"] = config["api_key"]
        serve = serve.replace(" -c config.json", "")
    for step in steps:
        done = shell(step, tmp_path, env)
        assert done.returncode == 0, (step, done.stderr)
    # Its own process group: a stop reaches the server whether or not bash exec'd it.
    server = Process(
        ["bash", "-c", serve], tmp_path / "server.log", env=server_env, cwd=tmp_path, new_session=True
    )
    server.spawn()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        # /health answers once the router listens; the walkthrough's clients need the shards too.
        eventually(
            lambda: shards_up(url, config["api_key"]),
            timeout=20,
            what="both shards to be up",
            retry_on=(AssertionError, requests.RequestException, KeyError),
        )
    except AssertionError as failure:
        server.kill()
        raise AssertionError(f"{failure}\n{server.log_tail()}") from None
    yield url, config, tmp_path, env
    server.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_walkthrough_with_curl_and_cent(walkthrough_server) -> None:
    url, config, cwd, env = walkthrough_server
    gentoken = run_cli("gentoken", "-u", "42", cwd=cwd, env=env)
    assert gentoken.returncode == 0
    first_line, token = gentoken.stdout.strip().split("\n")
    assert first_line == 'HMAC SHA-256 JWT for user "42" with expiration TTL 168h0m0s:'

    body = json.dumps({"token": token, "name": "terminal"})
    terminals = [
        subprocess.Popen(
            [
                "curl",
                "-sN",
                "--max-time",
                "30",
                "-X",
                "POST",
                f"{url}/connection/uni_http_stream",
                "--data",
                body,
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        first_messages = [json.loads(t.stdout.readline()) for t in terminals if t.stdout is not None]
        clients = {m["connect"]["client"] for m in first_messages}
        assert len(clients) == 2

        legacy = subprocess.run(
            [
                "curl",
                "-s",
                "-H",
                "Content-Type: application/json",
                "-H",
                f"Authorization: apikey {config['api_key']}",
                "--data",
                '{"method": "connections", "params": {"user": "42"}}',
                f"{url}/api",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        result = json.loads(legacy.stdout)["result"]["connections"]
        assert set(result) == clients
        for info in result.values():
            assert info["app_name"] == "terminal"
            assert info["transport"] == "uni_http_stream"
            assert info["protocol"] == "json"
            assert info["user"] == "42"

        cent = Client(f"{url}/api", config["api_key"], timeout=5)
        by_cent = cent.connections(ConnectionsRequest(user="42", expression=""))
        assert set(by_cent.connections) == clients
        assert {c.app_name for c in by_cent.connections.values()} == {"terminal"}
        by_cel = cent.connections(
            ConnectionsRequest(user="", expression='app_name == "terminal" && user == "42"')
        )
        assert set(by_cel.connections) == clients
        info = cent.info(InfoRequest())
        assert info.nodes[0].num_clients == 2 and info.nodes[0].num_users == 1 and info.nodes[0].uid

        by_client = {m["connect"]["client"]: t for m, t in zip(first_messages, terminals, strict=True)}
        victim = sorted(clients)[0]
        cent.disconnect(DisconnectRequest(user="42", client=victim))
        victim_stream = by_client[victim].stdout
        assert victim_stream is not None
        line = victim_stream.readline()
        while line.strip() == b"{}":  # a ping may come first
            line = victim_stream.readline()
        assert json.loads(line) == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        assert victim_stream.readline() == b""  # and the stream ends
        remaining = cent.connections(ConnectionsRequest(user="42", expression=""))
        assert set(remaining.connections) == clients - {victim}
    finally:
        for t in terminals:
            t.kill()
            t.wait(5)


def test_cli_token_round_trip(tmp_path: Path) -> None:
    assert run_cli("genconfig", cwd=tmp_path).returncode == 0
    token = run_cli("gentoken", "-u", "7", "-q", cwd=tmp_path).stdout.strip()
    checked = run_cli("checktoken", token, cwd=tmp_path)
    assert checked.returncode == 0 and "valid token for user 7" in checked.stdout
    assert run_cli("checkconfig", cwd=tmp_path).returncode == 0
    assert run_cli("version", cwd=tmp_path).stdout.startswith("Switchboard v")


def test_server_with_server_class_health(tmp_path: Path) -> None:
    with Server(tmp_path, shards=1) as srv:
        response = requests.get(f"{srv.url}/health", timeout=5)
        assert response.status_code == 200 and response.json() == {}
