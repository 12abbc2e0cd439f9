"""A fake PicList server (the PicGo-compatible HTTP server of the PicList app), after
Kuingsmile/PicList src/main/server: index.ts (multipart bodies through multer `any()`: every file
field counts; other bodies are JSON `{"list": [paths]}`) and routerManager.ts:

- POST /upload?picbed=&configName=&key=: with a server key set, a `key` that is not it → HTTP 200
  {"success": false, "message": "server key is uncorrect"} (PicList reads no header);
- success → HTTP 200 {"success": true, "result": [url], "fullResult": [item]}, the item being the
  gallery entry (with its `id`, given by PicList's gallery store) plus `isEncrypted` and
  `EncryptedData` (the entry with its uploader `config`, encrypted), `config` itself removed;
- an unknown `picbed` is no error: PicList uploads with its current uploader;
- POST /delete {"list": [item]}: items are found in the gallery by `id` → {"success": true,
  "message": "delete success: N, fail: M"}; none found → {"success": false, "message": "delete error. ..."};
- another path → 404 {"success": false}.

The images are served at <server>/i/<id>/<file name>. `most_at_once` counts the uploads that were
under way together (PicList's global uploader switch and temp folder make that unsafe).

    with serving(FakePicList, PicListServer) as server: ... server.gallery, server.asked ...
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from typing import Any

from fakehost import FakeHandler, FakeServer
from fakes.smms import form_fields

SERVER_KEY = "piclist-Server-Key-7d21c0"
LOG = "/home/user/.config/piclist/piclist.log"


class PicListServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.server_key = SERVER_KEY
        self.current = "smms"  # PicList's current uploader
        self.gallery: dict[str, dict[str, Any]] = {}  # id → entry (its bytes in objects[id])
        self.asked: list[dict[str, list[str]]] = []  # each /upload's query
        self.uploading = self.most_at_once = 0  # uploads under way now, and at most


class FakePicList(FakeHandler):
    server: PicListServer

    def answer(self, body: dict[str, Any], status: int = 200) -> None:
        self.reply(status, json.dumps(body))

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.command == "GET" and url.path.startswith("/i/"):
            image = url.path.split("/")[2]
            with self.server.lock:
                data = self.server.objects.get(image)
            self.reply(200 if data is not None else 404, data or b"", content_type="image/png")
        elif self.command == "POST" and url.path == "/upload":
            with self.server.lock:
                self.server.asked.append(query)
                self.server.uploading += 1
                self.server.most_at_once = max(self.server.most_at_once, self.server.uploading)
            try:
                time.sleep(0.05)  # PicList's uploader at work: long enough for requests to overlap
                self.upload(query)
            finally:
                with self.server.lock:
                    self.server.uploading -= 1
        elif self.command == "POST" and url.path == "/delete":
            self.delete()
        else:
            self.answer({"success": False}, 404)

    def upload(self, query: dict[str, list[str]]) -> None:
        if self.server.server_key and query.get("key", [""])[0] != self.server.server_key:
            self.answer({"success": False, "message": "server key is uncorrect"})
            return
        if not self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            self.answer({"success": False, "message": "this fake takes multipart bodies only"}, 400)
            return
        files = [(name, data) for name, data in form_fields(self).values() if name is not None]
        picbed = query.get("picbed", [self.server.current])[0]
        results, full = [], []
        for name, data in files:
            entry = {"fileName": name, "extname": "." + name.rsplit(".", 1)[-1], "type": picbed,
                     "id": str(uuid.uuid4())}
            entry["imgUrl"] = f"{self.server.url}/i/{entry['id']}/{urllib.parse.quote(name)}"
            with self.server.lock:
                self.server.gallery[entry["id"]] = entry
                self.server.objects[entry["id"]] = data
            results.append(entry["imgUrl"])
            full.append({"isEncrypted": 1, "EncryptedData": "00ff:" + "ab" * 40, **entry})
        self.answer({"success": True, "result": results, "fullResult": full} if results else
                    {"success": False, "message": f"upload error. see {LOG} for more detail."})

    def delete(self) -> None:
        items = json.loads(self.body() or b"{}").get("list") or []
        if not items:
            self.answer({"success": False, "message": "no file to delete"})
            return
        done = 0
        for item in items:
            with self.server.lock:
                if isinstance(item, dict) and self.server.gallery.pop(str(item.get("id")), None) is not None:
                    self.server.objects.pop(str(item["id"]), None)
                    done += 1
        self.answer({"success": True, "message": f"delete success: {done}, fail: {len(items) - done}"} if done else
                    {"success": False, "message": f"delete error. see {LOG} for more detail."})
