"""The RPC proxy without I/O: a client's ``rpc`` command as a backend call, and what the answer means.

Request (as Centrifugo sends it): the common fields (:func:`broker.proxy.events.base_request`),
``method`` and ``data`` (``b64data`` with binary encoding). Answer: ``{"result": {"data" | "b64data"}}``
(the reply's data), ``{"error": {code, message}}`` (an error reply) or ``{"disconnect": {code, reason}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.errors import ClientError, Disconnect
from broker.proxy.events import Caller, base_request, refusal_of
from broker.proxy.fields import MalformedAnswer, put_data, raw_field


@dataclass(slots=True)
class RpcOutcome:
    data: bytes | None = None  # raw JSON (JSON clients) or bytes (Protobuf clients)
    error: ClientError | None = None
    disconnect: Disconnect | None = None


def rpc_request(
    caller: Caller, *, method: str, data: bytes, binary_encoding: bool, include_meta: bool
) -> dict[str, Any]:
    request = base_request(caller, binary=binary_encoding, include_meta=include_meta)
    request["method"] = method
    put_data(request, data, binary_encoding)
    return request


def parse_rpc_answer(answer: Any) -> RpcOutcome:
    """What the backend's answer to an RPC decides; raises :class:`MalformedAnswer`."""
    refusal = refusal_of(answer)
    if refusal is not None:
        return RpcOutcome(error=refusal.error, disconnect=refusal.disconnect)
    result = answer.get("result")
    if result is None:
        return RpcOutcome()
    if not isinstance(result, dict):
        raise MalformedAnswer("result is not an object")
    return RpcOutcome(data=raw_field(result, "data"))
