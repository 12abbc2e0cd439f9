"""A fake SM.MS API v2 (hosts.md §8): upload, delete, upload history, and the image files.

- `Authorization: <token>` (the raw token, no scheme) against the server's tokens; a missing,
  unknown or reset token → 401 {"success": false, "code": "unauthorized", ...};
- uploads are deduplicated by content: the same bytes again answer HTTP 200 with
  {"success": false, "code": "image_repeated", "images": <existing URL>};
- more than `flood_limit` uploads within an hour → 429 "Flood detected" (SM.MS allows 20);
- GET /delete/<hash> removes an image; GET /upload_history?page=N lists them `page_size` a page;
- the images are served at <server>/i/<storename>, so a test can fetch what a URL shows.

    with serving(FakeSmms, SmmsServer) as server:  # endpoint: server.url + "/api/v2"
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.parse
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fakehost import FakeHandler, FakeServer

TOKEN = "smmsFakeToken0123456789abcdef"
RESET_TOKEN = "smmsResetToken0123456789abcd"  # one the user has since reset: no longer valid
PREFIX = "/api/v2"


def form_fields(handler: FakeHandler) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data or urlencoded body as {name: (file name or None, bytes)}."""
    content_type = handler.headers.get("Content-Type", "")
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + handler.body())
        return {str(part.get_param("name", header="content-disposition")):
                (part.get_filename(), part.get_payload(decode=True) or b"")
                for part in message.iter_parts()}  # type: ignore[attr-defined]
    return {k: (None, v.encode()) for k, v in urllib.parse.parse_qsl(handler.body().decode())}


class SmmsServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.tokens = {TOKEN}
        self.images: dict[str, dict[str, Any]] = {}  # delete hash → data; bytes in objects[storename]
        self.uploads: list[float] = []  # times of accepted uploads, for the flood limit
        self.flood_limit = 20
        self.page_size = 2


class FakeSmms(FakeHandler):
    server: SmmsServer

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.reply(status, json.dumps({**body, "RequestId": secrets.token_hex(8).upper()}))

    def failed(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.answer(status, {"success": False, "code": code, "message": message, "data": [], **extra})

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if self.served(path):
            return None
        if self.headers.get("Authorization") not in self.server.tokens:
            return self.failed(401, "unauthorized", "Unauthorized.")
        if path == PREFIX + "/upload" and self.command == "POST":
            return self.upload()
        if path.startswith(PREFIX + "/delete/") and self.command == "GET":
            return self.delete(path[len(PREFIX + "/delete/"):])
        if path == PREFIX + "/upload_history" and self.command == "GET":
            return self.history(int(dict(urllib.parse.parse_qsl(url.query)).get("page") or 1))
        return self.failed(404, "not_found", "Not Found.")

    def upload(self) -> None:
        name, data = form_fields(self).get("smfile", (None, b""))
        if not data:
            return self.failed(400, "no_files", "No files were uploaded.")
        digest = hashlib.sha256(data).hexdigest()
        with self.server.lock:
            hour_ago = time.time() - 3600
            if len([t for t in self.server.uploads if t > hour_ago]) >= self.server.flood_limit:
                return self.failed(429, "flood", "Flood detected. You can only upload 20 images per hour")
            same = next((i for i in self.server.images.values() if i["sha256"] == digest), None)
            if same is not None:
                return self.failed(200, "image_repeated",
                                   f"Image upload repeated limit, this image exists at: {same['url']}",
                                   images=same["url"])
            delete_hash = secrets.token_urlsafe(18)
            storename = secrets.token_hex(6) + "." + (name or "x.png").rsplit(".", 1)[-1]
            image = {"file_id": 0, "width": 0, "height": 0, "filename": name, "storename": storename,
                     "size": len(data), "path": f"/{storename}", "hash": delete_hash,
                     "url": f"{self.server.url}/i/{storename}", "delete": f"{self.server.url}/delete/{delete_hash}",
                     "page": f"{self.server.url}/image/{storename}", "sha256": digest}
            self.server.images[delete_hash] = image
            self.server.objects[storename] = data
            self.server.uploads.append(time.time())
        self.answer(200, {"success": True, "code": "success", "message": "Upload success.",
                          "data": {k: v for k, v in image.items() if k != "sha256"}})

    def delete(self, delete_hash: str) -> None:
        with self.server.lock:
            image = self.server.images.pop(delete_hash, None)
            if image is not None:
                del self.server.objects[image["storename"]]
        if image is None:
            return self.failed(200, "error", "File already deleted.")
        self.answer(200, {"success": True, "code": "success", "message": "File delete success.", "data": []})

    def history(self, page: int) -> None:
        with self.server.lock:
            images = [{k: v for k, v in i.items() if k != "sha256"} for i in reversed(self.server.images.values())]
        size = self.server.page_size
        self.answer(200, {"success": True, "code": "success", "message": "Get list success.",
                          "data": images[(page - 1) * size:page * size], "CurrentPage": page,
                          "TotalPages": max(1, -(-len(images) // size)), "PerPage": size, "Count": len(images)})
