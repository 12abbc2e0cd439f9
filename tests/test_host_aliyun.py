"""The aliyun host: V4 signing (documented vector, oss2 as oracle), pp-upload against a fake OSS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import oss2
import pytest
import requests

from conftest import jsonl, parse_jsonl
from fakehost import FakeServer, serving
from fakes.aliyun import BUCKET, CREDENTIALS, FakeOSS
from picpipe.errors import PicpipeError
from picpipe.hosts import aliyun
from picpipe.hosts.signing import OSS_V4, canonical_request
from test_upload import image

[(AK, SK)] = CREDENTIALS.items()
WHEN = datetime(2024, 12, 3, 3, 44, 20, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with serving(FakeOSS) as running:
        yield running


def profile(**over: str) -> dict:
    return {"name": "oss", "type": "aliyun", "bucket": BUCKET, "region": "cn-hangzhou", "access_key_id": AK,
            "access_key_secret": SK, "retries": 0, **over}


def env(server, **over: str) -> dict[str, str]:
    values = {"TYPE": "aliyun", "ENDPOINT": server.url, "BUCKET": BUCKET, "REGION": "oss-cn-hangzhou",
              "ACCESS_KEY_ID": AK, "ACCESS_KEY_SECRET": SK, "BASE_URL": "https://cdn.example.com", **over}
    return {f"PICPIPE_OSS_{name}": value for name, value in values.items()}


def test_the_documented_v4_vector():
    """hosts.md §2: the canonical request and signature oss2 2.19.1 produced with its clock fixed."""
    request = canonical_request("PUT", "/examplebucket/exampleobject", {},
                                {"Content-Type": "image/png", "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
                                 "x-oss-date": "20241203T034420Z"}, "", "UNSIGNED-PAYLOAD")
    assert request == ("PUT\n/examplebucket/exampleobject\n\ncontent-type:image/png\nx-oss-content-sha256:"
                       "UNSIGNED-PAYLOAD\nx-oss-date:20241203T034420Z\n\n\nUNSIGNED-PAYLOAD")
    assert OSS_V4.signature("sk", WHEN, "cn-hangzhou", request) == \
        "bafce4526896a1cbaa61b0e1a0fd64436a2343df12ad2c97e2cb5334779f43d7"


def sign_ours(monkeypatch, key: str, headers: dict[str, str], **over: str) -> requests.PreparedRequest:
    monkeypatch.setattr(aliyun, "utc_now", lambda: WHEN)
    host = aliyun.AliyunHost(profile(**over))
    prepared = requests.Request("PUT", f"{host.base}/{key}", headers=headers, data=b"x").prepare()
    host._sign(key, prepared)
    return prepared


def test_our_host_signs_the_documented_vector(monkeypatch):
    prepared = sign_ours(monkeypatch, "exampleobject", {"Content-Type": "image/png"}, bucket="examplebucket",
                         access_key_id="ak", access_key_secret="sk")
    assert prepared.headers["x-oss-date"] == "20241203T034420Z"
    assert prepared.headers["Authorization"] == (
        "OSS4-HMAC-SHA256 Credential=ak/20241203/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=bafce4526896a1cbaa61b0e1a0fd64436a2343df12ad2c97e2cb5334779f43d7")


@pytest.mark.parametrize("key", ["2024/05/3f2a9c1b7d4e.png", "blog/我的 图+(1)~!.png"])
def test_signature_equals_oss2(monkeypatch, key):
    headers = {"Content-Type": "image/png", "Content-MD5": "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=",
               "x-oss-forbid-overwrite": "true"}
    ours = sign_ours(monkeypatch, key, headers, region="oss-cn-hangzhou")  # the OSS region ID is accepted too

    class Frozen(datetime):
        @classmethod
        def utcnow(cls):
            return WHEN.replace(tzinfo=None)

    monkeypatch.setattr(oss2.auth, "datetime", Frozen)
    theirs = oss2.http.Request("PUT", "http://127.0.0.1/", headers=dict(headers), region="cn-hangzhou",
                               product="oss")
    oss2.AuthV4(AK, SK)._sign_request(theirs, BUCKET, key)
    assert theirs.headers["x-oss-date"] == ours.headers["x-oss-date"]
    # oss2 writes ", Signature=" where the docs write ",Signature=": OSS accepts both.
    assert theirs.headers["authorization"].replace(", ", ",") == ours.headers["Authorization"]


def test_crc64_equals_oss2():
    for data in (b"", b"123456789", bytes(range(256)) * 41):
        oracle = oss2.utils.Crc64()
        oracle.update(data)
        assert aliyun.crc64(data) == oracle.crc
    assert aliyun.crc64(b"123456789") == 0x995DC9BBDF1939FA  # CRC-64/XZ check value


def test_oss2_uploads_to_the_fake(server):
    """The fake speaks real OSS: oss2 (path style on an IP, V4) stores, reads back, and is refused a
    wrong secret; oss2 also checks the fake's x-oss-hash-crc64ecma against its own CRC."""
    bucket = oss2.Bucket(oss2.AuthV4(AK, SK), server.url, BUCKET, region="cn-hangzhou")
    key, data = "blog/a b+我.png", b"\x89PNG fake bytes"
    result = bucket.put_object(key, data, headers={"Content-Type": "image/png"})
    assert result.status == 200 and server.objects[key] == data
    assert result.etag == hashlib.md5(data).hexdigest().upper()
    assert bucket.get_object(key).read() == data
    wrong = oss2.Bucket(oss2.AuthV4(AK, "not-the-secret"), server.url, BUCKET, region="cn-hangzhou")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        wrong.put_object("other.png", data)
    other_region = oss2.Bucket(oss2.AuthV4(AK, SK), server.url, BUCKET, region="cn-beijing")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        other_region.put_object("other.png", data)
    assert "other.png" not in server.objects


def test_upload_reuse_conflict_overwrite_delete(run, tmp_path, server):
    first = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    second = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    args = ("--host", "oss", "--no-dedupe", "--path", "x/{name}{ext}")
    uploaded = run("pp-upload", *args, str(first), extra_env=env(server))
    assert uploaded.returncode == 0, uploaded.stderr
    [record] = parse_jsonl(uploaded.stdout)
    assert record["key"] == "x/logo.png" and record["url"] == "https://cdn.example.com/x/logo.png"
    assert server.objects["x/logo.png"] == first.read_bytes()
    assert server.meta["x/logo.png"]["Content-Type"] == "image/png"

    server.requests.clear()
    again = run("pp-upload", *args, str(first), extra_env=env(server))
    assert again.returncode == 0 and parse_jsonl(again.stdout)[0]["reused"] is True
    assert [m for m, _ in server.requests] == ["PUT", "HEAD"]  # refused by forbid-overwrite, then compared

    clash = run("pp-upload", *args, str(second), extra_env=env(server))
    assert clash.returncode == 1
    [failed] = parse_jsonl(clash.stdout)
    assert failed["error"]["type"] == "conflict" and "url" not in failed
    assert server.objects["x/logo.png"] == first.read_bytes()

    replaced = run("pp-upload", *args, "--overwrite", str(second), extra_env=env(server))
    assert replaced.returncode == 0 and server.objects["x/logo.png"] == second.read_bytes()

    deleted = run("pp-upload", "--host", "oss", "--delete", input=replaced.stdout, extra_env=env(server))
    assert deleted.returncode == 0 and parse_jsonl(deleted.stdout)[0]["deleted_at"]
    assert "x/logo.png" not in server.objects
    gone_again = run("pp-upload", "--host", "oss", "--delete", input=replaced.stdout, extra_env=env(server))
    assert gone_again.returncode == 0  # already gone counts as deleted


def test_wrong_secret_is_an_error_record_without_the_secret(run, tmp_path, server):
    src = image(tmp_path / "a.png", (1, 2, 3))
    secret = "wrong-secret-S3NT1NEL-4f9a"
    result = run("pp-upload", "--host", "oss", "--no-dedupe", input=jsonl([{"path": str(src)}]),
                 extra_env=env(server, ACCESS_KEY_SECRET=secret))
    assert result.returncode == 1
    [record] = parse_jsonl(result.stdout)
    error = record["error"]
    assert error["type"] == "auth" and error["status"] == 403 and error["code"] == "SignatureDoesNotMatch"
    assert "access_key_secret" in error["hint"] and error["request_id"]
    assert secret not in result.stdout + result.stderr and SK not in result.stdout + result.stderr
    assert server.objects == {}


def test_keys_with_any_characters(server):
    host = aliyun.AliyunHost(profile(endpoint=server.url))
    key = "blog/我的 图+(1)~!&.png"
    assert host.put(key, b"a", "image/png").reused is False and server.objects[key] == b"a"
    assert host.put(key, b"a", "image/png").reused is True
    host.delete(key)
    assert key not in server.objects


def test_unknown_key_id_and_bucket_get_their_hints(server):
    with pytest.raises(PicpipeError) as unknown:
        aliyun.AliyunHost(profile(endpoint=server.url, access_key_id="LTAInobody")).put("a.png", b"a", "image/png")
    assert unknown.value.extra["code"] == "InvalidAccessKeyId" and "RAM" in (unknown.value.hint or "")
    with pytest.raises(PicpipeError) as bucket:
        aliyun.AliyunHost(profile(endpoint=server.url, bucket="nope")).put("a.png", b"a", "image/png")
    assert bucket.value.extra["code"] == "NoSuchBucket" and bucket.value.type == "not_found"


def test_a_clock_far_off_is_refused(monkeypatch, server):
    """The fake refuses an x-oss-date more than 15 minutes away, as OSS does."""
    host = aliyun.AliyunHost(profile(endpoint=server.url))
    monkeypatch.setattr(aliyun, "utc_now", lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=16))
    with pytest.raises(PicpipeError) as old:
        host.put("a.png", b"a", "image/png")
    assert old.value.extra["code"] == "RequestTimeTooSkewed" and "clock" in (old.value.hint or "")
    monkeypatch.undo()
    assert host.put("a.png", b"a", "image/png").reused is False  # the same request with a fresh date passes


@pytest.mark.parametrize("override, downloads", [
    ({"ETag": '"3858F62230AC3C915F300C664312C63F-2"'}, 0),  # multipart: the CRC-64 decides
    ({"ETag": '"3858F62230AC3C915F300C664312C63F-2"', "x-oss-hash-crc64ecma": ""}, 2),  # neither: download
])
def test_reuse_is_decided_without_a_plain_md5_etag(server, override, downloads):
    host = aliyun.AliyunHost(profile(endpoint=server.url))
    data = b"image bytes"
    host.put("k.png", data, "image/png")
    server.meta["k.png"].update(override)
    server.requests.clear()
    assert host.put("k.png", data, "image/png").reused is True
    with pytest.raises(PicpipeError) as clash:
        host.put("k.png", b"other bytes", "image/png")  # same length, other bytes
    assert clash.value.type == "conflict" and server.objects["k.png"] == data
    assert [m for m, _ in server.requests].count("GET") == downloads


@pytest.mark.parametrize("endpoint, base", [
    (None, "https://bkt.oss-cn-hangzhou.aliyuncs.com"),
    ("oss-cn-hangzhou-internal.aliyuncs.com", "https://bkt.oss-cn-hangzhou-internal.aliyuncs.com"),
    ("https://bkt.oss-accelerate.aliyuncs.com/", "https://bkt.oss-accelerate.aliyuncs.com"),
    ("https://img.example.com", "https://img.example.com"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000/bkt"),
])
def test_where_objects_are_addressed(endpoint, base):
    host = aliyun.AliyunHost(profile(region="oss-cn-hangzhou", **({"endpoint": endpoint} if endpoint else {})))
    assert host.base == base and host.region == "cn-hangzhou"
    assert host.url("a/我.png") == "https://bkt.oss-cn-hangzhou.aliyuncs.com/a/%E6%88%91.png"  # the public one
    assert aliyun.AliyunHost(profile(base_url="https://cdn.example.com/")).url("a.png") == "https://cdn.example.com/a.png"


def test_missing_settings_are_usage_errors(run, tmp_path, server):
    src: Path = image(tmp_path / "a.png", (1, 1, 1))
    result = run("pp-upload", "--host", "oss", str(src), extra_env=env(server, BUCKET=""))
    assert result.returncode == 2 and "bucket" in result.stderr and result.stdout == ""
