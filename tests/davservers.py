"""Real WebDAV servers on 127.0.0.1 for tests: WsgiDAV in-process, rclone as a subprocess.

    with wsgidav(tmp_path, auth="digest") as dav: ...      # dav.url: http://127.0.0.1:PORT/
    with rclone_webdav(tmp_path) as dav: ...               # skips the test when rclone is missing

`dav.requests` lists (method, path) as WsgiDAV received them (rclone: not recorded).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USER, PASSWORD = "writer", "S3cret-dav-password"


@dataclass
class Dav:
    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def wsgidav(root: Path, auth: str = "basic") -> Iterator[Dav]:
    """WsgiDAV serving `root`, one user, Basic or Digest only."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    app = WsgiDAVApp({
        "provider_mapping": {"/": str(root)},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "http_authenticator": {"accept_basic": auth == "basic", "accept_digest": auth == "digest",
                               "default_to_digest": auth == "digest"},
        "verbose": 0,
        "logging": {"enable": False},
    })
    dav = Dav("")

    def logged(environ, start_response):  # type: ignore[no-untyped-def]
        dav.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return app(environ, start_response)

    server = wsgi.Server(("127.0.0.1", 0), logged, numthreads=8)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        dav.url = f"http://127.0.0.1:{server.bind_addr[1]}/"
        yield dav
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def rclone_webdav(root: Path) -> Iterator[Dav]:
    """`rclone serve webdav` (Debian package rclone; `make test` installs it as root)."""
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (apt-get install rclone)")
    port = free_port()
    process = subprocess.Popen(["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}",
                                "--user", USER, "--pass", PASSWORD], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("rclone serve webdav did not start") from None
                time.sleep(0.05)
        yield Dav(f"http://127.0.0.1:{port}/")
    finally:
        process.terminate()
        process.wait(10)
