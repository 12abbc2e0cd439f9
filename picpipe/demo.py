"""Sample images for `make demo`, so the demo needs no files and no account.

    python -m picpipe.demo images DIR     draw a few PNG images into DIR, print their paths
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

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


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "images":
        print(__doc__, file=sys.stderr)
        return 2
    make_images(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
