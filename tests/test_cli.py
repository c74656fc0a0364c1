from __future__ import annotations

import json
import os
import platform
import string
import sys
import time
import types
from pathlib import Path
from typing import Any

import jwt
import pytest

import broker
from broker.auth import TokenVerifier, encode_token
from broker.cli import main
from broker.config import Config, build, load

SECRET = "cli-secret-0123456789abcdef0123456789"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in an empty directory with no SWITCHBOARD_/CENTRIFUGO_ variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SWITCHBOARD_", "CENTRIFUGO_")):
            monkeypatch.delenv(name)
    return tmp_path


def write_config(path: Path, **values: Any) -> Path:
    path.write_text(json.dumps(values))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- genconfig -----------------------------------------------------------------------------------------


def test_genconfig_writes_v6_template(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "genconfig")
    assert (code, out, err) == (0, "", "")
    path = isolated / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    data = json.loads(text)
    assert list(data) == ["client", "admin", "http_api"]
    assert list(data["client"]) == ["token", "allowed_origins"] and data["client"]["allowed_origins"] == []
    assert list(data["admin"]) == ["enabled", "password", "secret"] and data["admin"]["enabled"] is False
    secrets = [
        data["client"]["token"]["hmac_secret_key"],
        data["admin"]["password"],
        data["admin"]["secret"],
        data["http_api"]["key"],
    ]
    assert [len(s) for s in secrets] == [86, 22, 86, 86]  # base64url of 64 / 16 random bytes
    assert all(set(s) <= set(string.ascii_letters + string.digits + "-_") for s in secrets)
    assert len(set(secrets)) == 4
    assert text == json.dumps(data, indent=2) + "\n"
    cfg = Config()
    assert main(["checkconfig"]) == 0
    assert cfg.api_key == ""


@pytest.mark.parametrize("name", ["config.yaml", "config.yml", "config.toml"])
def test_genconfig_yaml_and_toml(isolated: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert run(capsys, "genconfig", "-c", name) == (0, "", "")
    cfg = load(isolated / name, {}, {})
    assert len(cfg.token_hmac_secret_key) == 86 and len(cfg.api_key) == 86


def test_genconfig_v5_format_and_bad_extension(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "genconfig", "--format", "v5", "-c", "old.json") == (0, "", "")
    data = json.loads((isolated / "old.json").read_text())
    assert list(data) == [
        "token_hmac_secret_key",
        "admin_password",
        "admin_secret",
        "api_key",
        "allowed_origins",
    ]
    code, out, err = run(capsys, "genconfig", "-c", "config.ini")
    assert (code, out) == (1, "")
    assert err == "error: output config file must have one of supported extensions: json, toml, yaml, yml\n"
    assert not (isolated / "config.ini").exists()


def test_genconfig_custom_path_and_refusal(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "genconfig", "-c", "custom.json")[0] == 0
    before = (isolated / "custom.json").read_text()
    code, out, err = run(capsys, "genconfig", "-c", "custom.json")
    assert code == 1 and out == ""
    assert err == "error: output config file already exists: custom.json\n"
    assert (isolated / "custom.json").read_text() == before


def test_genconfig_refuses_existing_default(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (isolated / "config.json").write_text("{}")
    code, _, err = run(capsys, "genconfig")
    assert code == 1
    assert err == "error: output config file already exists: config.json\n"
    assert (isolated / "config.json").read_text() == "{}"


# --- gentoken ------------------------------------------------------------------------------------------


def test_gentoken_output_and_claims(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    before = int(time.time())
    code, out, err = run(capsys, "gentoken", "-u", "42")
    after = int(time.time())
    assert code == 0 and err == ""
    first, token, rest = out.split("\n")
    assert first == 'HMAC SHA-256 JWT for user "42" with expiration TTL 168h0m0s:'
    assert rest == ""
    claims = TokenVerifier.for_connections(Config(token_hmac_secret_key=SECRET)).verify_connect_token(
        token, time.time()
    )
    assert claims.user == "42"
    assert claims.iat is not None and before <= claims.iat <= after
    assert claims.exp == claims.iat + 604800
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert set(jwt.decode(token, SECRET, algorithms=["HS256"])) == {"sub", "iat", "exp"}


def test_gentoken_ttl_and_anonymous(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gentoken", "-t", "90")
    assert code == 0
    first, token, _ = out.split("\n")
    assert first == "HMAC SHA-256 JWT for anonymous user with expiration TTL 1m30s:"
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["sub"] == ""
    assert payload["exp"] - payload["iat"] == 90


def test_gentoken_without_expiration(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gentoken", "-u", "7", "-t", "-1")
    assert code == 0
    first, token, _ = out.split("\n")
    assert first == 'HMAC SHA-256 JWT for user "7" without expiration:'
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert "exp" not in payload
    assert payload["sub"] == "7"


def test_gentoken_quiet(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gentoken", "-u", "42", "-q")
    assert code == 0
    token = out
    assert token.strip() == token and token.count(".") == 2  # the token only, not even a newline
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "42"


def test_gentoken_uses_explicit_config_and_env(
    isolated: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(isolated / "other.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gentoken", "-c", "other.json", "-q")
    assert code == 0
    jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    # No config.json at all: the environment alone is enough.
    monkeypatch.setenv("CENTRIFUGO_TOKEN_HMAC_SECRET_KEY", "from-env-" + "z" * 30)
    code, out, _ = run(capsys, "gentoken", "-q")
    assert code == 0
    jwt.decode(out.strip(), "from-env-" + "z" * 30, algorithms=["HS256"])


def test_gentoken_without_secret(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "gentoken", "-u", "1")
    assert (code, out) == (1, "")
    assert err == (
        "error: gentoken only supports generating HMAC-signed tokens, but no HMAC secret key is set in the "
        "configuration (client.token.hmac_secret_key) \u2013 if you use RSA/ECDSA/JWKS token verification "
        "you need to generate the JWT with your own tooling\n"
    )


def test_gentoken_explicit_missing_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "gentoken", "-c", "missing.json")
    assert code == 1
    assert err.startswith("error: cannot read config file missing.json")
    assert "Traceback" not in err


# --- gensubtoken ---------------------------------------------------------------------------------------


def test_gensubtoken(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gensubtoken", "-u", "42", "-s", "ch")
    assert code == 0
    first, token, _ = out.split("\n")
    assert first == 'HMAC SHA-256 JWT for user "42" and channel "ch" with expiration TTL 168h0m0s:'
    claims = TokenVerifier.for_subscriptions(Config(token_hmac_secret_key=SECRET)).verify_subscription_token(
        token, time.time()
    )
    assert (claims.user, claims.channel) == ("42", "ch")
    assert claims.exp is not None and claims.iat is not None and claims.exp - claims.iat == 604800


def test_gensubtoken_quiet_no_expiry(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, _ = run(capsys, "gensubtoken", "-u", "42", "-s", "ch", "-t", "-1", "-q")
    assert code == 0
    payload = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert payload["channel"] == "ch" and "exp" not in payload


def test_gensubtoken_separate_key(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub_secret = "subscription-secret-" + "q" * 20
    write_config(
        isolated / "config.json",
        token_hmac_secret_key=SECRET,
        separate_subscription_token_config=True,
        subscription_token_hmac_secret_key=sub_secret,
    )
    code, out, _ = run(capsys, "gensubtoken", "-s", "ch", "-q")
    assert code == 0
    jwt.decode(out.strip(), sub_secret, algorithms=["HS256"])
    code, out, _ = run(capsys, "checksubtoken", out.strip())
    assert code == 0
    assert out.startswith('valid subscription token for user "" and channel "ch"\n')


def test_gensubtoken_requires_channel(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, err = run(capsys, "gensubtoken", "-u", "42")
    assert (code, out, err) == (1, "", "error: channel is required\n")


# --- checktoken / checksubtoken ------------------------------------------------------------------------


def test_checktoken_valid(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    token = encode_token({"sub": "42", "exp": int(time.time()) + 100}, SECRET)
    code, out, err = run(capsys, "checktoken", token)
    assert code == 0 and err == ""
    first, second, _ = out.split("\n")
    assert first == "valid token for user 42"
    assert second.startswith("payload: ")
    assert json.loads(second.removeprefix("payload: "))["sub"] == "42"


@pytest.mark.parametrize(
    ("claims", "secret", "message"),
    [
        ({"sub": "42"}, "wrong-secret", "error: invalid token: bad signature\n"),
        ({"sub": "42", "exp": 1000}, SECRET, "error: token expired\n"),
        (
            {"sub": "42", "channel": "x"},
            SECRET,
            "error: invalid token: connection token must not contain a channel",
        ),
    ],
)
def test_checktoken_invalid(
    isolated: Path, capsys: pytest.CaptureFixture[str], claims: dict[str, Any], secret: str, message: str
) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, out, err = run(capsys, "checktoken", encode_token(claims, secret))
    assert (code, out) == (1, "")
    assert err.startswith(message)


def test_checktoken_garbage_and_missing(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    code, _, err = run(capsys, "checktoken", "not-a-token")
    assert code == 1 and err.startswith("error: invalid token")
    code, _, err = run(capsys, "checktoken")
    assert code == 1 and err.startswith("error: ")


def test_checksubtoken(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET)
    token = encode_token({"sub": "42", "channel": "ch"}, SECRET)
    code, out, _ = run(capsys, "checksubtoken", token)
    assert code == 0
    first, second, _ = out.split("\n")
    assert first == 'valid subscription token for user "42" and channel "ch"'
    assert json.loads(second.removeprefix("payload: ")) == {"sub": "42", "channel": "ch"}
    code, _, err = run(capsys, "checksubtoken", encode_token({"sub": "42"}, SECRET))
    assert code == 1 and "channel" in err


# --- checkconfig ---------------------------------------------------------------------------------------


def test_checkconfig_good(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", token_hmac_secret_key=SECRET, port=9000)
    assert run(capsys, "checkconfig") == (0, "", "")
    write_config(isolated / "other.json", namespaces=[{"name": "chat"}])
    assert run(capsys, "checkconfig", "-c", "other.json") == (0, "", "")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"port": "eighty"}', "port"),
        ('{"port": 70000}', "port"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold an object"),
        ('{"namespaces": [{"name": "x"}]}', "namespace"),
        ('{"token_rsa_public_key": "not a key"}', "token_rsa_public_key"),
        ('{"ping_interval": "soon"}', "duration"),
    ],
)
def test_checkconfig_bad(
    isolated: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    (isolated / "config.json").write_text(content)
    code, out, err = run(capsys, "checkconfig")
    assert code == 1 and out == ""
    assert err.startswith("error validating config: ") and needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"broker": "nats"}, "broker is not supported yet"),
        ({"debug": True}, "debug is not supported yet"),
        ({"admin": True}, "admin.password and admin.secret must be set"),
        (
            {"proxy_subscribe_stream_endpoint": "http://127.0.0.1:3000"},
            "proxy_subscribe_stream_endpoint is not",
        ),
        ({"namespaces": [{"name": "chat", "proxy_subscribe_stream": True}]}, "proxy_subscribe_stream is not"),
        (
            {"namespaces": [{"name": "chat", "proxy_publish": True}]},
            "proxy_publish is on but proxy_publish_endpoint",
        ),
        ({"namespaces": [{"name": "chat", "history_size": 10}]}, "history_size and history_ttl"),
    ],
)
def test_checkconfig_and_serve_refuse_what_is_not_supported_yet(
    isolated: Path,
    fake_roles: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    values: dict[str, Any],
    message: str,
) -> None:
    write_config(isolated / "config.json", **values)
    for command in ("checkconfig", "serve"):
        code, out, err = run(capsys, command)
        assert code == 1 and out == "", command
        assert err.startswith(("error: ", "error validating config: ")) and message in err, (command, err)
    assert "serve" not in fake_roles


def test_checkconfig_accepts_features_left_off_and_warns_about_unknown_keys(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(
        isolated / "config.json",
        engine="memory",
        admin=False,
        admin_password="p",
        proxy_connect_endpoint="",
        mystery=1,
    )
    code, out, err = run(capsys, "checkconfig")
    assert code == 0 and out == ""
    assert "warning: unknown keys in configuration file: mystery" in err


def test_checkconfig_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "checkconfig", "-c", "nope.json")
    assert (code, err) == (1, "config file not found\n")


# --- version, usage ------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "version")
    assert code == 0
    assert out == f"Switchboard v{broker.__version__} (Python version: {platform.python_version()})\n"


def test_usage_errors_return_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["--port", "many"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


# --- server roles are dispatched, with the merged config ----------------------------------------------


@pytest.fixture
def fake_roles(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {}

    def serve(cfg: Config) -> int:
        calls["serve"] = cfg
        return 0

    def run_router(cfg: Config) -> int:
        calls["router"] = cfg
        return 3

    def run_shard(cfg: Config, index: int) -> int:
        calls["shard"] = (cfg, index)
        return 4

    for name, attr, func in (
        ("broker.supervisor", "serve", serve),
        ("router.main", "run_standalone", run_router),
        ("shards.main", "run_standalone", run_shard),
    ):
        module = types.ModuleType(name)
        setattr(module, attr, func)
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_serve_is_the_default(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert isinstance(fake_roles["serve"], Config)
    assert fake_roles["serve"].port == 8000


def test_serve_flags_override_env_and_file(
    isolated: Path,
    fake_roles: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_config(isolated / "config.json", port=8100, address="10.0.0.1", name="file", health=False, shards=2)
    monkeypatch.setenv("SWITCHBOARD_PORT", "8200")
    monkeypatch.setenv("SWITCHBOARD_NAME", "env")
    monkeypatch.setenv("SWITCHBOARD_UNI_SSE", "true")
    assert (
        main(["serve", "--port", "8300", "--uni_websocket", "--health=true", "--runtime_dir", "/tmp/x"]) == 0
    )
    cfg = fake_roles["serve"]
    assert cfg.port == 8300  # flag
    assert cfg.node_name == "env"  # env over file
    assert cfg.address == "10.0.0.1"  # file
    assert cfg.shards == 2
    assert cfg.uni_sse is True and cfg.uni_websocket is True
    assert cfg.health is True  # --health=true beats the file
    assert cfg.runtime_dir == "/tmp/x"


def test_root_flags_before_command(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["-p", "9001", "-a", "127.0.0.1", "-n", "node1", "--log_level", "debug", "--no-health", "serve"])
        == 0
    )
    cfg = fake_roles["serve"]
    assert (cfg.port, cfg.address, cfg.node_name, cfg.log_level, cfg.health) == (
        9001,
        "127.0.0.1",
        "node1",
        "debug",
        False,
    )


def test_bool_flags(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--client_insecure", "--api_insecure", "--uni_http_stream", "--uni_sse", "--uni_websocket"]
    assert main([*flags, "--health=0", "--admin=false", "--no-http_stream", "--sse=0"]) == 0
    cfg = fake_roles["serve"]
    assert cfg.client_insecure and cfg.api_insecure
    assert cfg.uni_http_stream and cfg.uni_sse and cfg.uni_websocket
    assert cfg.health is False and cfg.http_stream is False and cfg.sse is False


@pytest.mark.parametrize("flag", ["--debug.enabled", "--swagger.enabled=true"])
def test_flags_of_features_not_supported_yet_are_refused(
    flag: str, fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, flag)
    assert code == 1
    assert f"error: {flag[2:].split('.')[0]} is not supported yet" in err
    assert "serve" not in fake_roles


def test_serve_warns_about_unknown_keys(
    isolated: Path, fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(isolated / "config.json", bogus_key=1, another=2)
    code, _, err = run(capsys)
    assert code == 0
    assert "warning" in err and "another" in err and "bogus_key" in err


def test_serve_explicit_missing_config_is_an_error(
    fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "-c", "absent.json")
    assert code == 1 and "absent.json" in err
    assert "serve" not in fake_roles


def test_serve_bad_flag_value(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--port", "0")
    assert code == 1 and err.startswith("error: port")
    code, _, err = run(capsys, "serve", "--log_level", "loud")
    assert code == 1 and "log_level" in err


def test_serve_bad_token_key(
    isolated: Path, fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(isolated / "config.json", token_ecdsa_public_key="garbage")
    code, _, err = run(capsys)
    assert code == 1 and "token_ecdsa_public_key" in err
    assert "serve" not in fake_roles


def test_router_and_shard(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["router", "--port", "8500"]) == 3
    assert fake_roles["router"].port == 8500
    assert main(["shard", "--index", "2", "--shards", "4"]) == 4
    cfg, index = fake_roles["shard"]
    assert index == 2 and cfg.shards == 4
    assert main(["shard"]) == 2  # --index is required
    code, _, err = run(capsys, "shard", "--index", "-1")
    assert code == 1 and "--index" in err


# --- v6 commands and flags -----------------------------------------------------------------------------


def test_defaultconfig_writes_every_option_and_it_loads_back(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "defaultconfig", "-c", "all.json") == (0, "", "")
    data = json.loads((isolated / "all.json").read_text())
    assert data["http_server"]["port"] == 8000 and data["client"]["ping_interval"] == "25s"
    assert data["channel"]["without_namespace"]["presence"] is False
    cfg = load(isolated / "all.json", {}, {})
    assert cfg.unknown_keys == [] and cfg.port == 8000
    assert run(capsys, "defaultconfig", "-c", "all.json")[0] == 1  # never overwrites
    code, out, _ = run(capsys, "defaultconfig", "-c", "all.yaml", "--dry-run")
    assert code == 0 and "http_server:" in out and not (isolated / "all.yaml").exists()


def test_defaultconfig_with_base(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "base.json", http_api={"key": "from-base"})
    code, out, _ = run(capsys, "defaultconfig", "-c", "x.json", "--dry-run", "--base", "base.json")
    assert code == 0
    data = json.loads(out)
    assert data["http_api"]["key"] == "from-base" and data["http_server"]["port"] == 8000


def test_defaultenv(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "defaultenv")
    lines = out.splitlines()
    assert code == 0
    assert "CENTRIFUGO_HTTP_SERVER_PORT=8000" in lines
    assert 'CENTRIFUGO_ENGINE_REDIS_ADDRESS="127.0.0.1:6379"' in lines
    assert "CENTRIFUGO_UNI_HTTP_STREAM_ENABLED=false" in lines
    assert 'CENTRIFUGO_CLIENT_PING_INTERVAL="25s"' in lines
    write_config(isolated / "base.json", http_api={"key": "k"}, uni_http_stream={"enabled": True})
    code, out, _ = run(capsys, "defaultenv", "--base", "base.json", "--base-non-zero-only")
    assert 'CENTRIFUGO_HTTP_API_KEY="k"' in out.splitlines()
    assert "CENTRIFUGO_UNI_HTTP_STREAM_ENABLED=true" in out.splitlines()
    assert "CENTRIFUGO_CLIENT_INSECURE=false" not in out.splitlines()


def test_defaultenv_lines_configure_the_same_server(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "defaultenv")
    environ = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        environ[name] = json.loads(value.strip("'")) if value.startswith(("'", '"')) else value
        if isinstance(environ[name], list | dict):
            environ[name] = json.dumps(environ[name])
    cfg = build({}, environ, {})
    assert cfg.unknown_env == [] and cfg.port == 8000


def test_checkconfig_strict(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(isolated / "config.json", client={"insecure": True, "typo": 1}, mystery=2)
    code, _, err = run(capsys, "checkconfig", "--strict")
    assert (code, err) == (1, "unknown keys in config: client.typo, mystery\n")
    assert run(capsys, "checkconfig")[0] == 0


def test_nested_flags(fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--http_server.port", "8400", "--log.level=debug", "--uni_http_stream.enabled"]
    argv += ["--http_stream.enabled=false", "--client.insecure=true", "--engine.type", "memory"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    cfg = fake_roles["serve"]
    assert (cfg.port, cfg.log_level, cfg.uni_http_stream, cfg.http_stream) == (8400, "debug", True, False)
    assert cfg.client_insecure is True
    code, _, err = run(capsys, "--admin.enabled")
    assert code == 1 and "admin.password and admin.secret must be set" in err
    code, _, err = run(capsys, "--http_server.port=eighty")
    assert code == 1 and "http_server.port" in err


def test_dotenv_file_is_read_and_the_environment_wins(
    isolated: Path,
    fake_roles: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (isolated / ".env").write_text("CENTRIFUGO_HTTP_API_KEY=from-dotenv\nCENTRIFUGO_HTTP_SERVER_PORT=8500\n")
    monkeypatch.setenv("CENTRIFUGO_HTTP_SERVER_PORT", "8600")
    assert run(capsys, "serve")[0] == 0
    cfg = fake_roles["serve"]
    assert (cfg.api_key, cfg.port) == ("from-dotenv", 8600)


def test_serve_warns_about_unknown_env(
    fake_roles: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CENTRIFUGO_NO_SUCH_THING", "1")
    code, _, err = run(capsys, "serve")
    assert code == 0 and "warning: unknown vars in environment: CENTRIFUGO_NO_SUCH_THING" in err
