"""Handing sockets over a SOCK_SEQPACKET Unix socket, both ends in one loop."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from broker.ipc.handoff import HandoffError, HandoffReceiver, HandoffSender, Header, decode, encode
from tests.support.waiting import eventually_async


def test_encode_decode_round_trip():
    header, data = decode(encode(Header("uni_sse", "abc"), b"payload"))
    assert header == Header("uni_sse", "abc", "json") and data == b"payload"
    header, data = decode(encode(Header("websocket", "def", "protobuf"), b""))
    assert header == Header("websocket", "def", "protobuf") and data == b""


def test_the_header_travels_with_one_letter_keys():
    message = encode(Header("websocket", "abc", "protobuf"), b"{}")
    assert message == b"\x00\x00\x00\x2a" + b'{"t":"websocket","c":"abc","p":"protobuf"}' + b"{}"


def test_proxy_decision_kept_headers_and_a_call_to_make_travel_too():
    header = Header(
        "websocket",
        "abc",
        "json",
        proxied=b'{"k":"ok","u":"42"}',
        headers=({"cookie": "c=1"}, {"x-app": "web"}),
        ask=b'{"b":{"client":"abc"},"h":{"x-static":"1"}}',
    )
    decoded, data = decode(encode(header, b"rest"))
    assert decoded == header and data == b"rest"
    # Malformed optional parts are dropped, not trusted.
    raw = b'{"t":"websocket","c":"a","h":[1],"q":"x","x":[]}'
    assert decode(len(raw).to_bytes(4, "big") + raw)[0] == Header("websocket", "a")


def test_a_header_without_codec_means_json():
    assert decode(b"\x00\x00\x00\x17" + b'{"t":"uni_sse","c":"a"}')[0] == Header("uni_sse", "a", "json")


@pytest.mark.parametrize(
    "head",
    [
        b"[]",
        b"not json",
        b'{"c":"a"}',
        b'{"t":"websocket"}',
        b'{"t":1,"c":"a"}',
        b'{"t":"websocket","c":"a","p":2}',
    ],
)
def test_a_header_without_transport_client_or_codec_is_an_error(head):
    with pytest.raises(HandoffError):
        decode(len(head).to_bytes(4, "big") + head + b"data")


def test_truncated_messages_are_errors():
    with pytest.raises(HandoffError):
        decode(b"\x00\x00")
    with pytest.raises(HandoffError):
        decode(b"\x00\x00\x00\x10{}")


def test_oversized_message_refused():
    with pytest.raises(HandoffError):
        encode(Header("websocket", "abc"), b"x" * (2 << 20))


async def _handoff_round_trip(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[tuple[Header, bytes, int]] = asyncio.Queue()
    receiver = HandoffReceiver(loop, tmp_path / "s.handoff", lambda h, d, fd: got.put_nowait((h, d, fd)))
    receiver.start()
    sender = HandoffSender(loop, tmp_path / "s.handoff")
    outcomes: list[bool] = []
    pairs = [socket.socketpair() for _ in range(50)]
    for i, (_ours, theirs) in enumerate(pairs):
        sender.send(encode(Header("websocket", str(i)), b"body-%d" % i), theirs.fileno(), outcomes.append)
    received = [await asyncio.wait_for(got.get(), 5) for _ in pairs]
    assert outcomes == [True] * len(pairs)
    for (header, data, fd), (ours, theirs) in zip(received, pairs, strict=True):
        assert data == b"body-%d" % int(header.client)
        theirs.close()  # the sender's copy; the received descriptor keeps the socket open
        adopted = socket.socket(fileno=fd)
        adopted.sendall(b"hello")
        assert ours.recv(5) == b"hello"
        adopted.close()
        ours.close()
    sender.close()
    receiver.stop()
    assert not (tmp_path / "s.handoff").exists()


def test_descriptors_arrive_with_their_messages(tmp_path):
    asyncio.run(_handoff_round_trip(tmp_path))


async def _shard_down(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    sender = HandoffSender(loop, tmp_path / "missing.handoff")
    outcomes: list[bool] = []
    ours, theirs = socket.socketpair()
    sender.send(encode(Header("websocket", "abc"), b""), theirs.fileno(), outcomes.append)
    assert outcomes == [False]
    ours.close()
    theirs.close()


def test_missing_shard_reports_failure(tmp_path):
    asyncio.run(_shard_down(tmp_path))


async def _malformed(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    adopted: list[int] = []
    receiver = HandoffReceiver(loop, tmp_path / "m.handoff", lambda h, d, fd: adopted.append(fd))
    receiver.start()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect(str(tmp_path / "m.handoff"))
    raw.send(b"no descriptor here")
    ours, theirs = socket.socketpair()
    raw.sendmsg(
        [encode(Header("websocket", "abc"), b"")],
        [
            (
                socket.SOL_SOCKET,
                socket.SCM_RIGHTS,
                bytes(memoryview(__import__("array").array("i", [theirs.fileno()]))),
            )
        ],
    )
    await eventually_async(lambda: adopted, what="the good message adopted")
    assert len(adopted) == 1  # the malformed message was dropped, the good one adopted
    os.close(adopted[0])
    raw.close()
    ours.close()
    theirs.close()
    receiver.stop()


def test_malformed_messages_are_dropped(tmp_path):
    asyncio.run(_malformed(tmp_path))
