"""A fake Imgur API 3 (hosts.md §9): anonymous image upload and delete, rate-limit headers.

- `Authorization: Client-ID <id>` against the server's client ids: missing → 401, unknown or
  revoked → 403 {"data": {"error": "Invalid client_id", ...}, "success": false, "status": 403};
- POST /3/image (or /3/upload): `image` as a file (type=file) or base64 (type=base64); every
  upload is a new image with its own id and deletehash, whatever came before;
- each upload costs 10 credits of the IP's allowance: with fewer left → 429 "Too Many Requests";
  every answer carries X-RateLimit-{Client,User}{Limit,Remaining} and X-RateLimit-UserReset;
- DELETE /3/image/<deletehash> → {"data": true}; an unknown one → 404.

    with serving(FakeImgur, ImgurServer) as server:  # endpoint: server.url + "/3"
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
from typing import Any

from fakehost import FakeHandler, FakeServer
from fakes.smms import form_fields

CLIENT_ID = "imgurFakeClient0123456"
REVOKED_CLIENT_ID = "imgurRevokedClient0123"
UPLOAD_CREDITS = 10


class ImgurServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.client_ids = {CLIENT_ID}
        self.deletehashes: dict[str, str] = {}  # deletehash → image id; bytes in objects[id]
        self.client_remaining = 12500
        self.user_remaining = 2000
        self.user_reset = int(time.time()) + 3600


class FakeImgur(FakeHandler):
    server: ImgurServer

    def answer(self, status: int, data: Any) -> None:
        server = self.server
        headers = {"X-RateLimit-ClientLimit": "12500", "X-RateLimit-ClientRemaining": str(server.client_remaining),
                   "X-RateLimit-UserLimit": "2000", "X-RateLimit-UserRemaining": str(server.user_remaining),
                   "X-RateLimit-UserReset": str(server.user_reset)}
        self.reply(status, json.dumps({"data": data, "success": status == 200, "status": status}), headers)

    def failed(self, status: int, error: str) -> None:
        self.answer(status, {"error": error, "request": urllib.parse.urlsplit(self.path).path,
                             "method": self.command})

    def handle_request(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if not value:
            return self.failed(401, "Authentication required")
        if scheme != "Client-ID" or value not in self.server.client_ids:
            return self.failed(403, "Invalid client_id")
        if path in ("/3/image", "/3/upload") and self.command == "POST":
            return self.upload()
        if path.startswith("/3/image/") and self.command == "DELETE":
            return self.delete(path[len("/3/image/"):])
        return self.failed(404, "Not found")

    def upload(self) -> None:
        fields = form_fields(self)
        name, data = fields.get("image", (None, b""))
        kind = fields.get("type", (None, b"file"))[1].decode()
        if kind == "base64":
            data = base64.b64decode(data)
        if not data:
            return self.failed(400, "No image data was sent to the upload api")
        with self.server.lock:
            if self.server.user_remaining < UPLOAD_CREDITS or self.server.client_remaining < UPLOAD_CREDITS:
                return self.failed(429, "Too Many Requests")
            self.server.user_remaining -= UPLOAD_CREDITS
            self.server.client_remaining -= UPLOAD_CREDITS
            image_id, deletehash = secrets.token_urlsafe(5)[:7], secrets.token_urlsafe(12)[:15]
            self.server.objects[image_id] = data
            self.server.deletehashes[deletehash] = image_id
        ext = (name or "x.png").rsplit(".", 1)[-1]
        self.answer(200, {"id": image_id, "title": None, "description": None, "datetime": int(time.time()),
                          "type": f"image/{ext}", "animated": False, "size": len(data), "views": 0,
                          "deletehash": deletehash, "name": fields.get("name", (None, b""))[1].decode(),
                          "link": f"https://i.imgur.com/{image_id}.{ext}"})

    def delete(self, deletehash: str) -> None:
        with self.server.lock:
            image_id = self.server.deletehashes.pop(deletehash, None)
            if image_id is not None:
                del self.server.objects[image_id]
        if image_id is None:
            return self.failed(404, f"Unable to find an image with the id, {deletehash}")
        self.answer(200, True)
