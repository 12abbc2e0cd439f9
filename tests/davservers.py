"""Real WebDAV servers on 127.0.0.1 for tests: WsgiDAV in-process, rclone and Apache as subprocesses.

    with wsgidav(tmp_path, auth="digest") as dav: ...      # dav.url: http://127.0.0.1:PORT/
    with nutstore_like(tmp_path, limit=50) as dav: ...     # dav.url: http://127.0.0.1:PORT/dav/
    with rclone_webdav(tmp_path) as dav: ...               # skips the test when rclone is missing
    with apache_dav(tmp_path, auth="digest") as dav: ...   # Apache mod_dav; skips when apache2 is missing

On the WsgiDAV servers (`wsgidav`, `nutstore_like`) the test holds the controls:
`dav.requests` lists (method, path) as the server received them, blocked and failed ones included;
`dav.fail_next(500)` / `dav.fail_next(503, 2)` / `dav.fail_next("reset")` makes the next requests
fail (a "reset" reads half the body, then drops the connection); `dav.limit = N` answers every
request after N served ones with Nutstore's 503 BlockedTemporarily, `dav.limit = None` lifts it.
`dav.stop()` stops any of these servers (later requests: connection refused).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import fakehost

USER, PASSWORD = "writer", "S3cret-dav-password"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def sabre_error(exception: str, message: str) -> bytes:
    """An error body the way Nutstore (a SabreDAV server) writes it."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><d:error xmlns:d="DAV:" xmlns:s="http://ns.jianguoyun.com">'
            f"<s:exception>{exception}</s:exception><s:message>{message}</s:message></d:error>").encode()


#: Nutstore's answer (with 503) once an account spent its 600 requests per 30 minutes.
BLOCKED = sabre_error("BlockedTemporarily", "Too many requests are received recently")


def profile_env(name: str, url: str, password: str = PASSWORD, **settings: str) -> dict[str, str]:
    """The PICPIPE_<NAME>_* variables of a webdav profile at `url`, logged in as USER."""
    return fakehost.profile_env(name, **{"type": "webdav", "url": url, "user": USER, "password": password, **settings})


@dataclass
class Dav:
    """A running server: its URL, what it received, and the test's controls (module docstring)."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None
    limit: int | None = None
    served: int = 0  # requests that got past the limit
    faults: list[int | str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    stopper: Callable[[], None] | None = field(default=None, repr=False)

    def fail_next(self, status: int | str, n: int = 1) -> None:
        """The next `n` requests get `status` (an empty answer) or, for "reset", a dropped connection."""
        with self.lock:
            self.faults.extend([status] * n)

    def stop(self) -> None:
        if self.stopper is not None:
            self.stopper()
            self.stopper = None


def reply(start_response: Callable[..., Any], status: int, body: bytes = b"",
          content_type: str = "text/xml; charset=UTF-8") -> list[bytes]:
    start_response(f"{status} {http.HTTPStatus(status).phrase}",
                   [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def request_path(environ: dict[str, Any]) -> str:
    """PATH_INFO as the client meant it (PEP 3333 hands it over as latin-1 decoded bytes)."""
    return str(environ.get("PATH_INFO", "/")).encode("latin-1").decode("utf-8", "replace")


def controlled(app: WsgiApp, dav: Dav) -> WsgiApp:
    """The test's side of every WsgiDAV server here: the log, the limit, the faults on cue."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        dav.requests.append((environ["REQUEST_METHOD"], request_path(environ)))
        with dav.lock:
            if dav.limit is not None and dav.served >= dav.limit:
                return reply(start_response, 503, BLOCKED)
            dav.served += 1
            fault = dav.faults.pop(0) if dav.faults else None
        if fault == "reset":
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0) // 2)
            # cheroot drops the connection without an answer (the unread rest of the body makes it a RST)
            raise ConnectionResetError(errno.ECONNRESET, "reset by the test")
        if isinstance(fault, int):
            return reply(start_response, fault, http.HTTPStatus(fault).phrase.encode(), "text/plain")
        return app(environ, start_response)

    return wrapped


def wsgidav_app(mapping: dict[str, str], auth: str) -> WsgiApp:
    """WsgiDAV with one user, Basic or Digest only."""
    from wsgidav.wsgidav_app import WsgiDAVApp

    app: WsgiApp = WsgiDAVApp({
        "provider_mapping": mapping,
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "http_authenticator": {"accept_basic": auth == "basic", "accept_digest": auth == "digest",
                               "default_to_digest": auth == "digest"},
        "verbose": 0,
        "logging": {"enable": False},
    })
    return app


@contextmanager
def serving(app: WsgiApp, dav: Dav, path: str) -> Iterator[Dav]:
    """Serve `app` behind the test's controls on an ephemeral port; dav.url ends with `path`."""
    from cheroot import wsgi

    server = wsgi.Server(("127.0.0.1", 0), controlled(app, dav), numthreads=8)
    server.expiration_interval = 0.05  # the selector's poll: stop() takes up to this long (default 0.5 s)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    dav.url, dav.stopper = f"http://127.0.0.1:{server.bind_addr[1]}{path}", server.stop
    try:
        yield dav
    finally:
        dav.stop()


@contextmanager
def wsgidav(root: Path, auth: str = "basic") -> Iterator[Dav]:
    """WsgiDAV serving `root` at /, one user, Basic or Digest only."""
    with serving(wsgidav_app({"/": str(root)}, auth), Dav("", root=root), "/") as dav:
        yield dav


def nutstore_rules(app: WsgiApp, root: Path, max_size: int, prefix: str = "/dav") -> WsgiApp:
    """Nutstore's deviations (reference/webdav.md §2) in front of WsgiDAV serving `root` at `prefix`."""
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], request_path(environ)
        if not (path + "/").startswith(prefix + "/"):
            return app(environ, start_response)
        if environ.get("HTTP_AUTHORIZATION") != basic:
            return app(environ, start_response)  # WsgiDAV answers 401, as Nutstore does before anything else
        rel = path[len(prefix):].strip("/")
        if method in ("GET", "HEAD") and (root / rel).is_dir():
            return reply(start_response, 403)
        if method == "PUT" and "/" not in rel:
            return reply(start_response, 403)  # no files directly under /dav/
        if method in ("PUT", "MKCOL", "GET") and rel and not (root / rel).parent.is_dir():
            return reply(start_response, 409, sabre_error("AncestorsNotFound", "Ancestors not found"))
        if method == "PUT" and int(environ.get("CONTENT_LENGTH") or 0) > max_size:
            return reply(start_response, 413)
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").lower() == "infinity":
            environ["HTTP_DEPTH"] = "1"  # answered shallow, not refused
        return app(environ, start_response)

    return wrapped


@contextmanager
def nutstore_like(root: Path, limit: int | None = None, max_size: int = 500 * 2**20) -> Iterator[Dav]:
    """A server that behaves like Nutstore (dav.jianguoyun.com): Basic only, `root` served at /dav/,
    403 on HEAD/GET of folders and on files directly in /dav/, 409 AncestorsNotFound, 413 above
    `max_size`, Depth infinity answered as 1, 503 BlockedTemporarily after `limit` requests."""
    app = nutstore_rules(wsgidav_app({"/dav": str(root)}, "basic"), root, max_size)
    with serving(app, Dav("", root=root, limit=limit), "/dav/") as dav:
        yield dav


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


@contextmanager
def subprocess_server(args: list[str], port: int, dav: Dav, what: str) -> Iterator[Dav]:
    """A server run as a child process until the test ends (or dav.stop())."""
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        process.terminate()
        process.wait(10)

    dav.stopper = stop
    try:
        wait_for_port(port, process, what)
        yield dav
    finally:
        dav.stop()


@contextmanager
def rclone_webdav(root: Path) -> Iterator[Dav]:
    """`rclone serve webdav` (Debian package rclone; `make test` installs it as root)."""
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (apt-get install rclone)")
    port = free_port()
    args = ["rclone", "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}", "--user", USER, "--pass",
            PASSWORD, "--config", os.devnull]
    with subprocess_server(args, port, Dav(f"http://127.0.0.1:{port}/", root=root), "rclone serve webdav") as dav:
        yield dav


APACHE, APACHE_MODULES = Path("/usr/sbin/apache2"), Path("/usr/lib/apache2/modules")
APACHE_CONF = """\
ServerRoot "{tmp}"
DefaultRuntimeDir "{tmp}/run"
PidFile "{tmp}/run/httpd.pid"
ErrorLog "{tmp}/run/error.log"
Listen 127.0.0.1:{port}
ServerName localhost
{users}
{modules}
DavLockDB "{tmp}/lock/DavLock"
DocumentRoot "{data}"
<Directory "{data}">
    Dav On
    AuthType {auth}
    AuthName "webdav"
    AuthUserFile "{tmp}/users"
    Require valid-user
</Directory>
"""


@contextmanager
def apache_dav(root: Path, auth: str = "basic") -> Iterator[Dav]:
    """Apache httpd with mod_dav_fs serving `root` at / (Debian package apache2; reference §4.4).

    Apache will not serve as root: under root (CI) its workers run as `nobody`, which cannot reach
    into pytest's private tmp folders, so `root` becomes for the test a link to a data folder
    `nobody` owns, and is a plain folder again (with what was written) when the server stops."""
    modules = ["mpm_event", "authn_core", "authn_file", "authz_core", "authz_user", "dav", "dav_fs",
               "auth_basic" if auth == "basic" else "auth_digest"]
    missing = [m for m in modules if not (APACHE_MODULES / f"mod_{m}.so").exists()]
    if not APACHE.exists() or missing:
        pytest.skip(f"Apache httpd or its modules {missing} are missing (apt-get install apache2)")
    if auth == "basic":
        line = f"{USER}:{{SHA}}" + base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    else:
        line = f"{USER}:webdav:" + hashlib.md5(f"{USER}:webdav:{PASSWORD}".encode()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="picpipe-apache-") as name:
        tmp, port = Path(name), free_port()
        (tmp / "run").mkdir()
        (tmp / "lock").mkdir()
        (tmp / "users").write_text(line + "\n")
        as_root, data, users = os.geteuid() == 0, root, ""
        if as_root:
            import pwd

            nobody = pwd.getpwnam("nobody")
            data, users = tmp / "data", f"User #{nobody.pw_uid}\nGroup #{nobody.pw_gid}"
            shutil.copytree(root, data)
            for path in [data, *data.rglob("*"), tmp / "lock"]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            tmp.chmod(0o711)
            (tmp / "users").chmod(0o644)
            shutil.rmtree(root)
            root.symlink_to(data, target_is_directory=True)
        conf = APACHE_CONF.format(
            tmp=tmp, port=port, data=data, users=users,
            auth="Basic" if auth == "basic" else "Digest\n    AuthDigestProvider file",
            modules="\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in modules))
        (tmp / "httpd.conf").write_text(conf)
        args = [str(APACHE), "-f", str(tmp / "httpd.conf"), "-DFOREGROUND"]
        try:
            with subprocess_server(args, port, Dav(f"http://127.0.0.1:{port}/", root=root), "apache2") as dav:
                yield dav
        finally:
            if as_root:
                root.unlink()
                shutil.move(data, root)
