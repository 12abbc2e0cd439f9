"""A fake EasyImage 2.0 (简单图床): the upload API, the deletion links, and the image files.

As icret/EasyImages2.0 answers (api/index.php, app/function.php check_api, app/del.php):
- POST /api/index.php, multipart `image` plus the form field `token`; every answer is HTTP 200 JSON:
  success {"result": "success", "code": 200, "url", "srcName", "thumb", "del", "id", "message"};
  refusals {"result": "failed", "code", "message"}: 201 "API Closed", 202 "Token Error" (unknown
  token), 203 "Token Expired", 204 no file, 205 IP not allowed, 400 the file broke a limit
  (`max_size` here);
- every upload is a new file with a new name, whatever came before (no dedupe);
- `del` is `{site}/app/del.php?hash=<base64>` (the real hash is the AES-encrypted path; here a
  random one), or "Admin closed user delete" when `user_delete` is off;
- GET /app/del.php?hash=... → {"code": 200, "msg": "删除成功", ...}; with the recycle bin on (as
  here by default) a hash whose file is gone → {"code": 404, "msg": "文件不存在", ...};
- the images are served at <server>/i/<path>.

    with serving(FakeEasyImage, EasyImageServer) as server:  # url: server.url
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

TOKEN = "1c17b11693cb5ec63859b091c5b9c1b2"
EXPIRED_TOKEN = "8fa0b2d4e6c81a3b5d7f9e1c3a5b7d9f"


class EasyImageServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.tokens: dict[str, dict[str, int]] = {TOKEN: {"id": 1, "expired": int(time.time()) + 86400},
                                                  EXPIRED_TOKEN: {"id": 2, "expired": int(time.time()) - 60}}
        self.hashes: dict[str, str] = {}  # deletion hash → path; bytes in objects[path]
        self.api_open = True
        self.user_delete = True
        self.recycle = True
        self.max_size = 5 * 1024 * 1024


class FakeEasyImage(FakeHandler):
    server: EasyImageServer

    def answer(self, body: dict[str, Any]) -> None:
        self.reply(200, json.dumps(body, ensure_ascii=False))

    def failed(self, code: int, message: str) -> None:
        self.answer({"result": "failed", "code": code, "message": message})

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if self.served(path):
            return None
        if path == "/api/index.php" and self.command == "POST":
            return self.upload()
        if path == "/app/del.php" and self.command == "GET":
            return self.delete(dict(urllib.parse.parse_qsl(url.query)).get("hash"))
        return self.reply(404, "<h1>404</h1>", content_type="text/html")

    def upload(self) -> None:
        fields = form_fields(self)
        name, data = fields.get("image", (None, b""))
        if not data:
            return self.failed(204, "没有选择上传的文件")
        token = "".join(c for c in fields.get("token", (None, b""))[1].decode() if c.isalnum() or c == "_")
        if not self.server.api_open:
            return self.failed(201, "API Closed")
        if token not in self.server.tokens:
            return self.failed(202, "Token Error")
        if self.server.tokens[token]["expired"] < time.time():
            return self.failed(203, "Token Expired")
        if len(data) > self.server.max_size:
            return self.answer({"result": "failed", "code": 400, "srcName": (name or "").rsplit(".", 1)[0],
                                "id": self.server.tokens[token]["id"], "message": "文件大小超出限制",
                                "memory": "1.2MB"})
        path = time.strftime("%Y/%m/%d/") + secrets.token_hex(4) + "." + (name or "x.png").rsplit(".", 1)[-1]
        with self.server.lock:
            self.server.objects[path] = data
            delete_hash = _hash()
            self.server.hashes[delete_hash] = path
        site = self.server.url
        self.answer({"result": "success", "code": 200, "url": f"{site}/i/{path}",
                     "srcName": (name or "").rsplit(".", 1)[0], "thumb": f"{site}/app/thumb.php?img=/i/{path}",
                     "del": f"{site}/app/del.php?hash={delete_hash}" if self.server.user_delete
                     else "Admin closed user delete",
                     "id": self.server.tokens[token]["id"], "message": "success"})

    def delete(self, delete_hash: str | None) -> None:
        if not delete_hash:
            return self.answer({"code": 200, "msg": "无效请求", "type": "success", "mode": "get", "url": None})
        path = self.server.hashes.get(delete_hash)
        with self.server.lock:
            there = path is not None and self.server.objects.pop(path, None) is not None
        if self.server.recycle and not there:
            return self.answer({"code": 404, "msg": "文件不存在", "type": "danger", "icon": "exclamation-sign",
                                "mode": "delete", "url": path})
        self.answer({"code": 200, "msg": "删除成功", "type": "success", "icon": "ok-sign", "mode": "delete",
                     "url": path})


def _hash() -> str:
    """Base64 as EasyImage's urlHash makes it ('/' and '=' in a query unescaped), without '+', which
    PHP's $_GET would read as a space."""
    while True:
        value = base64.b64encode(secrets.token_bytes(24)).decode()
        if "+" not in value:
            return value
