"""The ``switchboard`` command: run the server (or one of its roles) and the token/config utilities.

Command names, flags and output follow ``centrifugo`` v6 so that scripts written for it keep working:
``genconfig``, ``gentoken``, ``gensubtoken``, ``checktoken``, ``checksubtoken``, ``checkconfig``,
``defaultconfig``, ``defaultenv``, ``version``. Running without a command (or with ``serve``) starts
the supervisor; ``router`` and ``shard --index K`` run a single role for process managers such as systemd.

Configuration is read from ``-c/--config`` (default ``config.json``; when that default file does not
exist the server runs on defaults and the environment), then a ``.env`` file in the working directory
and the ``CENTRIFUGO_*`` / ``SWITCHBOARD_*`` environment variables, then flags: v6's nested names
(``--http_server.port``, ``--log.level``, ``--uni_http_stream.enabled``, one per option) and the short
ones (``-p``, ``-a``, ``--port``, ...). User mistakes print ``error: ...`` on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from dotenv import dotenv_values

import broker
from broker.auth import (
    DEFAULT_TTL,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    connection_token_claims,
    encode_token,
    subscription_token_claims,
)
from broker.auth.claims import connect_claims, subscription_claims
from broker.channels import ChannelRules
from broker.config import Config, ConfigError, build, format_duration, load, read_file
from broker.config_docs import default_document, env_lines, with_base
from broker.config_v6 import generation
from broker.runtime_dir import RuntimeDirError

DEFAULT_CONFIG_PATH = "config.json"

# Short server flags kept from earlier versions, mapping one to one onto config keys, with their types.
_VALUE_FLAGS: dict[str, tuple[tuple[str, ...], type]] = {
    "port": (("--port", "-p"), int),
    "address": (("--address", "-a"), str),
    "shards": (("--shards",), int),
    "log_level": (("--log_level",), str),
    "name": (("--name", "-n"), str),
    "engine": (("--engine",), str),
    "redis_address": (("--redis_address",), str),
    "runtime_dir": (("--runtime_dir",), str),
}
_BOOL_FLAGS = (
    "client_insecure",
    "api_insecure",
    "admin",
    "admin_insecure",
    "prometheus",
    "health",
    "uni_http_stream",
    "uni_sse",
    "uni_websocket",
    "http_stream",
    "sse",
)
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
# v6 flags: every option's nested path (``--http_server.port``), plus the switches of features not
# supported yet that v6 defines flags for (refused when on, like the same key in a file).
_V6_FLAG_PATHS = tuple(
    sorted(
        {f.metadata["v6"] for f in dataclasses.fields(Config) if f.metadata.get("v6")}
        | {"debug.enabled", "swagger.enabled", "grpc_api.enabled", "uni_grpc.enabled", "log.file"}
    )
)
_DEST_PREFIX = "v6:"
_CONFIG_EXTENSIONS = (".json", ".toml", ".yaml", ".yml")


class UsageError(Exception):
    """A mistake by the person running the command: reported in one line, never as a traceback."""


class CheckFailed(UsageError):
    """A checkconfig verdict, printed as centrifugo prints it (without the ``error:`` prefix)."""


def main(argv: list[str] | None = None) -> int:
    args_list = _normalise_bool_flags(list(sys.argv[1:] if argv is None else argv))
    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits on --help and on usage errors; report the code instead
        return exc.code if isinstance(exc.code, int) else 1
    handler = getattr(args, "handler", _serve)
    try:
        result: int = handler(args)
        return result
    except CheckFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except (UsageError, ConfigError, RuntimeDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- parser -------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    # Every option uses default=SUPPRESS so that a value given before the command is not reset by the
    # command's own parser; readers use getattr(args, name, None).
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"path to the JSON config file (default {DEFAULT_CONFIG_PATH})",
    )
    server_flags = argparse.ArgumentParser(add_help=False)
    for key, (names, kind) in _VALUE_FLAGS.items():
        server_flags.add_argument(*names, dest=key, type=kind, default=argparse.SUPPRESS)
    for key in _BOOL_FLAGS:
        server_flags.add_argument(
            f"--{key}", dest=key, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS
        )
    for path in _V6_FLAG_PATHS:
        if f"--{path}" in ("--port", "--address"):
            continue
        # nargs="?" with const "true": a boolean given alone is on, and Go's --x.enabled=false works;
        # the value is read like an environment value of the option's type.
        server_flags.add_argument(
            f"--{path}", dest=_DEST_PREFIX + path, nargs="?", const="true", default=argparse.SUPPRESS
        )

    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Real-time messaging server compatible with Centrifugo's client protocol and API.",
        parents=[config_flag, server_flags],
    )
    commands = parser.add_subparsers(dest="command", metavar="command")

    serve = commands.add_parser("serve", parents=[config_flag, server_flags], help="run the server (default)")
    serve.set_defaults(handler=_serve)
    router = commands.add_parser("router", parents=[config_flag, server_flags], help="run the router alone")
    router.set_defaults(handler=_router)
    shard = commands.add_parser("shard", parents=[config_flag, server_flags], help="run one shard alone")
    shard.add_argument("--index", type=int, required=True, help="shard number, 0-based")
    shard.set_defaults(handler=_shard)

    genconfig = commands.add_parser("genconfig", parents=[config_flag], help="write a config with secrets")
    genconfig.add_argument(
        "--format", choices=("v6", "v5"), default="v6", help="v6 nested blocks (default) or v5 flat keys"
    )
    genconfig.set_defaults(handler=_genconfig)

    defaultconfig = commands.add_parser(
        "defaultconfig", parents=[config_flag], help="write every option at its default"
    )
    defaultconfig.add_argument("--dry-run", action="store_true", help="print to stdout instead of a file")
    defaultconfig.add_argument("--base", default="", help="a v6 config whose values override the defaults")
    defaultconfig.set_defaults(handler=_defaultconfig)

    defaultenv = commands.add_parser("defaultenv", help="print every option as an environment variable")
    defaultenv.add_argument("--base", default="", help="a v6 config whose values override the defaults")
    defaultenv.add_argument(
        "--base-non-zero-only", action="store_true", help="print only variables whose value is not zero"
    )
    defaultenv.set_defaults(handler=_defaultenv)

    gentoken = commands.add_parser("gentoken", parents=[config_flag], help="make a connection token")
    _add_token_flags(gentoken)
    gentoken.set_defaults(handler=_gentoken)

    gensubtoken = commands.add_parser("gensubtoken", parents=[config_flag], help="make a subscription token")
    _add_token_flags(gensubtoken)
    gensubtoken.add_argument("-s", "--channel", default="", help="channel the token grants")
    gensubtoken.set_defaults(handler=_gensubtoken)

    checktoken = commands.add_parser("checktoken", parents=[config_flag], help="verify a connection token")
    checktoken.add_argument("token", nargs="?", default="")
    checktoken.set_defaults(handler=_checktoken)

    checksubtoken = commands.add_parser(
        "checksubtoken", parents=[config_flag], help="verify a subscription token"
    )
    checksubtoken.add_argument("token", nargs="?", default="")
    checksubtoken.set_defaults(handler=_checksubtoken)

    checkconfig = commands.add_parser("checkconfig", parents=[config_flag], help="validate a config file")
    checkconfig.add_argument("-s", "--strict", action="store_true", help="fail on unknown keys too")
    checkconfig.set_defaults(handler=_checkconfig)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    return parser


def _add_token_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--user", default="", help="user id (default: anonymous)")
    parser.add_argument(
        "-t", "--ttl", type=int, default=DEFAULT_TTL, help="lifetime in seconds; -1 = no expiration"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the token")


def _normalise_bool_flags(argv: list[str]) -> list[str]:
    """Accept Go-style ``--flag=false`` for boolean flags, as centrifugo's command line does."""
    out: list[str] = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and name.startswith("--") and name[2:] in _BOOL_FLAGS:
            if value in _GO_TRUE:
                arg = name
            elif value in _GO_FALSE:
                arg = f"--no-{name[2:]}"
        out.append(arg)
    return out


# --- config -------------------------------------------------------------------------------------------


def _load_config(args: argparse.Namespace, *, require_file: bool = False) -> Config:
    """File < .env and environment < flags. A missing default ``config.json`` means "no file" unless
    required."""
    path = getattr(args, "config", None)
    if path is None:
        path = DEFAULT_CONFIG_PATH
        if not require_file and not Path(path).exists():
            path = None
    flags: dict[str, Any] = {key: getattr(args, key, None) for key in (*_VALUE_FLAGS, *_BOOL_FLAGS)}
    for dest, value in vars(args).items():
        if dest.startswith(_DEST_PREFIX):
            flags[dest[len(_DEST_PREFIX) :]] = value
    return load(path, _environment(), flags)


def _environment() -> dict[str, str]:
    """The process environment over a ``.env`` file in the working directory (as Centrifugo v6)."""
    environ: dict[str, str] = {}
    if Path(".env").is_file():
        environ.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    environ.update(os.environ)
    return environ


def _check_config(cfg: Config) -> None:
    # Broken PEM keys, regexes or channel options would otherwise only show when the first client
    # connects, or as a shard's boot error.
    TokenVerifier.for_connections(cfg)
    TokenVerifier.for_subscriptions(cfg)
    ChannelRules.from_config(cfg)


def _warn_unknown_keys(cfg: Config) -> None:
    if cfg.unknown_keys:
        print(f"warning: unknown keys in configuration file: {', '.join(cfg.unknown_keys)}", file=sys.stderr)
    if cfg.unknown_env:
        print(f"warning: unknown vars in environment: {', '.join(cfg.unknown_env)}", file=sys.stderr)


# --- server roles -------------------------------------------------------------------------------------


def _role_entry_point(module: str, name: str) -> Callable[..., int]:
    # Imported only when a role runs: the roles pull in uvloop and ZeroMQ, which the token and config
    # utilities do not need, and the CLI stays independent of the roles' internals.
    entry: Callable[..., int] = getattr(importlib.import_module(module), name)
    return entry


def _serve(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    _warn_unknown_keys(cfg)
    _check_config(cfg)
    _check_redis(cfg)
    return _role_entry_point("broker.supervisor", "serve")(cfg)


def _check_redis(cfg: Config) -> None:
    """With the Redis engine, a Redis that does not answer at start stops the server with its address."""
    if cfg.engine != "redis":
        return
    from broker.engine.redis_clients import RedisUnreachable, check_reachable

    try:
        check_reachable(
            cfg, float(cfg.redis_connect_timeout), float(cfg.redis_io_timeout), cfg.redis_tls_skip_verify
        )
    except RedisUnreachable as exc:
        raise UsageError(str(exc)) from None


def _router(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    _warn_unknown_keys(cfg)
    _check_redis(cfg)
    return _role_entry_point("router.main", "run_standalone")(cfg)


def _shard(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    _warn_unknown_keys(cfg)
    _check_config(cfg)
    _check_redis(cfg)
    if args.index < 0:
        raise UsageError("--index must be 0 or more")
    return _role_entry_point("shards.main", "run_standalone")(cfg, args.index)


# --- utilities ----------------------------------------------------------------------------------------


def _secret(size: int) -> str:
    """base64url without padding of random bytes, as v6 writes its secrets."""
    return base64.urlsafe_b64encode(secrets.token_bytes(size)).rstrip(b"=").decode()


def _genconfig(args: argparse.Namespace) -> int:
    path = Path(getattr(args, "config", None) or DEFAULT_CONFIG_PATH)
    if args.format == "v5":
        template: dict[str, Any] = {
            "token_hmac_secret_key": _secret(64),
            "admin_password": _secret(16),
            "admin_secret": _secret(64),
            "api_key": _secret(64),
            "allowed_origins": [],
        }
    else:
        template = {
            "client": {"token": {"hmac_secret_key": _secret(64)}, "allowed_origins": []},
            "admin": {"enabled": False, "password": _secret(16), "secret": _secret(64)},
            "http_api": {"key": _secret(64)},
        }
    _write_new(path, template)
    try:
        load(path, {}, {})
    except ConfigError:
        path.unlink(missing_ok=True)
        raise
    return 0


def _render(path: Path, document: dict[str, Any]) -> str:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _toml(document)
    if suffix in (".yaml", ".yml"):
        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return text
    return json.dumps(document, indent=2) + "\n"


def _write_new(path: Path, document: dict[str, Any]) -> None:
    """Write a config file that must not exist yet, readable by its owner only (mode 0600)."""
    if path.suffix.lower() not in _CONFIG_EXTENSIONS:
        raise UsageError("output config file must have one of supported extensions: json, toml, yaml, yml")
    text = _render(path, document)
    try:
        # O_EXCL: never overwrite, even if the file appears between a check and the write.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"output config file already exists: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _toml(document: dict[str, Any]) -> str:
    """TOML for a config document: scalars and lists of scalars first, then one table per object,
    lists of objects as arrays of tables (only what config documents hold)."""
    lines: list[str] = []

    def emit(node: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict) and not _is_table_list(v)}
        if prefix and (scalars or not node):
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                emit(value, name)
            elif _is_table_list(value):
                for item in value:
                    lines.append(f"\n[[{name}]]")
                    for k, v in item.items():
                        lines.append(f"{k} = {_toml_value(v)}")

    emit(document, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise UsageError(f"cannot write {value!r} as TOML")


def _base_document(path: str) -> dict[str, Any]:
    if not path:
        return {}
    base = read_file(path)
    if generation(base, frozenset(Config.__dataclass_fields__)) != "v6":
        raise UsageError(f"--base must be a config in v6 nested form: {path}")
    return base


def _defaultconfig(args: argparse.Namespace) -> int:
    path = Path(getattr(args, "config", None) or DEFAULT_CONFIG_PATH)
    document = with_base(_base_document(args.base))
    build(document, {}, {})  # what we print must load back
    if args.dry_run:
        if path.suffix.lower() not in _CONFIG_EXTENSIONS:
            raise UsageError(
                "output config file must have one of supported extensions: json, toml, yaml, yml"
            )
        sys.stdout.write(_render(path, document))
        return 0
    _write_new(path, document)
    return 0


def _defaultenv(args: argparse.Namespace) -> int:
    document = with_base(_base_document(args.base)) if args.base else default_document()
    if args.base_non_zero_only and not args.base:
        raise UsageError("--base-non-zero-only needs --base")
    for line in env_lines(document, non_zero_only=args.base_non_zero_only):
        print(line)
    return 0


def _hmac_secret_for(cfg: Config, subscription: bool) -> str:
    secret, key = cfg.token_hmac_secret_key, "client.token.hmac_secret_key"
    if subscription and cfg.separate_subscription_token_config:
        secret, key = cfg.subscription_token_hmac_secret_key, "client.subscription_token.hmac_secret_key"
    if not secret:
        command = "gensubtoken" if subscription else "gentoken"
        raise UsageError(
            f"{command} only supports generating HMAC-signed tokens, but no HMAC secret key is set in the "
            f"configuration ({key}) – if you use RSA/ECDSA/JWKS token verification you need to generate "  # noqa: RUF001 - v6 prints an en dash
            "the JWT with your own tooling"
        )
    return secret


def _describe_lifetime(ttl: int) -> str:
    # Only a positive TTL adds an exp claim, so only then is there an expiration to announce.
    return f"with expiration TTL {format_duration(ttl)}" if ttl > 0 else "without expiration"


def _describe_user(user: str) -> str:
    return f'user "{user}"' if user else "anonymous user"


def _gentoken(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    secret = _hmac_secret_for(cfg, subscription=False)
    token = encode_token(connection_token_claims(args.user, args.ttl, int(time.time())), secret)
    if args.quiet:
        sys.stdout.write(token)  # no newline, as centrifugo -q prints it
    else:
        print(f"HMAC SHA-256 JWT for {_describe_user(args.user)} {_describe_lifetime(args.ttl)}:\n{token}")
    return 0


def _gensubtoken(args: argparse.Namespace) -> int:
    if not args.channel:
        raise UsageError("channel is required")
    cfg = _load_config(args)
    secret = _hmac_secret_for(cfg, subscription=True)
    claims = subscription_token_claims(args.user, args.channel, args.ttl, int(time.time()))
    token = encode_token(claims, secret)
    if args.quiet:
        sys.stdout.write(token)
    else:
        subject = f'{_describe_user(args.user)} and channel "{args.channel}"'
        print(f"HMAC SHA-256 JWT for {subject} {_describe_lifetime(args.ttl)}:\n{token}")
    return 0


def _verified_payload(verifier: TokenVerifier, token: str, command: str) -> dict[str, Any]:
    if not token:
        raise UsageError(f"provide token to check [switchboard {command} <TOKEN>]")
    if not verifier.configured:
        raise UsageError("no token verification key set")
    try:
        return verifier.verified_payload(token, time.time())
    except TokenExpired:
        raise UsageError("token expired") from None
    except TokenInvalid as exc:
        raise UsageError(f"invalid token: {exc.reason}") from None


def _checktoken(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    verifier = TokenVerifier.for_connections(cfg)
    payload = _verified_payload(verifier, args.token, "checktoken")
    try:
        claims = connect_claims(payload, verifier.settings.user_id_claim)
    except TokenInvalid as exc:
        raise UsageError(f"invalid token: {exc.reason}") from None
    who = f"user {claims.user}" if claims.user else "anonymous user"
    print(f"valid token for {who}\npayload: {orjson.dumps(payload).decode()}")
    return 0


def _checksubtoken(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    verifier = TokenVerifier.for_subscriptions(cfg)
    payload = _verified_payload(verifier, args.token, "checksubtoken")
    try:
        claims = subscription_claims(payload, verifier.settings.user_id_claim)
    except TokenInvalid as exc:
        raise UsageError(f"invalid token: {exc.reason}") from None
    print(
        f'valid subscription token for user "{claims.user}" and channel "{claims.channel}"\n'
        f"payload: {orjson.dumps(payload).decode()}"
    )
    return 0


def _checkconfig(args: argparse.Namespace) -> int:
    path = getattr(args, "config", None) or DEFAULT_CONFIG_PATH
    if not Path(path).is_file():
        raise CheckFailed("config file not found")
    try:
        cfg = _load_config(args, require_file=True)
        _check_config(cfg)
    except ConfigError as exc:
        raise CheckFailed(f"error validating config: {exc}") from None
    if args.strict and cfg.unknown_keys:
        raise CheckFailed(f"unknown keys in config: {', '.join(cfg.unknown_keys)}")
    _warn_unknown_keys(cfg)
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"Switchboard v{broker.__version__} (Python version: {platform.python_version()})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
