"""Any S3-compatible store: AWS, Cloudflare R2, MinIO, Backblaze B2, and the S3 endpoints of
Qiniu, OSS and COS. One signed PUT per new object (SigV4, header auth).

`If-None-Match: *` makes the write conditional: the store answers 412 instead of replacing an
existing key, and a HEAD then tells the same bytes (ETag = MD5 of a single-part upload) from a
different image. AWS and R2 document conditional writes; other S3-compatible stores may ignore
the header and replace the object, so on any other endpoint a HEAD goes first, unless the
profile says `conditional_writes = true` (MinIO, moto). Addressing is virtual-host on AWS's own
endpoints and path style on any other endpoint (MinIO, R2, tests); `path_style` decides when set.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.hosts import HttpHost, Stored, etag_matches
from picpipe.hosts.signing import AWS_V4, canonical_request, host_header, sha256_hex, uri_encode, utc_now

if TYPE_CHECKING:
    import requests

#: Stores whose documentation promises that `If-None-Match: *` refuses to replace an object.
CONDITIONAL_STORES = (".amazonaws.com", ".r2.cloudflarestorage.com")


class S3Host(HttpHost):
    keys = ("bucket", "region", "access_key", "secret_key", "path_style", "conditional_writes")
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {
        "path_style": ((bool, str), "true or false"), "conditional_writes": ((bool, str), "true or false")}

    hints = {
        "SignatureDoesNotMatch": "the secret_key does not match the access_key (or this computer's clock is off "
                                 "by more than 15 minutes)",
        "InvalidAccessKeyId": "this endpoint does not know the access_key: check it, and that endpoint and "
                              "region belong to the same provider",
        "AuthorizationHeaderMalformed": "the region is wrong for this bucket: set the profile's region",
        "PermanentRedirect": "the bucket lives in another region: set the profile's region (or endpoint)",
        "NoSuchBucket": "the bucket does not exist at this endpoint: check bucket, region and endpoint",
        "AccessDenied": "the key may not write to this bucket: allow s3:PutObject (and s3:DeleteObject for "
                        "--delete) in its policy",
        "RequestTimeTooSkewed": "this computer's clock is off by more than 15 minutes: sync it (NTP)",
        "EntityTooLarge": "the file is over the store's single-upload limit (5 GB on AWS)",
    }
    request_id_headers = ("x-amz-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.bucket = self.setting("bucket")
        self.region = str(profile.get("region") or "us-east-1")
        self.access_key, self.secret_key = self.setting("access_key"), self.setting("secret_key")
        default = f"https://s3.{self.region}.amazonaws.com"
        endpoint = urllib.parse.urlsplit(self.endpoint(default))
        path_style = _flag(profile.get("path_style"), bool(profile.get("endpoint")) or "." in self.bucket)
        self.conditional = _flag(profile.get("conditional_writes"),
                                 (endpoint.hostname or "").endswith(CONDITIONAL_STORES))
        if path_style:
            self.prefix = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path}/{self.bucket}"
        else:
            self.prefix = f"{endpoint.scheme}://{self.bucket}.{endpoint.netloc}{endpoint.path}"

    def default_base_url(self) -> str:
        return self.prefix + "/"

    def object_url(self, key: str) -> str:
        return f"{self.prefix}/{uri_encode(key)}"

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        headers = {"Content-Type": mime}
        if not overwrite:
            headers["If-None-Match"] = "*"
            same = None if self.conditional else self.holds(key, data)
            if same is not None:
                return self.already_there(key, same)
        response = self.request("PUT", self.object_url(key), ok=(200, 412), data=data, headers=headers,
                                sign=self.signer(sha256_hex(data)))
        if response.status_code == 200:
            return Stored(key, self.url(key))
        return self.already_there(key, bool(self.holds(key, data)))

    def holds(self, key: str, data: bytes) -> bool | None:
        """Whether the object at `key` has `data` (None: there is no object), from its ETag when that
        is an MD5, else from its bytes. A one-byte GET rather than a HEAD: a refused HEAD has no body,
        and so no error code (SignatureDoesNotMatch, AccessDenied) to report."""
        empty = sha256_hex(b"")
        probe = self.request("GET", self.object_url(key), ok=(200, 206, 404, 416), headers={"Range": "bytes=0-0"},
                             sign=self.signer(empty))
        if probe.status_code == 404:
            return None
        if probe.status_code == 200:  # the store ignored the Range and sent it all
            return probe.content == data
        same = etag_matches(probe.headers.get("ETag", ""), data)
        if same is None:
            same = self.request("GET", self.object_url(key), sign=self.signer(empty)).content == data
        return same

    def delete(self, key: str) -> None:
        self.request("DELETE", self.object_url(key), ok=(200, 204, 404), sign=self.signer(sha256_hex(b"")))

    def signer(self, payload_hash: str) -> Callable[[requests.PreparedRequest], None]:
        """Sign a prepared request with SigV4 (every header sent but Content-Length is signed)."""

        def sign(request: requests.PreparedRequest) -> None:
            when = utc_now()
            url = urllib.parse.urlsplit(request.url or "")
            request.headers["Host"] = host_header(request.url or "")
            request.headers["x-amz-date"] = f"{when:%Y%m%dT%H%M%SZ}"
            request.headers["x-amz-content-sha256"] = payload_hash
            signed = {k.lower(): str(v) for k, v in request.headers.items()
                      if k.lower() in ("host", "content-type", "content-md5", "if-none-match", "range")
                      or k.lower().startswith("x-amz-")}
            names = ";".join(sorted(signed))
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
            canonical = canonical_request(request.method or "GET", url.path or "/", query, signed, names,
                                          payload_hash)
            signature = AWS_V4.signature(self.secret_key, when, self.region, canonical)
            request.headers["Authorization"] = (
                f"{AWS_V4.algorithm} Credential={self.access_key}/{AWS_V4.scope(when, self.region)}, "
                f"SignedHeaders={names}, Signature={signature}")

        return sign


def _flag(value: Any, default: bool) -> bool:
    from picpipe.config import truth

    return truth(value) is True if value not in (None, "") else default


HOST = S3Host
