"""A pyzmq socket served by the event loop without zmq.asyncio.

The socket's ``ZMQ_FD`` is watched with ``loop.add_reader``. That descriptor is edge-triggered and is
also consumed by sends and option changes, so every wake-up drains until ``ZMQ_EVENTS`` shows no more
input, and ``kick`` schedules one more drain after any send or ``setsockopt`` (a send can swallow the
edge of a pending read). Draining in batches instead of awaiting each message keeps the per-message cost
low on the hot paths (control requests, publications).
"""

from __future__ import annotations

import asyncio
import logging

import zmq

log = logging.getLogger("switchboard.zmq")


class SocketReader:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        self._loop = loop
        self._sock = sock
        self._fd: int = int(sock.getsockopt(zmq.FD))
        self._scheduled = False
        loop.add_reader(self._fd, self._drain)

    def _on_frames(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        self._scheduled = False
        sock = self._sock
        if sock.closed:
            return
        while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                self._on_frames(frames)
            except Exception:
                log.exception("handling a message from %s failed", type(self).__name__)

    def _kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _close_socket(self) -> None:
        if not self._sock.closed:
            self._loop.remove_reader(self._fd)
            self._sock.close(linger=0)
