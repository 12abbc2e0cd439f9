"""A fake Tencent COS bucket (XML API): PUT, GET (with Range), HEAD and DELETE Object.

Written from Tencent's documentation, not from picpipe's code: the q-sign-algorithm=sha1
signature is rebuilt from the request as received, over the headers and URL parameters its
q-header-list and q-url-param-list name (tencentcloud.com/document/product/436/7778). An unknown
SecretId → 403 InvalidAccessKeyId, a wrong signature → 403 SignatureDoesNotMatch, a q-sign-time
that is over (or not yet begun) → 403 AccessDenied "Request has expired"; error bodies are
`<Error><Code/><Message/><Resource/><RequestId/><TraceId/></Error>` (document/api/436/7730).
ETag is the quoted MD5 of a simple PUT; DELETE of a missing key is 204 (document/product/436/7743).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import urllib.parse
import uuid
from xml.sax.saxutils import escape

from fakehost import FakeHandler

SECRET_ID = "AKIDfakeCosSecretId0123456789"
SECRET_KEY = "fakeCosSecretKey0123456789abcd"
BUCKET = "examplebucket-1250000000"
REGION = "ap-guangzhou"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def encode(text: str) -> str:
    """The signature's UrlEncode: all but A-Z a-z 0-9 - _ . ~ percent-encoded, UTF-8."""
    return urllib.parse.quote(text, safe="-_.~")


class FakeCos(FakeHandler):
    def handle_request(self) -> None:
        error = self.check_signature()
        if error:
            self.error(403, *error)
            return
        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)[1:]
        if self.command == "PUT":
            self.put(key)
        elif self.command in ("GET", "HEAD"):
            self.get(key)
        elif self.command == "DELETE":
            with self.server.lock:
                self.server.objects.pop(key, None)
            self.reply(204, headers=self.ids())
        else:
            self.error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")

    def ids(self) -> dict[str, str]:
        return {"x-cos-request-id": base64.b64encode(uuid.uuid4().bytes).decode()}

    def error(self, status: int, code: str, message: str) -> None:
        headers = self.ids()
        body = (f"<?xml version='1.0' encoding='utf-8' ?>\n<Error><Code>{code}</Code><Message>{escape(message)}"
                f"</Message><Resource>{escape(self.headers.get('Host', ''))}{escape(self.path)}</Resource>"
                f"<RequestId>{headers['x-cos-request-id']}</RequestId><TraceId>{uuid.uuid4().hex}</TraceId></Error>")
        self.reply(status, body, headers, content_type="application/xml")

    def check_signature(self) -> tuple[str, str] | None:
        """(code, message) of the refusal, or None when the request is signed right."""
        fields = dict(part.partition("=")[::2] for part in self.headers.get("Authorization", "").split("&"))
        if fields.get("q-sign-algorithm") != "sha1" or "q-signature" not in fields:
            return "AccessDenied", "Access Denied."
        if fields.get("q-ak") != SECRET_ID:
            return "InvalidAccessKeyId", "The Access Key Id you provided does not exist in our records."
        start, _, end = fields.get("q-sign-time", "").partition(";")
        if not (start.isdigit() and end.isdigit()) or not int(start) <= time.time() <= int(end):
            return "AccessDenied", "Request has expired"
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        header_names = [n for n in fields.get("q-header-list", "").split(";") if n]
        param_names = [n for n in fields.get("q-url-param-list", "").split(";") if n]
        headers = {n: self.headers.get(n, "") for n in header_names}
        params = {n: next((v for k, v in query.items() if k.lower() == n), "") for n in param_names}

        def line(pairs: dict[str, str]) -> str:
            return "&".join(f"{encode(k).lower()}={encode(v)}" for k, v in sorted(pairs.items()))

        http_string = (f"{self.command.lower()}\n{urllib.parse.unquote(url.path)}\n{line(params)}\n"
                       f"{line(headers)}\n")
        key_time = fields.get("q-key-time", "")
        string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
        sign_key = hmac.new(SECRET_KEY.encode(), key_time.encode(), hashlib.sha1).hexdigest()
        expected = hmac.new(sign_key.encode(), string_to_sign.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, fields["q-signature"]):
            return ("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                    "you provided. Check your key and signing method.")
        return None

    def put(self, key: str) -> None:
        data = self.body()
        md5 = hashlib.md5(data)
        given = self.headers.get("Content-MD5")
        if given is not None and given != base64.b64encode(md5.digest()).decode():
            self.error(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")
            return
        with self.server.lock:
            self.server.objects[key] = data
            self.server.meta[key] = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream"),
                                     "ETag": f'"{md5.hexdigest()}"'}
        self.reply(200, headers={**self.ids(), "ETag": f'"{md5.hexdigest()}"'})

    def get(self, key: str) -> None:
        with self.server.lock:
            data, meta = self.server.objects.get(key), dict(self.server.meta.get(key, {}))
        if data is None:
            self.error(404, "NoSuchKey", "The specified key does not exist.")
            return
        headers = {**self.ids(), "ETag": meta.get("ETag", ""), "Accept-Ranges": "bytes"}
        wanted = _RANGE.fullmatch(self.headers.get("Range", ""))
        if wanted is None:
            self.reply(200, data, headers, content_type=meta.get("Content-Type", "application/octet-stream"))
            return
        first = int(wanted[1])
        last = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
        if first >= len(data):
            self.error(416, "InvalidRange", "The requested range is not satisfiable")
            return
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        self.reply(206, data[first:last + 1], headers, content_type=meta.get("Content-Type", ""))
