"""Sample images and upload records for `make demo`, made here so the demo needs no account.

`python -m picpipe.demo DIR` draws a few PNG images into DIR/images, copies them under
content-hash names into DIR/host (a stand-in for an image host until pp-upload lands) and
prints one record per image, with a file:// URL, as pp-upload will.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

from picpipe.stream import dumps
from picpipe.timeutil import now_iso

SAMPLES = {
    "sunset.png": ((255, 94, 58), (46, 16, 101)),
    "截图 2024-05-01.png": ((240, 240, 240), (30, 120, 220)),
    "diagram (v2).png": ((20, 160, 90), (250, 230, 80)),
}


def png(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> bytes:
    """A vertical gradient as a minimal RGB PNG (no imaging library needed)."""
    rows = []
    for y in range(height):
        t = y / max(1, height - 1)
        pixel = bytes(round(a + (b - a) * t) for a, b in zip(top, bottom))
        rows.append(b"\x00" + pixel * width)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m picpipe.demo DIR", file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    images, host = root / "images", root / "host"
    images.mkdir(parents=True, exist_ok=True)
    host.mkdir(parents=True, exist_ok=True)
    for index, (name, (top, bottom)) in enumerate(SAMPLES.items()):
        width, height = 320 + 80 * index, 200
        path = images / name
        path.write_bytes(png(width, height, top, bottom))
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest[:16]}.png"
        shutil.copyfile(path, host / key)
        record = {
            "path": os.fspath(path), "source": os.fspath(path), "sha256": digest, "size": len(data),
            "width": width, "height": height, "format": "png", "mime": "image/png",
            "host": "demo", "key": key, "url": (host / key).as_uri(), "uploaded_at": now_iso(),
        }
        print(dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
