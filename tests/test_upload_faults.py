"""pp-upload when the network or the server fails: retries with backoff, Retry-After, resets,
timeouts, wrong credentials; each ends in the right record and exit status, with one copy."""

from __future__ import annotations

import time

import pytest

from conftest import parse_jsonl
from fakehost import FakeHandler, Fault, serving
from fakes.webdav import PASSWORD, USER, FakeWebDav
from picpipe.net import Client
from test_upload import image


@pytest.fixture
def dav():
    with serving(FakeWebDav) as server:
        yield server


def dav_env(server, **settings: str) -> dict[str, str]:
    env = {"PICPIPE_F_TYPE": "webdav", "PICPIPE_F_URL": server.url + "/img/", "PICPIPE_F_USER": USER,
           "PICPIPE_F_PASSWORD": PASSWORD}
    env.update({f"PICPIPE_F_{k.upper()}": v for k, v in settings.items()})
    return env


def upload(run, tmp_path, server, *args: str, **settings: str):
    src = image(tmp_path / "a.png", (30, 60, 90))
    result = run("pp-upload", "--host", "f", "--no-dedupe", *args, str(src), extra_env=dav_env(server, **settings))
    return result, parse_jsonl(result.stdout)[0], src


def puts(server) -> int:
    return sum(1 for method, _ in server.requests if method == "PUT")


def test_server_errors_then_success(run, tmp_path, dav):
    dav.faults += [Fault(), Fault(500), Fault(503)]  # the listing passes; the first two PUTs fail
    result, record, src = upload(run, tmp_path, dav)
    assert result.returncode == 0, result.stderr
    assert record["url"] and "error" not in record
    assert puts(dav) == 3 and list(dav.objects.values()) == [src.read_bytes()]
    assert "HTTP 500, try 2 of 5" in result.stderr and "HTTP 503, try 3 of 5" in result.stderr


def test_429_retry_after_is_honoured(run, tmp_path, dav):
    dav.faults += [Fault(), Fault(429, headers={"Retry-After": "1"})]
    start = time.monotonic()
    result, record, _ = upload(run, tmp_path, dav)
    assert result.returncode == 0 and time.monotonic() - start >= 1.0
    assert "try 2 of 5 in 1.0 s" in result.stderr


def test_a_retry_after_beyond_reason_is_reported_not_waited_for(run, tmp_path, dav):
    dav.faults += [Fault(), Fault(429, headers={"Retry-After": "3600"})]
    start = time.monotonic()
    result, record, _ = upload(run, tmp_path, dav)
    assert result.returncode == 1 and time.monotonic() - start < 30
    assert (record["error"]["type"], record["error"]["status"]) == ("rate_limited", 429)
    assert "re-run later" in record["error"]["hint"]


def test_connection_reset_mid_body_is_retried_to_one_copy(run, tmp_path, dav):
    dav.faults += [Fault(), Fault.reset_mid_body()]
    result, record, src = upload(run, tmp_path, dav)
    assert result.returncode == 0, result.stderr
    assert puts(dav) == 2 and list(dav.objects.values()) == [src.read_bytes()]


def test_slow_server_past_the_timeout(run, tmp_path, dav):
    dav.faults += [Fault(), Fault.slow(3)]
    result, record, _ = upload(run, tmp_path, dav, timeout="1", retries="0")
    assert result.returncode == 1
    assert record["error"]["type"] == "timeout" and "within 1 s" in record["error"]["message"]
    assert "Traceback" not in result.stderr


def test_a_retried_upload_after_a_timeout_leaves_one_copy(run, tmp_path, dav):
    """The first PUT lands after the client gave up; the retry finds it there: one object, success."""
    dav.faults += [Fault(), Fault.slow(1.5)]
    result, record, src = upload(run, tmp_path, dav, timeout="1", retries="2")
    assert result.returncode == 0, result.stderr
    time.sleep(1)  # let the slow first PUT finish
    assert list(dav.objects.values()) == [src.read_bytes()]


def test_wrong_credentials_are_not_retried(run, tmp_path, dav):
    src = image(tmp_path / "a.png", (1, 1, 1))
    env = {**dav_env(dav), "PICPIPE_F_PASSWORD": "wrong-password-123"}
    result = run("pp-upload", "--host", "f", "--no-dedupe", str(src), extra_env=env)
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert (error["type"], error["status"]) == ("auth", 401) and "password" in error["hint"]
    assert len(dav.requests) == 1 and not dav.objects
    assert "wrong-password-123" not in result.stdout + result.stderr


def test_a_server_that_keeps_failing_ends_in_an_error_record(run, tmp_path, dav):
    dav.faults += [Fault(), *[Fault(503)] * 3]
    result, record, _ = upload(run, tmp_path, dav, retries="2")
    assert result.returncode == 1
    assert (record["error"]["type"], record["error"]["status"]) == ("server_error", 503)
    assert puts(dav) == 3


class Counter(FakeHandler):
    def handle_request(self) -> None:
        self.reply(201)


@pytest.mark.parametrize("status, retried", [(500, False), (502, False), (503, False), (429, True)])
def test_requests_that_must_not_repeat_are_retried_only_when_not_acted_on(status, retried):
    """An upload that creates a new object each time (Imgur) is repeated only after a 429: a 503 may come
    from a proxy after the origin stored it."""
    with serving(Counter) as server:
        server.faults.append(Fault(status))
        client = Client("test", retries=1)
        response = client.send("POST", server.url + "/upload", idempotent=False, data=b"x")
        assert response.status_code == (201 if retried else status)
        assert len(server.requests) == (2 if retried else 1)
