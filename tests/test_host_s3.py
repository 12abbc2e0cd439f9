"""The s3 host against moto's real S3 server with signature checking on, and SigV4 against
AWS's published vectors and botocore (the signer moto itself verifies with)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import UTC, datetime

import pytest
import requests

from conftest import jsonl, parse_jsonl
from picpipe.hosts import s3
from picpipe.hosts.signing import AWS_V4, canonical_request
from test_upload import image

BUCKET = "imgs"


@pytest.fixture(scope="module")
def moto():
    """moto on 127.0.0.1 with authentication on: only an IAM user made inside it may write."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    seen = Requests()
    logging.getLogger("werkzeug").addHandler(seen)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    anyone = {"endpoint_url": endpoint, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", **anyone).create_bucket(Bucket=BUCKET)
    requests.post(endpoint + "/moto-api/reset-auth", data=b"3", timeout=10)  # 3 more unchecked calls
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="ci")
    iam.put_user_policy(UserName="ci", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    client = boto3.client("s3", **{**anyone, "aws_access_key_id": key["AccessKeyId"],
                                   "aws_secret_access_key": key["SecretAccessKey"]})
    yield endpoint, key["AccessKeyId"], key["SecretAccessKey"], client, seen
    requests.post(endpoint + "/moto-api/reset-auth", data=b"inf", timeout=10)
    server.stop()
    logging.getLogger("werkzeug").removeHandler(seen)


class Requests(logging.Handler):
    """The (method, path) of each request moto's werkzeug server logs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"([A-Z]+) (/\S*) HTTP/", record.getMessage())  # the message may be in colour
        if found:
            self.seen.append((found[1], found[2]))

    def methods(self, prefix: str) -> list[str]:
        return [method for method, path in self.seen if path.startswith(prefix)]


def profile_env(endpoint: str, access_key: str, secret_key: str, conditional: str = "") -> dict[str, str]:
    return {"PICPIPE_S3_ENDPOINT": endpoint, "PICPIPE_S3_BUCKET": BUCKET, "PICPIPE_S3_CONDITIONAL_WRITES": conditional,
            "PICPIPE_S3_ACCESS_KEY": access_key, "PICPIPE_S3_SECRET_KEY": secret_key}


@pytest.mark.parametrize("conditional, first_put, same_again", [
    ("true", ["PUT"], ["PUT", "GET"]),  # one request per new image; a 412, then a look at the taken key
    ("", ["GET", "PUT"], ["GET"]),  # a store not known to honour If-None-Match: look first
])
def test_upload_reuse_conflict_overwrite_delete(run, tmp_path, moto, conditional, first_put, same_again):
    endpoint, access_key, secret_key, client, seen = moto
    env = profile_env(endpoint, access_key, secret_key, conditional)
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    args = ("--host", "s3", "--no-dedupe", "--path", "blog/{name} 图{ext}")
    seen.seen.clear()

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    assert seen.methods(f"/{BUCKET}/blog/") == first_put
    [record] = parse_jsonl(first.stdout)
    assert record["key"] == "blog/logo 图.png"
    assert record["url"] == f"{endpoint}/{BUCKET}/blog/logo%20%E5%9B%BE.png"
    assert client.get_object(Bucket=BUCKET, Key="blog/logo 图.png")["Body"].read() == a.read_bytes()
    assert requests.get(record["url"], timeout=10).status_code == 403  # the bucket is private: it checks
    seen.seen.clear()

    again = run("pp-upload", *args, str(a), extra_env=env)
    assert parse_jsonl(again.stdout)[0]["reused"] is True
    assert seen.methods(f"/{BUCKET}/blog/") == same_again

    clash = run("pp-upload", *args, str(b), extra_env=env)
    assert clash.returncode == 1
    assert parse_jsonl(clash.stdout)[0]["error"]["type"] == "conflict"
    assert client.get_object(Bucket=BUCKET, Key="blog/logo 图.png")["Body"].read() == a.read_bytes()

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert client.get_object(Bucket=BUCKET, Key="blog/logo 图.png")["Body"].read() == b.read_bytes()

    deleted = run("pp-upload", "--host", "s3", "--delete", input=replaced.stdout, extra_env=env)
    assert deleted.returncode == 0 and parse_jsonl(deleted.stdout)[0]["deleted_at"]
    assert client.list_objects_v2(Bucket=BUCKET, Prefix="blog/").get("KeyCount") == 0
    gone_again = run("pp-upload", "--host", "s3", "--delete", input=replaced.stdout, extra_env=env)
    assert gone_again.returncode == 0  # already gone counts as deleted


def test_wrong_credentials_are_error_records_without_the_secret(run, tmp_path, moto):
    endpoint, access_key, secret_key, *_ = moto
    src = image(tmp_path / "a.png", (1, 2, 3))
    wrong_secret = "WRONG-" + secret_key[6:]
    bad = run("pp-upload", "--host", "s3", "--no-dedupe", str(src), str(src),
              extra_env=profile_env(endpoint, access_key, wrong_secret))
    assert bad.returncode == 1
    for record in parse_jsonl(bad.stdout):
        error = record["error"]
        assert (error["type"], error["status"], error["code"]) == ("auth", 403, "SignatureDoesNotMatch")
        assert "secret_key" in error["hint"] and "url" not in record
    assert wrong_secret not in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr and "try 2" not in bad.stderr  # 403 is never retried

    unknown = run("pp-upload", "--host", "s3", "--no-dedupe", str(src),
                  extra_env=profile_env(endpoint, "AKIAUNKNOWN000000000", secret_key))
    assert parse_jsonl(unknown.stdout)[0]["error"]["code"] == "InvalidAccessKeyId"


def test_concurrent_uploads_reuse_connections(run, tmp_path, moto):
    endpoint, access_key, secret_key, client, _ = moto
    files = [image(tmp_path / f"{i}.png", (i, 2 * i, 3 * i)) for i in range(12)]
    result = run("pp-upload", "--host", "s3", "-j", "4", "--path", "many/{sha256:16}{ext}",
                 input=jsonl([{"path": str(f)} for f in files]),
                 extra_env=profile_env(endpoint, access_key, secret_key))
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert [r["path"] for r in records] == [str(f) for f in files]  # input order kept
    stored = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="many/")["Contents"]}
    assert stored == {r["key"] for r in records} and len(stored) == 12


# AWS's published SigV4 examples (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
AWS_KEY, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_WHEN = datetime(2013, 5, 24, tzinfo=UTC)


@pytest.mark.parametrize("method, path, headers, payload, signature", [
    ("GET", "/test.txt", {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
                          "x-amz-content-sha256": hashlib.sha256(b"").hexdigest(),
                          "x-amz-date": "20130524T000000Z"},
     hashlib.sha256(b"").hexdigest(), "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ("PUT", "/test%24file.text", {"date": "Fri, 24 May 2013 00:00:00 GMT", "host": "examplebucket.s3.amazonaws.com",
                                  "x-amz-content-sha256": hashlib.sha256(b"Welcome to Amazon S3.").hexdigest(),
                                  "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
     hashlib.sha256(b"Welcome to Amazon S3.").hexdigest(),
     "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
])
def test_sigv4_matches_the_aws_examples(method, path, headers, payload, signature):
    canonical = canonical_request(method, path, {}, headers, ";".join(sorted(headers)), payload)
    assert AWS_V4.signature(AWS_SECRET, AWS_WHEN, "us-east-1", canonical) == signature


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.example.com", "http://[::1]:9000"])
def test_sigv4_matches_botocore(monkeypatch, endpoint):
    """Same request, same clock: our Authorization header is byte for byte botocore's."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    when = datetime(2026, 11, 21, 8, 30, 5, tzinfo=UTC)
    monkeypatch.setattr(s3, "utc_now", lambda: when)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when.replace(tzinfo=None))
    host = s3.S3Host({"name": "s3", "type": "s3", "bucket": "imgs", "access_key": AWS_KEY,
                      "secret_key": AWS_SECRET, "endpoint": endpoint, "region": "eu-west-1"})
    data = b"\x89PNG picture"
    url = host.object_url("2026/11/a b+c~图.png")
    ours = requests.Request("PUT", url, data=data, headers={"Content-Type": "image/png",
                                                             "If-None-Match": "*"}).prepare()
    host.signer(hashlib.sha256(data).hexdigest())(ours)

    theirs = AWSRequest("PUT", url, data=data, headers={
        "Content-Type": "image/png", "If-None-Match": "*",
        "x-amz-content-sha256": hashlib.sha256(data).hexdigest()})
    S3SigV4Auth(Credentials(AWS_KEY, AWS_SECRET), "s3", "eu-west-1").add_auth(theirs)
    assert ours.headers["Authorization"] == theirs.headers["Authorization"]
    assert ours.headers["Host"] == theirs.headers.get("host", ours.headers["Host"])


def test_virtual_host_addressing_on_aws():
    host = s3.S3Host({"name": "s3", "type": "s3", "bucket": "imgs", "access_key": "a", "secret_key": "b",
                      "region": "ap-east-1"})
    assert host.object_url("a b.png") == "https://imgs.s3.ap-east-1.amazonaws.com/a%20b.png"
    dotted = s3.S3Host({"name": "s3", "type": "s3", "bucket": "img.example.com", "access_key": "a",
                        "secret_key": "b"})
    assert dotted.object_url("x.png") == "https://s3.us-east-1.amazonaws.com/img.example.com/x.png"
