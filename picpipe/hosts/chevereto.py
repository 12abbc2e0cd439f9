"""Chevereto V3/V4 through its API V1: `POST {url}/api/1/upload`, the file as `source`.

The API key goes in the `X-API-Key` header (V4, `version = "4"`, the default) or as the form
field `key` (V3, `version = "3"`: V3 reads no header). ImgBB runs the same API with its own
presets (field `image`, answer under `data`, no deletion): picpipe/hosts/imgbb.py.

Chevereto names every upload itself, so the key template does not apply and there is no key to
clash over (`overwrite` changes nothing). A site may refuse the same file twice ("Duplicated
upload", its duplicate protection): that is a `conflict` error naming no URL, since Chevereto
gives none; the ledger's dedupe keeps picpipe from sending it again. Without that protection
every upload is a new image. Either way an upload is not idempotent: it is repeated only when
Chevereto surely did not act on it (429, no connection made).

The record's `key` is the image's deletion link (`image.delete_url`,
`{url}/image/{id}/delete/{password}`, a capability: anyone holding it may delete the image).
--delete asks for it (GET, only on the profile's site): Chevereto deletes and redirects (301) to
the viewer page; a 404 means the image is gone (or the link is wrong: Chevereto does not say).

Sources: chevereto/chevereto app/legacy/routes/api.php (key from X-API-Key or `key`, `source`
file/URL/base64, `album_id`, the ImgBB spec, delete_url) and app/legacy/routes/image.php
(`/image/{id}/delete/{password}`); v4-docs.chevereto.com/api/1/file-upload.html.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored
from picpipe.net import json_body

if TYPE_CHECKING:
    import requests


class CheveretoHost(HttpHost):
    keys: ClassVar[tuple[str, ...]] = ("url", "api_key", "album_id", "version")
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {
        "album_id": ((int, str), "a number or an id"), "version": ((int, str), "3 or 4")}

    #: The multipart field of the file, the member of the answer holding the image, the API's URL
    #: when the profile names no site (None: the site's url is required), whether the key may go
    #: in the X-API-Key header (V4), and whether picpipe may ask for the deletion link.
    field: ClassVar[str] = "source"
    result: ClassVar[str] = "image"
    default_api: ClassVar[str | None] = None
    key_in_header: ClassVar[bool] = True
    deletes: ClassVar[bool] = True
    product: ClassVar[str] = "Chevereto"

    hints: ClassVar[dict[str | int, str]] = {
        "100": "Chevereto refused the API key: copy it from the site (V4: your user settings → API, or the "
               "dashboard's API V1 key; V3: dashboard → settings → API) into the profile's api_key; a V3 site "
               "needs version = \"3\"",
        "110": "the site has no API version 1 there: check the profile's url (the site's address)",
        "120": "the site has no such API action: check the profile's url (the site's address)",
        "401": "the site does not allow this key's user to upload (uploads off, or not for this account)",
        "duplicate": "the site refuses the same image twice (its duplicate protection) and names no URL: find the "
                     "earlier upload in the ledger (pp-mark find) or on the site; nothing was overwritten",
    }
    kinds: ClassVar[dict[str | int, str]] = {"100": "auth", "401": "auth", "duplicate": "conflict"}

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.api_key = self.setting("api_key").strip()
        version = str(profile.get("version") or "4").strip().lower().removeprefix("v")
        if version not in ("3", "4"):
            raise UsageError(f"profile {self.name!r}: version = {profile.get('version')!r} is not 3 or 4",
                             f"set version = \"4\" (X-API-Key header) or \"3\" (key field) in [profiles.{self.name}]")
        self.in_header = self.key_in_header and version == "4"
        self.album_id = str(profile.get("album_id") or "").strip()
        self.site = self.site_url(needed=not profile.get("endpoint") and self.default_api is None)
        self.api = self.endpoint(f"{self.site}/api/1/upload" if self.site else self.default_api or "")

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """A new image every time, or a refusal (see the module's docstring): `overwrite` has nothing to replace."""
        fields = {"format": "json"}
        if self.album_id:
            fields["album_id"] = self.album_id
        headers = {}
        if self.in_header:
            headers["X-API-Key"] = self.api_key
        else:
            fields["key"] = self.api_key  # in the body, never in the URL (logs keep URLs)
        response = self.request("POST", self.api, idempotent=False, headers=headers, data=fields,
                                files={self.field: (posixpath.basename(key), data, mime)})
        body = self.json_object(response)
        image = body.get(self.result)
        if "error" in body or not isinstance(image, dict):
            raise self.failure(response)
        url, delete = str(image.get("url") or ""), str(image.get("delete_url") or "")
        if not url:
            raise PicpipeError("pending", f"{self.name}: the image awaits the site's moderation and has no public "
                               "URL yet", "approve it on the site (or turn moderation off for this account) and "
                               f"upload again; its deletion link: {delete or 'none given'}",
                               status=response.status_code)
        return Stored(delete or str(image.get("id_encoded") or image.get("id") or url), self.served_at(url))

    def check_key(self, key: str) -> None:
        """Keys are deletion links (URLs), checked by `delete`, never paths on the server."""

    def delete(self, key: str) -> None:
        if "://" not in key:
            raise PicpipeError("not_supported", f"{self.name}: the record has no deletion link, only the image "
                               f"id {key!r}", f"delete it on the {self.product} site; nothing was deleted")
        if not self.deletes:
            raise PicpipeError("not_supported", f"{self.name}: {self.product}'s API has no delete; open the "
                               f"deletion link in a browser and confirm: {key}", "nothing was deleted")
        if not self.on_own_site(key, self.site, self.api) or "/delete/" not in urllib.parse.urlsplit(key).path:
            raise self.foreign_link(key)
        # 301: deleted, and sent on to the viewer page; 404: no such image (any more).
        self.request("GET", key, redirects=False, ok=(301, 302, 303, 404))

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """{"status_code", "error": {"message", "code"}, "status_txt"}; a duplicate refusal has its own code."""
        body = json_body(response) or {}
        error = body.get("error")
        if not isinstance(error, dict):
            return super().parse_error(response)
        message = str(error.get("message") or body.get("status_txt") or response.reason)
        if "duplicat" in message.lower():
            return "duplicate", message
        code = error.get("code")
        return (str(code) if code not in (None, "") else None), message


HOST = CheveretoHost
