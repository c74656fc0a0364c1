"""The admin web page and the endpoints it calls, served by the router when ``admin`` is on.

Paths (under ``admin_handler_prefix``, empty by default), as Centrifugo lays them out:

* ``/`` — the page (``router/admin_static/``: one HTML file, one script, one style sheet; nothing is
  fetched from anywhere else, and the Content-Security-Policy says so);
* ``POST /admin/auth`` — ``password`` (form or JSON) → ``{"token": ...}``, an HS256 token signed with
  ``admin_secret`` that expires after :data:`TOKEN_LIFETIME`;
* ``POST /admin/api`` — ``{"method", "params"}`` with ``Authorization: token <t>`` → the server API
  method's ``{"result"}`` or ``{"error"}``: the same methods as ``/api``, without the API key, which the
  page never sees;
* ``GET /admin/settings`` — what the page needs before login (version, whether login is skipped).

``admin_insecure`` skips the login, for local use. ``/admin/api`` takes JSON bodies only, so a form on
another site cannot post to it (a cross-site ``application/json`` request needs a CORS preflight,
which is never granted).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson

from broker import __version__
from broker.config import Config
from broker.errors import ClientError
from broker.jsonlimits import loads_writable
from router.http import HttpConnection, Request

log = logging.getLogger("switchboard.admin")

TOKEN_LIFETIME = 24 * 3600
# A wrong password is answered after this long, so that guessing costs time (other requests go on).
REFUSAL_DELAY = 0.5
_SUBJECT = "switchboard-admin"
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/admin/static/admin.js": ("admin.js", "text/javascript; charset=utf-8"),
    "/admin/static/admin.css": ("admin.css", "text/css; charset=utf-8"),
    "/admin/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

Call = Callable[[str, Any], Awaitable[Any]]


def _static(name: str) -> bytes:
    return resources.files("router").joinpath("admin_static", name).read_bytes()


class AdminEndpoints:
    """The page's files and its three endpoints; ``call`` runs a server API method."""

    def __init__(self, cfg: Config, call: Call) -> None:
        self.cfg = cfg
        self.call = call
        self.prefix = cfg.admin_handler_prefix
        # Read once: the files are part of the package and small (a few tens of KB).
        self.files = {self.prefix + path: (_static(name), kind) for path, (name, kind) in _STATIC.items()}
        self.paths = {
            *self.files,
            self.prefix + "/admin/auth",
            self.prefix + "/admin/api",
            self.prefix + "/admin/settings",
        }
        if self.prefix:
            self.paths.add(self.prefix)

    def handle(self, request: Request, conn: HttpConnection) -> Coroutine[Any, Any, None] | None:
        path = request.path
        if path == self.prefix and self.prefix:
            conn.respond(HTTPStatus.FOUND, b"", headers={"Location": self.prefix + "/"})
            return None
        found = self.files.get(path)
        if found is not None:
            if request.method not in ("GET", "HEAD"):
                conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            else:
                conn.respond(HTTPStatus.OK, found[0], found[1], _PAGE_HEADERS)
            return None
        suffix = path[len(self.prefix) :]
        if suffix == "/admin/settings":
            body = orjson.dumps({"version": __version__, "insecure": self.cfg.admin_insecure})
            conn.respond(HTTPStatus.OK, body, headers=_API_HEADERS)
            return None
        if request.method != "POST":
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return None
        if suffix == "/admin/auth":
            return self._login(request, conn)
        return self._api(request, conn)

    # -- login -----------------------------------------------------------------------------------

    async def _login(self, request: Request, conn: HttpConnection) -> None:
        if self.cfg.admin_insecure:
            conn.respond(HTTPStatus.OK, orjson.dumps({"token": "insecure"}), headers=_API_HEADERS)
            return
        given = _password(request)
        expected = self.cfg.admin_password
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            log.info("admin login refused from %s", request.header("x-forwarded-for") or "a client")
            await asyncio.sleep(REFUSAL_DELAY)
            conn.respond(HTTPStatus.BAD_REQUEST, b'{"error":"wrong password"}', headers=_API_HEADERS)
            return
        now = int(time.time())
        claims = {"sub": _SUBJECT, "iat": now, "exp": now + TOKEN_LIFETIME}
        token = jwt.encode(claims, self.cfg.admin_secret, algorithm="HS256")
        conn.respond(HTTPStatus.OK, orjson.dumps({"token": token}), headers=_API_HEADERS)

    def authorized(self, request: Request) -> bool:
        if self.cfg.admin_insecure:
            return True
        scheme, _, token = request.header("authorization").partition(" ")
        if scheme.lower() != "token" or not token:
            return False
        try:
            claims = jwt.decode(
                token.strip(),
                self.cfg.admin_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("sub") == _SUBJECT)

    # -- the API ---------------------------------------------------------------------------------

    async def _api(self, request: Request, conn: HttpConnection) -> None:
        if not self.authorized(request):
            conn.respond(HTTPStatus.UNAUTHORIZED, b"", headers=_API_HEADERS)
            return
        if not request.header("content-type").lower().startswith("application/json"):
            conn.respond(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"JSON only", "text/plain")
            return
        try:
            command = loads_writable(request.body)
        except ValueError:
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain")
            return
        method = command.get("method") if isinstance(command, dict) else None
        if not isinstance(method, str):
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain")
            return
        params = command.get("params")
        try:
            answer: dict[str, Any] = {"result": await self.call(method, {} if params is None else params)}
        except ClientError as err:
            answer = {"error": {"code": err.code, "message": err.message}}
        conn.respond(HTTPStatus.OK, orjson.dumps(answer), headers=_API_HEADERS)


def _password(request: Request) -> str:
    """``password`` from a form (what Centrifugo's page posts) or from a JSON body."""
    body = request.body
    if request.header("content-type").lower().startswith("application/json"):
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return ""
        value = decoded.get("password") if isinstance(decoded, dict) else None
        return value if isinstance(value, str) else ""
    try:
        fields = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return ""
    values = fields.get("password")
    return values[0] if values else ""
