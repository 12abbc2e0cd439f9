"""The qiniu host: pp-upload against a fake Kodo that checks tokens as Qiniu documents them; tokens and
qetags against Qiniu's documented vectors and its Python SDK (the oracle); the SDK against the fake."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import qiniu as sdk
import requests
from qiniu.utils import etag_stream

from conftest import SENTINEL, jsonl, parse_jsonl
from fakehost import FakeServer, Fault, serving
from fakes.qiniu import ACCESS_KEY, BUCKET, SECRET_KEY, FakeQiniu
from picpipe.errors import PicpipeError
from picpipe.hosts import qiniu
from test_upload import image

CDN = "https://cdn.example.com"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with serving(FakeQiniu) as running:
        yield running


@pytest.fixture
def qenv(server: FakeServer) -> dict[str, str]:
    return {"PICPIPE_Q_TYPE": "qiniu", "PICPIPE_Q_ENDPOINT": server.url, "PICPIPE_Q_BUCKET": BUCKET,
            "PICPIPE_Q_ACCESS_KEY": ACCESS_KEY, "PICPIPE_Q_SECRET_KEY": SECRET_KEY, "PICPIPE_Q_BASE_URL": CDN}


def upload(run, qenv: dict[str, str], *args: str, input: str = "", **env: str):
    return run("pp-upload", "--host", "q", "--no-dedupe", "--path", "x/{name}{ext}", *args, input=input,
               extra_env={**qenv, **env})


def test_upload_again_conflict_overwrite_and_delete(run, qenv, server, tmp_path: Path):
    first = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    other = image(tmp_path / "two" / "logo.png", (0, 0, 200))

    done = upload(run, qenv, str(first))
    assert done.returncode == 0, done.stderr
    [record] = parse_jsonl(done.stdout)
    assert record["host"] == "q" and record["key"] == "x/logo.png" and record["url"] == f"{CDN}/x/logo.png"
    assert server.objects["x/logo.png"] == first.read_bytes()
    assert server.meta["x/logo.png"]["mimeType"] == "image/png"

    again = upload(run, qenv, str(first))  # insert-only scope: Qiniu takes the same bytes again
    assert again.returncode == 0, again.stderr
    assert parse_jsonl(again.stdout)[0]["url"] == record["url"]

    clash = upload(run, qenv, str(other))
    assert clash.returncode == 1
    [failed] = parse_jsonl(clash.stdout)
    assert failed["error"]["type"] == "conflict" and "--overwrite" in failed["error"]["hint"]
    assert "url" not in failed
    assert server.objects["x/logo.png"] == first.read_bytes()
    assert ("GET", f"/stat/{qiniu.entry(BUCKET, 'x/logo.png')}") in server.requests  # 614, then compared

    replaced = upload(run, qenv, "--overwrite", str(other))
    assert replaced.returncode == 0, replaced.stderr
    assert server.objects["x/logo.png"] == other.read_bytes()

    stored = parse_jsonl(replaced.stdout)[0]
    deleted = run("pp-upload", "--host", "q", "--delete", input=jsonl([stored, stored]), extra_env=qenv)
    assert deleted.returncode == 0, deleted.stderr  # the second delete finds it gone (612): still deleted
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout))
    assert "x/logo.png" not in server.objects


def test_file_exists_with_the_same_bytes_is_reused(run, qenv, server, tmp_path):
    """Should Qiniu answer 614 for the bytes it holds, the stat's qetag tells them apart from a conflict."""
    src = image(tmp_path / "a.png", (1, 2, 3))
    assert upload(run, qenv, str(src)).returncode == 0
    server.faults.append(Fault(614, headers={"X-Reqid": "r1"}, body=b'{"error":"file exists"}'))
    again = upload(run, qenv, str(src))
    assert again.returncode == 0, again.stderr
    assert parse_jsonl(again.stdout)[0]["reused"] is True


def test_a_dropped_upload_is_retried_without_a_second_copy(server):
    host = qiniu.QiniuHost(_profile(server))
    server.faults += [Fault.reset_mid_body(), Fault(503, headers={"Retry-After": "0", "X-Reqid": "r2"})]
    assert host.put("k.png", b"bytes", "image/png").url == f"{CDN}/k.png"
    assert server.objects == {"k.png": b"bytes"} and [m for m, _ in server.requests] == ["POST"] * 3


def test_wrong_secret_is_an_auth_record_and_never_printed(run, qenv, server, tmp_path):
    src = image(tmp_path / "a.png", (9, 9, 9))
    result = upload(run, qenv, str(src), PICPIPE_Q_SECRET_KEY=SENTINEL)
    assert result.returncode == 1
    [record] = parse_jsonl(result.stdout)
    error = record["error"]
    assert error["type"] == "auth" and error["status"] == 401 and "bad token" in error["message"]
    assert "access_key and secret_key" in error["hint"] and error["request_id"]
    assert SENTINEL not in result.stdout + result.stderr
    assert not server.objects


def test_an_unknown_bucket_is_not_found_not_a_server_failure(server):
    with pytest.raises(PicpipeError) as refused:
        qiniu.QiniuHost(_profile(server, bucket="nope")).put("k.png", b"x", "image/png")
    error = refused.value
    assert error.type == "not_found" and error.extra["status"] == 631 and "no such bucket" in error.message
    assert "check bucket" in str(error.hint) and [m for m, _ in server.requests] == ["POST"]  # 631: no retry


def test_missing_base_url_is_a_usage_error(run, qenv, tmp_path):
    src = image(tmp_path / "a.png", (9, 9, 9))
    result = upload(run, {**qenv, "PICPIPE_Q_BASE_URL": ""}, str(src))
    assert result.returncode == 2 and result.stdout == ""
    assert "base_url" in result.stderr and "domain bound to a bucket" in result.stderr


def test_fake_refuses_expired_and_wrongly_signed_tokens(server, monkeypatch):
    def post(token: str) -> requests.Response:
        return requests.post(server.url + "/", data={"token": token, "key": "k.png"},
                             files={"file": ("k.png", b"png", "image/png")}, timeout=5)

    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    expired = sdk.Auth(ACCESS_KEY, SECRET_KEY).upload_token(BUCKET, None, 3600)  # deadline in 2001
    wrong = sdk.Auth(ACCESS_KEY, "not-the-secret").upload_token(BUCKET, None, 10**10)
    monkeypatch.undo()
    for token, message in ((expired, "expired token"), (wrong, "bad token")):
        answer = post(token)
        assert answer.status_code == 401 and answer.json() == {"error": message} and answer.headers["X-Reqid"]
    assert not server.objects

    entry = qiniu.entry(BUCKET, "k.png")
    unsigned = requests.get(f"{server.url}/stat/{entry}", timeout=5)
    assert unsigned.status_code == 401 and unsigned.json() == {"error": "bad token"}
    host = qiniu.QiniuHost(_profile(server, secret_key="not-the-secret"))
    with pytest.raises(PicpipeError) as refused:
        host.delete("k.png")
    assert refused.value.type == "auth" and "bad token" in refused.value.message


def _profile(server: FakeServer | None = None, **extra: str) -> dict[str, str]:
    profile = {"name": "q", "type": "qiniu", "bucket": BUCKET, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
               "base_url": CDN}
    if server is not None:
        profile["endpoint"] = server.url
    return {**profile, **extra}


@pytest.mark.parametrize("region, up", [(None, "https://upload.qiniup.com"), ("z0", "https://upload.qiniup.com"),
                                        ("z2", "https://upload-z2.qiniup.com"),
                                        ("cn-east-2", "https://upload-cn-east-2.qiniup.com")])
def test_region_picks_the_upload_host(region, up):
    host = qiniu.QiniuHost(_profile(**({"region": region} if region else {})))
    assert host.up_url == up and host.rs_url == "https://rs.qiniuapi.com"


def test_upload_token_documented_vectors():
    """developer.qiniu.com/kodo/1208/upload-token, and the SDK's own output (hosts.md §1)."""
    policy = {"scope": "my-bucket:sunflower.jpg", "deadline": 1451491200,
              "returnBody": '{"name":$(fname),"size":$(fsize),"w":$(imageInfo.width),"h":$(imageInfo.height),'
                            '"hash":$(etag)}'}
    token = qiniu.upload_token("MY_ACCESS_KEY", "MY_SECRET_KEY", policy)
    access_key, sign, encoded = token.split(":")
    assert access_key == "MY_ACCESS_KEY" and sign == "wQ4ofysef1R7IKnrziqtomqyDvI="
    assert base64.urlsafe_b64decode(sign).hex() == "c10e287f2b1e7f547b20a9ebce2aada26ab20ef2"
    assert encoded == ("eyJzY29wZSI6Im15LWJ1Y2tldDpzdW5mbG93ZXIuanBnIiwiZGVhZGxpbmUiOjE0NTE0OTEyMDAsInJldHVybkJvZHki"
                       "OiJ7XCJuYW1lXCI6JChmbmFtZSksXCJzaXplXCI6JChmc2l6ZSksXCJ3XCI6JChpbWFnZUluZm8ud2lkdGgpLFwiaFwi"
                       "OiQoaW1hZ2VJbmZvLmhlaWdodCksXCJoYXNoXCI6JChldGFnKX0ifQ==")
    assert qiniu.upload_token("abcdefghklmnopq", "1234567890", {"scope": "bucket:demo.png", "deadline": 1700000000}) \
        == ("abcdefghklmnopq:qtI9gxZ9StpvZClOEZ3a60qgkrI=:"
            "eyJzY29wZSI6ImJ1Y2tldDpkZW1vLnBuZyIsImRlYWRsaW5lIjoxNzAwMDAwMDAwfQ==")


@pytest.mark.parametrize("key", ["2026/05/ab12cd.png", "截图 1.png"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_upload_token_equals_the_sdk(monkeypatch, key, overwrite):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    ours = qiniu.QiniuHost(_profile()).upload_token(key, overwrite)
    theirs = sdk.Auth(ACCESS_KEY, SECRET_KEY).upload_token(BUCKET, key if overwrite else None, qiniu.TOKEN_SECONDS)
    assert ours == theirs
    assert sdk.Auth.up_token_decode(ours)[2] == {"scope": f"{BUCKET}:{key}" if overwrite else BUCKET,
                                                 "deadline": 1_700_000_000 + 3600}


@pytest.mark.parametrize("method, action", [("GET", "stat"), ("POST", "delete")])
def test_management_token_equals_the_sdk(method, action):
    host = qiniu.QiniuHost(_profile(endpoint="http://127.0.0.1:9999"))
    url = f"{host.rs_url}/{action}/{qiniu.entry(BUCKET, '截图 1.png')}"
    prepared = requests.Request(method, url, headers={"Content-Type": qiniu.FORM}).prepare()
    host.sign(prepared)
    assert prepared.headers["Host"] == "127.0.0.1:9999"
    mac = sdk.QiniuMacAuth(ACCESS_KEY, SECRET_KEY)
    theirs = mac.token_of_request(method, prepared.headers["Host"], url, mac.qiniu_headers(prepared.headers),
                                  qiniu.FORM, prepared.body)
    assert prepared.headers["Authorization"] == f"Qiniu {theirs}"
    # A form body is signed too (the SDK's rule): a test of the function on its own.
    body = b"a=1&b=2"
    headers = {"Host": "rs.qiniuapi.com", "Content-Type": qiniu.FORM, "X-Qiniu-Date": "20240101T000000Z"}
    assert qiniu.management_token(ACCESS_KEY, SECRET_KEY, "POST", "/x?y=1", headers, body) == mac.token_of_request(
        "POST", "rs.qiniuapi.com", "https://rs.qiniuapi.com/x?y=1", mac.qiniu_headers(headers), qiniu.FORM, body)


@pytest.mark.parametrize("size", [0, 5, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024])
def test_qetag_equals_the_sdk(size):
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    assert qiniu.qetag(data) == etag_stream(io.BytesIO(data))


def test_qetag_vector():
    assert qiniu.qetag(b"hello") == "Fqr0xh3cxeii2r7eDztILNmuqUNN"  # qiniu/python-sdk tests


def test_the_sdk_talks_to_the_fake(server):
    """The official SDK's upload, stat and delete succeed against the fake: it speaks Qiniu's protocol."""
    auth = sdk.Auth(ACCESS_KEY, SECRET_KEY)
    region = sdk.Region(up_host=server.url, up_host_backup=server.url, rs_host=server.url)
    token = auth.upload_token(BUCKET)
    ret, info = sdk.put_data(token, "sdk/a.png", b"first", mime_type="image/png", regions=[region])
    assert info.status_code == 200 and ret == {"hash": etag_stream(io.BytesIO(b"first")), "key": "sdk/a.png"}
    _, info = sdk.put_data(token, "sdk/a.png", b"other", regions=[region])
    assert info.status_code == 614 and json.loads(info.text_body) == {"error": "file exists"}
    _, info = sdk.put_data(sdk.Auth(ACCESS_KEY, SENTINEL).upload_token(BUCKET), "sdk/b.png", b"x", regions=[region])
    assert info.status_code == 401

    bucket = sdk.BucketManager(auth, zone=region)
    ret, info = bucket.stat(BUCKET, "sdk/a.png")
    assert info.status_code == 200 and ret["hash"] == etag_stream(io.BytesIO(b"first")) and ret["fsize"] == 5
    ret, info = bucket.delete(BUCKET, "sdk/a.png")
    assert info.status_code == 200 and not server.objects
    _, info = bucket.stat(BUCKET, "sdk/a.png")
    assert info.status_code == 612
    _, info = sdk.BucketManager(sdk.Auth(ACCESS_KEY, SENTINEL), zone=region).stat(BUCKET, "sdk/a.png")
    assert info.status_code == 401
