"""pp-davtest: health-check a WebDAV target before trusting it with backups.

Seven steps, each timed: connect (DNS, TCP and TLS apart, with plain sockets), OPTIONS (the DAV
classes), PROPFIND Depth 0 on the profile's url, MKCOL of that folder only when it is missing,
PUT of a small temp file, GET it back and compare, DELETE it. The first failing step stops the
check, but a temp file that may have been stored is always deleted, and the report says whether
that worked. Every HTTP request goes through picpipe.webdav (retries, Nutstore pacing, error
records with hints), and there are no more of them than the check needs: Nutstore counts them.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picpipe.cli import EXIT_OK, EXIT_RECORD_ERRORS, Command
from picpipe.errors import PicpipeError, UsageError

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


class DavTestCommand(Command):
    prog = "pp-davtest"
    dav: WebDav
    description = (
        "Check that a WebDAV target works before backing up to it: connect (DNS, TCP, TLS),\n"
        "OPTIONS, PROPFIND Depth 0 on the profile's url, MKCOL of that folder if it is missing,\n"
        "PUT a small temp file (.pp-davtest-<uuid>.tmp), GET it back and compare, DELETE it.\n"
        "Each step is timed; the check stops at the first failure, with a hint, but the temp file\n"
        "is always deleted once it may exist. One request per step (Nutstore counts them): 5,\n"
        "6 with MKCOL; Digest servers take 2 more for the handshake.\n"
        "Exit status: 0 every step passed, 1 a step failed, 2 usage or configuration error."
    )
    examples = """\
  pp-davtest --target nutstore
  pp-davtest --target nas --json | jq '.steps[] | select(.ok == false)'
  pp-davtest --target nutstore && ls *.png | pp-backup --to nutstore
  PICPIPE_WEBDAV_PASSWORD=app-password pp-davtest --url https://dav.jianguoyun.com/dav/picpipe/ --user me@example.com
  PICPIPE_NAS_TYPE=webdav PICPIPE_NAS_URL=https://nas.local/dav/backup/ PICPIPE_NAS_USER=me \\
    PICPIPE_NAS_PASSWORD=... pp-davtest --target nas
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", metavar="PROFILE",
                            help="the webdav profile: a [profiles.NAME] of the config or PICPIPE_NAME_* variables")
        parser.add_argument("--url", help="the WebDAV folder to check (overrides the profile's url); without "
                            "--target the profile is 'webdav' (PICPIPE_WEBDAV_PASSWORD holds the password)")
        parser.add_argument("--user", help="the user name (overrides the profile's user); the password is never "
                            "taken from the command line")
        parser.add_argument("--json", action="store_true", help="print one JSON object (for monitoring) "
                            "instead of the table")

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.webdav import dav_for

        if not args.target and not args.url:
            raise UsageError("nothing to check: give --target PROFILE (a webdav profile) or --url URL",
                             "for example: pp-davtest --target nutstore; see --help")
        profile = self.config.profile(args.target or "webdav", {"url": args.url, "user": args.user})
        self.dav = dav_for(profile, "davtest")
        self.args = args
        self.name = f".pp-davtest-{uuid.uuid4().hex}.tmp"
        self.steps = {name: Step(name) for name in STEPS}
        self.paced = 0.0
        if self.dav.client.pace is not None:
            self.dav.client.pace = self.counted(self.dav.client.pace)
        who = f" as {profile['user']}" if profile.get("user") else ""
        self.say(f"checking {self.dav.root}{who} (profile {profile['name']})")
        if not args.json:
            self.say(f"{'step':<9} {'result':<8} {'ms':>7}  detail")
        settings = self.dav.client.settings(self.dav.root)  # proxies, CA bundle; imports requests untimed
        started = time.perf_counter()
        try:
            self.check(settings)
        finally:
            self.dav.close()
        total = round((time.perf_counter() - started) * 1000, 1)
        ok = all(step.ok for step in self.steps.values())
        self.report(profile["name"], ok, total)
        return EXIT_OK if ok else EXIT_RECORD_ERRORS

    # -- the steps ---------------------------------------------------------------------------
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

    # -- the report --------------------------------------------------------------------------
    def say(self, line: str) -> None:
        """A line of the table on stdout; in --json mode, progress on stderr unless -q."""
        from picpipe import console
        from picpipe.redact import redact_text

        if self.args.json:
            if not self.args.quiet:
                console.say(line)
            return
        sys.stdout.write(redact_text(line) + "\n")
        sys.stdout.flush()

    def show(self, step: Step) -> None:
        if self.args.json and step.result != "fail":
            return
        ms = "-" if step.ms is None else f"{step.ms:.0f}"
        detail = step.detail
        if step.error is not None:
            error = step.error
            detail = f"{error.type}: {error.message}" + (f"\n{'':<28}hint: {error.hint}" if error.hint else "")
        result = "FAIL" if step.result == "fail" else step.result
        self.say(f"{step.name:<9} {result:<8} {ms:>7}  {detail}".rstrip())

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

    def report(self, target: str, ok: bool, total: float) -> None:
        from picpipe.stream import encode_line

        cleanup = self.cleanup()
        if self.args.json:
            sys.stdout.buffer.write(encode_line({
                "target": target, "url": self.dav.root, "ok": ok, "ms": total, "paced_ms": round(self.paced * 1000, 1),
                "steps": [step.to_dict() for step in self.steps.values()], "cleanup": cleanup}))
            sys.stdout.flush()
        took = f"{total:.0f} ms" + (f", {self.paced * 1000:.0f} of them waiting for the pace" if self.paced else "")
        if ok:
            summary = f"OK: every step passed in {took}; {cleanup['detail']}"
        else:
            failed = [s.name for s in self.steps.values() if s.result == "fail"]
            summary = f"FAILED at {', '.join(failed)} ({took}); cleanup: {cleanup['detail']}"
            if cleanup.get("error"):
                summary += f": {cleanup['file']}"
        self.say(summary)


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


def main() -> int:
    return DavTestCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
