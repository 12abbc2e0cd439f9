"""A fake Chevereto (API V1 at /api/1/upload, deletion links, image files) and ImgBB (at /1/upload).

Chevereto, as chevereto/chevereto app/legacy/routes/api.php and image.php answer:
- the key from the `X-API-Key` header or the `key` parameter (`version = "3"`: the parameter only,
  as V3 reads no header); none → "No key provided", unknown → "Invalid API key." (code 100);
- multipart `source` (the file), `format=json`, optional `album_id` (one of `albums`);
- refusals: HTTP 400 {"status_code": 400, "error": {"message", "code", "context"}, "status_txt"};
  with `duplicates` off, the same md5 again → "Duplicated upload";
- success: HTTP 200 {"status_code": 200, "success": {"message": "file uploaded", "code": 200},
  "image": {..., "url", "url_viewer", "id_encoded", "delete_url"}, "status_txt": "OK"}; with
  `moderate` on, the image has no url (`is_approved` 0) until approved;
- GET /image/<id>/delete/<password>: deletes and redirects 301 to /image/<id>?deleted; else 404.

ImgBB (api.imgbb.com; the same API with Chevereto's ImgBB spec): POST /1/upload with `key` (query
or body) and `image` (a file); a wrong key → 400 "Invalid API v1 key."; success {"data": {"id",
"url", "url_viewer", "display_url", "delete_url": "<site>/<id>/<hash>", ...}, "success": true,
"status": 200}; no deletion through the API.

    with serving(FakeChevereto, CheveretoServer) as server:  # url: server.url; ImgBB: server.url + "/1/upload"
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.parse
from typing import Any

from fakehost import FakeHandler, FakeServer
from fakes.smms import form_fields

API_KEY = "chv_Fake_0123456789abcdefABCDEF0123456789"
IMGBB_KEY = "0123456789abcdef0123456789abcdef"


class CheveretoServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.keys = {API_KEY}
        self.imgbb_keys = {IMGBB_KEY}
        self.version = "4"
        self.duplicates = True  # the site accepts the same file again (duplicate protection off)
        self.moderate = False
        self.albums = {"Xy1"}
        self.images: dict[str, dict[str, Any]] = {}  # id_encoded → image; bytes in objects[filename]
        self.key_via: list[str] = []  # "header" or "field", per accepted upload


class FakeChevereto(FakeHandler):
    server: CheveretoServer

    def failed(self, message: str, code: int, status: int = 400) -> None:
        self.reply(status, json.dumps({"status_code": status, "error": {"message": message, "code": code,
                                                                        "context": "Exception"},
                                       "status_txt": "Bad Request" if status == 400 else "Error"}))

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if path.startswith("/images/") and self.command == "GET":
            data = self.server.objects.get(path[len("/images/"):])
            return self.reply(200 if data else 404, data or b"", content_type="image/png")
        if path.rstrip("/") == "/api/1/upload" and self.command == "POST":
            return self.upload(query)
        if path == "/1/upload" and self.command == "POST":
            return self.imgbb(query)
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "image" and parts[2] == "delete" and self.command == "GET":
            return self.delete(parts[1], parts[3])
        return self.reply(404, "<h1>That page doesn't exist</h1>", content_type="text/html")

    def store(self, name: str, data: bytes) -> dict[str, Any]:
        image_id = secrets.token_hex(3)
        filename = f"{image_id}.{name.rsplit('.', 1)[-1]}"
        site = self.server.url
        image = {"name": image_id, "extension": filename.rsplit(".", 1)[-1], "size": len(data),
                 "original_filename": name, "md5": hashlib.md5(data).hexdigest(),  # noqa: S324 - as Chevereto
                 "id_encoded": image_id, "filename": filename, "mime": "image/png",
                 "url": f"{site}/images/{filename}", "url_viewer": f"{site}/image/{image_id}",
                 "display_url": f"{site}/images/{filename}", "password": secrets.token_hex(16),
                 "is_approved": 0 if self.server.moderate else 1}
        self.server.images[image_id] = image
        self.server.objects[filename] = data
        return image

    def upload(self, query: dict[str, str]) -> None:
        fields = form_fields(self)
        params = {**query, **{k: v.decode() for k, (filename, v) in fields.items() if filename is None}}
        header = self.headers.get("X-API-Key") if self.server.version == "4" else None
        key = header or params.get("key")
        if not key:
            return self.failed("No key provided", 100)
        if key not in self.server.keys:
            return self.failed("Invalid API key.", 100)
        name, data = fields.get("source", (None, b""))
        if not name or not data:
            return self.failed("Empty upload source", 130)
        if "album_id" in params and params["album_id"] not in self.server.albums:
            return self.failed("Invalid album", 101)
        md5 = hashlib.md5(data).hexdigest()  # noqa: S324 - as Chevereto
        with self.server.lock:
            if not self.server.duplicates and any(i["md5"] == md5 for i in self.server.images.values()):
                return self.failed("Duplicated upload", 101)
            image = self.store(name, data)
            self.server.key_via.append("header" if header else "field")
        shown = {k: v for k, v in image.items() if k != "password"}
        shown["delete_url"] = f"{self.server.url}/image/{image['id_encoded']}/delete/{image['password']}"
        if not image["is_approved"]:
            for field in ("url", "display_url"):
                shown.pop(field)
        self.reply(200, json.dumps({"status_code": 200, "success": {"message": "file uploaded", "code": 200},
                                    "image": shown, "status_txt": "OK"}))

    def delete(self, image_id: str, password: str) -> None:
        with self.server.lock:
            image = self.server.images.get(image_id)
            if image is not None and secrets.compare_digest(image["password"], password):
                del self.server.images[image_id]
                self.server.objects.pop(image["filename"], None)
                return self.reply(301, b"", {"Location": f"/image/{image_id}?deleted"})
        self.reply(404, "<h1>That page doesn't exist</h1>", content_type="text/html")

    def imgbb(self, query: dict[str, str]) -> None:
        fields = form_fields(self)
        key = query.get("key") or fields.get("key", (None, b""))[1].decode()
        if key not in self.server.imgbb_keys:
            return self.failed("Invalid API v1 key.", 100)
        name, data = fields.get("image", (None, b""))
        if not data:
            return self.failed("Empty upload source.", 130)
        with self.server.lock:
            image = self.store(name or "image.png", data)
        site, image_id = self.server.url, image["id_encoded"]
        self.reply(200, json.dumps({"data": {"id": image_id, "title": image_id, "url_viewer": image["url_viewer"],
                                             "url": image["url"], "display_url": image["display_url"],
                                             "size": image["size"], "expiration": "0",
                                             "delete_url": f"{site}/{image_id}/{image['password']}"},
                                    "success": True, "status": 200}))
