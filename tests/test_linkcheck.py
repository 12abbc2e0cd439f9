"""picpipe.linkcheck against a local image host: every way a link dies, and the concurrency limits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import ROOT
from httpfixture import ALL_HOSTS, LocalServer, closed_port, running, self_signed_context
from picpipe import __version__
from picpipe.linkcheck import check_urls, probe_url
from picpipe.net import new_session

FAST = 0.5  # seconds; the slow routes take SLOW_SECONDS (2 s)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only: a proxy from the environment must not see these requests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with running() as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = new_session(4, "link check")
    yield s
    s.close()


def test_session_settings():
    s = new_session(32, "link check")
    assert s.headers["User-Agent"] == f"picpipe/{__version__} (+link check)"
    assert s.verify is True and s.trust_env is True  # TLS verified, proxy variables honoured
    for scheme in ("http://", "https://"):
        assert s.get_adapter(scheme + "x/").poolmanager.connection_pool_kw["maxsize"] == 32
    s.close()


def test_import_does_not_load_requests():
    code = "import sys, picpipe.linkcheck; print('requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_live_image(server, session):
    probe = probe_url(server.url("/image.png"), session, timeout=FAST)
    assert (probe.ok, probe.status, probe.method, probe.error) == (True, 200, "HEAD", None)
    assert server.requests == [("HEAD", "/image.png")]  # no GET, no body when HEAD works
    assert server.user_agents == {f"picpipe/{__version__} (+link check)"}


@pytest.mark.parametrize(
    ("path", "status", "method", "hint_word"),
    [
        ("/missing.png", 404, "HEAD", "pp-mark find --url"),
        ("/error", 500, "HEAD", "re-run later"),
        ("/ratelimited", 429, "HEAD", "--per-host"),
        ("/forbidden", 403, "GET", "hotlink"),  # HEAD refused, GET refused too: dead
    ],
)
def test_http_errors(server, session, path, status, method, hint_word):
    probe = probe_url(server.url(path), session, timeout=FAST)
    assert (probe.ok, probe.status, probe.method) == (False, status, method)
    assert probe.error is not None and probe.error.type == f"http_{status}"
    assert f"127.0.0.1:{server.port}" in probe.error.message
    assert hint_word in (probe.error.hint or "")


def test_head_405_falls_back_to_get(server, session):
    probe = probe_url(server.url("/head-405"), session, timeout=FAST)
    assert (probe.ok, probe.status, probe.method) == (True, 200, "GET")
    assert server.requests == [("HEAD", "/head-405"), ("GET", "/head-405")]


def test_get_fallback_reads_no_body(server, session):
    probe = probe_url(server.url("/head-405-endless"), session, timeout=FAST, retries=0)
    assert (probe.ok, probe.status, probe.method) == (True, 200, "GET")
    assert probe.elapsed_ms < FAST * 1000


def test_head_reset_falls_back_to_get(server, session):
    probe = probe_url(server.url("/head-reset"), session, timeout=FAST, retries=2)
    assert (probe.ok, probe.status, probe.method) == (True, 200, "GET")
    assert server.requests == [("HEAD", "/head-reset"), ("GET", "/head-reset")]  # the reset is not retried


def test_redirect_to_live_image(server, session):
    probe = probe_url(server.url("/redirect"), session, timeout=FAST)
    assert (probe.ok, probe.status, probe.method) == (True, 200, "HEAD")
    assert server.requests == [("HEAD", "/redirect"), ("HEAD", "/image.png")]


def test_redirect_loop(server, session):
    probe = probe_url(server.url("/loop"), session, timeout=FAST)
    assert not probe.ok and probe.status is None
    assert probe.error is not None and probe.error.type == "too_many_redirects"


def test_slow_host_times_out(server, session):
    probe = probe_url(server.url("/slow"), session, timeout=FAST, retries=0)
    assert not probe.ok and probe.status is None and probe.method == "HEAD"
    assert probe.error is not None and probe.error.type == "timeout"
    assert f"127.0.0.1:{server.port} did not answer within 0.5 s" == probe.error.message
    assert FAST * 1000 <= probe.elapsed_ms < 2000


def test_timeout_is_retried(server, session):
    probe = probe_url(server.url("/flaky/1"), session, timeout=FAST, retries=1)
    assert (probe.ok, probe.status, probe.method) == (True, 200, "HEAD")
    assert server.requests == [("HEAD", "/flaky/1"), ("HEAD", "/flaky/1")]
    assert probe.elapsed_ms >= FAST * 1000 + 200  # the timeout, then the backoff


def test_4xx_is_never_retried(server, session):
    probe = probe_url(server.url("/missing.png"), session, timeout=FAST, retries=3)
    assert probe.error is not None and probe.error.type == "http_404"
    assert server.requests == [("HEAD", "/missing.png")]


def test_closed_port_is_connection_refused(session):
    port = closed_port()
    probe = probe_url(f"http://127.0.0.1:{port}/x.png", session, timeout=FAST, retries=0)
    assert not probe.ok and probe.status is None and probe.method == "HEAD"
    assert probe.error is not None and probe.error.type == "connection_refused"
    assert f"127.0.0.1:{port}" in probe.error.message


def test_unknown_name_is_dns(session):
    probe = probe_url("http://nothing.invalid/x.png", session, timeout=FAST)
    assert not probe.ok and probe.status is None
    assert probe.error is not None and probe.error.type == "dns"
    assert "nothing.invalid" in probe.error.message
    assert "pp-mark find --url http://nothing.invalid/x.png" in (probe.error.hint or "")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_self_signed_certificate_is_tls(tmp_path: Path, session):
    with running(self_signed_context(tmp_path)) as srv:
        probe = probe_url(srv.url("/image.png"), session, timeout=FAST)
    assert not probe.ok and probe.status is None
    assert probe.error is not None and probe.error.type == "tls"
    assert f"127.0.0.1:{srv.port}" in probe.error.message and "certificate" in probe.error.message
    assert "certificate" in (probe.error.hint or "")


@pytest.mark.parametrize("url", ["ftp://x/y", "http:///nohost.png", "img.example.com/a.png", "http://h:99999/a"])
def test_bad_url_sends_nothing(session, url):
    probe = probe_url(url, session, timeout=FAST)
    assert (probe.ok, probe.status, probe.method) == (False, None, None)
    assert probe.error is not None and probe.error.type == "bad_url"
    assert url in probe.error.message


def test_credentials_never_in_messages(server, session):
    url = server.url("/missing.png").replace("://", "://alice:hunter2secret@")
    probe = probe_url(url, session, timeout=FAST)
    assert probe.status == 404 and probe.error is not None
    assert "hunter2secret" not in f"{probe.error.message} {probe.error.hint} {probe.error.to_dict('check')}"
    assert "alice:***@" in (probe.error.hint or "")  # the find command is still there, masked


def test_check_urls_per_host_limit_and_order(server):
    urls = [server.url(f"/concurrent/{i}") for i in range(20)]
    results = list(check_urls(urls, lambda u: u, jobs=10, per_host=2, timeout=5))
    assert [item for item, _ in results] == urls
    assert all(probe is not None and probe.ok and probe.url == item for item, probe in results)
    assert server.max_in_flight[ALL_HOSTS] == 2  # parallel, but never more than per_host


def test_check_urls_total_limit_across_hosts(server):
    urls = [server.url(f"/concurrent/{i}", host=("127.0.0.1", "localhost")[i % 2]) for i in range(12)]
    results = list(check_urls(urls, lambda u: u, jobs=3, per_host=2, timeout=5))
    assert all(probe is not None and probe.ok for _, probe in results)
    assert server.max_in_flight[f"127.0.0.1:{server.port}"] <= 2
    assert server.max_in_flight[f"localhost:{server.port}"] <= 2
    assert server.max_in_flight[ALL_HOSTS] == 3


def test_check_urls_skips_items_without_url(server):
    items = [{"url": server.url("/image.png")}, {"path": "a.png"}, {"url": "ftp://x/y"},
             {"url": server.url("/missing.png")}]
    results = list(check_urls(items, lambda r: r.get("url"), jobs=4, timeout=FAST))
    assert [item for item, _ in results] == items
    kinds = [None if p is None else (p.error.type if p.error else "ok") for _, p in results]
    assert kinds == ["ok", None, "bad_url", "http_404"]


def test_check_urls_rejects_zero_limits():
    with pytest.raises(ValueError):
        check_urls([], lambda u: u, per_host=0)


def test_file_urls_of_the_local_host_are_checked_on_disk(run, tmp_path):
    present = tmp_path / "here.png"
    present.write_bytes(b"png")
    records = [{"url": present.as_uri()}, {"url": (tmp_path / "gone 图.png").as_uri()}]
    result = run("pp-mark", "check", "-", "--all", input="".join(json.dumps(r) + "\n" for r in records))
    assert result.returncode == 1
    live, dead = [json.loads(line) for line in result.stdout.splitlines()]
    assert "error" not in live and dead["error"]["type"] == "file_missing"
    assert "gone 图.png" in dead["error"]["message"] and "pp-backup restore" in dead["error"]["hint"]
