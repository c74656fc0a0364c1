"""Generated protobuf classes for the client protocol (``client.proto``).

``client_pb2`` is generated at build time and not committed. Importing this package generates it
when it is missing, so that a fresh editable checkout works without ``make install``; that needs
``grpcio-tools`` and otherwise fails with an error saying so. Use it as
``from broker.protocol.proto import client_pb2``.
"""

from __future__ import annotations

from pathlib import Path

if not (Path(__file__).resolve().parent / "client_pb2.py").exists():
    # Imported only when needed, so that `python -m broker.protocol.proto.generate` finds its module
    # not yet imported when the file exists.
    from broker.protocol.proto.generate import generate

    generate()
