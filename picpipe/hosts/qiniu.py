"""Qiniu Kodo (七牛): form upload with an upload token; stat and delete through the management API.

The upload token's scope makes the write conditional: scope "<bucket>" is insert-only, so Qiniu
refuses a different file at the key (614 file exists) and accepts the same bytes again. It does not
say whether those bytes were there already, so such an upload is not marked `reused`; a 614 is
checked with a stat (the stored qetag against ours) before it is called a conflict. --overwrite
signs scope "<bucket>:<key>", which may replace.

Qiniu returns no link: base_url (a domain bound to the bucket) is required. `region` picks the
upload host (z0 → upload.qiniup.com, R → upload-R.qiniup.com); `endpoint` replaces both the upload
host and the management host rs.qiniuapi.com, for a private deployment or a test server.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from picpipe.errors import PicpipeError
from picpipe.hosts import HttpHost, Stored
from picpipe.hosts.signing import hmac_sha1, host_header, urlsafe_b64, utc_now

if TYPE_CHECKING:
    import requests

#: Seconds an upload token stays valid (its policy's deadline).
TOKEN_SECONDS = 3600
#: qetag block size (developer.qiniu.com/kodo/1231/appendix#qiniu-etag).
BLOCK = 4 * 1024 * 1024
FORM = "application/x-www-form-urlencoded"
#: Management host: GET /stat/<entry>, POST /delete/<entry> (developer.qiniu.com/kodo/1308/stat).
RS_URL = "https://rs.qiniuapi.com"
FILE_EXISTS, NO_SUCH_FILE, NO_SUCH_BUCKET = 614, 612, 631


class QiniuHost(HttpHost):
    keys = ("bucket", "access_key", "secret_key", "region")

    base_url_required = "Qiniu returns no link to an upload, and a bucket's test domain is restricted"
    hints = {
        401: "Qiniu refused the token: 'bad token' means access_key and secret_key are not a pair (copy both "
             "from the console's key management) or the bucket is another account's; 'expired token' means "
             "this computer's clock is off: set it right (NTP) and re-run",
        400: "Qiniu rejected the request: 'incorrect region' means the bucket lives in another region: set the "
             "profile's region (z0, z1, z2, na0, as0, cn-east-2, ...) to the one its message names",
        403: "the token may not write here ('key doesn't match with scope', or a size or type limit): check the "
             "bucket and the key template",
        NO_SUCH_BUCKET: "no such bucket for this account: check bucket (the bucket's name, not its domain) and "
                        "that access_key belongs to the bucket's owner",
    }
    request_id_headers = ("x-reqid",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.bucket = self.setting("bucket")
        self.access_key, self.secret_key = self.setting("access_key"), self.setting("secret_key")
        region = str(profile.get("region") or "z0")
        self.up_url = self.endpoint("https://upload.qiniup.com" if region == "z0"
                                    else f"https://upload-{region}.qiniup.com")
        self.rs_url = self.endpoint(RS_URL)

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        # Idempotent: the key is fixed, and an insert-only scope takes the same bytes again.
        response = self.request("POST", self.up_url + "/", ok=(200, FILE_EXISTS),
                                data={"token": self.upload_token(key, overwrite), "key": key},
                                files={"file": (posixpath.basename(key), data, mime)})
        if response.status_code == 200:
            return Stored(key, self.url(key))
        return self.already_there(key, self.stored_hash(key) == qetag(data))

    def upload_token(self, key: str, overwrite: bool) -> str:
        policy = {"scope": f"{self.bucket}:{key}" if overwrite else self.bucket,
                  "deadline": int(time.time()) + TOKEN_SECONDS}
        return upload_token(self.access_key, self.secret_key, policy)

    def stored_hash(self, key: str) -> str | None:
        """The qetag of the object at `key` (None when there is none)."""
        response = self.request("GET", f"{self.rs_url}/stat/{entry(self.bucket, key)}", ok=(200, NO_SUCH_FILE),
                                headers={"Content-Type": FORM}, sign=self.sign)
        if response.status_code == NO_SUCH_FILE:
            return None
        return str(self.json_object(response).get("hash") or "")

    def delete(self, key: str) -> None:
        self.request("POST", f"{self.rs_url}/delete/{entry(self.bucket, key)}", ok=(200, NO_SUCH_FILE),
                     headers={"Content-Type": FORM}, sign=self.sign)

    def sign(self, request: requests.PreparedRequest) -> None:
        """A management request's `Authorization: Qiniu <token>`, with the X-Qiniu-Date the SDKs send."""
        url = str(request.url)
        request.headers["Host"] = host_header(url)
        request.headers["X-Qiniu-Date"] = f"{utc_now():%Y%m%dT%H%M%SZ}"
        parts = urllib.parse.urlsplit(url)
        body = request.body.encode() if isinstance(request.body, str) else request.body or b""
        token = management_token(self.access_key, self.secret_key, str(request.method),
                                 parts.path + (f"?{parts.query}" if parts.query else ""), request.headers, body)
        request.headers["Authorization"] = f"Qiniu {token}"

    def failure(self, response: requests.Response) -> PicpipeError:
        error = super().failure(response)
        if response.status_code == NO_SUCH_BUCKET:  # Qiniu's own status, past 599: not a server failure
            error.type = "not_found"
        return error


def upload_token(access_key: str, secret_key: str, policy: Mapping[str, Any]) -> str:
    """AccessKey:encodedSign:encodedPutPolicy, the sign an HMAC-SHA1 over the *encoded* policy
    (developer.qiniu.com/kodo/1208/upload-token)."""
    encoded = urlsafe_b64(json.dumps(policy, separators=(",", ":")).encode())
    return f"{access_key}:{urlsafe_b64(hmac_sha1(secret_key, encoded))}:{encoded}"


def management_token(access_key: str, secret_key: str, method: str, path_query: str,
                     headers: Mapping[str, str], body: bytes) -> str:
    """AccessKey:encodedSign over "<METHOD> <path>[?query]", Host, Content-Type, the X-Qiniu-* headers
    (canonical names, sorted) and a body that is not application/octet-stream
    (developer.qiniu.com/kodo/1201/access-token)."""
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    lines = [f"{method.upper()} {path_query}", f"Host: {lower.get('host', '')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{_canonical(k)}: {lower[k]}" for k in sorted(lower)
              if k.startswith("x-qiniu-") and len(k) > len("x-qiniu-")]
    data = "\n".join(lines).encode() + b"\n\n"
    if body and content_type and content_type != "application/octet-stream":
        data += body
    return f"{access_key}:{urlsafe_b64(hmac_sha1(secret_key, data))}"


def entry(bucket: str, key: str) -> str:
    """EncodedEntryURI: ub64("<bucket>:<key>") (developer.qiniu.com/kodo/1276/data-format)."""
    return urlsafe_b64(f"{bucket}:{key}".encode())


def qetag(data: bytes) -> str:
    """Qiniu's content hash: 0x16 + SHA-1 of a single 4 MiB block, else 0x96 + SHA-1 of the blocks' SHA-1s."""
    blocks = [hashlib.sha1(data[i:i + BLOCK]).digest() for i in range(0, len(data), BLOCK)] or [
        hashlib.sha1(b"").digest()]
    if len(blocks) == 1:
        return urlsafe_b64(b"\x16" + blocks[0])
    return urlsafe_b64(b"\x96" + hashlib.sha1(b"".join(blocks)).digest())


def _canonical(name: str) -> str:
    """x-qiniu-date → X-Qiniu-Date (Go's CanonicalMIMEHeaderKey, which Qiniu's servers use)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


HOST = QiniuHost
