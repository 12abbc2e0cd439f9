"""The WebDAV health check behind pp-davtest: seven timed steps against one profile's server.

connect (DNS, TCP and TLS apart, with plain sockets), OPTIONS (the DAV classes), PROPFIND Depth 0
on the profile's url, MKCOL of that folder only when it is missing, PUT of a small temp file, GET
it back and compare, DELETE it. The first failing step stops the check, but a temp file that may
have been stored is always deleted, and `cleanup()` says whether that worked. Every HTTP request
goes through picpipe.webdav (retries, Nutstore pacing, the circuit breaker, error records with
hints), and there are no more of them than the check needs: Nutstore counts them. The command
line and the report are picpipe.commands.davtest's.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picpipe.errors import PicpipeError

if TYPE_CHECKING:
    from picpipe.webdav import WebDav

STEPS = ("connect", "options", "propfind", "mkcol", "put", "get", "delete")
#: Error types after which a failed PUT may still have stored the file (the connection broke after
#: the body went out); so may a 5xx. A 4xx, a refused connection or a rate-limit block stored nothing.
MAYBE_STORED = frozenset({"timeout", "connection"})
#: Bytes of the temp file: enough to catch a truncating or rewriting proxy, cheap on any link.
PROBE_SIZE = 1024


@dataclass
class Step:
    """One line of the report. `result`: ok, fail (FAIL in the table), skipped or not run."""

    name: str
    result: str = "not run"
    ms: float | None = None
    detail: str = ""
    error: PicpipeError | None = None
    timings: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool | None:
        return None if self.result == "not run" else self.result != "fail"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.name, "result": self.result, "ok": self.ok, "ms": self.ms}
        if self.timings:
            out["timings"] = self.timings
        if self.error is not None:
            out["error"] = self.error.to_dict("davtest")
        elif self.detail:
            out["detail"] = self.detail
        return out


class DavCheck:
    """The steps against one WebDAV client, in order; `show` gets each step as its result is known
    (the ones that were not run too, at the end), for a report that grows as the check goes."""

    def __init__(self, dav: WebDav, show: Callable[[Step], None] = lambda step: None) -> None:
        self.dav, self.show = dav, show
        self.name = f".pp-davtest-{uuid.uuid4().hex}.tmp"
        self.steps = {name: Step(name) for name in STEPS}
        self.paced = 0.0  # seconds spent waiting for Nutstore's pace: ours, not the server's
        self.ms = 0.0
        if dav.client.pace is not None:
            dav.client.pace = self.counted(dav.client.pace)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps.values())

    def run(self) -> bool:
        """Every step that the results allow, timed in total; the client is closed afterwards."""
        settings = self.dav.client.settings(self.dav.root)  # proxies, CA bundle; imports requests untimed
        started = time.perf_counter()
        try:
            self.check(settings)
        finally:
            self.dav.close()
        self.ms = round((time.perf_counter() - started) * 1000, 1)
        return self.ok

    def check(self, settings: dict[str, Any]) -> None:
        """Steps in order until one fails; the DELETE whenever the PUT may have stored the file."""
        data = os.urandom(PROBE_SIZE)
        try:
            self.step("connect", lambda: self.connect(settings))
            self.step("options", self.options)
            missing = self.step("propfind", self.propfind)
            if missing:
                self.step("mkcol", self.mkcol)
            else:
                self.skip("mkcol", "the folder exists")
            self.step("put", lambda: self.put(data))
            self.step("get", lambda: self.get(data))
        except PicpipeError:
            pass  # the failed step is in the report; the rest stay "not run"
        finally:
            for step in list(self.steps.values())[:-1]:
                if step.result == "not run":
                    self.show(step)
            put = self.steps["put"]
            if put.result == "ok" or (put.error is not None and maybe_stored(put.error)):
                try:
                    self.step("delete", self.delete)
                except PicpipeError:
                    pass
            else:
                self.show(self.steps["delete"])

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        """Run one step and time it (time spent waiting for Nutstore's pace left out)."""
        step, paced = self.steps[name], self.paced
        started = time.perf_counter()
        try:
            result = work()
        except PicpipeError as exc:
            step.result, step.error = "fail", exc
            raise
        else:
            step.result = "ok"
            return result
        finally:
            step.ms = round((time.perf_counter() - started - (self.paced - paced)) * 1000, 1)
            self.show(step)

    def skip(self, name: str, why: str) -> None:
        step = self.steps[name]
        step.result, step.detail = "skipped", why
        self.show(step)

    def connect(self, settings: dict[str, Any]) -> None:
        step = self.steps["connect"]
        step.detail, step.timings = connect(self.dav.root, settings, min(10.0, self.dav.client.timeout))

    def options(self) -> None:
        """The DAV compliance classes. A 404 says only that the url is missing: PROPFIND and MKCOL
        decide then (WsgiDAV answers 404 when the url's parent is missing too)."""
        response = self.dav.send("OPTIONS", "", ok=(200, 204, 301, 302, 303, 307, 308, 404, 405, 501))
        status = response.status_code
        if status in (301, 302, 303, 307, 308):
            where = response.headers.get("Location", "?")
            raise PicpipeError("redirect", f"{self.dav.name}: OPTIONS answered HTTP {status}, a redirect to {where}",
                               "put the address it redirects to in the profile's url: uploads are never "
                               "redirected", status=status)
        classes = response.headers.get("DAV", "").strip()
        if status == 404:
            self.steps["options"].detail = "HTTP 404: the url does not exist (yet), DAV classes unknown"
        elif not classes:
            raise PicpipeError("not_webdav", f"{self.dav.name}: HTTP {status} without a DAV header to OPTIONS: "
                               "not a WebDAV endpoint", self.dav.hints[405], status=status)
        else:
            self.steps["options"].detail = f"DAV {classes}"

    def propfind(self) -> bool:
        """Whether the folder is missing (404/409); it must be a folder when it is there."""
        entries = self.dav.propfind("", 0)
        step = self.steps["propfind"]
        if entries is None:
            step.detail = "the folder does not exist: MKCOL next"
            return True
        itself = [e for e in entries if e.path == ""]
        if not itself:
            raise PicpipeError("bad_answer", f"{self.dav.name}: the PROPFIND answer does not describe the url "
                               f"({len(entries)} other entries)", "a proxy in front of the server may rewrite "
                               "paths: check the profile's url against the server's own address", status=207)
        if not itself[0].folder:
            raise PicpipeError("not_a_folder", f"{self.dav.name}: the url is a file, not a folder",
                               "set url to the folder the files go into, ending with /", status=207)
        step.detail = "the folder exists"
        return False

    def mkcol(self) -> None:
        self.dav.make_folder("")
        self.steps["mkcol"].detail = "the folder was created"

    def put(self, data: bytes) -> None:
        response = self.dav.put(self.name, data)
        self.steps["put"].detail = f"{self.name}: {len(data)} bytes (HTTP {response.status_code})"

    def get(self, data: bytes) -> None:
        back = self.dav.get(self.name)
        if back != data:
            same = "" if len(back) != len(data) else " of the same length"
            raise PicpipeError("corrupted", f"{self.dav.name}: read back {len(back)} bytes{same} that differ from "
                               f"the {len(data)} written", "the server or a proxy in front of it alters files: "
                               "backups there cannot be trusted; check the server, its storage and any proxy")
        self.steps["get"].detail = f"{len(back)} bytes, identical"

    def delete(self) -> None:
        removed = self.dav.delete(self.name)
        self.steps["delete"].detail = "removed" if removed else "not there (HTTP 404): nothing to remove"

    def counted(self, pace: Callable[[], None]) -> Callable[[], None]:
        """The client's pacer, with the time it waits added up: that wait is ours, not the server's."""
        def wait() -> None:
            started = time.perf_counter()
            pace()
            self.paced += time.perf_counter() - started
        return wait


    def cleanup(self) -> dict[str, Any]:
        """Whether the temp file is gone: the one thing a failed check must not leave behind."""
        delete, put = self.steps["delete"], self.steps["put"]
        out: dict[str, Any] = {"file": self.dav.href(self.name), "needed": delete.result != "not run"}
        out["ok"] = delete.ok
        if delete.error is not None:
            out["error"] = delete.error.to_dict("davtest")
            out["detail"] = "the temp file may remain on the server: delete it by hand"
        elif delete.result == "ok":
            out["detail"] = "the temp file was removed"
        elif put.result == "not run":
            out["detail"] = "no temp file was written"
        else:
            out["detail"] = "nothing to remove: the failed PUT stored nothing"
        return out



def maybe_stored(error: PicpipeError) -> bool:
    """Whether a failed PUT may have left the file on the server (so it must be deleted)."""
    status = error.extra.get("status")
    return error.type in MAYBE_STORED or (isinstance(status, int) and status >= 500 and error.type != "rate_limited")


def connect(url: str, settings: dict[str, Any], timeout: float) -> tuple[str, dict[str, float | None]]:
    """DNS, TCP connect and TLS handshake to the url's server, each timed: (detail, ms per part).

    Through a proxy that requests would use (HTTPS_PROXY, NO_PROXY) it is the proxy that is
    reached, and TLS is left to the HTTP steps. The certificate is checked against the same CA
    bundle requests uses (REQUESTS_CA_BUNDLE, else certifi's), never skipped.
    """
    from requests.utils import select_proxy

    parts = urllib.parse.urlsplit(url)
    proxy = select_proxy(url, settings.get("proxies") or {})
    via = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy) if proxy else parts
    host, port = via.hostname or "", via.port or (443 if via.scheme == "https" else 80)
    timings: dict[str, float | None] = {}

    def ms(started: float) -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    started = time.perf_counter()
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PicpipeError("dns", f"dns: the name {host} does not resolve ({exc.strerror})",
                           "check the host name in the profile's url (Nutstore: dav.jianguoyun.com) and this "
                           "computer's network and DNS") from None
    timings["dns"] = ms(started)

    started = time.perf_counter()
    sock, failure, connected = None, None, ""
    for family, kind, proto, _, address in addresses:
        candidate = socket.socket(family, kind, proto)
        candidate.settimeout(timeout)
        try:
            candidate.connect(address)
        except OSError as exc:
            candidate.close()
            failure = exc
        else:
            sock, connected = candidate, str(address[0])
            break
    if sock is None:
        raise tcp_error(failure, host, port, timeout)
    timings["tcp"] = ms(started)

    with sock:
        where = f"{host}:{port} ({connected})" + (" via proxy" if proxy else "")
        if parts.scheme != "https" or proxy:
            timings["tls"] = None
            why = "through the proxy: checked by the HTTP steps" if proxy else "http"
            return f"{where}: dns {timings['dns']:.0f} ms, tcp {timings['tcp']:.0f} ms, tls not used ({why})", \
                timings
        started = time.perf_counter()
        version = handshake(sock, parts.hostname or host, settings.get("verify", True), timeout)
        timings["tls"] = ms(started)
    return (f"{where}: dns {timings['dns']:.0f} ms, tcp {timings['tcp']:.0f} ms, tls {timings['tls']:.0f} ms "
            f"({version}, certificate verified)"), timings


def tcp_error(exc: OSError | None, host: str, port: int, timeout: float) -> PicpipeError:
    if isinstance(exc, ConnectionRefusedError):
        return PicpipeError("connection_refused", f"tcp: connection to {host}:{port} refused",
                            "nothing listens there: check the host and port in the profile's url, and that the "
                            "server runs")
    if isinstance(exc, TimeoutError):
        return PicpipeError("timeout", f"tcp: no connection to {host}:{port} within {timeout:g} s",
                            "a firewall, a wrong port or a server that is down: check the url, re-run later, or "
                            "raise the profile's timeout")
    reason = (exc.strerror if exc is not None else None) or str(exc)
    return PicpipeError("connection", f"tcp: cannot connect to {host}:{port}: {reason}",
                        "check this computer's network and the host in the profile's url")


def handshake(sock: socket.socket, hostname: str, verify: bool | str, timeout: float) -> str:
    """The TLS handshake with the default context and requests' CA bundle; the protocol version."""
    import ssl

    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
    folder = os.path.isdir(bundle)
    context = ssl.create_default_context(cafile=None if folder else bundle, capath=bundle if folder else None)
    try:
        with context.wrap_socket(sock, server_hostname=hostname) as tls:
            return tls.version() or "TLS"
    except ssl.SSLCertVerificationError as exc:
        raise PicpipeError("tls", f"tls: the certificate of {hostname} is not trusted ({exc.verify_message})",
                           "picpipe never turns verification off. A server with its own or a self-signed "
                           "certificate: put its CA certificate (PEM) in REQUESTS_CA_BUNDLE. Otherwise check the "
                           "host name in url, this computer's clock and any intercepting proxy") from None
    except ssl.SSLError as exc:
        raise PicpipeError("tls", f"tls: the handshake with {hostname} failed ({exc.reason or exc})",
                           "is that port serving plain HTTP? Then the url starts with http://; otherwise the "
                           "server's TLS setup is broken") from None
    except TimeoutError:
        raise PicpipeError("timeout", f"tls: no handshake with {hostname} within {timeout:g} s",
                           "the server accepts connections but does not speak TLS in time: check the port in url, "
                           "re-run later") from None
    except OSError as exc:
        raise PicpipeError("tls", f"tls: the connection broke during the handshake ({exc.strerror or exc})",
                           "is that port serving TLS? check the url's scheme and port") from None

