"""The tencent host: pp-upload against a fake COS bucket that checks q-sign signatures as Tencent documents
them; the signature against the doc's vectors and cos-python-sdk-v5 (the oracle); the SDK against the fake."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_auth import CosS3Auth
from qcloud_cos.cos_exception import CosServiceError

from conftest import SENTINEL, jsonl, parse_jsonl
from fakehost import FakeServer, Fault, serving
from fakes.tencent import BUCKET, REGION, SECRET_ID, SECRET_KEY, FakeCos
from picpipe.errors import PicpipeError
from picpipe.hosts import tencent
from picpipe.hosts.signing import host_header
from test_upload import image

CDN = "https://img.example.com"
PUBLIC = f"https://{BUCKET}.cos.{REGION}.myqcloud.com"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with serving(FakeCos) as running:
        yield running


@pytest.fixture
def tenv(server: FakeServer) -> dict[str, str]:
    return {"PICPIPE_T_TYPE": "tencent", "PICPIPE_T_ENDPOINT": server.url, "PICPIPE_T_BUCKET": BUCKET,
            "PICPIPE_T_REGION": REGION, "PICPIPE_T_SECRET_ID": SECRET_ID, "PICPIPE_T_SECRET_KEY": SECRET_KEY}


def upload(run, tenv: dict[str, str], *args: str, input: str = "", **env: str):
    return run("pp-upload", "--host", "t", "--no-dedupe", "--path", "x/{name}{ext}", *args, input=input,
               extra_env={**tenv, **env})


def _profile(server: FakeServer | None = None, **extra: str) -> dict[str, str]:
    profile = {"name": "t", "type": "tencent", "bucket": BUCKET, "region": REGION, "secret_id": SECRET_ID,
               "secret_key": SECRET_KEY}
    if server is not None:
        profile["endpoint"] = server.url
    return {**profile, **extra}


def test_upload_reuse_conflict_overwrite_and_delete(run, tenv, server, tmp_path: Path):
    first = image(tmp_path / "one" / "截图 1.png", (200, 0, 0))
    other = image(tmp_path / "two" / "截图 1.png", (0, 0, 200))
    key = "x/截图 1.png"

    done = upload(run, tenv, str(first))
    assert done.returncode == 0, done.stderr
    [record] = parse_jsonl(done.stdout)
    assert record["key"] == key and record["url"] == f"{PUBLIC}/x/%E6%88%AA%E5%9B%BE%201.png"
    assert server.objects[key] == first.read_bytes() and server.meta[key]["Content-Type"] == "image/png"

    again = upload(run, tenv, str(first), PICPIPE_T_BASE_URL=CDN)
    assert again.returncode == 0, again.stderr
    [reused] = parse_jsonl(again.stdout)
    assert reused["reused"] is True and reused["url"] == f"{CDN}/x/%E6%88%AA%E5%9B%BE%201.png"
    assert [m for m, _ in server.requests].count("PUT") == 1  # the check found our bytes: no second PUT

    clash = upload(run, tenv, str(other))
    assert clash.returncode == 1
    [failed] = parse_jsonl(clash.stdout)
    assert failed["error"]["type"] == "conflict" and "url" not in failed
    assert server.objects[key] == first.read_bytes()

    replaced = upload(run, tenv, "--overwrite", str(other))
    assert replaced.returncode == 0, replaced.stderr
    assert server.objects[key] == other.read_bytes()

    stored = parse_jsonl(replaced.stdout)[0]
    deleted = run("pp-upload", "--host", "t", "--delete", input=jsonl([stored, stored]), extra_env=tenv)
    assert deleted.returncode == 0, deleted.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout)) and not server.objects


def test_wrong_secret_keeps_the_cos_code_and_is_never_printed(run, tenv, server, tmp_path):
    src = image(tmp_path / "a.png", (9, 9, 9))
    result = upload(run, tenv, str(src), PICPIPE_T_SECRET_KEY=SENTINEL)
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["status"] == 403 and error["code"] == "SignatureDoesNotMatch"
    assert "does not match" in error["message"] and "secret_key" in error["hint"] and error["request_id"]
    assert SENTINEL not in result.stdout + result.stderr
    assert not server.objects


def test_a_bucket_without_its_appid_is_a_usage_error(run, tenv, tmp_path):
    result = upload(run, {**tenv, "PICPIPE_T_BUCKET": "examplebucket"}, str(image(tmp_path / "a.png", (1, 1, 1))))
    assert result.returncode == 2 and result.stdout == "" and "APPID" in result.stderr


def test_a_passing_failure_is_retried_without_a_second_copy(server):
    host = tencent.TencentHost(_profile(server))
    # The check fails once, its retry passes untouched (Fault()), the PUT is cut off once.
    server.faults += [Fault(503, headers={"Retry-After": "0"}), Fault(), Fault.reset_mid_body()]
    stored = host.put("k.png", b"bytes", "image/png")
    assert stored.url == f"{PUBLIC}/k.png" and server.objects == {"k.png": b"bytes"}
    assert [m for m, _ in server.requests] == ["GET", "GET", "PUT", "PUT"]


def test_fake_refuses_expired_and_foreign_signatures(server, monkeypatch):
    url = f"{server.url}/k.png"
    conf = CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY)
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    expired = requests.Request("PUT", url, data=b"x", auth=CosS3Auth(conf, "k.png", expire=600)).prepare()
    monkeypatch.undo()
    answer = requests.Session().send(expired, timeout=5)
    assert answer.status_code == 403 and "<Code>AccessDenied</Code>" in answer.text
    assert "<Message>Request has expired</Message>" in answer.text and answer.headers["x-cos-request-id"]

    stranger = CosConfig(Region=REGION, SecretId="AKIDsomeoneelse", SecretKey=SECRET_KEY)
    answer = requests.put(url, data=b"x", auth=CosS3Auth(stranger, "k.png"), timeout=5)
    assert answer.status_code == 403 and "<Code>InvalidAccessKeyId</Code>" in answer.text

    host = tencent.TencentHost(_profile(server, secret_key="not-the-secret"))
    with pytest.raises(PicpipeError) as refused:
        host.delete("k.png")
    assert refused.value.extra["code"] == "SignatureDoesNotMatch"
    assert not server.objects


# Doc 7778's use cases (hosts.md §4): SecretId/SecretKey and requests as printed there.
DOC_ID, DOC_KEY = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q", "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
DOC_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"
DOC_PUT = {"Host": DOC_HOST, "Date": "Thu, 16 May 2019 06:45:51 GMT", "Content-Type": "text/plain",
           "Content-Length": "13", "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg==", "x-cos-acl": "private",
           "x-cos-grant-read": 'uin="100000000011"'}


@pytest.mark.parametrize("method, key_time, params, headers, header_list, param_list, signature", [
    ("PUT", "1557989151;1557996351", {}, DOC_PUT,
     "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read", "",
     "3b8851a11a569213c17ba8fa7dcf2abec6935172"),
    ("GET", "1557989753;1557996953",
     {"response-content-type": "application/octet-stream", "response-cache-control": "max-age=600"},
     {"Host": DOC_HOST, "Date": "Thu, 16 May 2019 06:55:53 GMT"}, "date;host",
     "response-cache-control;response-content-type", "01681b8c9d798a678e43b685a9f1bba0f6c0e012"),
    ("PUT", "1557989151;1557996351", {}, {k: v for k, v in DOC_PUT.items() if k != "Date"},
     "content-length;content-md5;content-type;host;x-cos-acl;x-cos-grant-read", "",
     "fc4e4717b501da12715d5fc84a4880a87ad2b7ab"),
])
def test_signature_documented_vectors(method, key_time, params, headers, header_list, param_list, signature):
    value = tencent.authorization(DOC_ID, DOC_KEY, key_time, method, "/exampleobject(腾讯云)", params, headers)
    assert value == (f"q-sign-algorithm=sha1&q-ak={DOC_ID}&q-sign-time={key_time}&q-key-time={key_time}"
                     f"&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signature}")


@pytest.mark.parametrize("method, key, headers, data", [
    ("PUT", "2026/05/截图 1+2.png", {"Content-Type": "image/png", "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg=="},
     b"\x89PNG bytes"),
    ("GET", "a b.png", {"Range": "bytes=0-0"}, None),
    ("DELETE", "dir/a.png", {}, None),
])
def test_signature_equals_the_sdk(monkeypatch, method, key, headers, data):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.75)
    host = tencent.TencentHost(_profile(endpoint="http://127.0.0.1:9999"))
    url = f"{host.base}/{tencent.uri_encode(key)}"
    ours = requests.Request(method, url, headers=headers, data=data).prepare()
    host._sign(key, ours)
    assert ours.headers["Host"] == "127.0.0.1:9999"
    conf = CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=SECRET_KEY)
    theirs = requests.Request(method, url, headers={**headers, "Host": "127.0.0.1:9999"}, data=data,
                              auth=CosS3Auth(conf, key, expire=tencent.SIGN_SECONDS)).prepare()
    assert ours.headers["Authorization"] == theirs.headers["Authorization"]
    assert "q-sign-time=1699999940;1700003600" in ours.headers["Authorization"]


def test_the_sdk_talks_to_the_fake(server):
    """cos-python-sdk-v5 puts, reads, heads and deletes through the fake (it signs Host: <bucket>.cos...)."""
    def client(secret_key: str) -> CosS3Client:
        return CosS3Client(CosConfig(Region=REGION, SecretId=SECRET_ID, SecretKey=secret_key, Scheme="http",
                                     IP="127.0.0.1", Port=server.port), retry=0)

    cos = client(SECRET_KEY)
    data = b"sdk bytes"
    answer = cos.put_object(Bucket=BUCKET, Key="sdk/截图.png", Body=data, ContentType="image/png")
    assert answer["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert server.objects == {"sdk/截图.png": data}
    assert cos.get_object(Bucket=BUCKET, Key="sdk/截图.png")["Body"].get_raw_stream().read() == data
    assert cos.head_object(Bucket=BUCKET, Key="sdk/截图.png")["ETag"] == answer["ETag"]
    cos.delete_object(Bucket=BUCKET, Key="sdk/截图.png")
    assert not server.objects
    with pytest.raises(CosServiceError) as refused:
        client("not-the-secret").put_object(Bucket=BUCKET, Key="k", Body=b"x")
    assert refused.value.get_error_code() == "SignatureDoesNotMatch" and refused.value.get_status_code() == 403


@pytest.mark.parametrize("url, host", [
    (f"{PUBLIC}/k.png", f"{BUCKET}.cos.{REGION}.myqcloud.com"),
    ("http://127.0.0.1:80/k", "127.0.0.1"),
    ("http://127.0.0.1:8080/k", "127.0.0.1:8080"),
    ("https://[::1]:8443/k", "[::1]:8443"),
])
def test_the_signed_host_is_the_one_sent(url, host):
    assert host_header(url) == host
