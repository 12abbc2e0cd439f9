"""Sample images and a stand-in image host for `make demo`, so the demo needs no account.

    python -m picpipe.demo images DIR     draw a few PNG images into DIR, print their paths
    python -m picpipe.demo upload DIR     copy each record's file into DIR under a content-hash
                                          name and add host, key, url (file://) and uploaded_at,
                                          as `pp-upload --host local` will once issue #4 lands
"""

from __future__ import annotations

import hashlib
import json
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


def make_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, (top, bottom)) in enumerate(SAMPLES.items()):
        path = folder / name
        path.write_bytes(png(320 + 80 * index, 200, top, bottom))
        print(path, flush=True)


def upload(host: Path) -> None:
    host.mkdir(parents=True, exist_ok=True)
    for line in sys.stdin:
        record = json.loads(line)
        if "error" not in record:
            data = Path(record["path"]).read_bytes()
            key = hashlib.sha256(data).hexdigest()[:16] + Path(record["path"]).suffix
            shutil.copyfile(record["path"], host / key)
            record.update(host="demo", key=key, url=(host / key).resolve().as_uri(), uploaded_at=now_iso())
        print(dumps(record), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("images", "upload"):
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    if argv[0] == "images":
        make_images(folder)
    else:
        upload(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
