"""The two official SDKs behind one small interface.

:class:`NodeClient` runs ``node/scenario.mjs`` (centrifuge-js) in a child process and reads the JSON
event lines it prints; :class:`PyClient` wraps centrifuge-python's ``Client`` in this process. Both
report the same event shapes into an :class:`EventLog`:

``connected {client}``, ``disconnected {code, reason}``, ``connecting {code, reason}``,
``error {code, message}``, ``get_token {n}``, ``sub_get_token {channel, n}``,
``subscribing / subscribed / unsubscribed {channel, server_side[, code, reason]}``,
``publication {channel, data, info, offset, server_side}``, ``sub_error {channel, code, message}``,
``join / leave {channel, info, server_side}``. ``subscribed`` also carries the stream position the SDK
reports: ``recoverable, positioned, was_recovering, recovered, offset, epoch``.

Both also answer ``history`` (``{publications: [{data, offset, info}], offset, epoch}``), ``presence``
(``{client: {user, client}}``) and ``presence_stats`` (``{num_clients, num_users}``) in the same shapes,
and ``disconnect`` / ``connect`` the client on demand.

Publication data is a JSON value in both protocols: on protobuf the SDKs carry bytes, which hold JSON.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DeltaType,
    DisconnectedContext,
    ErrorContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ServerJoinContext,
    ServerLeaveContext,
    ServerPublicationContext,
    ServerSubscribedContext,
    ServerSubscribingContext,
    ServerUnsubscribedContext,
    SubscribedContext,
    SubscribingContext,
    Subscription,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)
from centrifuge.types import ClientInfo, Publication, StreamPosition

from tests.sdk.common import Event, EventLog

NODE_DIR = Path(__file__).parent / "node"
SCENARIO = NODE_DIR / "scenario.mjs"


class NodeClient:
    """One centrifuge-js client in a ``node`` child process, steered over its stdin."""

    def __init__(self, label: str, scenario: dict[str, Any]) -> None:
        self.label = label
        self.scenario = {"timeout": 60, "frames": True, **scenario}
        self.stderr: collections.deque[str] = collections.deque(maxlen=400)
        self.log = EventLog(label, self._diagnostics)
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._next_id = 0

    def _diagnostics(self) -> str:
        frames = "\n".join(self.stderr)
        return f"{self.label} frames and stderr (last {len(self.stderr)} lines):\n{frames}"

    async def start(self) -> NodeClient:
        node = shutil.which("node")
        assert node, "node (Node.js 20) is needed for the centrifuge-js tests"
        assert (NODE_DIR / "node_modules" / "centrifuge").is_dir(), (
            f"centrifuge-js is not installed in {NODE_DIR}: run `make sdk-deps`"
        )
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(SCENARIO),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,  # an event carries a publication's data, which may be large
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read_events(self.proc.stdout)),
            asyncio.create_task(self._read_stderr(self.proc.stderr)),
        ]
        await self._write(self.scenario)
        await self.log.wait("started", timeout=15)
        return self

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.stderr.append(f"stdout (not JSON): {line}")
                continue
            self.log.add(event)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.stderr.append(raw.decode(errors="replace").rstrip()[:2000])

    async def command(self, op: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Run one scenario command and wait until the script reports it done (or failed)."""
        result = await self._run(op, timeout, fields)
        assert result["event"] == "done", f"{op} {fields} failed: {result}\n{self.log.describe()}"
        return result

    async def attempt(self, op: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Run one scenario command expected to fail; its ``failed`` event (with the error's code)."""
        result = await self._run(op, timeout, fields)
        assert result["event"] == "failed", f"{op} {fields} succeeded: {result}"
        return result

    async def _run(self, op: str, timeout: float, fields: dict[str, Any]) -> Event:
        self._next_id += 1
        ident = self._next_id
        await self._write({"op": op, "id": ident, **fields})
        return await self.log.wait_until(
            lambda e: e.get("event") in ("done", "failed") and e.get("id") == ident,
            f"completion of {op} {fields}",
            timeout,
        )

    async def subscribe(
        self,
        channel: str,
        token: str = "",
        refresh_tokens: list[str] | None = None,
        recoverable: bool = False,
        positioned: bool = False,
        join_leave: bool = False,
        get_state: dict[str, str] | None = None,
        delta: str = "",
    ) -> None:
        options: dict[str, Any] = {}
        if token:
            options["token"] = token
        if delta:
            options["delta"] = delta
        if get_state:
            options["get_state"] = get_state
        if refresh_tokens:
            options["refresh_tokens"] = refresh_tokens
        flags = {"recoverable": recoverable, "positioned": positioned, "join_leave": join_leave}
        options.update({name: True for name, value in flags.items() if value})
        await self.command("subscribe", channel=channel, **options)

    async def unsubscribe(self, channel: str) -> None:
        await self.command("unsubscribe", channel=channel)

    async def publish(self, channel: str, data: Any) -> None:
        await self.command("publish", channel=channel, data=data)

    async def rpc(self, method: str, data: Any) -> Any:
        done = await self.command("rpc", method=method, data=data)
        return done["result"]["data"]

    async def history(
        self, channel: str, limit: int = 0, since: dict[str, Any] | None = None, reverse: bool = False
    ) -> dict[str, Any]:
        options: dict[str, Any] = {"limit": limit}
        if since is not None:
            options["since"] = since
        if reverse:
            options["reverse"] = True
        done = await self.command("history", channel=channel, **options)
        return dict(done["result"])

    async def presence(self, channel: str) -> dict[str, Any]:
        done = await self.command("presence", channel=channel)
        return dict(done["result"]["clients"])

    async def presence_stats(self, channel: str) -> dict[str, Any]:
        done = await self.command("presence_stats", channel=channel)
        return dict(done["result"])

    async def disconnect(self) -> None:
        await self.command("disconnect")

    async def connect(self) -> None:
        await self.command("connect")

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._write({"op": "exit"})
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 5)
        for task in self._readers:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 2)

    async def __aenter__(self) -> NodeClient:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _info(info: ClientInfo | None) -> dict[str, str] | None:
    return {"user": info.user, "client": info.client} if info is not None else None


def _position(ctx: SubscribedContext | ServerSubscribedContext) -> dict[str, Any]:
    position = ctx.stream_position
    return {
        "recoverable": bool(ctx.recoverable),
        "positioned": bool(ctx.positioned),
        "was_recovering": bool(ctx.was_recovering),
        "recovered": bool(ctx.recovered),
        "offset": position.offset if position is not None else None,
        "epoch": position.epoch if position is not None else None,
    }


class PyClient:
    """One centrifuge-python client on the running event loop."""

    def __init__(
        self,
        label: str,
        url: str,
        protocol: str,
        token: str = "",
        refresh_tokens: list[str] | None = None,
        name: str = "python-sdk-test",
    ) -> None:
        self.label = label
        self.protobuf = protocol == "protobuf"
        self.log = EventLog(label)
        get_token = self._token_supplier(
            refresh_tokens, lambda n: self.log.add({"event": "get_token", "n": n})
        )
        self.client = Client(
            url,
            events=_ClientEvents(self),
            token=token,
            get_token=get_token,
            use_protobuf=self.protobuf,
            name=name,
            timeout=5.0,
            min_reconnect_delay=0.2,
            max_reconnect_delay=2.0,
            proxy=None,
        )

    @staticmethod
    def _token_supplier(tokens: list[str] | None, on_call: Any) -> Any:
        if not tokens:
            return None
        calls = 0

        async def supply(*_: Any) -> str:
            nonlocal calls
            token = tokens[min(calls, len(tokens) - 1)]
            calls += 1
            on_call(calls)
            return token

        return supply

    def decode(self, data: Any) -> Any:
        if self.protobuf and isinstance(data, bytes | bytearray):
            try:
                return json.loads(data)
            except ValueError:
                return {"undecodable": bytes(data).hex()}
        return data

    def encode(self, data: Any) -> Any:
        return json.dumps(data).encode() if self.protobuf else data

    async def start(self) -> PyClient:
        """Start connecting (the ``connected`` event tells when it is done)."""
        await asyncio.wait_for(self.client.connect(), 10)
        return self

    async def subscribe(
        self,
        channel: str,
        token: str = "",
        refresh_tokens: list[str] | None = None,
        recoverable: bool = False,
        positioned: bool = False,
        join_leave: bool = False,
        get_state: dict[str, str] | None = None,
        delta: str = "",
    ) -> Subscription:
        """Create the subscription and start subscribing (``subscribed`` tells when it is done).

        ``get_state`` (``{"api": base URL, "key": API key}``): the app's state is the channel's current
        stream position, read from the server API, and every call is logged as ``get_state``."""
        get_token = self._token_supplier(
            refresh_tokens, lambda n: self.log.add({"event": "sub_get_token", "channel": channel, "n": n})
        )
        sub = self.client.new_subscription(
            channel,
            events=_SubscriptionEvents(self, channel),
            token=token,
            get_token=get_token,
            recoverable=recoverable,
            positioned=positioned,
            join_leave=join_leave,
            get_state=self._state_loader(channel, get_state) if get_state else None,
            delta=DeltaType(delta) if delta else None,
        )
        await sub.subscribe()
        return sub

    def _state_loader(self, channel: str, api: dict[str, str]) -> Any:
        calls = 0

        async def load(_: str) -> StreamPosition:
            nonlocal calls
            calls += 1
            self.log.add({"event": "get_state", "channel": channel, "n": calls})
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{api['api']}/history",
                    json={"channel": channel, "limit": 0},
                    headers={"X-API-Key": api["key"]},
                ) as response,
            ):
                result = (await response.json())["result"]
            return StreamPosition(offset=int(result.get("offset", 0)), epoch=str(result.get("epoch", "")))

        return load

    async def unsubscribe(self, channel: str) -> None:
        sub = self.client.get_subscription(channel)
        assert sub is not None, f"no subscription to {channel}"
        await asyncio.wait_for(sub.unsubscribe(), 10)
        self.client.remove_subscription(sub)

    async def publish(self, channel: str, data: Any) -> None:
        await self.client.publish(channel, self.encode(data))

    async def rpc(self, method: str, data: Any) -> Any:
        result = await self.client.rpc(method, self.encode(data))
        return self.decode(result.data)

    def publication(self, pub: Publication) -> dict[str, Any]:
        return {"data": self.decode(pub.data), "offset": pub.offset, "info": _info(pub.info)}

    async def history(
        self, channel: str, limit: int = 0, since: dict[str, Any] | None = None, reverse: bool = False
    ) -> dict[str, Any]:
        position = StreamPosition(offset=since["offset"], epoch=since["epoch"]) if since else None
        result = await self.client.history(channel, limit=limit, since=position, reverse=reverse)
        return {
            "publications": [self.publication(pub) for pub in result.publications],
            "offset": result.offset,
            "epoch": result.epoch,
        }

    async def presence(self, channel: str) -> dict[str, Any]:
        result = await self.client.presence(channel)
        return {client_id: _info(info) for client_id, info in result.clients.items()}

    async def presence_stats(self, channel: str) -> dict[str, Any]:
        result = await self.client.presence_stats(channel)
        return {"num_clients": result.num_clients, "num_users": result.num_users}

    async def disconnect(self) -> None:
        await asyncio.wait_for(self.client.disconnect(), 10)

    async def connect(self) -> None:
        await asyncio.wait_for(self.client.connect(), 10)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 5)

    async def __aenter__(self) -> PyClient:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _ClientEvents(ClientEventHandler):
    def __init__(self, owner: PyClient) -> None:
        self.owner = owner

    def add(self, event: Event) -> None:
        self.owner.log.add(event)

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.add({"event": "connecting", "code": ctx.code, "reason": ctx.reason})

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.add({"event": "connected", "client": ctx.client, "version": ctx.version})

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.add({"event": "disconnected", "code": ctx.code, "reason": ctx.reason})

    async def on_error(self, ctx: ErrorContext) -> None:
        self.add({"event": "error", "code": ctx.code, "message": repr(ctx.error)})

    async def on_subscribed(self, ctx: ServerSubscribedContext) -> None:
        self.add({"event": "subscribed", "channel": ctx.channel, "server_side": True, **_position(ctx)})

    async def on_subscribing(self, ctx: ServerSubscribingContext) -> None:
        self.add({"event": "subscribing", "channel": ctx.channel, "server_side": True})

    async def on_unsubscribed(self, ctx: ServerUnsubscribedContext) -> None:
        self.add({"event": "unsubscribed", "channel": ctx.channel, "server_side": True})

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.add(
            {
                "event": "publication",
                "channel": ctx.channel,
                "data": self.owner.decode(ctx.pub.data),
                "info": _info(ctx.pub.info),
                "offset": ctx.pub.offset,
                "server_side": True,
            }
        )

    async def on_join(self, ctx: ServerJoinContext) -> None:
        self.add({"event": "join", "channel": ctx.channel, "info": _info(ctx.info), "server_side": True})

    async def on_leave(self, ctx: ServerLeaveContext) -> None:
        self.add({"event": "leave", "channel": ctx.channel, "info": _info(ctx.info), "server_side": True})


class _SubscriptionEvents(SubscriptionEventHandler):
    def __init__(self, owner: PyClient, channel: str) -> None:
        self.owner = owner
        self.channel = channel

    def add(self, event: Event) -> None:
        self.owner.log.add({**event, "channel": self.channel})

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.add({"event": "subscribing", "code": ctx.code, "reason": ctx.reason, "server_side": False})

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.add({"event": "subscribed", "server_side": False, **_position(ctx)})

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.add({"event": "unsubscribed", "code": ctx.code, "reason": ctx.reason, "server_side": False})

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.add(
            {
                "event": "publication",
                "data": self.owner.decode(ctx.pub.data),
                "info": _info(ctx.pub.info),
                "offset": ctx.pub.offset,
                "server_side": False,
            }
        )

    async def on_join(self, ctx: JoinContext) -> None:
        self.add({"event": "join", "info": _info(ctx.info), "server_side": False})

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.add({"event": "leave", "info": _info(ctx.info), "server_side": False})

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.add({"event": "sub_error", "code": ctx.code, "message": repr(ctx.error)})
