"""A fake Aliyun OSS: PutObject, HeadObject, GetObject, DeleteObject, path style (/<bucket>/<key>).

It checks the V4 header signature (OSS4-HMAC-SHA256) as help.aliyun.com documents it, written
here from the documentation (hosts.md §2), not with picpipe's signing code: the canonical request,
the string to sign, the signing-key chain. It answers as OSS does: XML <Error> bodies, 403
SignatureDoesNotMatch (with the StringToSign), InvalidAccessKeyId, RequestTimeTooSkewed (more
than 15 minutes off), 409 FileAlreadyExists under x-oss-forbid-overwrite, x-oss-request-id.
The resource is rebuilt from the decoded path: oss2 sends /bkt/a%2Fb.png and signs /bkt/a/b.png.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
import uuid
from datetime import UTC, datetime

from fakehost import FakeHandler

BUCKET, REGION = "bkt", "cn-hangzhou"
CREDENTIALS = {"LTAI5tFakeKeyId": "fake-oss-secret-4f9a"}
SKEW = 15 * 60


def crc64_ecma(data: bytes) -> int:
    """Bit by bit, as OSS's x-oss-hash-crc64ecma is defined (ECMA-182 polynomial, reflected)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def encode(text: str, slash: bool) -> str:
    """The documented V4 URI encoding: all but A-Z a-z 0-9 - _ . ~ (and '/' in the path) as %XX."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if char.isascii() and (char.isalnum() or char in "-_.~" or (slash and char == "/"))
                   else f"%{byte:02X}")
    return "".join(out)


class FakeOSS(FakeHandler):
    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
        query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        refused = self.refusal(f"/{bucket}/{key}", query)
        if refused:
            return self.error(*refused)
        if bucket != BUCKET:
            return self.error(404, "NoSuchBucket", "The specified bucket does not exist.")
        body = self.body()
        with self.server.lock:
            if self.command == "PUT":
                md5 = hashlib.md5(body).digest()
                if self.headers.get("Content-MD5") not in (None, base64.b64encode(md5).decode()):
                    return self.error(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
                if key in self.server.objects and self.headers.get("x-oss-forbid-overwrite", "").lower() == "true":
                    return self.error(409, "FileAlreadyExists", "The object you specified already exists and can "
                                      "not be overwritten.")
                self.server.objects[key] = body
                self.server.meta[key] = {"Content-Type": self.headers.get("Content-Type") or "application/octet-stream"}
                return self.reply(200, b"", self.object_headers(key))
            if self.command in ("GET", "HEAD"):
                if key not in self.server.objects:
                    return self.error(404, "NoSuchKey", "The specified key does not exist.")
                return self.reply(200, self.server.objects[key], self.object_headers(key),
                                  content_type=self.server.meta[key]["Content-Type"])
            if self.command == "DELETE":
                self.server.objects.pop(key, None)
                return self.reply(204, b"", {"x-oss-request-id": self.request_id()})
        return self.error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def object_headers(self, key: str) -> dict[str, str]:
        """ETag as a simple PUT makes it, CRC-64, request id. A test may override a header through the
        object's meta (a multipart object's ETag; "" for an old object with no CRC)."""
        data, meta = self.server.objects[key], self.server.meta[key]
        headers = {"ETag": f'"{hashlib.md5(data).hexdigest().upper()}"', "x-oss-hash-crc64ecma": str(crc64_ecma(data)),
                   "x-oss-request-id": self.request_id()}
        headers.update((name, value) for name, value in meta.items() if name != "Content-Type")
        return {name: value for name, value in headers.items() if value}

    def refusal(self, resource: str, query: list[tuple[str, str]]) -> tuple[int, str, str, str] | None:
        """(status, code, message, extra XML) when the V4 signature does not hold, else None."""
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("OSS4-HMAC-SHA256 "):
            return 403, "AccessDenied", "You have no right to access this object because of bucket acl.", ""
        fields = dict(part.strip().partition("=")[::2] for part in auth[len("OSS4-HMAC-SHA256 "):].split(","))
        credential, signature = fields.get("Credential", "").split("/"), fields.get("Signature", "")
        stamp = self.headers.get("x-oss-date") or ""
        if len(credential) != 5 or credential[3:] != ["oss", "aliyun_v4_request"] or not signature or not stamp:
            return 400, "InvalidArgument", "Authorization header is invalid.", ""
        access_key, day, region = credential[:3]
        if access_key not in CREDENTIALS:
            return 403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.", ""
        try:
            when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return 400, "InvalidArgument", "x-oss-date is invalid.", ""
        if abs(time.time() - when.timestamp()) > SKEW:
            return (403, "RequestTimeTooSkewed", "The difference between the request time and the current time is "
                    "too large.", f"<RequestTime>{stamp}</RequestTime>")
        additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
        headers = sorted((name.lower(), value.strip()) for name, value in self.headers.items()
                         if name.lower().startswith("x-oss-") or name.lower() in ("content-type", "content-md5")
                         or name.lower() in additional)
        canonical = "\n".join([
            self.command,
            encode(resource, slash=True),
            "&".join(encode(k, False) + (f"={encode(v, False)}" if v else "") for k, v in sorted(query)),
            "".join(f"{name}:{value}\n" for name, value in headers),
            ";".join(sorted(additional)),
            self.headers.get("x-oss-content-sha256") or "UNSIGNED-PAYLOAD",
        ])
        scope = f"{day}/{REGION}/oss/aliyun_v4_request"  # our region: a scope for another one fails
        to_sign = "\n".join(["OSS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("aliyun_v4" + CREDENTIALS[access_key]).encode()
        for part in (day, REGION, "oss", "aliyun_v4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if region != REGION or day != stamp[:8] or not hmac.compare_digest(expected, signature):
            return (403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                    "you provided. Check your key and signing method.", f"<StringToSign>{to_sign}</StringToSign>")
        return None

    def error(self, status: int, code: str, message: str, extra: str = "") -> None:
        request_id = self.request_id()
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{request_id}</RequestId><HostId>{BUCKET}.oss-{REGION}.aliyuncs.com</HostId>{extra}"
                "</Error>")
        self.reply(status, body, {"x-oss-request-id": request_id}, content_type="application/xml")

    @staticmethod
    def request_id() -> str:
        return uuid.uuid4().hex[:24].upper()

