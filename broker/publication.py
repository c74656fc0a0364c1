"""Publications and client info, and every form they take on their way through the server.

One home for each form, so that no two parts of the server spell the same thing differently:

* :class:`Publication` — the object a writer orders and shards fan out; its ZeroMQ frames
  (:meth:`Publication.to_frames`) carry payload bytes as they are, never re-encoded;
* the *params* form — a client's publication sent to its channel's writer over the control plane, bytes
  as base64 (:func:`publication_params`, :func:`publication_from_params`);
* the *wire* form — a stored publication coming back from the writer (history, recovery), bytes as base64
  (:func:`wire_publication`), turned into the *reply* shape a codec encodes (:func:`reply_from_wire`,
  :func:`publication_body`) or into the server API's JSON (:func:`api_publication`);
* client info — in the reply shape (:func:`client_info_reply`), as JSON between shards with raw JSON
  kept as it is (:func:`client_info_json`, :func:`client_info_from_json`), base64 in params and wire
  forms, and as the value presence engines keep (:class:`ClientInfo`).

Byte fields (``data``, ``conn_info``, ``chan_info``) hold raw JSON from JSON clients and arbitrary bytes
from Protobuf ones.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from broker import errors

Json = dict[str, Any]


def topic(channel: str) -> bytes:
    """A channel's ZeroMQ topic: terminated, because topics are prefix matches (``chat:1`` ≠ ``chat:10``)."""
    return channel.encode("utf-8") + b"\x00"


# -- base64 ----------------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: Any) -> bytes:
    """Strict base64 text to bytes (empty or missing → ``b""``); anything else is 107 bad request."""
    if not value:
        return b""
    if not isinstance(value, str):
        raise errors.BAD_REQUEST()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BAD_REQUEST.with_message("bad base64") from None


def json_or_b64(raw: bytes) -> Any:
    """Raw JSON as it is; binary (from Protobuf clients) is not JSON, so it is sent as base64 text."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return b64(raw)
    return orjson.Fragment(raw)


# -- client info -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A subscriber as presence and join/leave show it; ``conn_info`` / ``chan_info`` are raw bytes."""

    user: str
    client: str
    conn_info: bytes = b""
    chan_info: bytes = b""


def client_info_reply(user: str, client: str, conn_info: bytes = b"", chan_info: bytes = b"") -> Json:
    """ClientInfo in the reply shape: ``user`` and ``client`` always written, bytes fields as bytes."""
    info: Json = {"user": user, "client": client}
    if conn_info:
        info["conn_info"] = conn_info
    if chan_info:
        info["chan_info"] = chan_info
    return info


def client_info_json(user: str, client: str, conn_info: bytes = b"", chan_info: bytes = b"") -> Json:
    """ClientInfo as JSON between processes: raw JSON info spliced in as it is."""
    info: Json = {"user": user, "client": client}
    if conn_info:
        info["conn_info"] = orjson.Fragment(conn_info)
    if chan_info:
        info["chan_info"] = orjson.Fragment(chan_info)
    return info


def client_info_from_json(info: Json) -> Json:
    """:func:`client_info_json` decoded again: the reply shape, info back as raw JSON bytes."""
    out: Json = {"user": info.get("user", ""), "client": info.get("client", "")}
    for key in ("conn_info", "chan_info"):
        if info.get(key) is not None:
            out[key] = orjson.dumps(info[key])
    return out


def _client_info_b64(user: str, client: str, conn_info: bytes, chan_info: bytes) -> Json:
    return {"user": user, "client": client, "b64conn_info": b64(conn_info), "b64chan_info": b64(chan_info)}


# -- the publication -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Publication:
    """A publication as it crosses processes; ``user`` None means no ClientInfo (from the server API)."""

    channel: str
    data: bytes
    offset: int = 0
    epoch: str = ""
    tags: dict[str, str] | None = None
    user: str | None = None
    client: str = ""
    conn_info: bytes = b""
    chan_info: bytes = b""
    time_ms: int = 0
    kind: str = ""  # "" publication, "join" or "leave"
    delta: bool = False  # may go to delta subscribers as a delta against the channel's previous one

    def to_frames(self) -> list[bytes]:
        """ZeroMQ frames ``[topic, header (JSON), data, conn_info, chan_info]``: bytes travel as they are."""
        header: Json = {"ch": self.channel}
        if self.offset:
            header["o"] = self.offset
            header["e"] = self.epoch
        if self.tags:
            header["t"] = self.tags
        if self.user is not None:
            header["u"] = self.user
            header["c"] = self.client
        if self.time_ms:
            header["tm"] = self.time_ms
        if self.kind:
            header["k"] = self.kind
        if self.delta:
            header["d"] = 1
        return [topic(self.channel), orjson.dumps(header), self.data, self.conn_info, self.chan_info]

    @classmethod
    def from_frames(cls, frames: list[bytes]) -> Publication:
        if len(frames) != 5:
            raise ValueError(f"publication with {len(frames)} frames")
        header = orjson.loads(frames[1])
        return cls(
            channel=header["ch"],
            data=frames[2],
            offset=header.get("o", 0),
            epoch=header.get("e", ""),
            tags=header.get("t"),
            user=header.get("u"),
            client=header.get("c", ""),
            conn_info=frames[3],
            chan_info=frames[4],
            time_ms=header.get("tm", 0),
            kind=header.get("k", ""),
            delta=bool(header.get("d")),
        )

    def client_info(self) -> Json | None:
        """The publisher's ClientInfo in the reply shape, or None for a server API publication."""
        if self.user is None:
            return None
        return client_info_reply(self.user, self.client, self.conn_info, self.chan_info)


def publication_body(publication: Publication) -> Json:
    """The reply shape of a live publication, ready for a codec."""
    pub: Json = {"data": publication.data}
    info = publication.client_info()
    if info is not None:
        pub["info"] = info
    if publication.offset:
        pub["offset"] = publication.offset
    if publication.tags:
        pub["tags"] = publication.tags
    return pub


# -- params: a client's publication on its way to the writer -------------------------------------------


def publication_params(publication: Publication) -> Json:
    params: Json = {"channel": publication.channel, "b64data": b64(publication.data)}
    if publication.kind:
        params["kind"] = publication.kind
    if publication.user is not None:
        params["client_info"] = _client_info_b64(
            publication.user, publication.client, publication.conn_info, publication.chan_info
        )
    return params


def payload(params: Json, key: str) -> bytes | None:
    """``key`` (any JSON, kept as its raw JSON text) or ``b64<key>`` (base64 bytes); None when absent."""
    if params.get("b64" + key):
        return unb64(params["b64" + key])
    if key in params and params[key] is not None:
        return orjson.dumps(params[key])
    return None


def publication_from_params(params: Json) -> Publication:
    """What :func:`publication_params` made (or the server API's publish params); 107 when malformed."""
    channel = params.get("channel")
    kind = str(params.get("kind", ""))
    data = payload(params, "data")
    if kind:
        data = data or b""  # join / leave carry only the ClientInfo
    if not isinstance(channel, str) or not channel or data is None:
        raise errors.BAD_REQUEST()
    publication = Publication(channel, data, kind=kind, delta=params.get("delta") is True)
    tags = params.get("tags")
    if tags:
        publication.tags = {str(k): str(v) for k, v in tags.items()}
    info = params.get("client_info")
    if isinstance(info, dict):
        publication.user = str(info.get("user", ""))
        publication.client = str(info.get("client", ""))
        publication.conn_info = unb64(info.get("b64conn_info"))
        publication.chan_info = unb64(info.get("b64chan_info"))
    return publication


# -- wire: a stored publication coming back from its writer --------------------------------------------


def wire_publication(publication: Publication) -> Json:
    out: Json = {"b64data": b64(publication.data), "offset": publication.offset}
    if publication.tags:
        out["tags"] = publication.tags
    if publication.user is not None:
        out["info"] = _client_info_b64(
            publication.user, publication.client, publication.conn_info, publication.chan_info
        )
    return out


def reply_from_wire(wire: Json) -> Json:
    """A wire publication in the reply shape (bytes fields as bytes)."""
    pub: Json = {"data": base64.b64decode(wire.get("b64data", ""))}
    if wire.get("offset"):
        pub["offset"] = wire["offset"]
    if wire.get("tags"):
        pub["tags"] = wire["tags"]
    info = wire.get("info")
    if info:
        pub["info"] = client_info_reply(
            info.get("user", ""),
            info.get("client", ""),
            base64.b64decode(info.get("b64conn_info", "")),
            base64.b64decode(info.get("b64chan_info", "")),
        )
    return pub


def api_publication(wire: Json) -> Json:
    """A wire publication in the server API's JSON shape: raw JSON as it is, binary as base64."""
    pub = reply_from_wire(wire)
    pub["data"] = json_or_b64(pub["data"])
    info = pub.get("info")
    if info is not None:
        for key in ("conn_info", "chan_info"):
            if key in info:
                info[key] = json_or_b64(info[key])
    return pub


_CONVERTED = "\x00publications"


def publications_of(answer: Json) -> list[Json]:
    """The publications of a writer's answer in the reply shape, converted once per answer.

    One answer can serve many clients at once (identical recoveries after an outage share it), so the
    converted list is kept in the answer itself. Callers must not change the dicts they get.
    """
    converted = answer.get(_CONVERTED)
    if converted is None:
        converted = answer[_CONVERTED] = [reply_from_wire(p) for p in answer.get("publications", [])]
    return converted
