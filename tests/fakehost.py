"""The base of the fake image hosts in tests/fakes/: 127.0.0.1, port chosen by the OS.

A fake keeps objects in memory, logs every request, and **checks credentials the way the real
host documents them** (a subclass's `handle`), so a wrong secret or an expired token fails
here as it would there. Faults can be queued for the next requests:

    with serving(FakeQiniu) as server:
        server.faults += [Fault(503, headers={"Retry-After": "1"}), Fault.reset(), Fault.slow(3)]
        ... server.url, server.objects, server.requests ...
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass
class Fault:
    """What the server does to one request instead of handling it."""

    status: int = 0  # answer this status (after reading the body)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: bool = False  # read a few bytes of the body, then reset the connection
    delay: float = 0.0  # wait this long, then handle the request normally (the client has given up)

    @classmethod
    def reset_mid_body(cls) -> Fault:
        return cls(reset=True)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls(delay=seconds)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, str]] = {}  # per object: what the fake wants to remember
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.faults: list[Fault] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that give up (timeouts, resets) are expected here."""

    def count(self, method: str) -> int:
        """How many requests of `method` the fake has answered."""
        return sum(1 for each, _ in self.requests if each == method)


class FakeHandler(BaseHTTPRequestHandler):
    """Subclasses implement `handle_request`; this class reads bodies, logs, and applies faults."""

    server: FakeServer
    protocol_version = "HTTP/1.1"
    _body: bytes | None = None

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def __getattr__(self, name: str):  # do_PUT, do_POST, ...: one entry point for every method
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self._body = None
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
            fault = self.server.faults.pop(0) if self.server.faults else None
        if fault is not None:
            if fault.reset:
                self.rfile.read(min(16, int(self.headers.get("Content-Length") or 0)))
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault.status:
                self.body()
                self.reply(fault.status, fault.body, fault.headers)
                return
            time.sleep(fault.delay)
        self.handle_request()

    def handle_request(self) -> None:
        raise NotImplementedError

    def served(self, path: str) -> bool:
        """Answer `GET /i/NAME` with the stored object NAME, as the host's image domain serves
        uploads (True when it did): the fakes of hosts that name files themselves share it."""
        if not (path.startswith("/i/") and self.command == "GET"):
            return False
        data = self.server.objects.get(path[3:])
        self.reply(200 if data else 404, data or b"", content_type="image/png")
        return True

    def body(self) -> bytes:
        if self._body is None:
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def reply(self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.body()  # an unread request body would corrupt the next request on this connection
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True


@contextmanager
def serving(handler: type[FakeHandler], server_class: type[FakeServer] = FakeServer) -> Iterator[FakeServer]:
    server = server_class(handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)  # quick to stop
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def profile_env(name: str, **settings: Any) -> dict[str, str]:
    """The PICPIPE_<NAME>_<KEY> variables of a profile, as a user without a config file sets them."""
    return {f"PICPIPE_{name.upper()}_{key.upper()}": str(value) for key, value in settings.items()}


Host = TypeVar("Host")


@contextmanager
def host_maker(host_class: Callable[[dict[str, Any]], Host], **base: Any) -> Iterator[Callable[..., Host]]:
    """make(**extra) → a `host_class` on the `base` settings with `extra` over them, in this
    process (for what needs no command line); every one made is closed at the end."""
    made: list[Any] = []

    def make(**extra: Any) -> Host:
        made.append(host_class({**base, **extra}))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.close()
