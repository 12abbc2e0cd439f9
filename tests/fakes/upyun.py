"""A fake Upyun REST API: PUT, GET, HEAD, DELETE on /<bucket>/<path>.

It checks `Authorization: UPYUN <operator>:<signature>` as docs.upyun.com/api/authorization
documents it, written here from the documentation (hosts.md §3), not with picpipe's code:
signature = b64(HMAC-SHA1(MD5hex(password), METHOD&URI&Date[&Content-MD5])), URI as sent, Date
within 30 minutes. Errors are JSON {"msg", "code", "id"} with the documented codes: 401/40100005
signature error, 40100006 user not exists, 400/40000003 need bucket name. Codes the docs corpus
does not show are marked (unconfirmed) where they are used.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid

from fakehost import FakeHandler

BUCKET = "pics"
OPERATORS = {"op": "fake-upyun-password-4f9a"}
SKEW = 30 * 60


class FakeUpyun(FakeHandler):
    def handle_request(self) -> None:
        uri = urllib.parse.urlsplit(self.path).path
        bucket, _, key = urllib.parse.unquote(uri).lstrip("/").partition("/")
        if not bucket:
            return self.error(400, 40000003, "need bucket name")
        refused = self.refusal(uri)
        if refused:
            return self.error(*refused)
        if bucket != BUCKET:
            return self.error(404, 40400001, "file or directory not found")  # what Upyun says here: unconfirmed
        body = self.body()
        with self.server.lock:
            if self.command == "PUT":
                md5 = hashlib.md5(body).hexdigest()
                if self.headers.get("Content-MD5", md5).lower() != md5:
                    return self.error(400, 40000002, "Content-MD5 not match")  # code number unconfirmed
                self.server.objects[key] = body
                return self.reply(200, b"", {"x-request-id": self.request_id()})
            if key not in self.server.objects:
                return self.error(404, 40400001, "file or directory not found")
            if self.command in ("GET", "HEAD"):
                data = self.server.objects[key]
                return self.reply(200, data, {"x-upyun-file-type": "file", "x-upyun-file-size": str(len(data)),
                                              "Content-Md5": hashlib.md5(data).hexdigest(),
                                              "x-request-id": self.request_id()},
                                  content_type="application/octet-stream")
            if self.command == "DELETE":
                del self.server.objects[key]
                return self.reply(200, b"", {"x-request-id": self.request_id()})
        return self.error(405, 40500001, "method not allowed")  # unconfirmed

    def refusal(self, uri: str) -> tuple[int, int, str] | None:
        """(status, code, message) when the request's signature or date does not hold, else None."""
        date = self.headers.get("Date")
        if not date:
            return 401, 40100001, "need date header"  # code number unconfirmed
        try:
            sent = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return 401, 40100001, "need date header"
        if abs(time.time() - sent) > SKEW:
            return 401, 40100002, "date offset error"  # message as old docs list it; code number unconfirmed
        scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
        operator, _, signature = credential.partition(":")
        if scheme != "UPYUN" or not signature:
            return 401, 40100005, "signature error"
        if operator not in OPERATORS:
            return 401, 40100006, "user not exists"
        parts = [self.command, uri, date]
        if self.headers.get("Content-MD5"):
            parts.append(self.headers["Content-MD5"])
        key = hashlib.md5(OPERATORS[operator].encode()).hexdigest().encode()
        expected = base64.b64encode(hmac.new(key, "&".join(parts).encode(), hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            return 401, 40100005, "signature error"
        return None

    def error(self, status: int, code: int, message: str) -> None:
        request_id = self.request_id()
        self.reply(status, json.dumps({"msg": message, "code": code, "id": request_id}),
                   {"x-request-id": request_id})

    @staticmethod
    def request_id() -> str:
        return uuid.uuid4().hex
