"""A local image host for tests that probe URLs: 127.0.0.1 only, port chosen by the OS.

    with running() as server:                 # or running(self_signed_context(tmp_path)) for HTTPS
        server.url("/image.png")              # http://127.0.0.1:PORT/image.png

Routes (HEAD and GET):
    /image.png 200, /missing.png 404, /error 500, /forbidden 403, /ratelimited 429
    /slow                 answers after SLOW_SECONDS
    /head-405, /head-reset  HEAD refused (405, TCP reset), GET 200
    /head-405-endless     HEAD 405, GET 200 whose body never arrives
    /redirect             302 to /image.png;  /loop: 302 to itself
    /concurrent/...       200 after CONCURRENT_SECONDS, counting simultaneous requests per Host
                          header and in total (ALL_HOSTS) in `max_in_flight`
    /flaky/...            the first request to each path hangs like /slow, later ones answer 200
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
SLOW_SECONDS = 2.0
CONCURRENT_SECONDS = 0.1
ALL_HOSTS = "*"


class LocalServer(ThreadingHTTPServer):
    """The server and what it saw; handler threads are daemons, so a hanging route never blocks exit."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.stopping = threading.Event()  # releases hanging routes at shutdown
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.user_agents: set[str] = set()
        self.hits: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()  # per Host header, and ALL_HOSTS

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that give up (timeouts, rejected certificates) are expected here; anything else is not."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real image hosts

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def do_HEAD(self) -> None:
        self.route()

    def do_GET(self) -> None:
        self.route()

    def route(self) -> None:
        srv, path, head = self.server, self.path.split("?")[0], self.command == "HEAD"
        with srv.lock:
            srv.requests.append((self.command, path))
            srv.user_agents.add(self.headers.get("User-Agent", ""))
            srv.hits[path] += 1
            first_hit = srv.hits[path] == 1
        if path == "/image.png":
            self.answer(200)
        elif path.startswith("/concurrent/"):
            self.stay_in_flight()
            self.answer(200)
        elif path == "/missing.png":
            self.answer(404)
        elif path == "/error":
            self.answer(500)
        elif path == "/forbidden":
            self.answer(403)
        elif path == "/ratelimited":
            self.answer(429)
        elif path == "/slow" or (path.startswith("/flaky/") and first_hit):
            srv.stopping.wait(SLOW_SECONDS)
            self.answer(200)
        elif path.startswith("/flaky/"):
            self.answer(200)
        elif path == "/head-405":
            self.answer(405 if head else 200)
        elif path == "/head-405-endless" and head:
            self.answer(405)
        elif path == "/head-405-endless":
            self.send_response(200)
            self.send_header("Content-Length", str(100 << 20))
            self.end_headers()
            srv.stopping.wait(SLOW_SECONDS)  # a client that reads the body times out
            self.close_connection = True
        elif path == "/head-reset" and head:
            # SO_LINGER 0: close() sends a TCP RST instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif path == "/head-reset":
            self.answer(200)
        elif path == "/redirect":
            self.answer(302, location="/image.png")
        elif path == "/loop":
            self.answer(302, location="/loop")
        else:
            self.answer(404)

    def stay_in_flight(self) -> None:
        """Stay in flight a moment, noting how many requests are in flight with this one."""
        srv, host = self.server, self.headers.get("Host", "")
        with srv.lock:
            for key in (host, ALL_HOSTS):
                srv.in_flight[key] += 1
                srv.max_in_flight[key] = max(srv.max_in_flight[key], srv.in_flight[key])
        time.sleep(CONCURRENT_SECONDS)
        with srv.lock:
            for key in (host, ALL_HOSTS):
                srv.in_flight[key] -= 1

    def answer(self, status: int, location: str | None = None) -> None:
        body = PNG if status == 200 else f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "image/png" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@contextmanager
def running(tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    """A LocalServer serving in a background thread, shut down on exit."""
    server = LocalServer(tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 (needs the openssl CLI)."""
    key, cert = directory / "k.pem", directory / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def closed_port() -> int:
    """A loopback port nothing listens on: bound by the OS, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
