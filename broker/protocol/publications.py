"""Publications in the reply dict shape, from the two forms the server holds them in.

Live publications arrive as :class:`broker.ipc.pubsub.Publication` objects; stored ones come back from
the channel's writer shard in a JSON *wire* form where byte fields are base64 (``b64data``,
``info.b64conn_info`` …). Both become the same dict, with ``bytes`` for byte fields, ready for a codec.
"""

from __future__ import annotations

import base64
from typing import Any

from broker.ipc.pubsub import Publication


def publication_from_wire(wire: dict[str, Any]) -> dict[str, Any]:
    pub: dict[str, Any] = {"data": base64.b64decode(wire.get("b64data", ""))}
    if wire.get("offset"):
        pub["offset"] = wire["offset"]
    if wire.get("tags"):
        pub["tags"] = wire["tags"]
    info = wire.get("info")
    if info:
        client_info: dict[str, Any] = {"user": info.get("user", ""), "client": info.get("client", "")}
        for key in ("conn_info", "chan_info"):
            raw = base64.b64decode(info.get("b64" + key, ""))
            if raw:
                client_info[key] = raw
        pub["info"] = client_info
    return pub


def publication_body(publication: Publication) -> dict[str, Any]:
    pub: dict[str, Any] = {"data": publication.data}
    info = publication.client_info()
    if info is not None:
        pub["info"] = info
    if publication.offset:
        pub["offset"] = publication.offset
    if publication.tags:
        pub["tags"] = publication.tags
    return pub


_CONVERTED = "\x00publications"


def publications_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The publications of a writer's answer in the reply dict shape, converted once per answer.

    One answer can serve many clients at once (identical recoveries after an outage share it), so the
    converted list is kept in the answer itself. Callers must not change the dicts they get.
    """
    converted = answer.get(_CONVERTED)
    if converted is None:
        converted = answer[_CONVERTED] = [publication_from_wire(p) for p in answer.get("publications", [])]
    return converted
