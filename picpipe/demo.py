"""Sample images and a WebDAV server for `make demo`, so the demo needs no files and no account.

    python -m picpipe.demo images DIR     draw a few PNG images into DIR, print their paths
    python -m picpipe.demo dav DIR        serve DIR over WebDAV on 127.0.0.1 (a free port) with the
                                          user and password of profile demo-dav
                                          (PICPIPE_DEMO_DAV_USER, PICPIPE_DEMO_DAV_PASSWORD);
                                          print its URL on the first line, serve until stdin
                                          closes or the process is killed
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import zlib
from pathlib import Path

from picpipe.config import env_name

#: The profile whose credentials the demo server accepts (pp-backup --to demo-dav uses the same).
DAV_PROFILE = "demo-dav"

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


def serve_dav(folder: Path) -> None:
    """WsgiDAV (from the [test] extra, hence imported here) on an ephemeral port, Basic auth, one user.
    It stops when stdin reaches its end: the shell that started it as a coprocess exits, so the
    server cannot outlive the demo even when a step fails before the demo's trap kills it."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    user, password = (os.environ.get(env_name(DAV_PROFILE, key)) for key in ("user", "password"))
    if not user or not password:
        raise SystemExit(f"set {env_name(DAV_PROFILE, 'user')} and {env_name(DAV_PROFILE, 'password')}")
    folder.mkdir(parents=True, exist_ok=True)
    app = WsgiDAVApp({
        "provider_mapping": {"/": str(folder)},
        "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "verbose": 0,
        "logging": {"enable": False},
    })
    server = wsgi.Server(("127.0.0.1", 0), app)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    print(f"http://127.0.0.1:{server.bind_addr[1]}/", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop()


def main(argv: list[str]) -> int:
    from picpipe.cli import utf8_stdio

    utf8_stdio()  # the paths start the README's pipelines: UTF-8 like every command's stdout, whatever the locale
    commands = {"images": make_images, "dav": serve_dav}
    if len(argv) != 2 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    commands[argv[0]](Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
