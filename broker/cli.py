"""The ``switchboard`` command: run the server (or one of its roles) and the token/config utilities.

Command names, flags and output follow ``centrifugo`` so that scripts written for it keep working:
``genconfig``, ``gentoken``, ``gensubtoken``, ``checktoken``, ``checksubtoken``, ``checkconfig``,
``version``. Running without a command (or with ``serve``) starts the supervisor; ``router`` and
``shard --index K`` run a single role for process managers such as systemd.

Configuration is read from ``-c/--config`` (default ``config.json``; when that default file does not
exist the server runs on defaults and the environment), then ``SWITCHBOARD_*`` / ``CENTRIFUGO_*``
environment variables, then flags. User mistakes print ``error: ...`` on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

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
from broker.config import Config, ConfigError, format_duration, load
from broker.runtime_dir import RuntimeDirError

DEFAULT_CONFIG_PATH = "config.json"

# Server flags that map one to one onto config keys, with their types.
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
    "health",
    "uni_http_stream",
    "uni_sse",
    "uni_websocket",
    "http_stream",
    "sse",
)
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class UsageError(Exception):
    """A mistake by the person running the command: reported in one line, never as a traceback."""


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
    genconfig.set_defaults(handler=_genconfig)

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
    """File < environment < flags. A missing default ``config.json`` means "no file" unless required."""
    path = getattr(args, "config", None)
    if path is None:
        path = DEFAULT_CONFIG_PATH
        if not require_file and not Path(path).exists():
            path = None
    flags: dict[str, Any] = {key: getattr(args, key, None) for key in (*_VALUE_FLAGS, *_BOOL_FLAGS)}
    return load(path, os.environ, flags)


def _check_config(cfg: Config) -> None:
    # Broken PEM keys, regexes or channel options would otherwise only show when the first client
    # connects, or as a shard's boot error.
    TokenVerifier.for_connections(cfg)
    TokenVerifier.for_subscriptions(cfg)
    ChannelRules.from_config(cfg)


def _warn_unknown_keys(cfg: Config) -> None:
    if cfg.unknown_keys:
        print(f"warning: unknown config keys ignored: {', '.join(cfg.unknown_keys)}", file=sys.stderr)
    if cfg.ignored_sections:
        print(
            f"warning: Centrifugo v6 config sections ignored: {', '.join(cfg.ignored_sections)} "
            "(Switchboard reads the v4/v5 flat keys, e.g. token_hmac_secret_key, api_key, port)",
            file=sys.stderr,
        )


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


def _genconfig(args: argparse.Namespace) -> int:
    path = Path(getattr(args, "config", None) or DEFAULT_CONFIG_PATH)
    if path.suffix.lower() in {".toml", ".yaml", ".yml"}:
        raise UsageError(f"only JSON config files are supported: {path}")
    template = {
        "token_hmac_secret_key": str(uuid.uuid4()),
        "admin_password": str(uuid.uuid4()),
        "admin_secret": str(uuid.uuid4()),
        "api_key": str(uuid.uuid4()),
        "allowed_origins": [],
    }
    try:
        # "x" mode: never overwrite, even if the file appears between a check and the write.
        with path.open("x", encoding="utf-8") as out:
            out.write(json.dumps(template, indent=2) + "\n")
    except FileExistsError:
        raise UsageError(f"output config file already exists: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    load(path, {}, {})
    return 0


def _hmac_secret_for(cfg: Config, subscription: bool) -> str:
    secret = cfg.token_hmac_secret_key
    if subscription and cfg.separate_subscription_token_config:
        secret = cfg.subscription_token_hmac_secret_key
    if not secret:
        raise UsageError("no HMAC secret key set")
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
        print(token)
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
        print(token)
    else:
        subject = f'{_describe_user(args.user)} and channel "{args.channel}"'
        print(f"HMAC SHA-256 JWT for {subject} {_describe_lifetime(args.ttl)}:\n{token}")
    return 0


def _verified_payload(verifier: TokenVerifier, token: str) -> dict[str, Any]:
    if not token:
        raise UsageError("provide token to check")
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
    payload = _verified_payload(verifier, args.token)
    try:
        claims = connect_claims(payload, verifier.settings.user_id_claim)
    except TokenInvalid as exc:
        raise UsageError(f"invalid token: {exc.reason}") from None
    print(f"valid token for user {claims.user}\npayload: {orjson.dumps(payload).decode()}")
    return 0


def _checksubtoken(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    verifier = TokenVerifier.for_subscriptions(cfg)
    payload = _verified_payload(verifier, args.token)
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
    cfg = _load_config(args, require_file=True)
    _warn_unknown_keys(cfg)
    _check_config(cfg)
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"Switchboard v{broker.__version__} (Python {platform.python_version()})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
