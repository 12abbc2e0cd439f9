"""EasyImage 2.0 (简单图床): `POST {url}/api/index.php` with the fields `image` and `token`.

EasyImage names every upload itself (a new random name, also for the same bytes again), so the
key template does not apply, there is no key to clash over (`overwrite` changes nothing) and
nothing is ever `reused`: the ledger's dedupe is what keeps an image from being sent twice. For
the same reason an upload is not idempotent and is repeated only when EasyImage surely did not
act on it (429, no connection made).

EasyImage answers its refusals with HTTP 200 and `"result": "failed"` plus a code (201 API
closed, 202 wrong token, 203 token expired, 204 no file, 205 IP or file refused, 400 the file
broke a limit); they become error records like any other.

The record's `key` is the deletion URL the answer gives (`del`: `{site}/app/del.php?hash=...`,
a capability: anyone holding it may delete the image); --delete asks for it (GET), only on the
profile's own site. When the site's admin turned user deletion off, `del` is no URL, the key is
the image URL, and --delete says that it cannot.

Sources: icret/EasyImages2.0 api/index.php (upload and its answers), app/function.php (check_api:
codes 201-203), app/del.php (delete by hash: JSON {"code": 200 | 404, "msg"}).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError
from picpipe.hosts import HttpHost, Stored

if TYPE_CHECKING:
    import requests

#: The answer's `msg` for a hash whose file is already gone (recycle bin on).
GONE = "文件不存在"


class EasyImageHost(HttpHost):
    keys = ("url", "token")

    hints: ClassVar[dict[str | int, str]] = {
        "201": "the site's admin has turned API uploads off (EasyImage settings → API)",
        "202": "EasyImage does not know this token: copy it from the site's API settings (API设置 → Token "
               "list) into the profile's token",
        "203": "the token has expired: give it a new expiry date in the site's API settings, or make a new one",
        "204": "EasyImage received no file: the image may be larger than the server's PHP upload_max_filesize "
               "or post_max_size",
        "205": "EasyImage refused this upload: the IP is not allowed to upload, or the file is on its blacklist",
        "400": "EasyImage refused the file: its message says why (size, width/height limits, type)",
    }
    kinds: ClassVar[dict[str | int, str]] = {"201": "auth", "202": "auth", "203": "auth"}

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.token = self.setting("token").strip()
        self.site = self.site_url(needed=not profile.get("endpoint"))
        self.api = self.endpoint(f"{self.site}/api/index.php")

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """A new file every time (see the module's docstring): `overwrite` has nothing to replace."""
        response = self.request("POST", self.api, idempotent=False, data={"token": self.token},
                                files={"image": (posixpath.basename(key), data, mime)})
        body = self.json_object(response)
        if body.get("result") != "success" or str(body.get("code")) != "200":
            raise self.failure(response)
        if not body.get("url"):
            raise self.bad_answer(response, "EasyImage's answer has no url",
                                  "check the profile's url: it is the site's address, where /api/index.php is")
        url, delete = str(body["url"]), str(body.get("del") or "")
        return Stored(delete if "://" in delete else url, self.served_at(url))

    def check_key(self, key: str) -> None:
        """Keys are URLs (see `delete`), never paths on the server."""

    def delete(self, key: str) -> None:
        parts = urllib.parse.urlsplit(key)
        if "hash" not in urllib.parse.parse_qs(parts.query):
            raise PicpipeError("not_supported", f"{self.name}: this image has no deletion link (the site's admin "
                               "turned user deletion off when it was uploaded)",
                               "delete it in EasyImage's admin pages; nothing was deleted")
        if not self.on_own_site(key, self.site, self.api):  # the profile's site, or its API's host
            raise self.foreign_link(key)
        response = self.request("GET", key)
        body = self.json_object(response)
        if str(body.get("code")) == "200" or body.get("msg") == GONE:
            return
        raise PicpipeError("rejected", f"{self.name}: EasyImage did not delete it: {body.get('msg') or body}",
                           "the file may be protected or the link altered; delete it in EasyImage's admin pages")

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """{"result": "failed", "code", "message"}; HTTP 200 is not repeated as the code."""
        code, message = super().parse_error(response)
        return (None if code == str(response.status_code) else code), message


HOST = EasyImageHost
