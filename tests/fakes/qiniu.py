"""A fake Qiniu Kodo: form upload (POST /) and the management API's stat and delete, one bucket.

Written from Qiniu's documentation, not from picpipe's code:
- upload token `AK:ub64(HMAC-SHA1(SK, encodedPolicy)):encodedPolicy` (developer.qiniu.com/kodo/1208),
  scope "<bucket>" insert-only (same bytes → 200, other bytes → 614), "<bucket>:<key>" may overwrite
  unless insertOnly (kodo/1206); deadline in the past → 401 expired token, bad sign → 401 bad token;
- management token `Authorization: Qiniu AK:ub64(HMAC-SHA1(SK, signingStr))` (kodo/1201);
  GET /stat/<EncodedEntryURI> (kodo/1308), POST /delete/<EncodedEntryURI>; 612 when absent;
- every answer carries X-Reqid (the SDK takes a 200 without it for "server is not qiniu").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from fakehost import FakeHandler

ACCESS_KEY = "fake-qiniu-access-key"
SECRET_KEY = "fake-qiniu-secret-key-0123456789"
BUCKET = "pics"
BLOCK = 4 * 1024 * 1024


def ub64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def sign(data: bytes | str) -> str:
    return ub64(hmac.new(SECRET_KEY.encode(), data.encode() if isinstance(data, str) else data, hashlib.sha1).digest())


def qetag(data: bytes) -> str:
    """The `hash` of kodo/1231 (appendix, qiniu-etag)."""
    blocks = [hashlib.sha1(data[i:i + BLOCK]).digest() for i in range(0, max(len(data), 1), BLOCK)]
    if len(blocks) == 1:
        return ub64(b"\x16" + blocks[0])
    return ub64(b"\x96" + hashlib.sha1(b"".join(blocks)).digest())


class FakeQiniu(FakeHandler):
    def handle_request(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self.command == "POST" and path == "/":
            self.upload()
        elif self.command in ("GET", "POST") and path.startswith("/stat/"):  # documented GET; the SDK POSTs
            self.manage(path.removeprefix("/stat/"), self.stat)
        elif self.command == "POST" and path.startswith("/delete/"):
            self.manage(path.removeprefix("/delete/"), self.remove)
        else:
            self.answer(404, {"error": "document not found"})

    def answer(self, status: int, body: dict | None = None) -> None:
        self.reply(status, json.dumps(body) if body is not None else b"", {"X-Reqid": uuid.uuid4().hex[:16]})

    # -- upload --------------------------------------------------------------------------------------

    def upload(self) -> None:
        fields = self.form()
        token = fields.get("token")
        if token is None or "file" not in fields:
            self.answer(400, {"error": "file or token not specified"})
            return
        try:
            access_key, encoded_sign, encoded_policy = token.get_payload(decode=True).decode().split(":")
            policy = json.loads(base64.urlsafe_b64decode(encoded_policy))
        except (ValueError, UnicodeDecodeError):
            self.answer(401, {"error": "bad token"})
            return
        if access_key != ACCESS_KEY or not hmac.compare_digest(encoded_sign, sign(encoded_policy)):
            self.answer(401, {"error": "bad token"})
            return
        if int(policy.get("deadline", 0)) < time.time():
            self.answer(401, {"error": "expired token"})
            return
        bucket, _, scope_key = str(policy.get("scope", "")).partition(":")
        if bucket != BUCKET:
            self.answer(631, {"error": "no such bucket"})
            return
        key = fields["key"].get_payload(decode=True).decode() if "key" in fields else scope_key
        if scope_key and key != scope_key:
            self.answer(403, {"error": "key doesn't match with scope"})
            return
        data = fields["file"].get_payload(decode=True) or b""
        insert_only = not scope_key or bool(policy.get("insertOnly"))
        with self.server.lock:
            old = self.server.objects.get(key)
            if old is not None and insert_only and old != data:
                self.answer(614, {"error": "file exists"})
                return
            self.server.objects[key] = data  # the same bytes again: Qiniu renews putTime and says 200
            self.server.meta[key] = {"mimeType": fields["file"].get_content_type(),
                                     "putTime": str(time.time_ns() // 100)}
        self.answer(200, {"hash": qetag(data), "key": key})

    def form(self) -> dict[str, Message]:
        """The multipart/form-data fields by name."""
        head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self.body())
        if not message.is_multipart():
            return {}
        parts = message.get_payload()
        assert isinstance(parts, list)
        return {str(part.get_param("name", header="content-disposition")): part for part in parts}

    # -- management API ------------------------------------------------------------------------------

    def manage(self, encoded_entry: str, action) -> None:
        if not self.authorized():
            self.answer(401, {"error": "bad token"})
            return
        try:
            bucket, _, key = base64.urlsafe_b64decode(encoded_entry).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            self.answer(400, {"error": "invalid argument"})
            return
        if bucket != BUCKET:
            self.answer(631, {"error": "no such bucket"})
            return
        with self.server.lock:
            if key not in self.server.objects:
                self.answer(612, {"error": "no such file or directory"})
                return
            action(key)

    def authorized(self) -> bool:
        """The signingStr of kodo/1201 rebuilt from the request as received."""
        scheme, _, credential = self.headers.get("Authorization", "").partition(" ")
        access_key, _, encoded_sign = credential.partition(":")
        if scheme != "Qiniu" or access_key != ACCESS_KEY:
            return False
        content_type = self.headers.get("Content-Type", "")
        data = f"{self.command} {self.path}\nHost: {self.headers.get('Host', '')}"
        if content_type:
            data += f"\nContent-Type: {content_type}"
        qiniu = sorted(("-".join(p.capitalize() for p in name.split("-")), value)
                       for name, value in self.headers.items()
                       if name.lower().startswith("x-qiniu-") and len(name) > len("x-qiniu-"))
        if qiniu:
            data += "\n" + "\n".join(f"{name}: {value}" for name, value in qiniu)
        signed = data.encode() + b"\n\n"
        body = self.body()
        if body and content_type and content_type != "application/octet-stream":
            signed += body
        return hmac.compare_digest(encoded_sign, sign(signed))

    def stat(self, key: str) -> None:
        data = self.server.objects[key]
        meta = self.server.meta.get(key, {})
        self.answer(200, {"fsize": len(data), "hash": qetag(data), "md5": hashlib.md5(data).hexdigest(),
                          "mimeType": meta.get("mimeType", "application/octet-stream"),
                          "putTime": int(meta.get("putTime", "0")), "type": 0})

    def remove(self, key: str) -> None:
        del self.server.objects[key]
        self.server.meta.pop(key, None)
        self.answer(200)
