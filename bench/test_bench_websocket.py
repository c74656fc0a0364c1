"""Micro-benchmarks for broker.websocket (run with ``pytest -m slow bench/test_bench_websocket.py -s``).

* parsing: one masked 100-byte text frame per ``receive_data`` call, and 100 such frames in one call (the
  per-frame cost is the reported mean divided by 100); a 64 KiB binary frame, where unmasking dominates;
* encoding: one 100-byte text frame, i.e. the once-per-broadcast cost;
* memory of an idle connection, both ``sys.getsizeof`` of the object and tracemalloc over 10,000 instances,
  which is what a shard holding hundreds of thousands of them pays in Python objects (kernel socket memory and
  the transport come on top).
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from typing import Any

import pytest

from broker.websocket import OP_BINARY, OP_TEXT, Message, ServerConnection, encode_frame

pytestmark = pytest.mark.slow

MASK = b"\x11\x22\x33\x44"
INSTANCES = 10_000


def masked_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


PAYLOAD_100 = b'{"id":7,"publish":{"channel":"chat:1","data":{"text":"hello","n":42}}}'.ljust(100, b" ")
FRAME_100 = masked_frame(OP_TEXT, PAYLOAD_100)


def test_parse_one_frame(benchmark: Any) -> None:
    conn = ServerConnection()
    # Fixed iterations per round: a single sub-microsecond call is below the timer's resolution.
    events = benchmark.pedantic(conn.receive_data, args=(FRAME_100,), rounds=2000, iterations=100)
    assert events == [Message(False, PAYLOAD_100)]


def test_parse_100_frames_in_one_call(benchmark: Any) -> None:
    conn = ServerConnection()
    data = FRAME_100 * 100
    events = benchmark(conn.receive_data, data)
    assert len(events) == 100
    benchmark.extra_info["frames_per_call"] = 100


def test_parse_64k_binary_frame(benchmark: Any) -> None:
    payload = os.urandom(65536)
    conn = ServerConnection(max_message_size=1 << 20)
    events = benchmark(conn.receive_data, masked_frame(OP_BINARY, payload))
    assert events == [Message(True, payload)]


def test_encode_100_byte_text_frame(benchmark: Any) -> None:
    frame = benchmark.pedantic(encode_frame, args=(OP_TEXT, PAYLOAD_100), rounds=2000, iterations=100)
    assert len(frame) == 102


def test_idle_connection_memory() -> None:
    shallow = sys.getsizeof(ServerConnection())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        connections = [ServerConnection() for _ in range(INSTANCES)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The list holding the instances is not per-connection state.
    per_connection = (allocated - sys.getsizeof(connections)) / INSTANCES
    print(f"\nServerConnection: getsizeof {shallow} B, tracemalloc {per_connection:.1f} B per idle instance")
    assert per_connection <= 250
