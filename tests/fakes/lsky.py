"""A fake Lsky Pro (兰空图床): the 2.x API under /api/v1 and the 1.x API under /api, images at /i/.

2.x (lsky-org/lsky-pro: routes/api.php, app/Http/Controllers/Api/V1/ImageController.php,
app/Services/ImageService.php, app/Exceptions/Handler.php, app/Http/Result.php):
- answers are {"status": bool, "message", "data"} (an empty data is {});
- POST /api/v1/upload: `Authorization: Bearer <token>` (absent: a guest upload, refused here as the
  admin's setting "管理员关闭了游客上传"); a token that fails → 401 "Authentication failed." with
  `Accept: application/json`, else a 302 to /login (Laravel's `unauthenticated`);
  multipart `file`, optional `strategy_id` (one of the group's strategies, else "选定的策略不存在"),
  `album_id`, `permission` (0/1). UploadException messages come back as HTTP 200 with status false;
- the same md5 + sha1 in one strategy is stored once: a new image (new key) at the same pathname;
- data: key, name, pathname, origin_name, size, mimetype, extension, md5, sha1, links{url, ...};
- DELETE /api/v1/images/{key} (auth:sanctum: 401 without a valid token) deletes the user's image
  with that key, and answers 200 "删除成功" whether there was one or not.

1.x (route/route.php, application/http/middleware/ApiAuthenticate.php, application/api/controller/
{Upload,Image}.php, application/common/controller/Upload.php):
- answers are {"code", "msg", "data", "time"} with the HTTP status = code;
- header `token` (or a `token` parameter); an unknown one → 401 "认证失败"; none on /api/images or
  /api/delete → 401 "Token 不存在";
- POST /api/upload, multipart `image` → data {name, url, size, mime, sha1, md5, quota, use_quota}
  (no image id); the same md5 + sha1 reuses the stored file, with a new entry;
- POST /api/images page, rows → data {total, per_page, current_page, last_page, data: [entries]};
- POST /api/delete id=1,2 → "删除成功!", or 500 "删除失败!" when none of them was deleted.

    with serving(FakeLsky, LskyServer) as server:  # url: server.url
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.parse
from typing import Any

from fakehost import FakeHandler, FakeServer
from fakes.smms import form_fields

TOKEN = "1|lskyFakeToken0123456789abcdefABCDEF"
V1_TOKEN = "lskyV1FakeToken0123456789abcdef"
STRATEGIES = {"1", "2"}


class LskyServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.tokens = {TOKEN}
        self.v1_tokens = {V1_TOKEN}
        self.images: dict[str, dict[str, Any]] = {}  # 2.x key → entry; bytes in objects[pathname]
        self.entries: dict[int, dict[str, Any]] = {}  # 1.x id → entry
        self.max_rows = 100  # 1.x rows per page at most (tests lower it to make several pages)
        self.forms: list[dict[str, str]] = []  # the text fields of each upload, for the tests


class FakeLsky(FakeHandler):
    server: LskyServer

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if self.served(path):
            return None
        if path.startswith("/api/v1/"):
            return self.v2(path[len("/api/v1/"):])
        if path.startswith("/api/"):
            return self.v1(path[len("/api/"):], dict(urllib.parse.parse_qsl(url.query)))
        return self.reply(404, "Not Found", content_type="text/html")

    # 2.x

    def answer(self, status: int, ok: bool, message: str, data: Any = None) -> None:
        self.reply(status, json.dumps({"status": ok, "message": message, "data": data or {}}, ensure_ascii=False))

    def v2(self, route: str) -> None:
        header = self.headers.get("Authorization")
        user = None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme != "Bearer" or token not in self.server.tokens:
                if "application/json" not in self.headers.get("Accept", ""):
                    return self.reply(302, b"", {"Location": "/login"})
                return self.answer(401, False, "Authentication failed." if route == "upload" else "Unauthenticated.")
            user = token
        if route == "upload" and self.command == "POST":
            return self.v2_upload(user)
        if route.startswith("images/") and self.command == "DELETE":
            if user is None:
                return self.answer(401, False, "Unauthenticated.")
            return self.v2_delete(route[len("images/"):], user)
        return self.answer(404, False, "Not Found")

    def v2_upload(self, user: str | None) -> None:
        if user is None:
            return self.answer(200, False, "管理员关闭了游客上传")
        fields = form_fields(self)
        name, data = fields.get("file", (None, b""))
        if not name or not data:
            return self.answer(200, False, "The file field is required.")
        text = {k: v.decode() for k, (filename, v) in fields.items() if filename is None}
        with self.server.lock:
            self.server.forms.append(text)
        strategy = text.get("strategy_id", "1")
        if strategy not in STRATEGIES:
            return self.answer(200, False, "选定的策略不存在")
        if text.get("permission", "0") not in ("0", "1"):
            return self.answer(200, False, "The selected permission is invalid.")
        extension = name.rsplit(".", 1)[-1].lower()
        md5, sha1 = hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()  # noqa: S324 - as Lsky does
        with self.server.lock:
            same = next((i for i in self.server.images.values()
                         if (i["strategy"], i["md5"], i["sha1"]) == (strategy, md5, sha1)), None)
            pathname = same["pathname"] if same else time.strftime("%Y/%m/%d/") + secrets.token_hex(6) + "." + extension
            self.server.objects[pathname] = data
            key = secrets.token_hex(3)
            url = f"{self.server.url}/i/{pathname}"
            image = {"key": key, "name": pathname.rsplit("/", 1)[-1], "pathname": pathname, "origin_name": name,
                     "size": len(data) / 1024, "mimetype": "image/png", "extension": extension, "md5": md5,
                     "sha1": sha1, "links": {"url": url, "html": f'&lt;img src="{url}" /&gt;',
                                             "bbcode": f"[img]{url}[/img]", "markdown": f"![{name}]({url})"},
                     "strategy": strategy, "user": user}
            self.server.images[key] = image
        self.answer(200, True, "上传成功", {k: v for k, v in image.items() if k not in ("strategy", "user")})

    def v2_delete(self, key: str, user: str) -> None:
        with self.server.lock:
            image = self.server.images.get(key)
            if image is not None and image["user"] == user:
                del self.server.images[key]
                if not any(i["pathname"] == image["pathname"] for i in self.server.images.values()):
                    self.server.objects.pop(image["pathname"], None)
        self.answer(200, True, "删除成功")

    # 1.x

    def respond(self, code: int, msg: str, data: Any = None) -> None:
        body = {"code": code, "msg": msg, "data": [] if data is None else data, "time": int(time.time())}
        self.reply(code, json.dumps(body, ensure_ascii=False))

    def v1(self, route: str, query: dict[str, str]) -> None:
        fields = form_fields(self) if self.command == "POST" else {}
        params = {**query, **{k: v.decode() for k, (filename, v) in fields.items() if filename is None}}
        token = self.headers.get("token") or params.get("token")
        if token and token not in self.server.v1_tokens:
            return self.respond(401, "认证失败")
        if route != "upload" and not token:
            return self.respond(401, "Token 不存在")
        if route == "upload":
            return self.v1_upload(fields, token)
        if route == "images":
            return self.v1_images(token, int(params.get("page") or 1), int(params.get("rows") or 20))
        if route == "delete":
            return self.v1_delete(token, params.get("id", ""))
        return self.respond(404, "Not Found")

    def v1_upload(self, fields: dict[str, tuple[str | None, bytes]], token: str | None) -> None:
        if not token:
            return self.respond(200, "管理员关闭了游客上传通道", None)
        name, data = fields.get("image", (None, b""))
        if not name or not data:
            return self.respond(500, "图片资源获取失败")
        md5, sha1 = hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()  # noqa: S324 - as Lsky does
        with self.server.lock:
            same = next((e for e in self.server.entries.values() if (e["md5"], e["sha1"]) == (md5, sha1)), None)
            pathname = same["pathname"] if same else time.strftime("%Y/%m/%d/") + secrets.token_hex(6) + ".png"
            self.server.objects[pathname] = data
            entry_id = max(self.server.entries, default=0) + 1
            url = f"{self.server.url}/i/{pathname}"
            self.server.entries[entry_id] = {
                "id": entry_id, "user": token, "strategy": "local", "path": pathname.rsplit("/", 1)[0],
                "name": pathname.rsplit("/", 1)[-1], "pathname": pathname, "size": len(data), "mime": "image/png",
                "sha1": sha1, "md5": md5, "url": url, "create_time": int(time.time())}
        self.respond(200, "success", {"name": name, "url": url, "size": len(data), "mime": "image/png",
                                      "sha1": sha1, "md5": md5, "quota": "1073741824.00", "use_quota": "0.00"})

    def v1_images(self, token: str | None, page: int, rows: int) -> None:
        rows = min(rows, self.server.max_rows)
        with self.server.lock:
            mine = [{k: v for k, v in e.items() if k != "user"} for e in self.server.entries.values()
                    if e["user"] == token]
        last = max(1, -(-len(mine) // rows))
        self.respond(200, "success", {"total": len(mine), "per_page": rows, "current_page": page, "last_page": last,
                                      "data": mine[(page - 1) * rows:page * rows]})

    def v1_delete(self, token: str | None, ids: str) -> None:
        wanted = {int(i) for i in ids.replace("，", ",").split(",") if i.strip().isdigit()}
        with self.server.lock:
            gone = [e for i, e in self.server.entries.items() if i in wanted and e["user"] == token]
            for entry in gone:
                del self.server.entries[entry["id"]]
                if not any(e["pathname"] == entry["pathname"] for e in self.server.entries.values()):
                    self.server.objects.pop(entry["pathname"], None)
        if not gone:
            return self.respond(500, "删除失败!")
        self.respond(200, "删除成功!")
