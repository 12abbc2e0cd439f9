"""A running PicGo or PicList server as a host: every uploader PicGo has a plugin for (some 200),
with picpipe's ledger, dedupe, mirrors and backups on top.

The bytes pp-upload checked are sent, as multipart/form-data in the field `files` (the one field
PicGo-Core 3.x reads; PicList and pp-server take any file field), never a local path: the server may
run on another machine, and a path would let it read whatever is there by then. The file's name is
the key's base name, so PicGo's rename plugins and the uploader see picpipe's name for the image
(`{sha256:16}.png` with the default key template); where the uploader puts it is its own choice.

PicGo names no key: the record's `key` is PicList's gallery id of the upload when the server
answers one (what PicList's POST /delete looks up), else the URL (what pp-server's /delete looks
up). PicGo cannot say whether it held these bytes before, so nothing is ever `reused`, and whether
an upload can overwrite another image is the uploader's business (most name files by time or
hash); what keeps picpipe from sending an image twice is its ledger (dedupe). An upload is sent
once: after the request went out it may have succeeded, so only a connection that was never made
is tried again. Uploads to one server go one at a time (see `turn`), each with 120 s to answer
unless the profile's `timeout` says otherwise: the server answers once its uploader is done.

The server's secret (`secret`: PicGo 3.x's `--secret`, PicList's server key) is sent as
`Authorization: Bearer` (PicGo-Core 3.x, pp-server) and as `?key=` (PicList reads nothing else).
Request shapes and answers: PicGo-Core 3.1.0 src/lib/Server (measured in tests/test_picgo_compat.py)
and Kuingsmile/PicList src/main/server (index.ts: multer `any()`; routerManager.ts: `?picbed=`,
`?configName=`, `?key=`, `/delete` by gallery `id`; answers HTTP 200 with `"success": false`).
"""

from __future__ import annotations

import posixpath
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored
from picpipe.net import json_body

if TYPE_CHECKING:
    import requests

DEFAULT_URL = "http://127.0.0.1:36677"
#: Seconds per request unless the profile says: the server answers after its uploader has uploaded.
DEFAULT_TIMEOUT = 120
#: PicList's answer to a missing or wrong ?key= (HTTP 200): "server key is uncorrect" (older: "not correct").
_KEY_REFUSED = ("server key is uncorrect", "server key is not correct")
_SECRET_HINT = ("the PicGo server wants its secret: set the profile's secret to PicGo's --secret (or "
                "PICGO_SERVER_SECRET) or to PicList's server key (Settings › PicGo-Server)")
_NOT_RUNNING = ("start PicGo or PicList and enable its server (Settings › PicGo-Server; PicGo-Core: `picgo "
                "server`), or set the profile's url to where it listens (default http://127.0.0.1:36677)")


class PicGoHost(HttpHost):
    keys = ("url", "uploader", "picbed", "config_name", "secret")

    #: PicGo-Core 3.x's error codes (HTTP 400) and what to do about them.
    hints: ClassVar[dict[str | int, str]] = {
        "UNKNOWN_UPLOADER": "the profile's uploader (picbed) is not one the PicGo server has: use a name from the "
                            "list above, or install the uploader's plugin in PicGo",
        "UPLOAD_CONFIG_NOT_FOUND": "the profile's config_name is none of that uploader's configurations in PicGo: "
                                   "check the name (PicGo's first one is Default)",
        "UPLOAD_CONFIG_AMBIGUOUS": "several PicGo configurations match: set the profile's config_name",
        "INVALID_UPLOAD_OPTION": "the profile's uploader, picbed or config_name is empty: set it or remove it",
        401: _SECRET_HINT,
        404: "no PicGo server answers at the profile's url: it must be the server's address, e.g. "
             "http://127.0.0.1:36677 (PicGo's default)",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        if profile.get("timeout") in (None, ""):
            profile["timeout"] = DEFAULT_TIMEOUT
        super().__init__(profile)
        url = self.site_url("http", default=profile.get("endpoint") or DEFAULT_URL)
        self.server = url[: -len("/upload")] if url.endswith("/upload") else url  # Typora's setting, pasted
        uploader, picbed = profile.get("uploader") or None, profile.get("picbed") or None
        if uploader and picbed and uploader != picbed:
            raise UsageError(f"profile {self.name!r} names two uploaders: uploader = {uploader!r}, "
                             f"picbed = {picbed!r}", "picbed is PicList's word for PicGo's uploader: set one")
        self.uploader: str | None = uploader or picbed
        self.config_name: str | None = profile.get("config_name") or None
        self.secret: str | None = profile.get("secret") or None
        if self.secret:
            from picpipe import redact

            redact.register(self.secret)  # also when the profile did not come through the config

    def params(self) -> dict[str, str]:
        """The uploader under both names (PicGo 3.x ignores `picbed`, PicList `uploader`: neither falls
        back to its current uploader unseen), the configuration, PicList's key."""
        params = {"uploader": self.uploader, "picbed": self.uploader} if self.uploader else {}
        if self.config_name:
            params["configName"] = self.config_name
        if self.secret:
            params["key"] = self.secret
        return params

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        with turn(self.server):
            response = self.send("POST", "/upload", params=self.params(),
                                 files={"files": (posixpath.basename(key), data, mime)}, idempotent=False)
        body = self.answer(response)
        urls = body.get("result")
        if response.status_code == 200 and body.get("success") is True and isinstance(urls, list) and urls:
            url = urls[0]
            if not isinstance(url, str) or "://" not in url:
                raise self.bad_answer(response, f"the PicGo server answered success without a URL ({str(url)[:100]!r})",
                                      "the uploader returned no link: check its settings in PicGo (a custom URL "
                                      "prefix, say)")
            full = body.get("fullResult")
            first = full[0] if isinstance(full, list) and full and isinstance(full[0], dict) else {}
            gallery_id = first.get("id")
            return Stored(gallery_id if isinstance(gallery_id, str) and gallery_id else url, self.served_at(url))
        raise self.refusal(response, body)

    def check_key(self, key: str) -> None:
        """Keys are URLs or PicList gallery ids: sent in a JSON body, never in a path."""
        if not key or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise PicpipeError("bad_key", f"refusing {key!r}: it is not a key pp-upload makes",
                               "give records as pp-upload or pp-mark find wrote them")

    def delete(self, key: str) -> None:
        """PicList's (and pp-server's) POST /delete with the upload's fullResult: the gallery id PicList
        looks up, or the URL pp-server looks up in its ledger. PicGo-Core has no /delete."""
        item = {"imgUrl": key, "url": key} if "://" in key else {"id": key}
        response = self.send("POST", "/delete", params={"key": self.secret} if self.secret else {},
                             json={"list": [item]})
        if response.status_code == 404:
            raise PicpipeError("not_supported", f"{self.name}: the PicGo server has no /delete (PicGo and "
                               "PicGo-Core have none; PicList and pp-server do)",
                               "delete the image in PicGo's gallery or at the host itself", status=404)
        body = self.answer(response)
        if response.status_code == 200 and body.get("success") is True:
            return
        if "deleted already" in str(body.get("message") or ""):  # pp-server: a tombstone in its ledger
            return
        raise self.refusal(response, body)

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to the server; a refused connection says to start PicGo, a timeout that the
        server may have done the work all the same."""
        try:
            return self.client.send(method, self.server + path, headers=self.headers(), **kwargs)
        except PicpipeError as error:
            if error.type == "connection_refused":
                error.hint = _NOT_RUNNING
            elif error.type == "timeout" and path == "/upload":
                error.hint = ("the PicGo server (or its uploader) took longer than the profile's timeout, and may "
                              "have uploaded the image all the same: look in PicGo's gallery, and raise the "
                              "profile's timeout")
            raise

    def answer(self, response: requests.Response) -> dict[str, Any]:
        """The JSON object answered; {} for an error status without one (a proxy's page, PicGo-Core's
        404), a `bad_answer` error for a 200 without one (something else listens there)."""
        return json_body(response) or (self.json_object(response) if response.status_code == 200 else {})

    def refusal(self, response: requests.Response, body: dict[str, Any]) -> PicpipeError:
        """PicGo's `{"success": false, "message": ...}` (HTTP 200 from PicList and PicGo's app, 4xx/5xx
        with a `code` from PicGo-Core 3.x) as the record's error."""
        status = response.status_code
        code = body.get("code") if isinstance(body.get("code"), str) and body.get("code") else None
        message = str(body.get("message") or response.reason or "no message")
        said = f" {code}" if code else ""
        extra: dict[str, Any] = {"status": status, **({"code": code} if code else {})}
        if status in (401, 403) or any(refused in message for refused in _KEY_REFUSED):
            return PicpipeError("auth", f"{self.name}: the PicGo server refused the request (HTTP {status}): "
                                f"{message}", _SECRET_HINT, **extra)
        hint = self.hints.get(code or "") or self.hints.get(status) or (
            "the PicGo uploader failed: the message is its own; PicGo's log has the rest (~/.picgo/picgo.log; "
            "PicList: Settings › log)")
        kind = "rejected" if code or 400 <= status < 500 else "server_error"
        return PicpipeError(kind, f"{self.name}: PicGo server, HTTP {status}{said}: {message}", hint, **extra)


_turns: dict[str, threading.Lock] = {}
_turns_guard = threading.Lock()


def turn(server: str) -> threading.Lock:
    """One upload at a time per server, whatever -j says: PicList switches its current uploader for a
    ?picbed= request and empties its temp folder after each upload, and the PicGo app keeps an upload's
    state on the app, so concurrent requests there can swap or lose each other's files."""
    with _turns_guard:
        return _turns.setdefault(server, threading.Lock())


HOST = PicGoHost
