"""WebDAV as an image host (Nutstore/坚果云, Nextcloud, a NAS, rclone, Apache): `url` is the
collection the images go into, `base_url` where a web server shows them (default: `url`).

Not every server honours `If-None-Match: *` on PUT (rclone serve webdav replaces the file and
answers 201), so "never overwrite" cannot rest on it. Instead each folder is listed once per
run (PROPFIND Depth 1) and a name already there is compared before anything is written: one
request per new image plus one per folder, which also suits Nutstore's 600 requests per 30
minutes. The PUT still carries `If-None-Match: *` for servers that do honour it, which closes
the gap between the listing and the write. A missing folder is made with MKCOL, and its parent
first only when that is missing too (RFC 4918 answers 409 then; rclone 404).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

from picpipe import redact
from picpipe.errors import PicpipeError
from picpipe.hosts import HttpHost, Stored
from picpipe.hosts.signing import uri_encode

if TYPE_CHECKING:
    import requests
    from requests.auth import AuthBase

PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?>'
                 b'<d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/></d:prop></d:propfind>')
_SABRE_FIELD = re.compile(r"<s:(exception|message)>([^<]*)</s:\1>")


class WebDavHost(HttpHost):
    hints = {
        401: "the server refused the user or password; Nutstore needs an app password (账户信息 → 安全选项 → "
             "第三方应用管理), not the login password",
        403: "no permission to write here; on Nutstore put url at a folder (https://dav.jianguoyun.com/dav/NAME/): "
             "files cannot go directly under /dav/",
        507: "the WebDAV storage is full",
        "BlockedTemporarily": "Nutstore limits free accounts to 600 requests per 30 minutes: re-run later "
                              "(uploaded images are not sent again)",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        url = urllib.parse.urlsplit(self.setting("url").rstrip("/") + "/")
        if url.username is not None:  # user:password@ in the url: moved to the auth, never into a link
            profile.setdefault("user", urllib.parse.unquote(url.username))
            profile.setdefault("password", urllib.parse.unquote(url.password or ""))
            redact.register(profile["password"])
            url = url._replace(netloc=url.netloc.rpartition("@")[2])
        self.root = url.geturl()
        self.auth: AuthBase | None = None
        self.folders: dict[str, set[str] | None] = {}  # folder → names in it (None: folder missing)
        self.folder_locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()

    def default_base_url(self) -> str:
        return self.root

    def target(self, path: str) -> str:
        return self.root + uri_encode(path)

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        folder = key.rpartition("/")[0]
        names = self.listing(folder)
        if not overwrite and names is not None and key.rpartition("/")[2] in names:
            return self.compare(key, data)
        headers = {"Content-Type": mime} if overwrite else {"Content-Type": mime, "If-None-Match": "*"}
        response = self.dav("PUT", key, ok=(200, 201, 204, 409, 404, 412), data=data, headers=headers)
        if response.status_code in (404, 409):  # a parent is missing after all (made by someone else's delete)
            self.make_folders(folder, known=False)
            response = self.dav("PUT", key, ok=(200, 201, 204, 412), data=data, headers=headers)
        if response.status_code == 412:
            return self.compare(key, data)
        with self.lock:
            listed = self.folders.get(folder)
            if listed is not None:
                listed.add(key.rpartition("/")[2])
        return Stored(key, self.url(key))

    def compare(self, key: str, data: bytes) -> Stored:
        """A name that is taken: the same bytes are a reuse, others a conflict."""
        return self.already_there(key, self.dav("GET", key).content == data)

    def delete(self, key: str) -> None:
        self.dav("DELETE", key, ok=(200, 204, 404))

    def listing(self, folder: str) -> set[str] | None:
        """The names in `folder`, asked once per run; None when the folder does not exist (then it
        is made, so that the PUT that follows succeeds first time)."""
        with self.lock:
            lock = self.folder_locks.setdefault(folder, threading.Lock())
        with lock:  # one PROPFIND per folder, however many workers arrive at once
            if folder in self.folders:
                return self.folders[folder]
            response = self.dav("PROPFIND", folder + "/" if folder else "", ok=(207, 404, 409), data=PROPFIND_BODY,
                                headers={"Depth": "1", "Content-Type": "application/xml"})
            names = self.names(response) if response.status_code == 207 else None
            if names is None:
                self.make_folders(folder, known=True)
                names = set()
            with self.lock:
                self.folders[folder] = names
            return names

    def make_folders(self, folder: str, known: bool) -> None:
        """MKCOL `folder` (a key's folder, "" for `url` itself); when its parent is missing too (409,
        rclone: 404), make the parent first, up to the `url` collection and above it if need be."""
        url = self.target(folder + "/" if folder else "")
        self.mkcol(url)
        if not known:
            with self.lock:
                self.folders.pop(folder, None)

    def mkcol(self, url: str) -> None:
        response = self.dav_url("MKCOL", url, ok=(200, 201, 405, 404, 409))  # 405: it exists
        if response.status_code in (404, 409):
            parent = url.rstrip("/").rpartition("/")[0] + "/"
            if urllib.parse.urlsplit(parent).path in ("", "/"):
                raise self.failure(response)
            self.mkcol(parent)
            self.dav_url("MKCOL", url, ok=(200, 201, 405))

    def dav(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One request for `path` under `url`."""
        return self.dav_url(method, self.target(path), ok, **kwargs)

    def dav_url(self, method: str, url: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One request as the profile's user: Basic first, Digest when the server asks for it."""
        response = self.request(method, url, ok=(*ok, 401), auth=self.credentials(), **kwargs)
        if response.status_code == 401 and self.switch_to_digest(response):
            response = self.request(method, url, ok=(*ok, 401), auth=self.credentials(), **kwargs)
        if response.status_code == 401 and 401 not in ok:
            raise self.failure(response)
        return response

    def credentials(self) -> AuthBase | None:
        with self.lock:
            if self.auth is None and self.profile.get("user"):
                from requests.auth import HTTPBasicAuth

                self.auth = HTTPBasicAuth(str(self.profile["user"]), str(self.profile.get("password") or ""))
            return self.auth

    def switch_to_digest(self, response: requests.Response) -> bool:
        """True when the server takes Digest only and we were sending Basic."""
        from requests.auth import HTTPBasicAuth, HTTPDigestAuth

        offered = response.headers.get("WWW-Authenticate", "").lower()
        with self.lock:
            if not isinstance(self.auth, HTTPBasicAuth) or "digest" not in offered or "basic" in offered:
                return False
            self.auth = HTTPDigestAuth(str(self.profile["user"]), str(self.profile.get("password") or ""))
        return True

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """Nutstore and other SabreDAV servers say why in <s:exception> and <s:message>."""
        fields = dict(_SABRE_FIELD.findall(response.text[:2000]))
        if fields:
            return fields.get("exception"), fields.get("message") or response.reason
        return super().parse_error(response)


    def names(self, response: requests.Response) -> set[str]:
        """The member names of a PROPFIND Depth 1 answer (the folder itself, an href ending in /, drops out)."""
        from xml.etree import ElementTree

        try:
            hrefs = list(ElementTree.fromstring(response.content).iter("{DAV:}href"))
        except ElementTree.ParseError:
            raise PicpipeError("bad_answer", f"{self.name}: the folder listing (PROPFIND) is not WebDAV XML",
                               "check that url points at a WebDAV collection, not a web page", status=207) from None
        paths = (urllib.parse.urlsplit((href.text or "").strip()).path for href in hrefs)
        return {urllib.parse.unquote(path.rpartition("/")[2]) for path in paths if path and not path.endswith("/")}


HOST = WebDavHost
