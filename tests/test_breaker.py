"""The circuit breaker (picpipe.breaker in net.Client) against real servers on 127.0.0.1: one that
answers 500 to everything, one that accepts connections and never answers, WsgiDAV failing a few
requests then recovering, WsgiDAV restarting (503 for its first 4 s), and httpfixture's routes for
the rules (5xx and silence count, 4xx resets, throttling changes nothing, -j workers share one
breaker). Also defect 10 of issue 13: malformed URLs in --url, url, endpoint and base_url are usage
errors naming the value; and profile numbers out of range (inf, nan) are usage errors too."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import parse_jsonl
from davservers import Dav, free_port, profile_env, reply, serving, wsgidav, wsgidav_app
from httpfixture import closed_port, running
from picpipe.breaker import Breaker
from picpipe.errors import PicpipeError
from picpipe.net import Client
from test_upload import image

N = 20


def images(folder: Path, n: int = N) -> list[str]:
    """`n` distinct real PNGs (the publishing rule accepts only images)."""
    return [str(image(folder / f"i{i:02}.png", (i * 6, 255 - i * 6, 90))) for i in range(n)]


@contextmanager
def answering_500() -> Iterator[Dav]:
    """A server that answers every request with 500; dav.requests lists what it received."""
    with serving(lambda environ, start: reply(start, 500, b"the disk array is on fire\n", "text/plain"),
                 Dav(""), "/") as dav:
        yield dav


@contextmanager
def never_answering() -> Iterator[tuple[str, list[socket.socket]]]:
    """(url, connections): a server that accepts every connection and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/", held
    finally:
        listener.close()
        for sock in held:
            sock.close()
        thread.join(5)


def timed(run, *args: str, **kwargs) -> tuple[float, object]:
    started = time.monotonic()
    result = run(*args, **kwargs)
    return time.monotonic() - started, result


def error_types(records: list[dict]) -> list[str]:
    return [r["error"]["type"] for r in records]


def assert_tripped(records: list[dict], name: str, first: str, advice: str) -> int:
    """Every record failed: the first few (at least 3, over SPAN seconds) with the server's own
    failure, the rest circuit_open; how many got the first kind."""
    types = error_types(records)
    failed = types.count(first)
    assert len(records) == N and 3 <= failed <= 8 and types.count("circuit_open") == N - failed, types
    opened = next(r["error"] for r in records if r["error"]["type"] == "circuit_open")
    assert opened["message"].startswith(f"{name}: not sent: the server at http://127.0.0.1:")
    assert f"failed {opened['failures']} requests in a row for " in opened["message"] and opened["failures"] >= 3
    assert advice in opened["hint"] and "run the same command again" in opened["hint"]
    return failed


# -- pp-backup and pp-upload against dead servers ------------------------------------------------
def test_backup_to_a_server_answering_500_ends_in_seconds(run, tmp_path):
    """With the default retries (4) and -j 4: three or four requests through all their retries span
    SPAN (10 s), then nothing more is sent (the issue measured 151 s and 200 requests for 40 images)."""
    paths = images(tmp_path / "in")
    with answering_500() as dav:
        took, result = timed(run, "pp-backup", "--to", "nas", "-j", "4", "--ledger", str(tmp_path / "l.jsonl"),
                             *paths, extra_env=profile_env("nas", dav.url + "backup/"))
        sent = len(dav.requests)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert [r["path"] for r in records] == paths  # every record comes out, in order
    assert_tripped(records, "nas", "server_error", "pp-davtest --target nas")
    assert next(r["error"] for r in records if r["error"]["type"] == "server_error")["status"] == 500
    assert sent <= 5 * 8 and took < 30, (sent, took)


def test_backup_to_a_server_that_never_answers_ends_in_seconds(run, tmp_path):
    """A timeout is retried once, then once a request timed out the next ones get one try: four
    timeouts of 3 s (over SPAN) in all, whatever the number of images and workers."""
    paths = images(tmp_path / "in")
    with never_answering() as (url, connections):
        took, result = timed(run, "pp-backup", "--to", "nas", "-j", "4", "--ledger", str(tmp_path / "l.jsonl"),
                             *paths, extra_env=profile_env("nas", url + "backup/", timeout="3"))
        opened = len(connections)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert_tripped(records, "nas", "timeout", "pp-davtest --target nas")
    assert "no answer within 3 s" in next(r["error"]["message"] for r in records
                                         if r["error"]["type"] == "circuit_open")
    assert opened <= 4 + 2 and took < 25, (opened, took)


@pytest.mark.parametrize("host", ["webdav", "s3"])
def test_upload_to_a_server_answering_500_stops_for_every_http_host(run, tmp_path, host):
    paths = images(tmp_path / "in")
    with answering_500() as dav:
        env = profile_env("dav", dav.url + "img/") if host == "webdav" else {
            "PICPIPE_DAV_TYPE": "s3", "PICPIPE_DAV_ENDPOINT": dav.url.rstrip("/"), "PICPIPE_DAV_BUCKET": "imgs",
            "PICPIPE_DAV_REGION": "us-east-1", "PICPIPE_DAV_ACCESS_KEY": "AKIDEXAMPLE",
            "PICPIPE_DAV_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
        took, result = timed(run, "pp-upload", "--host", "dav", "-j", "1", *paths, extra_env=env)
        sent = len(dav.requests)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    advice = "pp-davtest --target dav" if host == "webdav" else "status page"
    assert_tripped(records, "dav", "server_error", advice)
    # -j 1: each request is tried 5 times, until 3 or more of them span SPAN seconds; then no more.
    failed = error_types(records).count("server_error")
    assert error_types(records)[:failed + 1] == ["server_error"] * failed + ["circuit_open"]
    assert sent == 5 * failed and took < 30, (sent, took)


def test_a_server_that_fails_twice_then_recovers_is_not_given_up(run, tmp_path):
    """Two failed requests (each through its retry) stay below the limit of 3; the next answer
    resets the count, and every image is copied."""
    root = tmp_path / "dav"
    (root / "backup").mkdir(parents=True)
    paths = images(tmp_path / "in", 6)
    with wsgidav(root) as dav:
        dav.fail_next(500, 4)  # requests 1 and 2: both tries
        result = run("pp-backup", "--to", "nas", "-j", "1", "--ledger", str(tmp_path / "l.jsonl"), *paths,
                     extra_env=profile_env("nas", dav.url + "backup/", retries="1"))
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == ["server_error"] * 2 + [None] * 4, result.stderr
    assert all(len(r["backups"]) == 1 for r in records[2:])
    assert result.returncode == 1 and "circuit_open" not in result.stdout + result.stderr


def test_breaker_zero_never_stops(run, tmp_path):
    paths = images(tmp_path / "in", 5)
    with answering_500() as dav:
        result = run("pp-backup", "--to", "nas", "-j", "1", "--ledger", str(tmp_path / "l.jsonl"), *paths,
                     extra_env=profile_env("nas", dav.url + "backup/", retries="0", breaker="0"))
    assert error_types(parse_jsonl(result.stdout)) == ["server_error"] * 5


@contextmanager
def restarting(root: Path, seconds: float) -> Iterator[Dav]:
    """WsgiDAV serving `root` that answers 503 (no Retry-After) for `seconds` after its first request."""
    app, first = wsgidav_app({"/": str(root)}, "basic"), []

    def down_a_while(environ, start_response):
        first.append(time.monotonic())
        if time.monotonic() - first[0] < seconds:
            return reply(start_response, 503, b"restarting\n", "text/plain")
        return app(environ, start_response)

    with serving(down_a_while, Dav("", root=root), "/") as dav:
        yield dav


@pytest.mark.parametrize("jobs", ["1", "8"])
def test_a_server_down_for_4_seconds_does_not_stop_the_run(run, tmp_path, jobs):
    """The review's case: a restart (503 for 4 s) fails no more than the requests whose every retry
    fell in it, and never opens the circuit (its failures do not span SPAN); 40 images."""
    root = tmp_path / "dav"
    (root / "backup").mkdir(parents=True)
    paths = images(tmp_path / "in", 40)
    with restarting(root, 4.0) as dav:
        took, result = timed(run, "pp-backup", "--to", "nas", "-j", jobs, "--ledger", str(tmp_path / "l.jsonl"),
                             *paths, extra_env=profile_env("nas", dav.url + "backup/"))
    records = parse_jsonl(result.stdout)
    assert [r["path"] for r in records] == paths and "Traceback" not in result.stderr
    types = [r.get("error", {}).get("type") for r in records]
    assert "circuit_open" not in types and set(types) <= {None, "server_error"}, types
    assert types.count(None) >= 32 and took < 30, (types, took)  # measured: 39 of 40 in 5-6 s
    assert len(list((root / "backup").rglob("*.png"))) == types.count(None)  # 40 distinct images


# -- the rules, on one client --------------------------------------------------------------------
def test_5xx_counts_4xx_resets_429_changes_nothing():
    breaker = Breaker("h", 3, "pp-davtest --target h", span=0)
    client = Client("h", retries=0, timeout=5, breaker=breaker)
    with running() as server:
        for path in ["/error", "/error", "/missing.png", "/error", "/error", "/ratelimited", "/forbidden"]:
            client.send("GET", server.url(path))  # a 404 or a 403 between failures starts the count again
        assert breaker.failures == 0 and breaker.error is None
        for path in ["/error", "/error", "/ratelimited", "/error"]:  # 429: neither a failure nor a success
            client.send("GET", server.url(path))
        assert breaker.error is not None
        before = len(server.requests)
        with pytest.raises(PicpipeError) as raised:
            client.send("GET", server.url("/image.png"))
        assert len(server.requests) == before  # not sent
    error = raised.value
    assert error.type == "circuit_open" and "(last: HTTP 500 Internal Server Error)" in error.message
    assert "pp-davtest --target h" in error.hint
    client.close()


@contextmanager
def throttling() -> Iterator[Dav]:
    """/retry-after: 503 with Retry-After: 0; /slowdown: S3's 503 SlowDown; anything else: 500."""
    slow_down = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/retry-after":
            start_response("503 Service Unavailable", [("Retry-After", "0"), ("Content-Length", "0")])
            return [b""]
        return reply(start_response, 503, slow_down, "application/xml") if path == "/slowdown" else \
            reply(start_response, 500, b"broken\n", "text/plain")

    with serving(app, Dav(""), "/") as dav:
        yield dav


def test_throttling_neither_counts_nor_resets():
    """429, a 503 with Retry-After and S3's SlowDown ask to slow down: the server is not failing."""
    breaker = Breaker("h", 2, span=0)
    client = Client("h", retries=0, timeout=5, breaker=breaker)
    with throttling() as server:
        for path in ["retry-after", "slowdown"] * 3:
            assert client.send("GET", server.url + path).status_code == 503
        assert breaker.failures == 0
        for path in ["error", "retry-after", "slowdown"]:
            client.send("GET", server.url + path)
        assert breaker.failures == 1 and breaker.error is None  # the throttling did not reset the count
        client.send("GET", server.url + "error")
        assert breaker.error is not None
    client.close()


def test_failures_open_the_circuit_only_once_they_span_some_time():
    breaker = Breaker("h", 2, span=1.0)
    client = Client("h", retries=0, timeout=5, breaker=breaker)
    with running() as server:
        for _ in range(5):
            client.send("GET", server.url("/error"))  # five in a row within milliseconds: a blip
        assert breaker.failures == 5 and breaker.error is None
        time.sleep(1.0)
        client.send("GET", server.url("/error"))  # failing since more than a second: open
        assert breaker.error is not None and "failed 6 requests in a row for 1 s" in breaker.error.message
    client.close()


def test_retries_are_decided_when_a_request_starts():
    """A request keeps its retries although others failed; after a timeout, the next request does
    not retry a timeout of its own (each try waited the whole timeout)."""
    breaker = Breaker("h", 10)
    client = Client("h", retries=2, timeout=0.3, breaker=breaker)
    with running() as server:
        for tries in (3, 6):  # the second request is retried as the first was
            client.send("GET", server.url("/error"))
            assert len(server.requests) == tries
        for tries in (8, 9):  # /slow: a timeout, retried once, then not at all
            with pytest.raises(PicpipeError, match="no answer within 0.3 s"):
                client.send("GET", server.url("/slow"))
            assert len(server.requests) == tries
        client.send("GET", server.url("/image.png"))
        assert not breaker.silent and breaker.failures == 0
    client.close()


def test_refused_connections_count():
    breaker = Breaker("h", 2, span=0)
    client = Client("h", retries=0, timeout=5, breaker=breaker)
    url = f"http://127.0.0.1:{closed_port()}/x"
    kinds = []
    for _ in range(3):
        with pytest.raises(PicpipeError) as raised:
            client.send("GET", url)
        kinds.append(raised.value.type)
    assert kinds == ["connection_refused", "connection_refused", "circuit_open"]
    assert "(last: connection refused)" in raised.value.message
    client.close()


def test_workers_share_one_breaker_and_stop_together():
    """8 threads on one client: once open, each thread sends at most the request it had under way."""
    breaker, threads, failed = Breaker("h", 3, span=0), 8, []
    client = Client("h", retries=0, timeout=5, breaker=breaker, jobs=threads)
    with running() as server:
        def worker() -> None:
            for _ in range(50):
                try:
                    client.send("GET", server.url("/error"))
                except PicpipeError as exc:
                    failed.append(exc.type)
                    return

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(30)
        sent = len(server.requests)
    assert failed == ["circuit_open"] * threads
    assert 3 <= sent <= 3 + threads - 1, sent
    client.close()


# -- defect 10: URLs -----------------------------------------------------------------------------
@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:99999/", "the port '99999' is not a number from 1 to 65535"),
    ("http://127.0.0.1:0/dav/", "the port '0'"),
    ("http://127.0.0.1:dav/", "the port 'dav'"),
    ("not a url", "it has no scheme"),
    ("dav.example.com/backup/", "it has no scheme"),
    ("ftp://example.com/", "it starts with ftp://"),
    ("http:///backup/", "it has no host name"),
    ("http://nas local/backup/", "the host name 'nas local' has a space"),
    ("http://[::1/backup/", "the host '[::1' is not a valid [IPv6] address"),
])
def test_davtest_malformed_url_is_a_usage_error_naming_it(run, url, says):
    result = run("pp-davtest", "--url", url)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert f"--url {url!r} is not a usable URL: {says}" in result.stderr, result.stderr
    assert "hint: give the WebDAV folder's address" in result.stderr and "internal" not in result.stderr


def test_davtest_malformed_profile_url_names_the_profile(run):
    result = run("pp-davtest", "--target", "nas", extra_env=profile_env("nas", "https://nas.local:70000/dav/"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "profile 'nas': url 'https://nas.local:70000/dav/' is not a usable URL" in result.stderr
    assert "PICPIPE_NAS_URL" in result.stderr


def test_davtest_unreachable_port_is_a_failed_check_not_an_internal_error(run):
    result = run("pp-davtest", "--url", f"http://127.0.0.1:{free_port()}/dav/")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "internal" not in result.stdout
    assert "connection_refused" in result.stdout and "FAILED at connect" in result.stdout


def test_a_space_in_a_webdav_path_is_fine(run, tmp_path):
    """The WebDAV url is escaped as typed (坚果云/我的 图床/): only the host may not hold one."""
    root = tmp_path / "dav"
    (root / "my pics").mkdir(parents=True)
    with wsgidav(root) as dav:
        result = run("pp-davtest", "--target", "nas", extra_env=profile_env("nas", dav.url + "my pics/"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("flag, value, key", [
    ("--endpoint", "http://127.0.0.1:99999", "endpoint"),
    ("--endpoint", "s3 .example.com", "endpoint"),
    ("--base-url", "img.example.com/i/", "base_url"),
    ("--base-url", "https://img.example.com/my pics/", "base_url"),
])
def test_upload_endpoint_and_base_url_are_checked_the_same_way(run, tmp_path, flag, value, key):
    env = {"PICPIPE_S3_BUCKET": "imgs", "PICPIPE_S3_REGION": "us-east-1", "PICPIPE_S3_ACCESS_KEY": "AKIDEXAMPLE",
           "PICPIPE_S3_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
    result = run("pp-upload", "--host", "s3", flag, value, str(image(tmp_path / "a.png", (1, 2, 3))), extra_env=env)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert f"profile 's3': {key} {value!r} is not a usable URL" in result.stderr, result.stderr
    assert f"PICPIPE_S3_{key.upper()} or {flag}" in result.stderr


# -- finding 11: profile numbers -----------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("breaker", "inf"), ("retries", "inf"), ("timeout", "nan"),
                                        ("timeout", "1e999"), ("timeout", "0"), ("retries", "2.5"),
                                        ("retries", "100"), ("pace", "-inf"), ("breaker", "three")])
def test_profile_numbers_out_of_range_are_usage_errors(run, key, value):
    result = run("pp-davtest", "--target", "nas",
                 extra_env=profile_env("nas", f"http://127.0.0.1:{closed_port()}/dav/", **{key: value}))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    assert f"profile 'nas': {key} = {value!r} is not a" in result.stderr and " from " in result.stderr
    assert f"PICPIPE_NAS_{key.upper()}" in result.stderr and "internal" not in result.stderr
