"""Tencent COS (腾讯云对象存储), XML API: PUT Object signed with q-sign-algorithm=sha1.

COS replaces an existing key and documents no header that forbids it for PUT Object (only
versioning keeps the old copy; tencentcloud.com/document/product/436/7749), so a new key is checked
first: a one-byte ranged GET says whether an object is there, carries its ETag (the MD5 of a simple
PUT) and, unlike a HEAD, an error body with COS's own code when the credentials are refused. The
check and the PUT are two requests, not one atomic step: a writer in between is not seen.

Objects live at https://<BucketName-APPID>.cos.<region>.myqcloud.com/<key>; `endpoint` replaces
that bucket URL (a global-acceleration or custom origin domain, a test server), base_url the
public prefix (custom domain, CDN).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from picpipe.errors import UsageError
from picpipe.hosts import HttpHost, Stored, etag_matches
from picpipe.hosts.signing import b64, hmac_sha1, host_header, uri_encode

if TYPE_CHECKING:
    import requests

#: Seconds a signature stays valid; it starts a minute early for clocks a little behind (as the SDK does).
SIGN_SECONDS = 3600
#: Headers signed besides x-cos-*: Host and the body's facts, as cos-python-sdk-v5 signs them.
SIGNED_HEADERS = frozenset({"host", "content-type", "content-length", "content-md5", "range"})
_BUCKET = re.compile(r".+-\d+")


class TencentHost(HttpHost):
    keys = ("bucket", "region", "secret_id", "secret_key")

    hints = {
        "SignatureDoesNotMatch": "COS computed another signature: check secret_key (copied whole) against "
                                 "secret_id in the API key console",
        "InvalidAccessKeyId": "COS does not know this secret_id (or it is disabled): check it in the API key "
                              "console",
        "AccessDenied": "'Request has expired' means this computer's clock is off: set it right (NTP); otherwise "
                        "the key may not do this: allow cos:PutObject, cos:GetObject (to check an existing "
                        "image) and cos:DeleteObject on the bucket",
        "RequestTimeTooSkewed": "this computer's clock is off: set it right (NTP) and re-run",
        "NoSuchBucket": "no such bucket in this region: bucket is BucketName-APPID (e.g. images-1250000000) and "
                        "region the bucket's (ap-guangzhou, ...)",
        "EntityTooLarge": "the file is over COS's single-PUT limit (5 GB)",
    }
    request_id_headers = ("x-cos-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.bucket, self.region = self.setting("bucket"), self.setting("region")
        if not _BUCKET.fullmatch(self.bucket):
            raise UsageError(f"profile {self.name!r} (tencent): bucket {self.bucket!r} lacks its APPID",
                             "COS names a bucket BucketName-APPID, e.g. images-1250000000 (see the bucket list)")
        self.secret_id, self.secret_key = self.setting("secret_id"), self.setting("secret_key")
        self.public = f"https://{self.bucket}.cos.{self.region}.myqcloud.com"
        self.base = self.endpoint(self.public)

    def default_base_url(self) -> str:
        return self.public + "/"

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        md5 = hashlib.md5(data, usedforsecurity=False)
        if not overwrite:
            there = self._call("GET", key, ok=(200, 206, 404, 416), headers={"Range": "bytes=0-0"})
            if there.status_code != 404:
                return self.already_there(key, self._holds(key, data, there))
        # COS checks the bytes against Content-MD5 (400 BadDigest when they differ).
        self._call("PUT", key, data=data, headers={"Content-Type": mime, "Content-MD5": b64(md5.digest())})
        return Stored(key, self.url(key))

    def _holds(self, key: str, data: bytes, there: requests.Response) -> bool:
        """Whether the object that answered the ranged GET has our bytes: its size from Content-Range,
        then its ETag when that is a plain MD5 (a simple PUT), else the whole object."""
        if there.status_code == 200:  # the Range was ignored: the whole object came
            return there.content == data
        size = there.headers.get("Content-Range", "").rpartition("/")[2]
        if size.isdigit() and int(size) != len(data):
            return False
        same = etag_matches(there.headers.get("ETag", ""), data)
        if same is not None:
            return same
        return self._call("GET", key).content == data  # multipart or encrypted objects

    def delete(self, key: str) -> None:
        self._call("DELETE", key, ok=(200, 204, 404))  # COS answers 204 for a key that is not there

    def _call(self, method: str, key: str, **kwargs: Any) -> requests.Response:
        return self.request(method, f"{self.base}/{uri_encode(key)}", sign=functools.partial(self._sign, key),
                            **kwargs)

    def _sign(self, key: str, request: requests.PreparedRequest) -> None:
        request.headers["Host"] = host_header(str(request.url))
        now = int(time.time())
        signed = {k: v for k, v in request.headers.items()
                  if k.lower() in SIGNED_HEADERS or k.lower().startswith("x-cos-")}
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(str(request.url)).query, keep_blank_values=True))
        key_time = f"{now - 60};{now + SIGN_SECONDS}"
        request.headers["Authorization"] = authorization(self.secret_id, self.secret_key, key_time,
                                                         str(request.method), "/" + key, query, signed)


def authorization(secret_id: str, secret_key: str, key_time: str, method: str, path: str,
                  params: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The q-sign Authorization value (tencentcloud.com/document/product/436/7778): `path` is the
    decoded UriPathname, `key_time` "<start>;<end>" in Unix seconds."""
    header_list, header_line = _pairs(headers)
    param_list, param_line = _pairs(params)
    http_string = f"{method.lower()}\n{path}\n{param_line}\n{header_line}\n"
    string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    sign_key = hmac_sha1(secret_key, key_time).hex()
    signature = hmac_sha1(sign_key, string_to_sign).hex()
    return (f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={key_time}&q-key-time={key_time}"
            f"&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signature}")


def _pairs(items: Mapping[str, str]) -> tuple[str, str]:
    """("a;b", "a=1&b=2"): names lower-cased and URL-encoded, values URL-encoded, sorted by name."""
    encoded = sorted((uri_encode(k, "").lower(), uri_encode(str(v), "")) for k, v in items.items())
    return ";".join(k for k, _ in encoded), "&".join(f"{k}={v}" for k, v in encoded)


HOST = TencentHost
