"""Imgur, anonymous uploads with an application's Client-ID (API 3).

Imgur names the images itself and every upload creates a new one, so this host has no notion
of a key to reuse or clash over: the key template does not apply, `overwrite` changes nothing,
and the same bytes sent twice are two images (the ledger's dedupe is what prevents that). For
the same reason an upload is not idempotent: it is retried only when Imgur certainly did not act
on it (429, no connection made). The record's `key` is the deletehash that --delete needs.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError
from picpipe.hosts import HttpHost, Stored
from picpipe.net import json_body

if TYPE_CHECKING:
    import requests

#: Credits an upload costs (apidocs.imgur.com, "Rate Limits").
UPLOAD_CREDITS = 10


class ImgurHost(HttpHost):
    keys = ("client_id",)

    hints: ClassVar[dict[str | int, str]] = {
        401: "Imgur wants a Client-ID: set the profile's client_id (register an application for anonymous use "
             "at api.imgur.com/oauth2/addclient)",
        403: "Imgur refused the Client-ID: check the profile's client_id (the Client ID of an application "
             "registered for anonymous use, not its secret)",
        429: "Imgur's upload allowance is used up (about 1,250 uploads a day per application, fewer per IP an "
             "hour): re-run later",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.client_id = self.setting("client_id")
        self.api = self.endpoint("https://api.imgur.com/3")

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """A new image every time (see the module's docstring): `overwrite` has nothing to replace."""
        name = posixpath.basename(key)
        response = self.request("POST", f"{self.api}/image", idempotent=False, headers=self.auth(),
                                data={"type": "file", "name": name}, files={"image": (name, data, mime)})
        found = _data(response)
        if not isinstance(found, dict) or not found.get("link") or not found.get("deletehash"):
            raise self.bad_answer(response, "Imgur's answer has no link and deletehash",
                                  "re-run later; if it persists, the API has changed")
        return Stored(str(found["deletehash"]), self.served_at(str(found["link"])))

    def delete(self, key: str) -> None:
        self.request("DELETE", f"{self.api}/image/{urllib.parse.quote(key, safe='')}", headers=self.auth(),
                     ok=(200, 404))

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Client-ID {self.client_id}"}

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """Imgur puts the message in data.error, a string or {"code", "message"}."""
        data = _data(response)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            return (str(code) if code is not None else None), str(error.get("message") or response.reason)
        if isinstance(error, str) and error:
            return None, error
        return super().parse_error(response)

    def failure(self, response: requests.Response) -> PicpipeError:
        """A 429 says which allowance is used up (X-RateLimit-* headers) and when it comes back."""
        error = super().failure(response)
        if response.status_code != 429:
            return error
        client = response.headers.get("x-ratelimit-clientremaining", "")
        reset = response.headers.get("x-ratelimit-userreset", "")
        if client.isdigit() and int(client) < UPLOAD_CREDITS:
            error.hint = ("the application's daily Imgur allowance (its client_id) is used up: re-run tomorrow, "
                          "or register an application of your own")
        elif reset.isdigit():
            error.hint = (f"this IP's Imgur allowance is used up until "
                          f"{datetime.fromtimestamp(int(reset), UTC):%H:%M} UTC: re-run then")
        return error


def _data(response: requests.Response) -> Any:
    """The `data` member of Imgur's JSON answer, None when the answer is something else."""
    return (json_body(response) or {}).get("data")


HOST = ImgurHost
