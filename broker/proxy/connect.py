"""The connect proxy without I/O: the request sent for a client without a token, and what its answer means.

Request (JSON, as Centrifugo sends it): ``client``, ``transport``, ``protocol``, ``encoding``, and when
present ``name``, ``version``, ``data`` (``b64data`` with ``proxy_binary_encoding``) and ``channels``
(the ConnectRequest's ``subs`` keys). No token, user or meta: the backend authenticates the client.

Answer: ``{"result": {user, expire_at, info | b64info, data | b64data, channels, subs, meta}}`` — an
empty or absent result is "no credentials" (3501 unless anonymous connections are allowed) —, or
``{"error": {code, message}}`` (an error reply to the connect), or ``{"disconnect": {code, reason}}``.

The router calls the proxy before it hands the socket over (it needs the user to pick the shard) and
passes the decided :class:`Outcome` to the shard with the socket, as JSON.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.proxy.fields import MalformedAnswer, int_field, put_data, raw_field

KIND_CREDENTIALS = "ok"
KIND_NONE = "none"  # the backend gave no credentials
KIND_ERROR = "error"
KIND_DISCONNECT = "disconnect"
KIND_FAILED = "failed"  # timeout, refused, non-200, malformed: the proxy could not decide


@dataclass(slots=True)
class Outcome:
    kind: str
    user: str = ""
    expire_at: int = 0
    info: bytes | None = None  # raw JSON
    data: bytes | None = None  # raw JSON, for ConnectResult.data
    channels: list[str] = field(default_factory=list)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    labels: dict[str, str] | None = None
    code: int = 0
    message: str = ""

    def to_json(self) -> bytes:
        out: dict[str, Any] = {"k": self.kind}
        if self.kind == KIND_CREDENTIALS:
            out.update(u=self.user, e=self.expire_at, c=self.channels, s=self.subs, m=self.meta)
            if self.labels:
                out["l"] = self.labels
            # Base64: bytes from b64info / b64data need not be JSON, and are kept exactly.
            if self.info is not None:
                out["i"] = base64.b64encode(self.info).decode()
            if self.data is not None:
                out["d"] = base64.b64encode(self.data).decode()
        elif self.kind in (KIND_ERROR, KIND_DISCONNECT):
            out.update(code=self.code, message=self.message)
        return orjson.dumps(out)

    @classmethod
    def from_json(cls, raw: bytes) -> Outcome:
        fields = orjson.loads(raw)
        kind = str(fields["k"])
        if kind == KIND_CREDENTIALS:
            info, data = fields.get("i"), fields.get("d")
            return cls(
                kind,
                user=str(fields.get("u", "")),
                expire_at=int(fields.get("e") or 0),
                info=base64.b64decode(info) if isinstance(info, str) else None,
                data=base64.b64decode(data) if isinstance(data, str) else None,
                channels=list(fields.get("c") or ()),
                subs=dict(fields.get("s") or {}),
                meta=fields.get("m"),
                labels=fields.get("l"),
            )
        return cls(kind, code=int(fields.get("code", 0)), message=str(fields.get("message", "")))


def connect_request(
    *,
    client: str,
    transport: str,
    protocol: str,
    name: str = "",
    version: str = "",
    data: bytes | None = None,
    channels: list[str] | None = None,
    binary_encoding: bool = False,
) -> dict[str, Any]:
    """The body of a connect proxy call; ``data`` is the ConnectRequest's data (raw JSON, or bytes
    with Protobuf)."""
    request: dict[str, Any] = {
        "client": client,
        "transport": transport,
        "protocol": protocol,
        "encoding": "binary" if binary_encoding else "json",
    }
    if name:
        request["name"] = name
    if version:
        request["version"] = version
    put_data(request, data, binary_encoding)
    if channels:
        request["channels"] = channels
    return request


def parse_answer(answer: Any) -> Outcome:
    """What a backend's answer decides; raises :class:`MalformedAnswer`."""
    if not isinstance(answer, dict):
        raise MalformedAnswer("not an object")
    if isinstance(answer.get("disconnect"), dict):
        spec = answer["disconnect"]
        return Outcome(KIND_DISCONNECT, code=int_field(spec, "code"), message=str(spec.get("reason", "")))
    if isinstance(answer.get("error"), dict):
        spec = answer["error"]
        return Outcome(KIND_ERROR, code=int_field(spec, "code"), message=str(spec.get("message", "")))
    result = answer.get("result")
    if result is None or result == {}:
        return Outcome(KIND_NONE)
    if not isinstance(result, dict):
        raise MalformedAnswer("result is not an object")
    user = result.get("user", "")
    channels = result.get("channels") or []
    subs = result.get("subs") or {}
    meta = result.get("meta")
    labels = result.get("labels")
    if labels is not None and (
        not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values())
    ):
        raise MalformedAnswer("labels must be an object of strings")
    if not isinstance(user, str):
        raise MalformedAnswer("user must be a string")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise MalformedAnswer("channels must be a list of strings")
    if not isinstance(subs, dict) or not all(isinstance(v, dict) for v in subs.values()):
        raise MalformedAnswer("subs must map channels to objects")
    if meta is not None and not isinstance(meta, dict):
        raise MalformedAnswer("meta must be an object")
    return Outcome(
        KIND_CREDENTIALS,
        user=user,
        expire_at=int_field(result, "expire_at"),
        info=raw_field(result, "info"),
        data=raw_field(result, "data"),
        channels=list(channels),
        subs=dict(subs),
        meta=meta,
        labels=dict(labels) if labels else None,
    )
