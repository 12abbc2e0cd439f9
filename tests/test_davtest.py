"""pp-davtest against real servers on 127.0.0.1: WsgiDAV (Basic, Digest), rclone serve webdav, the
Nutstore-like server, a plain web server (http.server), a TLS server with a private CA, and a
port where nothing listens. Faults are injected with small WSGI middlewares in front of WsgiDAV."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from davservers import (
    PASSWORD,
    USER,
    Dav,
    WsgiApp,
    free_port,
    nutstore_like,
    profile_env,
    rclone_webdav,
    reply,
    serving,
    wsgidav,
    wsgidav_app,
)

TEMP = re.compile(r"\.pp-davtest-[0-9a-f]{32}\.tmp$")
STEPS = ["connect", "options", "propfind", "mkcol", "put", "get", "delete"]


def dav_env(url: str, password: str = PASSWORD, **more: str) -> dict[str, str]:
    return profile_env("dav", url, password, **more)


def davtest(run, env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    """pp-davtest --target dav --json: (exit status, the report, stdout + stderr)."""
    result = run("pp-davtest", "--target", "dav", "--json", *args, extra_env=env)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout), result.stdout + result.stderr


def results(report: dict[str, Any]) -> dict[str, str]:
    return {step["step"]: step["result"] for step in report["steps"]}


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["step"] == name)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP.search(p.name)]


def methods(dav: Dav) -> list[str]:
    return [method for method, _ in dav.requests]


@pytest.fixture(params=["wsgidav-basic", "wsgidav-digest", "rclone"])
def server(request, tmp_path: Path) -> Iterator[tuple[str, Dav]]:
    """(kind, server) with an empty folder backup/; rclone keeps no request log."""
    root = tmp_path / "dav"
    (root / "backup").mkdir(parents=True)
    if request.param == "rclone":
        with rclone_webdav(root) as dav:
            yield request.param, dav
    else:
        with wsgidav(root, auth=request.param.split("-")[1]) as dav:
            yield request.param, dav


# -- healthy servers ------------------------------------------------------------------------------
def test_healthy_server_passes_every_step_and_leaves_nothing(run, server):
    kind, dav = server
    assert dav.root is not None
    result = run("pp-davtest", "--target", "dav", extra_env=dav_env(dav.url + "backup/"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:-1]}
    assert rows == {**dict.fromkeys(STEPS, "ok"), "mkcol": "skipped"}
    assert result.stdout.splitlines()[-1].startswith("OK: every step passed")
    assert "the temp file was removed" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert list((dav.root / "backup").iterdir()) == []
    if kind != "rclone":
        # What WsgiDAV received: the minimum, one temp file throughout. Digest costs two more
        # OPTIONS: Basic is tried first (401), then requests' Digest handshake (401, 200).
        auth = ["OPTIONS"] * (3 if kind == "wsgidav-digest" else 1)
        assert methods(dav) == [*auth, "PROPFIND", "PUT", "GET", "DELETE"]
        temp = {path for method, path in dav.requests if method in ("PUT", "GET", "DELETE")}
        assert len(temp) == 1 and TEMP.search(temp.pop())


def test_json_report_for_monitoring_with_url_and_user_flags(run, tmp_path):
    root = tmp_path / "dav"
    (root / "backup").mkdir(parents=True)
    with wsgidav(root) as dav:
        result = run("pp-davtest", "--url", dav.url + "backup/", "--user", USER, "--json",
                     extra_env={"PICPIPE_WEBDAV_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()  # one object, nothing else on stdout
    report = json.loads(line)
    assert report["target"] == "webdav" and report["url"] == dav.url + "backup/" and report["ok"] is True
    assert [s["step"] for s in report["steps"]] == STEPS
    assert all(s["ok"] is True and "error" not in s for s in report["steps"])
    assert all(isinstance(s["ms"], float) for s in report["steps"] if s["step"] != "mkcol")
    assert step(report, "mkcol") == {"step": "mkcol", "result": "skipped", "ok": True, "ms": None,
                                     "detail": "the folder exists"}
    assert set(step(report, "connect")["timings"]) == {"dns", "tcp", "tls"}
    assert step(report, "connect")["timings"]["tls"] is None and "tls not used" in step(report, "connect")["detail"]
    assert step(report, "options")["detail"] == "DAV 1,2"
    assert report["cleanup"]["needed"] is True and report["cleanup"]["ok"] is True
    assert TEMP.search(report["cleanup"]["file"]) and report["cleanup"]["file"].startswith(dav.url + "backup/")
    assert leftovers(root) == [] and PASSWORD not in result.stdout + result.stderr


# -- failures ------------------------------------------------------------------------------------
def test_wrong_password_fails_at_the_first_authenticated_step_with_the_app_password_hint(run, server):
    kind, dav = server
    wrong = "the-login-password-not-the-app-one"
    table = run("pp-davtest", "--target", "dav", extra_env=dav_env(dav.url + "backup/", wrong))
    assert table.returncode == 1 and "FAIL" in table.stdout and "app password" in table.stdout
    status, report, output = davtest(run, dav_env(dav.url + "backup/", wrong))
    assert status == 1 and report["ok"] is False
    # WsgiDAV asks for credentials on OPTIONS too; rclone answers OPTIONS to anyone.
    failed = "propfind" if kind == "rclone" else "options"
    assert [s["step"] for s in report["steps"] if s["result"] == "fail"] == [failed]
    error = step(report, failed)["error"]
    assert error["type"] == "auth" and error["status"] == 401
    assert "app password" in error["hint"] and "第三方应用管理" in error["hint"]
    after = STEPS[STEPS.index(failed) + 1:]
    assert all(results(report)[name] == "not run" for name in after)
    assert report["cleanup"] == {"file": report["cleanup"]["file"], "needed": False, "ok": None,
                                 "detail": "no temp file was written"}
    assert wrong not in output + table.stdout + table.stderr
    assert set(methods(dav)) <= {"OPTIONS", "PROPFIND"}


def test_missing_folder_is_made_with_one_mkcol(run, tmp_path):
    root = tmp_path / "dav"
    root.mkdir()
    with nutstore_like(root) as dav:
        status, report, _ = davtest(run, dav_env(dav.url + "picpipe/", vendor="nutstore"))
    assert status == 0, report
    assert step(report, "propfind")["detail"] == "the folder does not exist: MKCOL next"
    assert results(report)["mkcol"] == "ok" and (root / "picpipe").is_dir()
    assert list((root / "picpipe").iterdir()) == []
    assert methods(dav) == ["OPTIONS", "PROPFIND", "MKCOL", "PUT", "GET", "DELETE"]
    assert report["paced_ms"] > 0  # Nutstore is paced, and the pace is left out of the steps' times


def test_folder_and_parent_missing_options_404_does_not_stop_the_check(run, tmp_path):
    """WsgiDAV answers OPTIONS with 404 when the url's parent is missing too: PROPFIND and MKCOL
    decide, and the folders are made from the top, as pp-backup would."""
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        status, report, _ = davtest(run, dav_env(dav.url + "a/b/"))
    assert status == 0, report
    assert step(report, "options")["detail"].startswith("HTTP 404")
    assert (root / "a" / "b").is_dir() and leftovers(root) == []
    assert methods(dav) == ["OPTIONS", "PROPFIND", "MKCOL", "MKCOL", "MKCOL", "PUT", "GET", "DELETE"]


def test_nothing_listening_fails_at_connect(run):
    url = f"http://127.0.0.1:{free_port()}/dav/"
    status, report, _ = davtest(run, dav_env(url))
    assert status == 1
    error = step(report, "connect")["error"]
    assert error["type"] == "connection_refused" and "nothing listens" in error["hint"]
    assert all(results(report)[name] == "not run" for name in STEPS[1:])


def test_a_port_that_never_speaks_tls_is_a_timeout(run):
    with socket.socket() as silent:  # the kernel completes TCP connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/dav/"
        status, report, _ = davtest(run, dav_env(url, timeout="0.5"))
    assert status == 1
    error = step(report, "connect")["error"]
    assert error["type"] == "timeout" and error["message"].startswith("tls:")


@contextmanager
def web_server(folder: Path, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """http.server serving `folder` (a web server, not WebDAV); with `context`, over TLS."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    server.handle_error = lambda *args: None  # type: ignore[method-assign]  # refused handshakes
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_web_server_is_not_webdav(run, tmp_path):
    (tmp_path / "index.html").write_text("<h1>my blog</h1>")
    with web_server(tmp_path) as url:
        status, report, _ = davtest(run, dav_env(url))
    assert status == 1 and results(report)["connect"] == "ok"
    error = step(report, "options")["error"]
    assert error["type"] == "not_webdav" and error["status"] == 501 and "not a web page" in error["hint"]
    assert results(report)["propfind"] == "not run"


def tampered(app: WsgiApp, method: str, answer: Callable[[Callable[..., Any]], Iterable[bytes]],
             after_app: bool = False) -> WsgiApp:
    """`app`, but `method` on the temp file gets `answer`; with `after_app`, once the app has acted."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != method or not TEMP.search(environ["PATH_INFO"]):
            return app(environ, start_response)
        if after_app:
            b"".join(app(environ, lambda *args: None))
        return answer(start_response)

    return wrapped


@pytest.mark.parametrize("fault", ["get-mismatch", "get-500", "put-500-after-storing"])
def test_the_temp_file_is_deleted_whatever_failed_after_the_put(run, tmp_path, fault):
    root = tmp_path / "dav"
    root.mkdir()
    method, kind = fault.split("-")[0].upper(), fault.split("-")[1]
    answer = partial(reply, status=200, body=b"a proxy's idea of the file") if kind == "mismatch" else \
        partial(reply, status=500)
    app = tampered(wsgidav_app({"/": str(root)}, "basic"), method, answer, after_app=fault.endswith("storing"))
    with serving(app, Dav("", root=root), "/") as dav:
        status, report, _ = davtest(run, dav_env(dav.url, retries="0"))
    assert status == 1
    error = step(report, method.lower())["error"]
    assert error["type"] == ("corrupted" if kind == "mismatch" else "server_error")
    assert step(report, "delete")["detail"] == "removed" and report["cleanup"]["ok"] is True
    assert leftovers(root) == []
    assert methods(dav)[-1] == "DELETE" and methods(dav).count("DELETE") == 1


def test_nutstore_root_takes_no_files_so_the_url_is_refused_unsent(run, tmp_path):
    root = tmp_path / "dav"
    root.mkdir()
    with nutstore_like(root) as dav:
        result = run("pp-davtest", "--target", "dav", extra_env=dav_env(dav.url, vendor="nutstore"))
        assert dav.requests == []
    assert result.returncode == 2 and "directly in /dav/" in result.stderr and "folder below" in result.stderr
    assert "Traceback" not in result.stderr and leftovers(root) == []


def test_nutstore_rate_limit_stops_with_the_time_to_resume(run, tmp_path):
    root = tmp_path / "dav"
    (root / "picpipe").mkdir(parents=True)
    with nutstore_like(root, limit=2) as dav:
        result = run("pp-davtest", "--target", "dav", extra_env=dav_env(dav.url + "picpipe/", vendor="nutstore"))
        assert result.returncode == 1 and "rate_limited" in result.stdout and "again after" in result.stdout
        status, report, _ = davtest(run, dav_env(dav.url + "picpipe/", vendor="nutstore"))
    assert status == 1 and results(report)["put"] == "not run"
    error = step(report, "options")["error"]  # the second run is blocked from its first request
    assert error["type"] == "rate_limited" and error["code"] == "BlockedTemporarily" and error["resume_after"]
    # The blocked PUT stored nothing: no DELETE is spent on it, and none after the block.
    assert methods(dav) == ["OPTIONS", "PROPFIND", "PUT", "OPTIONS"] and leftovers(root) == []


# -- TLS -----------------------------------------------------------------------------------------
def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                  critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                                          False), critical=True)
        else:
            builder = (builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    files[0].write_bytes(certificate("picpipe test CA", ca_key, "picpipe test CA", ca_key, True)
                         .public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(certificate("127.0.0.1", key, "picpipe test CA", ca_key, False)
                         .public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def test_tls_with_an_untrusted_certificate_fails_at_connect_and_is_never_bypassed(run, tmp_path):
    ca, cert, key = certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    (tmp_path / "site").mkdir()
    with web_server(tmp_path / "site", context) as url:
        status, report, _ = davtest(run, dav_env(url))
        assert status == 1
        error = step(report, "connect")["error"]
        assert error["type"] == "tls" and "not trusted" in error["message"] and "never" in error["hint"]
        assert all(results(report)[name] == "not run" for name in STEPS[1:])  # no request was sent

        # Trusted the way requests trusts it (REQUESTS_CA_BUNDLE): TLS passes; http.server is no WebDAV.
        status, report, _ = davtest(run, {**dav_env(url), "REQUESTS_CA_BUNDLE": str(ca)})
    assert status == 1
    connect = step(report, "connect")
    assert connect["result"] == "ok" and "certificate verified" in connect["detail"]
    assert isinstance(connect["timings"]["tls"], float)
    assert step(report, "options")["error"]["type"] == "not_webdav"


# -- usage ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, env, says", [
    ((), {}, "give --target"),
    (("--target", "nowhere"), {}, "no profile named 'nowhere'"),
    (("--target", "pics"), {"PICPIPE_PICS_TYPE": "local", "PICPIPE_PICS_DIR": "."}, "not webdav"),
    (("--target", "dav"), {"PICPIPE_DAV_TYPE": "webdav"}, "needs url"),
    (("--url", "ftp://example.com/"), {}, "--url 'ftp://example.com/' is not a usable URL"),
])
def test_usage_and_configuration_errors_exit_2(run, args, env, says):
    result = run("pp-davtest", *args, extra_env=env)
    assert result.returncode == 2 and says in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr


def test_help_shows_examples(run):
    result = run("pp-davtest", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "--target nutstore" in result.stdout
