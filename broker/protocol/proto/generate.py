"""Generate ``client_pb2.py`` from ``client.proto`` with the protoc bundled in ``grpcio-tools``.

The generated module is a build product, not source: it is tied to the protobuf runtime it was
generated for, so it is produced on the machine that runs it (``make install`` runs this module, and
the package's ``__init__`` runs it on first import when the file is missing). Output goes to a
temporary directory first and is moved into place with one ``os.replace``, so shards starting at the
same moment never import a half-written file.

Run ``python -m broker.protocol.proto.generate`` after editing ``client.proto``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "client.proto"
# protoc registers the file under its path relative to the include root; rooting it above ``broker``
# names it ``broker/protocol/proto/client.proto`` in the process-wide descriptor pool, which no other
# library's ``client.proto`` can collide with.
ROOT = HERE.parents[2]
RELATIVE = PROTO.relative_to(ROOT)
GENERATED = HERE / "client_pb2.py"


class GeneratorMissing(RuntimeError):
    """``grpcio-tools`` (which bundles protoc) is not installed."""


def generate(out_dir: Path = HERE) -> Path:
    """Compile ``client.proto`` into ``out_dir/client_pb2.py`` and return that path."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise GeneratorMissing(
            f"{GENERATED.name} is missing and cannot be generated: install grpcio-tools "
            "(`make install`, or `pip install grpcio-tools`) and run "
            "`python -m broker.protocol.proto.generate`"
        ) from exc
    target = out_dir / GENERATED.name
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".protoc-") as tmp:
        # ``cwd`` must not matter: protoc resolves RELATIVE against ROOT through ``-I``.
        rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp}", str(RELATIVE)])
        produced = Path(tmp) / RELATIVE.parent / GENERATED.name
        if rc != 0 or not produced.exists():
            raise RuntimeError(f"protoc failed on {PROTO} (exit status {rc})")
        os.replace(produced, target)
    return target


def main() -> int:
    try:
        path = generate()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"generated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
