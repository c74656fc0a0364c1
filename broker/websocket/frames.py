"""Server-side RFC 6455 framing without I/O.

Theory of operation
-------------------
The router performs the HTTP upgrade (see :mod:`broker.websocket.handshake`) and hands the socket, together
with every byte it already read past the request, to a shard. The shard creates a :class:`ServerConnection`,
which starts in the OPEN state, and feeds it those bytes first, then whatever the socket delivers::

    conn = ServerConnection(max_message_size=65536)
    for event in conn.receive_data(initial_bytes):
        ...
    transport.write(conn.data_to_send())   # automatic pongs and close replies, b"" most of the time

Nothing in here touches sockets, event loops or clocks, so timeouts (e.g. for the peer's close reply) belong
to the caller.

Receiving. ``receive_data`` parses every complete frame in the bytes given plus whatever was left over from
the previous call, and returns one event per complete message or control frame. Only a trailing partial frame
is kept, in a ``bytearray`` that exists only while such a remainder is pending; when a call consumes
everything the buffer is dropped again. This keeps an idle connection down to a handful of pointer-sized
slots, because a shard holds hundreds of thousands of them. Frame headers are validated as soon as they are
complete, before the payload has arrived, so a peer announcing an oversized or illegal frame is refused
without buffering its payload. Fragments are collected in a list that exists only while a fragmented message
is in progress; text is checked for UTF-8 validity incrementally, fragment by fragment, so that an invalid
sequence is refused early, and a character split between two fragments is still accepted.

Sending. Servers never mask, so a frame only depends on its opcode and payload. :func:`encode_frame` is a
plain function so that a broadcast encodes one publication once and writes the same bytes to many sockets.
Data frames are therefore never produced by the connection object; it only produces the control frames the
protocol obliges it to send on its own (pong replies, close replies, and the close frame that fails a
connection), which the caller collects with ``data_to_send``.

Closing. ``send_close`` starts the close handshake from our side; the caller keeps reading until a
:class:`Close` event arrives (or its own timeout fires) and then closes the transport: RFC 6455 lets the
server close TCP first. When the peer starts the handshake, the reply is queued automatically and the
connection is closed as soon as the caller has flushed ``data_to_send``. On a protocol violation the
connection queues a close frame carrying the error code, reports :class:`ProtocolError`, and ignores all
further input; the caller should flush and close. Closing a socket whose receive queue still holds unread
bytes makes the kernel send a reset that can destroy the close frame in flight, so adapters should keep
draining the socket briefly (or until EOF) before closing it after a failure.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "ConnectionState",
    "Event",
    "Message",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerConnection",
    "apply_mask",
    "encode_close",
    "encode_frame",
    "is_valid_close_code",
    "log_mask_implementation",
    "mask_implementation",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

# Close codes (RFC 6455 section 7.4.1) this module emits itself.
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_MESSAGE_TOO_BIG: Final = 1009

MAX_CONTROL_PAYLOAD: Final = 125
# A close payload is a 2-byte code plus the reason, and must fit in a control frame.
MAX_CLOSE_REASON: Final = MAX_CONTROL_PAYLOAD - 2
DEFAULT_MAX_MESSAGE_SIZE: Final = 65536


def _apply_mask_py(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask``, using one big integer instead of a byte loop."""
    size = len(data)
    if not size:
        return b""
    key = (bytes(mask) * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray], bytes]
try:
    # The C version is about 6x faster for 100 bytes and 70x for 64 KiB (measurements.md section 3).
    # websockets is a runtime dependency for this extension alone; a build without a C compiler may
    # still lack it, hence the fallback, which a shard reports at start (see mask_implementation).
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - depends on the installation
    apply_mask = _apply_mask_py

MASK_C = "C (websockets.speedups)"
MASK_PYTHON = "pure Python (slow: websockets.speedups is not installed)"


def mask_implementation() -> str:
    """Which unmasking code this installation runs, for the start-up log."""
    return MASK_PYTHON if apply_mask is _apply_mask_py else MASK_C


def log_mask_implementation(log: logging.Logger) -> None:
    """One start-up line: info with the C extension, a warning for the slow pure-Python fallback."""
    masking = mask_implementation()
    log.log(logging.INFO if masking == MASK_C else logging.WARNING, "WebSocket unmasking: %s", masking)


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


# --------------------------------------------------------------------------------------------------- encoding


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """Return one unmasked (server-to-client) frame.

    ``fin=False`` starts or continues a fragmented message (the following frames use ``OP_CONTINUATION``).
    The caller is responsible for the payload of a text frame being valid UTF-8 and for control frames
    carrying at most 125 bytes.
    """
    first = opcode | 0x80 if fin else opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 0x10000:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire.

    1000-1003 and 1007-1011 are defined by RFC 6455; 1012-1014 were registered with IANA later (service
    restart, try again later, bad gateway) and are in use by servers, so they are accepted too. 1004 is
    reserved, 1005, 1006 and 1015 are for local reporting only and must never be sent. 3000-3999 are
    registered by libraries and frameworks and 4000-4999 are private (Centrifugo's disconnect codes live
    there). Everything else is unassigned or out of range.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode_close(code: int, reason: str = "") -> bytes:
    """Return a close frame with ``code`` and ``reason``.

    The reason is cut to 123 bytes of UTF-8 so that the payload fits in a control frame; the cut never splits
    a character. Raises ``ValueError`` for a code that may not be sent (see :func:`is_valid_close_code`).
    """
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CLOSE_REASON:
        # The input was valid UTF-8, so the cut can only damage its last character; "ignore" drops the rest.
        raw = raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return bytes((0x80 | OP_CLOSE, 2 + len(raw))) + code.to_bytes(2, "big") + raw


# ----------------------------------------------------------------------------------------------------- events


@dataclass(slots=True)
class Message:
    """A complete data message, fragments reassembled; the payload of a text message is valid UTF-8."""

    binary: bool
    payload: bytes


@dataclass(slots=True)
class Ping:
    """A ping from the peer; with ``auto_pong`` its pong is already queued in ``data_to_send``."""

    payload: bytes


@dataclass(slots=True)
class Pong:
    """A pong from the peer (an answer to our ping, or an unsolicited heartbeat)."""

    payload: bytes


@dataclass(slots=True)
class Close:
    """The peer's close frame: it either started the close handshake or answered ours.

    ``code`` is None when the frame carried no payload. If the peer started the handshake, our reply is
    queued in ``data_to_send``. Either way the handshake is complete and the transport may be closed.
    """

    code: int | None
    reason: str


@dataclass(slots=True)
class ProtocolError:
    """The peer violated the protocol; a close frame with ``code`` is queued and further input is ignored."""

    code: int
    reason: str


# Events are plain slotted dataclasses rather than frozen ones because frozen construction costs about twice
# as much, and one is built per received message; treat them as read-only.
Event = Message | Ping | Pong | Close | ProtocolError


# ------------------------------------------------------------------------------------------------- connection


class ConnectionState(IntEnum):
    OPEN = 0
    # We sent a close frame and wait for the peer's.
    CLOSING = 1
    # Both close frames have been exchanged (or ours is queued as the reply to the peer's).
    CLOSED = 2
    # The peer broke the protocol; our close frame is queued (unless one was sent) and input is ignored.
    FAILED = 3


_OPEN: Final = ConnectionState.OPEN
_CLOSING: Final = ConnectionState.CLOSING
_CLOSED: Final = ConnectionState.CLOSED
_FAILED: Final = ConnectionState.FAILED


class _Fail(Exception):
    """Raised inside the parser to abort on a protocol violation; never escapes ``receive_data``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class ServerConnection:
    """Server side of one WebSocket connection, already past the handshake.

    ``max_message_size`` bounds the payload of one message, counting all its fragments; a larger one fails
    the connection with 1009. ``auto_pong`` queues a pong for every ping received (as long as we have not sent
    a close frame ourselves, after which nothing but the close may be sent).

    The object holds only a few slots; a receive buffer, a fragment list and a UTF-8 decoder are allocated
    only while a partial frame, a fragmented message or a split character is pending.
    """

    __slots__ = (
        "_buf",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_out",
        "_state",
        "_utf8",
        "auto_pong",
        "max_message_size",
    )

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, auto_pong: bool = True) -> None:
        self.max_message_size = max_message_size
        self.auto_pong = auto_pong
        self._state = _OPEN
        # Trailing partial frame, or None when the last call consumed everything.
        self._buf: bytearray | None = None
        # Control frames to send on our own; b"" is a shared constant, so an idle connection costs nothing.
        self._out = b""
        # Opcode of the fragmented message in progress (OP_TEXT or OP_BINARY), 0 when none.
        self._msg_opcode = 0
        self._msg_parts: list[bytes] | None = None
        self._msg_size = 0
        # Created only once a fragmented text message contains a non-ASCII byte.
        self._utf8: codecs.IncrementalDecoder | None = None

    # --- state

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def open(self) -> bool:
        """Data frames may be sent (no close frame sent or received yet)."""
        return self._state is _OPEN

    @property
    def closing(self) -> bool:
        """We sent (or queued) a close frame and the peer's close frame has not been received."""
        return self._state is _CLOSING or self._state is _FAILED

    @property
    def closed(self) -> bool:
        """The close handshake is complete: flush ``data_to_send`` and close the transport."""
        return self._state is _CLOSED

    @property
    def failed(self) -> bool:
        """A protocol error was detected: flush ``data_to_send`` and close the transport."""
        return self._state is _FAILED

    @property
    def finished(self) -> bool:
        """No further input will be processed (closed or failed)."""
        return self._state >= _CLOSED

    # --- output

    def data_to_send(self) -> bytes:
        """Return and forget the control frames queued by the connection itself (pongs, close frames)."""
        out = self._out
        if out:
            self._out = b""
        return out

    def send_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
        """Start the close handshake and return the close frame for the caller to write.

        Returns b"" if a close frame was already sent or received (only one may be sent). The reason is
        truncated as in :func:`encode_close`. Keep feeding input afterwards: messages the peer sent before
        seeing our close are still delivered, and its :class:`Close` reply completes the handshake.
        """
        if self._state is not _OPEN:
            return b""
        frame = encode_close(code, reason)
        self._state = _CLOSING
        return frame

    # --- input

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse ``data`` (plus any pending partial frame) and return the events it completes, in order."""
        events: list[Event] = []
        if self._state >= _CLOSED:
            return events
        buf = self._buf
        view: bytes | bytearray = data
        if buf is not None:
            buf += data
            view = buf
        end = len(view)
        pos = 0
        try:
            # The loop body is the hot path of every received message; it stays inline on purpose.
            while end - pos >= 2:
                b0 = view[pos]
                b1 = view[pos + 1]
                if b0 & 0x70:
                    raise _Fail(CLOSE_PROTOCOL_ERROR, "reserved bits set")
                if not b1 & 0x80:
                    raise _Fail(CLOSE_PROTOCOL_ERROR, "client frame not masked")
                opcode = b0 & 0x0F
                length = b1 & 0x7F
                if opcode >= OP_CLOSE:
                    if opcode > OP_PONG:
                        raise _Fail(CLOSE_PROTOCOL_ERROR, "unknown opcode")
                    if not b0 & 0x80:
                        raise _Fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                    if length > MAX_CONTROL_PAYLOAD:
                        raise _Fail(CLOSE_PROTOCOL_ERROR, "control frame too long")
                    head = 6
                else:
                    if opcode > OP_BINARY:
                        raise _Fail(CLOSE_PROTOCOL_ERROR, "unknown opcode")
                    if opcode:
                        if self._msg_opcode:
                            raise _Fail(CLOSE_PROTOCOL_ERROR, "expected a continuation frame")
                    elif not self._msg_opcode:
                        raise _Fail(CLOSE_PROTOCOL_ERROR, "unexpected continuation frame")
                    if length < 126:
                        head = 6
                    elif length == 126:
                        if end - pos < 4:
                            break
                        length = (view[pos + 2] << 8) | view[pos + 3]
                        head = 8
                    else:
                        if end - pos < 10:
                            break
                        length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                        if length >> 63:
                            raise _Fail(CLOSE_PROTOCOL_ERROR, "frame length has the high bit set")
                        head = 14
                    # Checked before the payload arrives, so an oversized message is never buffered.
                    if self._msg_size + length > self.max_message_size:
                        raise _Fail(CLOSE_MESSAGE_TOO_BIG, "message too big")
                start = pos + head
                stop = start + length
                if stop > end:
                    break
                payload = apply_mask(view[start:stop], view[start - 4 : start]) if length else b""
                pos = stop
                if b0 & 0x80 and opcode == OP_TEXT:
                    # Single-frame text: the common case gets its own branch; isascii() is a fast C scan
                    # that spares the decode for most Centrifugo JSON.
                    if not payload.isascii():
                        try:
                            payload.decode("utf-8")
                        except UnicodeDecodeError:
                            raise _Fail(CLOSE_INVALID_DATA, "invalid UTF-8 in text message") from None
                    events.append(Message(False, payload))
                elif opcode < OP_CLOSE:
                    self._data_frame(opcode, bool(b0 & 0x80), payload, events)
                elif opcode == OP_PING:
                    if self.auto_pong and self._state is _OPEN:
                        self._out += encode_frame(OP_PONG, payload)
                    events.append(Ping(payload))
                elif opcode == OP_PONG:
                    events.append(Pong(payload))
                else:
                    self._close_frame(payload, events)
                    # Anything after the peer's close frame is meaningless (RFC 6455 section 5.5.1).
                    self._release()
                    return events
        except _Fail as exc:
            self._fail(exc.code, exc.reason, events)
            return events
        if pos == end:
            self._buf = None
        elif buf is not None:
            if pos:
                del buf[:pos]
        else:
            self._buf = bytearray(memoryview(data)[pos:])
        return events

    def _data_frame(self, opcode: int, fin: bool, payload: bytes, events: list[Event]) -> None:
        """Handle a data frame other than a single-frame text message (already checked against the state)."""
        if opcode:
            if fin:
                events.append(Message(True, payload))
                return
            self._msg_opcode = opcode
            self._msg_parts = [payload]
            self._msg_size = len(payload)
        else:
            parts = self._msg_parts
            assert parts is not None
            parts.append(payload)
            self._msg_size += len(payload)
        if self._msg_opcode == OP_TEXT:
            self._check_text(payload, fin)
        if fin:
            parts = self._msg_parts
            assert parts is not None
            message = Message(self._msg_opcode == OP_BINARY, b"".join(parts))
            self._msg_opcode = 0
            self._msg_parts = None
            self._msg_size = 0
            self._utf8 = None
            events.append(message)

    def _check_text(self, fragment: bytes, final: bool) -> None:
        """Validate one fragment of a text message, carrying a split character over to the next one."""
        decoder = self._utf8
        if decoder is None:
            # An ASCII fragment cannot end inside a character, so no decoder state needs to exist yet.
            if fragment.isascii():
                return
            decoder = self._utf8 = _Utf8Decoder()
        try:
            decoder.decode(fragment, final)
        except UnicodeDecodeError:
            raise _Fail(CLOSE_INVALID_DATA, "invalid UTF-8 in text message") from None

    def _close_frame(self, payload: bytes, events: list[Event]) -> None:
        size = len(payload)
        if size == 1:
            raise _Fail(CLOSE_PROTOCOL_ERROR, "close frame too short")
        code: int | None = None
        reason = ""
        if size:
            code = (payload[0] << 8) | payload[1]
            if not is_valid_close_code(code):
                raise _Fail(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Fail(CLOSE_INVALID_DATA, "invalid UTF-8 in close reason") from None
        if self._state is _OPEN:
            # Echo the code as RFC 6455 section 5.5.1 suggests; a close without a code gets an empty one.
            self._out += encode_frame(OP_CLOSE, payload[:2])
        self._state = _CLOSED
        events.append(Close(code, reason))

    def _fail(self, code: int, reason: str, events: list[Event]) -> None:
        if self._state is _OPEN:
            self._out += encode_close(code, reason)
        self._state = _FAILED
        self._release()
        events.append(ProtocolError(code, reason))

    def _release(self) -> None:
        """Drop everything that only matters while input is still being parsed."""
        self._buf = None
        self._msg_opcode = 0
        self._msg_parts = None
        self._msg_size = 0
        self._utf8 = None
