"""Our fossil encoder against three decoders: ours, centrifuge-python's and centrifuge-js's."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from centrifuge.fossil import apply_delta as python_sdk_apply

from broker.delta.fossil import DeltaError, apply, checksum, encode, encode_within

NODE_DIR = Path(__file__).resolve().parents[1] / "sdk" / "node"
JS_APPLY = Path(__file__).with_name("apply_with_centrifuge_js.cjs")


def cases() -> list[tuple[bytes, bytes]]:
    """Pairs of (source, target): edits of JSON documents and of random bytes, and the edge cases."""
    rng = random.Random(7)
    doc = {"items": [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(80)]}
    base = json.dumps(doc).encode()
    out = [(b"", b""), (b"", b"abc"), (b"abc", b""), (base, base), (base, b"x" + base), (base, base + b"x")]
    out += [(base, base[:100] + base[200:]), (b"a" * 1000, b"a" * 999 + b"b"), (base, os.urandom(3000))]
    for _ in range(200):
        source = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        target = bytearray(source)
        for _ in range(rng.randint(0, 6)):
            at = rng.randint(0, len(target))
            target[at : at + rng.randint(0, 30)] = bytes(
                rng.getrandbits(8) for _ in range(rng.randint(0, 30))
            )
        out.append((source, bytes(target)))
    for n in range(50):
        edited = json.loads(base)
        edited["items"][n]["price"] = n * 100
        edited["items"][(n * 13) % 80]["name"] = "renamed é ✓"
        out.append((base, json.dumps(edited, ensure_ascii=False).encode()))
    return out


CASES = cases()


def test_round_trip_with_our_decoder() -> None:
    for source, target in CASES:
        assert apply(source, encode(source, target)) == target


def test_centrifuge_python_decodes_our_deltas() -> None:
    for source, target in CASES:
        assert bytes(python_sdk_apply(source, encode(source, target))) == target


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed for centrifuge-js")
def test_centrifuge_js_decodes_our_deltas() -> None:
    pairs = [[base64.b64encode(s).decode(), base64.b64encode(encode(s, t)).decode()] for s, t in CASES]
    done = subprocess.run(
        ["node", str(JS_APPLY), str(NODE_DIR)],
        input=json.dumps(pairs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    targets = json.loads(done.stdout)
    for (_, target), got in zip(CASES, targets, strict=True):
        assert isinstance(got, str), got
        assert base64.b64decode(got) == target


def test_small_edits_make_small_deltas() -> None:
    source = json.dumps(
        {"rows": [{"id": i, "name": f"row {i}", "score": i * 7} for i in range(100)]}
    ).encode()
    target = source.replace(b'"score": 280', b'"score": 281')
    assert len(source) > 4000 and len(encode(source, target)) < 40


def test_checksum_and_format_details() -> None:
    assert checksum(b"") == 0
    assert checksum(b"\x00\x00\x00\x01\x00\x00\x00\x02") == 3
    assert checksum(b"\x01") == 1 << 24  # the last word is padded with zeros on the right
    delta = encode(b"", b"hi")  # nothing to copy from: the target length, one insert, the checksum
    assert checksum(b"hi") == 0x68690000  # "hi" padded to one big-endian word
    assert delta == b"2\n2:hi" + b"1dQG00;"  # 0x68690000 in base 64: 1, 40 (d), 26 (Q), 16 (G), 0, 0


@pytest.mark.parametrize(
    "delta",
    [b"", b"3", b"3\n3:ab", b"3\n3@0,", b"3\n3:abc1;", b"3\n2@5,1:c0;", b"3\n3$abc0;", b"3\n9:abc"],
)
def test_bad_deltas_are_refused(delta: bytes) -> None:
    with pytest.raises(DeltaError):
        apply(b"abcdef", delta)


def test_a_limit_ends_the_scan_early() -> None:
    source, target = os.urandom(5000), os.urandom(5000)
    assert encode_within(source, target, 2500) is None
    edited = source[:2000] + b"x" + source[2000:]
    delta = encode_within(source, edited, 100)
    assert delta is not None and apply(source, delta) == edited
