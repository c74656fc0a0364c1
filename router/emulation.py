"""``POST /emulation``: a command frame of an http_stream / SSE client, routed to its session.

The client names its session and the node that holds it: ``{"session", "node", "data"}`` in JSON
(``data`` is the frame, a JSON string), or an ``EmulationRequest`` in Protobuf
(``Content-Type: application/octet-stream``). The session id starts with the index of its shard
(:func:`broker.emulation.session_id`), so the frame goes to that shard alone; a session of another node
goes there over the Redis engine's control channel. Answers, as centrifuge-js reads them: 204 once
delivered (also for a session that has ended on a running node: its stream has ended too), 404 for a
node that is not known (the client reconnects), 400 for a malformed body, 413 for one over
``emulation_max_request_body_size``, 503 when the shard did not answer.
"""

from __future__ import annotations

import base64
import logging
from http import HTTPStatus
from typing import Any, Protocol, cast

import orjson
from google.protobuf.message import DecodeError

from broker.config import Config
from broker.emulation import shard_of_session
from broker.ipc.control import RemoteError, ShardUnavailable
from broker.protocol.proto import client_pb2
from router.cluster import Cluster
from router.connect import origin_allowed
from router.http import HttpConnection, Request

log = logging.getLogger("switchboard.router")

_CORS = {"Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Max-Age": "300"}


class OtherNodes(Protocol):
    """The other nodes (``router.nodes.Nodes``), with the Redis engine."""

    async def ask(self, uid: str, method: str, params: dict[str, Any], timeout: float) -> Any: ...


class Malformed(ValueError):
    """An /emulation body this server cannot read."""


def parse(body: bytes, protobuf: bool) -> tuple[str, dict[str, Any]]:
    """(node, params for the shard) of an /emulation body; raises :class:`Malformed`."""
    if protobuf:
        try:
            message: Any = cast(Any, client_pb2).EmulationRequest.FromString(body)
        except DecodeError:
            raise Malformed("not an EmulationRequest") from None
        params = {"session": message.session, "b64data": base64.b64encode(message.data).decode()}
        return str(message.node), params
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(request, dict):
        raise Malformed("not an object")
    session, node, data = request.get("session"), request.get("node", ""), request.get("data")
    if not isinstance(session, str) or not isinstance(node, str) or not isinstance(data, str):
        raise Malformed("session, node and data must be strings")
    return node, {"session": session, "data": data}


async def deliver(cluster: Cluster, params: dict[str, Any]) -> dict[str, Any]:
    """The frame to the shard of its session, on this node."""
    index = shard_of_session(str(params.get("session", "")))
    if index is None or index >= cluster.size:
        return {"found": False}
    answer: dict[str, Any] = await cluster.ask(index, "emulation", params)
    return answer


class EmulationHandler:
    def __init__(self, cfg: Config, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.path = cfg.emulation_handler_prefix
        self.enabled = cfg.http_stream or cfg.sse
        self.nodes: OtherNodes | None = None  # set once the node joined the others (Redis engine)

    async def handle(self, request: Request, conn: HttpConnection) -> None:
        if request.method == "OPTIONS":
            conn.respond(HTTPStatus.NO_CONTENT, headers=_CORS)
            return
        if request.method != "POST":
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return
        if not origin_allowed(request.header("origin"), self.cfg.allowed_origins):
            conn.respond(HTTPStatus.FORBIDDEN, b"Invalid origin", "text/plain", keep_alive=False)
            return
        protobuf = request.header("content-type").startswith("application/octet-stream")
        try:
            node, params = parse(request.body, protobuf)
        except Malformed as exc:
            log.info("emulation: malformed request (%s)", exc)
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain")
            return
        try:
            if node and node != self.cfg.node_id:
                if self.nodes is None:
                    conn.respond(HTTPStatus.NOT_FOUND, b"Unknown node", "text/plain")
                    return
                await self.nodes.ask(node, "emulation", params, float(self.cfg.api_node_timeout))
            else:
                await deliver(self.cluster, params)
        except RemoteError as exc:
            log.info("emulation: the session's shard refused the frame: %s", exc)
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain")
            return
        except ShardUnavailable as exc:
            log.warning("emulation: %s", exc)
            conn.respond(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        except Exception as exc:  # the node did not answer (router.nodes.NodeUnavailable)
            log.info("emulation: node %s unavailable (%s)", node, exc)
            conn.respond(HTTPStatus.NOT_FOUND, b"Unknown node", "text/plain")
            return
        conn.respond(HTTPStatus.NO_CONTENT)
