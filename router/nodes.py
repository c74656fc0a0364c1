"""The other nodes, as the router of one node sees them (the Redis engine).

The router speaks for its node on the Redis broker's control names (``P.control`` to every node,
``P.node.<uid>`` to one). Messages are JSON objects with a type ``t``:

* ``info`` — every ``node_info_interval`` a node tells the others its id, name and counts; a node not
  heard from for three intervals is dropped from :meth:`Nodes.live`;
* ``req`` / ``rep`` — a question to one node and its answer (``id`` pairs them, ``from`` is where the
  answer goes). The asking side waits up to a deadline and reports a silent node as unavailable, never
  failing the whole call;
* ``cmd`` — something every other node does for itself and does not answer (disconnect a user …).

What a node does with a question or command is the server API method run on that node alone
(``local``), so a remote node answers exactly what it would answer for itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from broker.engine.broker import Broker
from broker.errors import ClientError
from broker.ids import new_id
from broker.ipc.control import RemoteError

log = logging.getLogger("switchboard.nodes")

# A node silent for this many info intervals is taken for gone.
SILENT_INTERVALS = 3

LocalCall = Callable[[str, dict[str, Any]], Awaitable[Any]]


class NodeUnavailable(Exception):
    """A node did not answer within the deadline (or is not known to be alive)."""


@dataclass(slots=True)
class Known:
    uid: str
    name: str
    info: dict[str, Any]
    seen: float


@dataclass(slots=True)
class Asked:
    results: dict[str, Any]
    missing: list[str]
    errors: dict[str, RemoteError]
    names: dict[str, str]  # as known when asked (a silent node may be dropped meanwhile)

    def unavailable(self) -> list[dict[str, str]]:
        return [{"uid": uid, "name": self.names.get(uid, "")} for uid in self.missing]


class Nodes:
    def __init__(
        self,
        uid: str,
        name: str,
        broker: Broker,
        local: LocalCall,
        node_info: Callable[[], Awaitable[dict[str, Any]]],
        interval: float,
    ) -> None:
        self.uid = uid
        self.name = name
        self.broker = broker
        self.local = local
        self.node_info = node_info
        self.interval = interval
        self.known: dict[str, Known] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        self.broker.start(self.uid, self)
        await self.broker.wait_connected(timeout)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in list(self._tasks):
            task.cancel()
        for future in self._waiting.values():
            future.cancel()
        await self.broker.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _beat(self) -> None:
        while True:
            try:
                info = await self.node_info()
                message = {"t": "info", "uid": self.uid, "name": self.name, "info": info}
                await self.broker.publish_control(orjson.dumps(message))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not tell the other nodes about this one: %r", exc)
            self._forget_silent()
            await asyncio.sleep(self.interval)

    def _forget_silent(self) -> None:
        limit = time.monotonic() - SILENT_INTERVALS * self.interval
        for uid in [uid for uid, node in self.known.items() if node.seen < limit]:
            log.warning("node %s (%s) went silent; dropped", self.known[uid].name, uid)
            del self.known[uid]

    def live(self) -> list[Known]:
        """The other nodes heard from within the last three intervals."""
        limit = time.monotonic() - SILENT_INTERVALS * self.interval
        return [node for node in self.known.values() if node.seen >= limit]

    def name_of(self, uid: str) -> str:
        node = self.known.get(uid)
        return node.name if node is not None else ""

    # -- receiving ----------------------------------------------------------------------------------

    def on_publication(self, publication: Any) -> None:
        del publication  # the router subscribes no channels

    def on_control(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            kind = message["t"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("dropping a malformed control message: %r", data[:64])
            return
        if kind == "info":
            uid = str(message.get("uid", ""))
            if uid and uid != self.uid:
                info = message.get("info")
                name = str(message.get("name", ""))
                if uid not in self.known:
                    log.info("node %s (%s) joined", name, uid)
                self.known[uid] = Known(uid, name, info if isinstance(info, dict) else {}, time.monotonic())
        elif kind == "req":
            self._spawn(self._answer(message))
        elif kind == "rep":
            future = self._waiting.pop(str(message.get("id", "")), None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "cmd" and message.get("from") != self.uid:
            self._spawn(self._obey(message))

    def on_resubscribed(self, count: int) -> None:
        del count

    async def _answer(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"t": "rep", "id": message.get("id", "")}
        try:
            reply["r"] = await self.local(str(message.get("m", "")), _params(message))
        except ClientError as err:
            reply["e"] = {"code": err.code, "message": err.message}
        except Exception as exc:
            log.error("answering node %s failed: %r", message.get("from"), exc)
            reply["e"] = {"code": 100, "message": "internal server error"}
        try:
            await self.broker.publish_control(orjson.dumps(reply), str(message.get("from", "")))
        except Exception as exc:
            log.warning("could not answer node %s: %r", message.get("from"), exc)

    async def _obey(self, message: dict[str, Any]) -> None:
        try:
            await self.local(str(message.get("m", "")), _params(message))
        except ClientError:
            pass  # e.g. the user has no connection here
        except Exception as exc:
            log.warning("a command from node %s failed here: %r", message.get("from"), exc)

    # -- asking -------------------------------------------------------------------------------------

    async def ask(self, uid: str, method: str, params: dict[str, Any], timeout: float) -> Any:
        """``method`` run on node ``uid``; raises :class:`NodeUnavailable` or :class:`RemoteError`."""
        request_id = new_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message = {"t": "req", "id": request_id, "from": self.uid, "m": method, "p": params}
        try:
            async with asyncio.timeout(timeout):
                await self.broker.publish_control(orjson.dumps(message), uid)
                reply = await future
        except TimeoutError:
            raise NodeUnavailable(f"node {uid} did not answer within {timeout:g}s") from None
        except Exception as exc:
            raise NodeUnavailable(f"cannot ask node {uid}: {exc!r}") from None
        finally:
            self._waiting.pop(request_id, None)
        error = reply.get("e")
        if isinstance(error, dict):
            raise RemoteError(int(error.get("code", 100)), str(error.get("message", "")))
        return reply.get("r")

    async def ask_each(self, uids: list[str], method: str, params: dict[str, Any], timeout: float) -> Asked:
        """Ask several nodes at once, up to one deadline; silent ones are listed, not fatal."""
        names = {uid: self.name_of(uid) for uid in uids}
        outcomes = await asyncio.gather(
            *(self.ask(uid, method, params, timeout) for uid in uids), return_exceptions=True
        )
        asked = Asked({}, [], {}, names)
        for uid, outcome in zip(uids, outcomes, strict=True):
            if isinstance(outcome, NodeUnavailable):
                log.warning("%s", outcome)
                asked.missing.append(uid)
            elif isinstance(outcome, RemoteError):
                asked.errors[uid] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                asked.results[uid] = outcome
        return asked

    async def tell_others(self, method: str, params: dict[str, Any]) -> None:
        """Every other node runs ``method`` for itself; nobody answers."""
        message = {"t": "cmd", "from": self.uid, "m": method, "p": params}
        await self.broker.publish_control(orjson.dumps(message))


def _params(message: dict[str, Any]) -> dict[str, Any]:
    params = message.get("p")
    return params if isinstance(params, dict) else {}
