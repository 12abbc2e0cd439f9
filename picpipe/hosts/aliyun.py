"""Aliyun OSS (阿里云对象存储): PutObject signed with V4 (OSS4-HMAC-SHA256).

One PUT per new object: `x-oss-forbid-overwrite: true` makes OSS refuse (409 FileAlreadyExists)
instead of replacing, and only then a HEAD tells whether the object there holds our bytes.
V1 (`OSS ak:sig`) is being phased out by Aliyun, so only V4 is spoken.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import urllib.parse
from typing import TYPE_CHECKING, Any

from picpipe.hosts import HttpHost, Stored, etag_matches
from picpipe.hosts.signing import OSS_V4, b64, canonical_request, uri_encode, utc_now

if TYPE_CHECKING:
    import requests

UNSIGNED = "UNSIGNED-PAYLOAD"


class AliyunHost(HttpHost):
    keys = ("bucket", "region", "access_key_id", "access_key_secret")

    hints = {
        "SignatureDoesNotMatch": "OSS computed another signature: check access_key_secret (copied whole, no spaces) "
                                 "and that region is the bucket's region (cn-hangzhou, ...); a clock far off also "
                                 "fails",
        "InvalidAccessKeyId": "OSS does not know this access_key_id, or it is disabled: check it in the RAM console",
        "RequestTimeTooSkewed": "this computer's clock is more than 15 minutes off: set it right (NTP) and re-run",
        "NoSuchBucket": "no such bucket at this endpoint: check bucket and region (or the endpoint) in the profile",
        "AccessDenied": "the key may not do this here: give the RAM user oss:PutObject, oss:GetObject and "
                        "oss:DeleteObject on the bucket, and check the bucket name",
        "InvalidArgument": "OSS rejected the request's form: check region (a region ID such as cn-hangzhou) and the "
                           "endpoint (no bucket prefix, no path)",
    }
    request_id_headers = ("x-oss-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.bucket = self.setting("bucket")
        # The V4 scope wants the region ID (cn-hangzhou), people often copy the OSS one (oss-cn-hangzhou).
        self.region = self.setting("region").removeprefix("oss-")
        self.access_key_id = self.setting("access_key_id")
        self.secret = self.setting("access_key_secret")
        self.base = self._base()

    def _base(self) -> str:
        """Where objects live: https://<bucket>.oss-<region>.aliyuncs.com, else the endpoint override.

        An override is used as given (a bucket domain, a custom domain), except that a bare regional
        endpoint (oss-cn-hangzhou.aliyuncs.com) gets the bucket in front, and an IP address or
        localhost is addressed path style (/<bucket>/<key>), as oss2 does.
        """
        given = self.endpoint(self.default_base_url())
        url = urllib.parse.urlsplit(given)
        host = url.hostname or ""
        if _is_ip_or_localhost(host):
            return f"{given}/{self.bucket}"
        if host.endswith(".aliyuncs.com") and not host.startswith(self.bucket + "."):
            return f"{url.scheme}://{self.bucket}.{url.netloc}{url.path}"
        return given

    def default_base_url(self) -> str:
        """The bucket's own public domain, whatever endpoint uploads go to (an internal one, say)."""
        return f"https://{self.bucket}.oss-{self.region}.aliyuncs.com"

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        headers = {"Content-Type": mime, "Content-MD5": b64(md5)}  # OSS checks the bytes against it
        if not overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        response = self._call("PUT", key, ok=(200, 409), data=data, headers=headers)
        if response.status_code == 409:
            if self.parse_error(response)[0] != "FileAlreadyExists":
                raise self.failure(response)
            return self.already_there(key, self._holds(key, data))
        return Stored(key, self.url(key))

    def _holds(self, key: str, data: bytes) -> bool:
        """Whether the object at `key` has these bytes, from its HEAD when that can tell.

        A simple PUT's ETag is the upper-case MD5; a multipart object's is not, but OSS keeps a
        CRC-64 of every object. Only an object with neither is downloaded.
        """
        head = self._call("HEAD", key, ok=(200,))
        if head.headers.get("Content-Length") not in (None, str(len(data))):
            return False
        same = etag_matches(head.headers.get("ETag", ""), data)
        if same is not None:
            return same
        crc = head.headers.get("x-oss-hash-crc64ecma")
        if crc:
            return crc == str(crc64(data))
        return self._call("GET", key, ok=(200,)).content == data

    def delete(self, key: str) -> None:
        self._call("DELETE", key, ok=(200, 204))  # OSS answers 204 for a key that is not there too

    def _call(self, method: str, key: str, **kwargs: Any) -> requests.Response:
        return self.request(method, f"{self.base}/{uri_encode(key)}", sign=functools.partial(self._sign, key), **kwargs)

    def _sign(self, key: str, prepared: requests.PreparedRequest) -> None:
        """V4 header signature: the x-oss-* headers, Content-Type and Content-MD5 are signed, the
        payload is not (UNSIGNED-PAYLOAD); the resource is /<bucket>/<key> whatever the addressing."""
        when = utc_now()
        prepared.headers["x-oss-date"] = f"{when:%Y%m%dT%H%M%SZ}"
        prepared.headers["x-oss-content-sha256"] = UNSIGNED
        signed = {name: value for name, value in prepared.headers.items()
                  if name.lower().startswith("x-oss-") or name.lower() in ("content-type", "content-md5")}
        request = canonical_request(str(prepared.method), uri_encode(f"/{self.bucket}/{key}"), {}, signed, "",
                                    UNSIGNED)
        signature = OSS_V4.signature(self.secret, when, self.region, request)
        prepared.headers["Authorization"] = (f"{OSS_V4.algorithm} Credential={self.access_key_id}/"
                                             f"{OSS_V4.scope(when, self.region)},Signature={signature}")


def _is_ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.cache
def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xC96C5795D7870F42 if crc & 1 else crc >> 1
        table.append(crc)
    return table


def crc64(data: bytes) -> int:
    """CRC-64/ECMA-182 as OSS reports it in x-oss-hash-crc64ecma (reflected, all-ones init and xor)."""
    crc, table = 0xFFFFFFFFFFFFFFFF, _crc64_table()
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


HOST = AliyunHost
