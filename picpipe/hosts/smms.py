"""SM.MS (API v2), and S.EE's SM.MS-compatible API through `endpoint`.

SM.MS names the files itself, so the key template does not apply: the record's `key` is the
delete hash that --delete needs. It dedupes by content: the same bytes again answer
`image_repeated` with the existing URL, which is this host's `reused` (and what makes a retried
upload safe). There are no keys to clash over, so there is no conflict and `overwrite` changes
nothing. `image_repeated` gives no delete hash: such a record keeps the URL as its key, and
--delete finds the hash in the account's upload history.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError
from picpipe.hosts import HttpHost, Stored
from picpipe.net import json_body

if TYPE_CHECKING:
    import requests

#: Pages of upload history read at most when looking for the delete hash of a URL.
HISTORY_PAGES = 50
#: Error codes SM.MS answers with HTTP 200 and `"success": false`, as record error types.
_KINDS = {"unauthorized": "auth", "flood": "rate_limited"}


class SmmsHost(HttpHost):
    keys = ("token",)

    hints: ClassVar[dict[str | int, str]] = {
        "unauthorized": "SM.MS refused the token: copy the API token from sm.ms/home/apitoken into the profile's "
                        "token (a reset token stops working)",
        401: "SM.MS refused the token: copy the API token from sm.ms/home/apitoken into the profile's token",
        "flood": "SM.MS allows about 20 uploads an hour: re-run later (what is uploaded is not sent again)",
        429: "SM.MS allows about 20 uploads an hour: re-run later (what is uploaded is not sent again)",
        413: "SM.MS takes files up to 5 MB: make it smaller (pp-compress --max-width ...)",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.token = self.setting("token")
        self.api = self.endpoint("https://sm.ms/api/v2")

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        response = self.request("POST", f"{self.api}/upload", headers=self.auth(), data={"format": "json"},
                                files={"smfile": (posixpath.basename(key), data, mime)})
        body = self.answer(response)
        if body.get("code") == "image_repeated" and isinstance(body.get("images"), str):
            return Stored(body["images"], self.served_at(body["images"]), reused=True)
        if body.get("success") is True or body.get("code") in ("success", 200):  # 200: S.EE
            found = body.get("data") or {}
            if isinstance(found, dict) and found.get("url"):
                return Stored(str(found.get("hash") or found["url"]), self.served_at(str(found["url"])))
        raise self.failure(response)

    def check_key(self, key: str) -> None:
        """SM.MS keys are delete hashes (or an image's URL); either is sent quoted as one path segment."""

    def delete(self, key: str) -> None:
        delete_hash = self.history_hash(key) if "://" in key else key
        if delete_hash is None:
            return  # not among the account's images: nothing of it is left to delete
        response = self.request("GET", f"{self.api}/delete/{urllib.parse.quote(delete_hash, safe='')}",
                                headers=self.auth(), ok=(200, 404))
        if response.status_code == 404:
            return
        body = self.answer(response)
        message = str(body.get("message") or body.get("error") or "").lower()
        if not (body.get("success") is True or "already deleted" in message or "not exist" in message):
            raise self.failure(response)

    def history_hash(self, url: str) -> str | None:
        """The delete hash of an image of this account, from its upload history."""
        for page in range(1, HISTORY_PAGES + 1):
            response = self.request("GET", f"{self.api}/upload_history", headers=self.auth(),
                                    params={"page": str(page)})
            body = self.answer(response)
            if body.get("success") is not True:
                raise self.failure(response)
            images = body.get("data") or []
            for image in images:
                if isinstance(image, dict) and image.get("url") == url and image.get("hash"):
                    return str(image["hash"])
            if not images or page >= int(body.get("TotalPages") or page):
                return None
        return None

    def auth(self) -> dict[str, str]:
        return {"Authorization": self.token}

    def answer(self, response: requests.Response) -> dict[str, Any]:
        """The JSON object SM.MS answered; anything else is the host's error."""
        body = json_body(response)
        if body is None:
            raise self.failure(response)
        return body

    def failure(self, response: requests.Response) -> PicpipeError:
        """Also for answers with HTTP 200 and "success": false: the type follows SM.MS's code."""
        error = super().failure(response)
        error.type = _KINDS.get(str(error.extra.get("code")), error.type)
        return error


HOST = SmmsHost
