"""The upyun host: the UPYUN signature (documented vector, the upyun SDK as oracle), pp-upload against a fake."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

import pytest
import requests
import upyun
from upyun.modules.compat import quote

from conftest import jsonl, parse_jsonl
from fakehost import FakeServer, serving
from fakes.upyun import BUCKET, OPERATORS, FakeUpyun
from picpipe.errors import PicpipeError
from picpipe.hosts import upyun as host_module
from picpipe.hosts.signing import uri_encode
from test_upload import image

[(OPERATOR, PASSWORD)] = OPERATORS.items()
DATE = "Wed, 09 Nov 2016 14:26:58 GMT"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with serving(FakeUpyun) as running:
        yield running


def profile(**over: str) -> dict:
    return {"name": "up", "type": "upyun", "bucket": BUCKET, "operator": OPERATOR, "password": PASSWORD,
            "base_url": "https://img.example.com", "retries": 0, **over}


def env(server, **over: str) -> dict[str, str]:
    values = {"TYPE": "upyun", "ENDPOINT": server.url, "BUCKET": BUCKET, "OPERATOR": OPERATOR,
              "PASSWORD": PASSWORD, "BASE_URL": "https://img.example.com", **over}
    return {f"PICPIPE_UP_{name}": value for name, value in values.items()}


def sign_ours(monkeypatch, method: str, key: str, content_md5: str | None, **over: str) -> tuple[str, str]:
    """(URI, Authorization) our host sends for `key` at the fixed DATE."""
    monkeypatch.setattr(host_module, "http_date", lambda: DATE)
    host = host_module.UpyunHost(profile(**over))
    uri = uri_encode(f"/{host.bucket}/{key}")
    prepared = requests.Request(method, host.api + uri,
                                headers={"Content-MD5": content_md5} if content_md5 else {}).prepare()
    host._sign(uri, prepared)
    assert prepared.headers["Date"] == DATE
    return uri, prepared.headers["Authorization"]


def test_the_documented_vector(monkeypatch):
    """docs.upyun.com/api/authorization's REST example (hosts.md §3), through our host and the SDK."""
    assert hashlib.md5(b"password123").hexdigest() == "482c811da5d5b4bc6d497ffa98491e38"
    uri, auth = sign_ours(monkeypatch, "PUT", "demo.jpg", "7ac66c0f148de9519b8bd264312c4d64", bucket="upyun-temp",
                          operator="operator123", password="password123")
    assert uri == "/upyun-temp/demo.jpg"
    assert auth == "UPYUN operator123:YUaAZX+WNAcJdNGHS5SBlITME5A="
    assert upyun.make_signature(username="operator123", password="482c811da5d5b4bc6d497ffa98491e38", method="PUT",
                                uri=uri, date=DATE, content_md5="7ac66c0f148de9519b8bd264312c4d64") == auth


@pytest.mark.parametrize("method, key, md5", [
    ("PUT", "2024/05/3f2a9c1b7d4e.png", "0cc175b9c0f1b6a831c399e269772661"),
    ("GET", "blog/我的 图+(1)~!.png", None),
    ("DELETE", "a.png", None),
])
def test_signature_equals_the_sdk(monkeypatch, method, key, md5):
    uri, auth = sign_ours(monkeypatch, method, key, md5)
    # The SDK quotes the URI it sends and signs with safe='~/'; we must send and sign the same.
    assert uri == quote(f"/{BUCKET}/{key}".encode(), safe="~/")
    assert auth == upyun.make_signature(username=OPERATOR, password=hashlib.md5(PASSWORD.encode()).hexdigest(),
                                        method=method, uri=uri, date=DATE, content_md5=md5)


def test_the_sdk_uploads_to_the_fake(server):
    """The fake speaks Upyun's REST API: the SDK stores with Content-MD5, reads back, and is refused a
    wrong password with Upyun's 401 JSON body."""
    client = upyun.UpYun(BUCKET, OPERATOR, PASSWORD, endpoint=f"127.0.0.1:{server.port}")
    data = "fake 图 bytes".encode()
    client.put("/blog/我的 a+b.png", data, checksum=True)
    assert server.objects["blog/我的 a+b.png"] == data
    assert client.get("/blog/我的 a+b.png") == data.decode()  # the SDK's get returns UTF-8 text
    assert client.getinfo("/blog/我的 a+b.png")["content-md5"] == hashlib.md5(data).hexdigest()
    wrong = upyun.UpYun(BUCKET, OPERATOR, "not-the-password", endpoint=f"127.0.0.1:{server.port}")
    with pytest.raises(upyun.UpYunServiceException) as refused:
        wrong.put("/other.png", data, checksum=True)
    assert refused.value.status == 401 and json.loads(refused.value.err)["code"] == 40100005
    assert "other.png" not in server.objects


def test_upload_reuse_conflict_overwrite_delete(run, tmp_path, server):
    first = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    second = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    args = ("--host", "up", "--no-dedupe", "--path", "x/{name}{ext}")
    uploaded = run("pp-upload", *args, str(first), extra_env=env(server))
    assert uploaded.returncode == 0, uploaded.stderr
    [record] = parse_jsonl(uploaded.stdout)
    assert record["key"] == "x/logo.png" and record["url"] == "https://img.example.com/x/logo.png"
    assert server.objects["x/logo.png"] == first.read_bytes()

    server.requests.clear()
    again = run("pp-upload", *args, str(first), extra_env=env(server))
    assert again.returncode == 0 and parse_jsonl(again.stdout)[0]["reused"] is True
    assert server.requests == [("GET", f"/{BUCKET}/x/logo.png")]  # looked, nothing written

    clash = run("pp-upload", *args, str(second), extra_env=env(server))
    assert clash.returncode == 1
    [failed] = parse_jsonl(clash.stdout)
    assert failed["error"]["type"] == "conflict" and "url" not in failed
    assert server.objects["x/logo.png"] == first.read_bytes()

    replaced = run("pp-upload", *args, "--overwrite", str(second), extra_env=env(server))
    assert replaced.returncode == 0 and server.objects["x/logo.png"] == second.read_bytes()

    deleted = run("pp-upload", "--host", "up", "--delete", input=replaced.stdout, extra_env=env(server))
    assert deleted.returncode == 0 and parse_jsonl(deleted.stdout)[0]["deleted_at"]
    assert "x/logo.png" not in server.objects
    gone_again = run("pp-upload", "--host", "up", "--delete", input=replaced.stdout, extra_env=env(server))
    assert gone_again.returncode == 0  # already gone counts as deleted


def test_wrong_password_is_an_error_record_without_the_password(run, tmp_path, server):
    src = image(tmp_path / "a.png", (1, 2, 3))
    secret = "wrong-password-S3NT1NEL-4f9a"
    result = run("pp-upload", "--host", "up", "--no-dedupe", input=jsonl([{"path": str(src)}]),
                 extra_env=env(server, PASSWORD=secret))
    assert result.returncode == 1
    [record] = parse_jsonl(result.stdout)
    error = record["error"]
    assert error["type"] == "auth" and error["status"] == 401 and error["code"] == "40100005"
    assert "signature error" in error["message"] and "operator" in error["hint"] and error["request_id"]
    assert secret not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr
    assert server.objects == {}


def test_keys_with_any_characters(server):
    host = host_module.UpyunHost(profile(endpoint=server.url))
    key = "blog/我的 图+(1)~!&.png"
    assert host.put(key, b"a", "image/png").reused is False and server.objects[key] == b"a"
    assert host.put(key, b"a", "image/png").reused is True
    assert host.url(key) == "https://img.example.com/blog/%E6%88%91%E7%9A%84%20%E5%9B%BE%2B%281%29~%21%26.png"


@pytest.mark.parametrize("endpoint, api", [
    (None, "https://v0.api.upyun.com"), ("v3.api.upyun.com", "https://v3.api.upyun.com"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
])
def test_endpoints(endpoint, api):
    assert host_module.UpyunHost(profile(**({"endpoint": endpoint} if endpoint else {}))).api == api


def test_unknown_operator_gets_its_hint(server):
    with pytest.raises(PicpipeError) as unknown:
        host_module.UpyunHost(profile(endpoint=server.url, operator="nobody")).put("a.png", b"a", "image/png")
    assert unknown.value.extra["code"] == "40100006" and "operator" in (unknown.value.hint or "")


def test_a_date_far_off_is_refused(monkeypatch, server):
    """The fake refuses a Date more than 30 minutes away, as Upyun does."""
    host = host_module.UpyunHost(profile(endpoint=server.url))
    old = formatdate((datetime.now(UTC) - timedelta(minutes=31)).timestamp(), usegmt=True)
    monkeypatch.setattr(host_module, "http_date", lambda: old)
    with pytest.raises(PicpipeError) as refused:
        host.put("a.png", b"a", "image/png")
    assert refused.value.extra["status"] == 401 and "clock" in (refused.value.hint or "")
    monkeypatch.undo()
    assert host.put("a.png", b"a", "image/png").reused is False  # the same request with a fresh date passes


def test_a_missing_base_url_is_a_usage_error_before_anything_is_sent(run, tmp_path, server):
    src = image(tmp_path / "a.png", (1, 1, 1))
    result = run("pp-upload", "--host", "up", str(src), extra_env=env(server, BASE_URL=""))
    assert result.returncode == 2 and "base_url" in result.stderr and result.stdout == ""
    assert server.requests == []
