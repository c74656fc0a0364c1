"""RFC 6455 framing rules of broker.websocket.frames, fed with byte strings (no sockets, no event loop)."""

from __future__ import annotations

import os
import random
import re
import tomllib
from pathlib import Path

import pytest

from broker.websocket import frames
from broker.websocket.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    ConnectionState,
    Event,
    Message,
    Ping,
    Pong,
    ProtocolError,
    ServerConnection,
    encode_close,
    encode_frame,
    is_valid_close_code,
)

MASK = b"\x37\xfa\x21\x3d"


def xor(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = MASK,
    length_form: int | None = None,
) -> bytes:
    """A client frame built independently of the code under test; ``length_form`` forces 126 or 127."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    form = length_form if length_form is not None else (size if size < 126 else 126 if size < 65536 else 127)
    mask_bit = 0x80 if masked else 0
    if form < 126:
        head = bytes((first, mask_bit | size))
    elif form == 126:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + mask + xor(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def feed(conn: ServerConnection, data: bytes, step: int | None = None) -> list[Event]:
    if step is None:
        return conn.receive_data(data)
    events: list[Event] = []
    for i in range(0, len(data), step):
        events += conn.receive_data(data[i : i + step])
    return events


def assert_fails(data: bytes, code: int, *, conn: ServerConnection | None = None) -> ServerConnection:
    conn = conn if conn is not None else ServerConnection()
    events = conn.receive_data(data)
    assert len(events) >= 1
    error = events[-1]
    assert isinstance(error, ProtocolError), events
    assert error.code == code
    assert conn.failed and conn.closing and conn.finished and not conn.open
    out = conn.data_to_send()
    assert out[:1] == bytes((0x88,))
    assert int.from_bytes(out[2:4], "big") == code
    assert out[4:].decode() == error.reason
    # Everything after a failure is ignored, including a perfectly valid frame.
    assert conn.receive_data(client_frame(OP_TEXT, b"late")) == []
    assert conn.data_to_send() == b""
    return conn


# ------------------------------------------------------------------------------------------------ encoding


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_encode_frame_lengths(size: int, header: bytes) -> None:
    payload = b"a" * size
    frame = encode_frame(OP_TEXT, payload)
    assert frame == header + payload


def test_encode_frame_opcodes_and_fin() -> None:
    assert encode_frame(OP_BINARY, b"\x00\x01") == b"\x82\x02\x00\x01"
    assert encode_frame(OP_TEXT, b"ab", fin=False) == b"\x01\x02ab"
    assert encode_frame(OP_CONTINUATION, b"cd") == b"\x80\x02cd"
    assert encode_frame(OP_PING, b"") == b"\x89\x00"
    assert encode_frame(OP_PONG, b"x") == b"\x8a\x01x"


def test_encoded_frames_parse_with_websockets() -> None:
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    for size in (0, 1, 125, 126, 65535, 65536, 70000):
        payload = os.urandom(size)
        reader = StreamReader()
        reader.feed_data(encode_frame(OP_BINARY, payload))
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
        else:  # pragma: no cover - would mean the frame is incomplete
            pytest.fail("frame not complete")
        assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == payload


def test_encode_close() -> None:
    assert encode_close(1000) == b"\x88\x02\x03\xe8"
    assert encode_close(4000, "bye") == b"\x88\x05\x0f\xa0bye"
    frame = encode_close(3001, "x" * 200)
    assert frame[1] == 125 and frame[4:] == b"x" * 123


def test_encode_close_truncates_on_a_character_boundary() -> None:
    # 61 two-byte characters are 122 bytes; the next one would end at byte 124, past the 123-byte limit.
    reason = "é" * 70
    frame = encode_close(1000, reason)
    assert frame[1] == 2 + 122
    assert frame[4:].decode("utf-8") == "é" * 61
    # A 4-byte character straddling the limit is dropped whole.
    reason = "a" * 121 + "\U0001f600"
    assert encode_close(1000, reason)[4:] == b"a" * 121
    # Exactly 123 bytes fit.
    assert encode_close(1000, "b" * 123)[4:] == b"b" * 123


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_encode_close_refuses_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(ValueError):
        encode_close(code)


def test_close_code_validity() -> None:
    valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
    invalid = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
    assert all(is_valid_close_code(code) for code in valid)
    assert not any(is_valid_close_code(code) for code in invalid)


def test_pure_python_mask_matches_c() -> None:
    rng = random.Random(7)
    for size in (0, 1, 3, 4, 5, 100, 4097):
        data = rng.randbytes(size)
        mask = rng.randbytes(4)
        assert frames._apply_mask_py(data, mask) == xor(data, mask) == frames.apply_mask(data, mask)
    # The C version is the one in use when websockets is installed.
    assert frames.apply_mask is not frames._apply_mask_py


def test_pure_python_mask_matches_c_on_the_buffers_the_parser_passes() -> None:
    rng = random.Random(11)
    for size in (1, 2, 125, 126, 65536):
        buffer = bytearray(rng.randbytes(size + 8))
        view = memoryview(buffer)
        data, mask = view[8:], view[4:8]
        assert frames._apply_mask_py(data, mask) == frames.apply_mask(data, mask) == xor(bytes(data), mask)


def test_fast_unmasking_comes_with_a_plain_install() -> None:
    # `pip install .` installs [project].dependencies only: the C extension must be among them.
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    runtime = {
        re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in pyproject["project"]["dependencies"]
    }
    assert "websockets" in runtime
    from websockets.speedups import apply_mask as c_apply_mask

    assert frames.apply_mask is c_apply_mask
    assert frames.mask_implementation() == frames.MASK_C


def test_the_start_up_log_names_the_slow_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "apply_mask", frames._apply_mask_py)
    assert frames.mask_implementation() == frames.MASK_PYTHON
    assert "slow" in frames.MASK_PYTHON


# ------------------------------------------------------------------------------------------- data messages


def test_initial_state() -> None:
    conn = ServerConnection()
    assert conn.state is ConnectionState.OPEN
    assert conn.open and not conn.closing and not conn.closed and not conn.failed and not conn.finished
    assert conn.max_message_size == 65536 and conn.auto_pong
    assert conn.data_to_send() == b""
    assert conn.receive_data(b"") == []


def test_text_and_binary_messages() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_TEXT, b"hello")) == [Message(False, b"hello")]
    assert conn.receive_data(client_frame(OP_BINARY, b"\x00\xff")) == [Message(True, b"\x00\xff")]
    assert conn.receive_data(client_frame(OP_TEXT, "héllo €".encode())) == [
        Message(False, "héllo €".encode())
    ]
    assert conn.receive_data(client_frame(OP_TEXT)) == [Message(False, b"")]
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 100_000])
def test_lengths(size: int) -> None:
    conn = ServerConnection(max_message_size=1 << 20)
    payload = os.urandom(size)
    assert conn.receive_data(client_frame(OP_BINARY, payload)) == [Message(True, payload)]
    assert conn._buf is None


def test_non_minimal_length_encodings_are_accepted() -> None:
    # RFC 6455 asks senders for the minimal form; being lenient as a receiver costs nothing.
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_TEXT, b"abc", length_form=126)) == [Message(False, b"abc")]
    assert conn.receive_data(client_frame(OP_TEXT, b"abc", length_form=127)) == [Message(False, b"abc")]


def test_many_frames_in_one_call() -> None:
    conn = ServerConnection()
    data = b"".join(client_frame(OP_TEXT, f"m{i}".encode()) for i in range(100))
    events = conn.receive_data(data)
    assert events == [Message(False, f"m{i}".encode()) for i in range(100)]
    assert conn._buf is None


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65536])
def test_byte_by_byte(size: int) -> None:
    conn = ServerConnection(max_message_size=1 << 20)
    payload = os.urandom(size)
    data = client_frame(OP_BINARY, payload) + client_frame(OP_PING, b"p") + client_frame(OP_TEXT, b"t")
    step = 1 if size < 1000 else 997
    events = feed(conn, data, step)
    assert events == [Message(True, payload), Ping(b"p"), Message(False, b"t")]
    assert conn._buf is None


def test_split_at_every_boundary() -> None:
    # Two frames with 16-bit lengths, cut once at every possible position.
    data = client_frame(OP_TEXT, b"x" * 200) + client_frame(OP_BINARY, b"y" * 130, length_form=127)
    for cut in range(len(data) + 1):
        conn = ServerConnection()
        events = conn.receive_data(data[:cut]) + conn.receive_data(data[cut:])
        assert events == [Message(False, b"x" * 200), Message(True, b"y" * 130)], cut
        assert conn._buf is None


def test_partial_frame_is_kept_and_released() -> None:
    conn = ServerConnection()
    data = client_frame(OP_TEXT, b"abcdef")
    assert conn.receive_data(data + data[:3]) == [Message(False, b"abcdef")]
    assert conn._buf == bytearray(data[:3])
    assert conn.receive_data(data[3:]) == [Message(False, b"abcdef")]
    assert conn._buf is None


def test_fragmented_text_with_character_split_across_fragments() -> None:
    conn = ServerConnection()
    text = "price: 10€ 😀".encode()
    euro = text.index("€".encode())
    emoji = text.index("😀".encode())
    parts = [text[: euro + 1], text[euro + 1 : emoji + 2], text[emoji + 2 :]]
    data = (
        client_frame(OP_TEXT, parts[0], fin=False)
        + client_frame(OP_CONTINUATION, parts[1], fin=False)
        + client_frame(OP_CONTINUATION, parts[2])
    )
    assert conn.receive_data(data) == [Message(False, text)]
    assert conn._msg_parts is None and conn._utf8 is None and conn._msg_opcode == 0
    # Byte by byte, the same.
    assert feed(ServerConnection(), data, 1) == [Message(False, text)]


def test_fragmented_binary_with_empty_fragments() -> None:
    conn = ServerConnection()
    data = (
        client_frame(OP_BINARY, b"", fin=False)
        + client_frame(OP_CONTINUATION, b"ab", fin=False)
        + client_frame(OP_CONTINUATION, b"", fin=False)
        + client_frame(OP_CONTINUATION, b"c")
    )
    assert conn.receive_data(data) == [Message(True, b"abc")]


def test_control_frames_between_fragments() -> None:
    conn = ServerConnection()
    events = conn.receive_data(
        client_frame(OP_TEXT, b"he", fin=False)
        + client_frame(OP_PING, b"1")
        + client_frame(OP_CONTINUATION, b"ll", fin=False)
        + client_frame(OP_PONG, b"2")
        + client_frame(OP_CONTINUATION, b"o")
    )
    assert events == [Ping(b"1"), Pong(b"2"), Message(False, b"hello")]
    assert conn.data_to_send() == encode_frame(OP_PONG, b"1")


def test_close_between_fragments() -> None:
    conn = ServerConnection()
    events = conn.receive_data(
        client_frame(OP_TEXT, b"he", fin=False) + client_frame(OP_CLOSE, close_payload(1000))
    )
    assert events == [Close(1000, "")]
    assert conn.closed and conn._msg_parts is None


def test_continuation_without_start() -> None:
    assert_fails(client_frame(OP_CONTINUATION, b"x"), 1002)
    assert_fails(client_frame(OP_CONTINUATION, b"x", fin=False), 1002)


def test_new_message_while_fragmented_message_in_progress() -> None:
    start = client_frame(OP_TEXT, b"a", fin=False)
    assert_fails(start + client_frame(OP_TEXT, b"b"), 1002)
    assert_fails(start + client_frame(OP_BINARY, b"b", fin=False), 1002)


def test_a_fragmented_message_can_follow_a_complete_one() -> None:
    conn = ServerConnection()
    data = (
        client_frame(OP_TEXT, b"a", fin=False)
        + client_frame(OP_CONTINUATION, b"b")
        + client_frame(OP_BINARY, b"c", fin=False)
        + client_frame(OP_CONTINUATION, b"d")
    )
    assert conn.receive_data(data) == [Message(False, b"ab"), Message(True, b"cd")]


# ------------------------------------------------------------------------------------------ framing errors


def test_unmasked_frame() -> None:
    assert_fails(client_frame(OP_TEXT, b"hi", masked=False), 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_rsv_bits(rsv: int) -> None:
    assert_fails(client_frame(OP_TEXT, b"hi", rsv=rsv), 1002)
    assert_fails(client_frame(OP_PING, b"", rsv=rsv), 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcodes(opcode: int) -> None:
    assert_fails(client_frame(opcode, b""), 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame(opcode: int) -> None:
    assert_fails(client_frame(opcode, b"", fin=False), 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_oversized_control_frame(opcode: int) -> None:
    assert_fails(client_frame(opcode, close_payload(1000, b"x" * 124)), 1002)
    assert_fails(client_frame(opcode, close_payload(1000, b"x" * 20), length_form=126), 1002)
    # The header alone is enough to refuse it.
    assert_fails(client_frame(opcode, b"x" * 126)[:2], 1002)


def test_control_frame_of_125_bytes_is_fine() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_PING, b"p" * 125)) == [Ping(b"p" * 125)]
    assert conn.data_to_send() == encode_frame(OP_PONG, b"p" * 125)


def test_64_bit_length_with_high_bit() -> None:
    head = bytes((0x82, 0xFF)) + (1 << 63 | 5).to_bytes(8, "big")
    assert_fails(head + MASK + b"12345", 1002, conn=ServerConnection(max_message_size=1 << 64))
    # Refused from the header bytes alone.
    assert_fails(head, 1002)


def test_oversized_message_is_refused_from_its_header() -> None:
    conn = ServerConnection(max_message_size=100)
    assert conn.receive_data(client_frame(OP_BINARY, b"x" * 100)) == [Message(True, b"x" * 100)]
    # Only the header of a 101-byte frame: refused before any payload is buffered.
    events = conn.receive_data(client_frame(OP_BINARY, b"x" * 101)[:2])
    assert events == [ProtocolError(1009, "message too big")]
    assert conn.data_to_send() == encode_close(1009, "message too big")
    assert conn._buf is None


def test_oversized_fragmented_message() -> None:
    conn = ServerConnection(max_message_size=10)
    ok = client_frame(OP_TEXT, b"12345", fin=False) + client_frame(OP_CONTINUATION, b"12345")
    assert conn.receive_data(ok) == [Message(False, b"1234512345")]
    data = (
        client_frame(OP_TEXT, b"12345", fin=False)
        + client_frame(OP_CONTINUATION, b"12345", fin=False)
        + client_frame(OP_CONTINUATION, b"1")
    )
    assert_fails(data, 1009, conn=conn)
    assert conn._msg_parts is None


def test_huge_announced_length() -> None:
    head = bytes((0x82, 0xFF)) + (1 << 40).to_bytes(8, "big")
    assert_fails(head, 1009)


def test_invalid_utf8_in_single_frame_text() -> None:
    assert_fails(client_frame(OP_TEXT, b"\xff"), 1007)
    assert_fails(client_frame(OP_TEXT, b"ok \xc3"), 1007)  # truncated character
    assert_fails(client_frame(OP_TEXT, b"\xed\xa0\x80"), 1007)  # encoded surrogate
    assert_fails(client_frame(OP_TEXT, b"\xc0\xaf"), 1007)  # overlong
    assert_fails(client_frame(OP_TEXT, b"\xf4\x90\x80\x80"), 1007)  # beyond U+10FFFF


def test_invalid_utf8_in_fragmented_text_is_refused_early() -> None:
    conn = ServerConnection()
    events = conn.receive_data(
        client_frame(OP_TEXT, b"ok", fin=False) + client_frame(OP_CONTINUATION, b"\xff", fin=False)
    )
    assert events == [ProtocolError(1007, "invalid UTF-8 in text message")]


def test_fragmented_text_ending_inside_a_character() -> None:
    data = client_frame(OP_TEXT, b"a\xe2\x82", fin=False) + client_frame(OP_CONTINUATION, b"")
    assert_fails(data, 1007)


def test_invalid_utf8_in_binary_is_fine() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_BINARY, b"\xff")) == [Message(True, b"\xff")]


def test_error_frame_after_valid_frames_in_the_same_call() -> None:
    conn = ServerConnection()
    events = conn.receive_data(client_frame(OP_TEXT, b"a") + client_frame(OP_TEXT, b"b", masked=False))
    assert events == [Message(False, b"a"), ProtocolError(1002, "client frame not masked")]


# ----------------------------------------------------------------------------------------------- ping/pong


def test_ping_gets_a_pong() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_PING, b"hb") + client_frame(OP_PING)) == [Ping(b"hb"), Ping(b"")]
    assert conn.data_to_send() == encode_frame(OP_PONG, b"hb") + encode_frame(OP_PONG, b"")
    assert conn.data_to_send() == b""


def test_auto_pong_off() -> None:
    conn = ServerConnection(auto_pong=False)
    assert conn.receive_data(client_frame(OP_PING, b"hb")) == [Ping(b"hb")]
    assert conn.data_to_send() == b""


def test_pong_is_reported() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_PONG, b"x")) == [Pong(b"x")]
    assert conn.data_to_send() == b""


# ---------------------------------------------------------------------------------------------------- close


def test_peer_starts_close_handshake() -> None:
    conn = ServerConnection()
    events = conn.receive_data(client_frame(OP_CLOSE, close_payload(1001, "going ✈".encode())))
    assert events == [Close(1001, "going ✈")]
    assert conn.closed and conn.finished and not conn.closing and not conn.open
    # The code is echoed without the reason.
    assert conn.data_to_send() == b"\x88\x02\x03\xe9"
    assert conn.send_close(1000) == b""


def test_peer_close_without_code() -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_CLOSE)) == [Close(None, "")]
    assert conn.data_to_send() == b"\x88\x00"
    assert conn.closed


def test_data_after_close_is_ignored() -> None:
    conn = ServerConnection()
    data = client_frame(OP_CLOSE, close_payload(1000)) + client_frame(OP_TEXT, b"late") + b"\x00garbage"
    assert conn.receive_data(data) == [Close(1000, "")]
    assert conn.receive_data(client_frame(OP_PING, b"x")) == []
    assert conn.data_to_send() == b"\x88\x02\x03\xe8"
    assert conn._buf is None


def test_server_starts_close_handshake() -> None:
    conn = ServerConnection()
    frame = conn.send_close(4000, "bye")
    assert frame == encode_close(4000, "bye")
    assert conn.closing and not conn.open and not conn.closed and conn.state is ConnectionState.CLOSING
    assert conn.send_close(1000) == b""
    # Messages in flight are still delivered; pings are no longer answered (only the close may be sent).
    events = conn.receive_data(client_frame(OP_TEXT, b"in flight") + client_frame(OP_PING, b"p"))
    assert events == [Message(False, b"in flight"), Ping(b"p")]
    assert conn.receive_data(client_frame(OP_CLOSE, close_payload(4000, b"bye"))) == [Close(4000, "bye")]
    # The peer's close answered ours: nothing more to send.
    assert conn.data_to_send() == b""
    assert conn.closed and not conn.closing


def test_send_close_truncates_reason() -> None:
    conn = ServerConnection()
    assert len(conn.send_close(1000, "z" * 500)) == 2 + 125


def test_failure_after_our_close_does_not_send_a_second_close() -> None:
    conn = ServerConnection()
    conn.send_close(1000)
    events = conn.receive_data(client_frame(OP_TEXT, b"x", masked=False))
    assert events == [ProtocolError(1002, "client frame not masked")]
    assert conn.data_to_send() == b""
    assert conn.failed


def test_close_payload_of_one_byte() -> None:
    assert_fails(client_frame(OP_CLOSE, b"\x03"), 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code: int) -> None:
    assert_fails(client_frame(OP_CLOSE, close_payload(code)), 1002)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 4999]
)
def test_valid_close_codes(code: int) -> None:
    conn = ServerConnection()
    assert conn.receive_data(client_frame(OP_CLOSE, close_payload(code, b"r"))) == [Close(code, "r")]
    assert conn.data_to_send() == b"\x88\x02" + code.to_bytes(2, "big")


def test_invalid_utf8_in_close_reason() -> None:
    assert_fails(client_frame(OP_CLOSE, close_payload(1000, b"\xff\xfe")), 1007)


def test_close_frame_split_byte_by_byte() -> None:
    conn = ServerConnection()
    events = feed(conn, client_frame(OP_CLOSE, close_payload(1000, b"done")), 1)
    assert events == [Close(1000, "done")]


def test_protocol_error_releases_state() -> None:
    conn = ServerConnection()
    conn.receive_data(client_frame(OP_TEXT, b"ab", fin=False) + client_frame(OP_CONTINUATION, b"c")[:3])
    assert conn._msg_parts is not None and conn._buf is not None
    conn.receive_data(b"\x00" * 20 + client_frame(OP_TEXT, b"x", masked=False))
    assert conn.failed
    assert conn._msg_parts is None and conn._buf is None


def test_slots_only() -> None:
    conn = ServerConnection()
    assert not hasattr(conn, "__dict__")


def test_connection_works_with_the_pure_python_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "apply_mask", frames._apply_mask_py)
    conn = ServerConnection()
    payload = "fallback ✓".encode() * 20
    data = client_frame(OP_TEXT, payload[:7], fin=False) + client_frame(OP_CONTINUATION, payload[7:])
    assert feed(conn, data, 3) == [Message(False, payload)]
