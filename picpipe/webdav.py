"""WebDAV spoken with `requests` (DESIGN §5): the client of pp-backup, pp-davtest and the webdav host.

One `WebDav` is one collection URL of a profile (`url`, `user`, `password`). Paths given to its
methods are relative to that collection and percent-encoded one segment at a time, so spaces,
`#`, `%` and CJK names survive. What it does, and what it never does:

- PUT first: one request per new file. Only when the server answers that a parent is missing
  (409, rclone: 404) are folders made, with MKCOL level by level from the top, and the PUT is
  repeated once. Folders known to exist are remembered for the run.
- Existence is asked with PROPFIND and an explicit Depth (0 or 1), never with HEAD or GET on a
  folder: Nutstore answers those with 403.
- Basic auth, sent with the first request; Digest when the server offers only Digest.
- Nutstore (dav.jianguoyun.com, or `vendor = "nutstore"`): Basic only, no files directly under
  /dav/, requests paced to the account's budget (`pace`, default 540 per 30 minutes, shared by
  all picpipe processes), and 503 BlockedTemporarily stops the run cleanly: every later request
  fails at once with a rate_limited error saying when to resume.
- Any server that keeps failing (5xx, no answer) stops the run for its profile after a few failed
  requests (`breaker`, picpipe.breaker): later requests fail at once, unsent, as circuit_open.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from picpipe import redact
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.signing import uri_encode
from picpipe.net import Service, check_url, url_hint
from picpipe.timeutil import iso_from_epoch

if TYPE_CHECKING:
    import requests
    from requests.auth import AuthBase

#: Nutstore's default budget: 600 requests per 30 minutes on a free account, with room left for
#: the user's other clients (Obsidian, Zotero); and the gap that kept bursts from being blocked.
NUTSTORE_PACE, NUTSTORE_GAP = 540, 0.4
#: How long Nutstore's BlockedTemporarily lasts at most.
BLOCK_SECONDS = 1800
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/>'
                 b'<d:getcontentlength/></d:prop></d:propfind>')
_SABRE_FIELD = re.compile(r"<(?:[\w-]+:)?(exception|message)>([^<]*)</(?:[\w-]+:)?\1>")
APP_PASSWORD_HINT = ("the server refused the user or password; for Nutstore use an app password (账户信息 → 安全选项 → "
                     "第三方应用管理 → 添加应用), not the login password, and your account e-mail as user")


@dataclass(frozen=True)
class Entry:
    """One member of a PROPFIND answer; `path` is relative to the collection ("" is the collection)."""

    path: str
    folder: bool
    size: int | None = None

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


def is_nutstore(profile: dict[str, Any], host: str) -> bool:
    return str(profile.get("vendor") or "").lower() == "nutstore" or host == "jianguoyun.com" or \
        host.endswith(".jianguoyun.com")


class WebDav(Service):
    """The WebDAV collection of one profile."""

    hints = {
        401: APP_PASSWORD_HINT,
        403: "no permission here: pick a folder you may write to (on Nutstore a folder below /dav/, e.g. "
             "https://dav.jianguoyun.com/dav/picpipe/)",
        404: "no such collection: check the profile's url (the WebDAV address, e.g. https://dav.jianguoyun.com/dav/)",
        405: "the server does not allow this here: check that url is a WebDAV collection, not a web page",
        409: "a parent folder is missing: create it, or point url at a folder that exists",
        "AncestorsNotFound": "a parent folder is missing: create it, or point url at a folder that exists",
        413: "the file is larger than the server accepts (Nutstore: 500 MB per file)",
        423: "the file is locked by another client: re-run later",
        507: "the WebDAV storage is full: free space or upgrade the account",
    }
    kinds = {405: "rejected", 409: "not_found", "AncestorsNotFound": "not_found", 423: "locked", 507: "quota_full"}

    def __init__(self, profile: dict[str, Any], purpose: str = "webdav") -> None:
        if profile.get("url") in (None, ""):
            raise UsageError(f"profile {profile['name']!r} needs url: the WebDAV folder, e.g. "
                             "https://dav.jianguoyun.com/dav/picpipe/",
                             f"set url in [profiles.{profile['name']}] or PICPIPE_{profile['name'].upper()}_URL")
        url = urllib.parse.urlsplit(check_url(profile["url"], f"profile {profile['name']!r}: url",
                                              url_hint(profile["name"], "url"), spaces=True))
        if url.username is not None:  # user:password@ in the url: moved to the auth, never into a link
            profile.setdefault("user", urllib.parse.unquote(url.username))
            profile.setdefault("password", urllib.parse.unquote(url.password or ""))
            redact.register(profile["password"])
            url = url._replace(netloc=url.netloc.rpartition("@")[2])
        # Typed as a person writes it (坚果云/我的 图床/) or already escaped: escaped once either way.
        url = url._replace(path=uri_encode(urllib.parse.unquote(url.path).rstrip("/") + "/"), query="", fragment="")
        self.root = url.geturl()
        self.root_path = urllib.parse.unquote(url.path)
        self.nutstore = is_nutstore(profile, url.hostname or "")
        if self.nutstore and self.root_path == "/dav/":
            raise UsageError(f"profile {profile['name']!r}: Nutstore keeps no files directly in /dav/, and every "
                             "folder made there becomes a separate sync folder of the account",
                             "set url to a folder below it, e.g. https://dav.jianguoyun.com/dav/picpipe/")
        super().__init__(profile, purpose, pace=self.before_send)
        budget = int(self.number("pace", NUTSTORE_PACE if self.nutstore else 0))
        self.pacer: Callable[[], None] | None = None
        if budget > 0:
            from picpipe.pace import Pacer

            self.pacer = Pacer.for_account(url.netloc, str(profile.get("user") or ""), budget,
                                           NUTSTORE_GAP if self.nutstore else 0.0, profile["name"]).wait
        self.auth: AuthBase | None = None
        self.folders: set[str] = set()  # folders known to exist this run ("" = the collection)
        self.blocked: PicpipeError | None = None
        self.lock = threading.Lock()

    # -- addresses ---------------------------------------------------------------------------
    def href(self, path: str) -> str:
        """The URL of `path` under the collection (a trailing / kept for folders)."""
        return self.root + uri_encode(path)

    def relative(self, href: str) -> str | None:
        """The path under the collection of an href from a PROPFIND answer; None when outside it."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(href.strip()).path)
        if not (path + "/").startswith(self.root_path):
            return None
        return path[len(self.root_path):].strip("/")

    # -- the verbs ---------------------------------------------------------------------------
    def put(self, path: str, data: bytes, content_type: str = "application/octet-stream",
            if_none_match: bool = False) -> requests.Response:
        """PUT `data` (bytes, so Content-Length is sent); the parents are made only if missing.
        With `if_none_match`, a server that honours it answers 412 rather than replace a file."""
        folder = path.rpartition("/")[0]
        headers = {"Content-Type": content_type}
        if if_none_match:
            headers["If-None-Match"] = "*"
        ok = (200, 201, 204, 412)
        response = self.send("PUT", path, ok=(*ok, 404, 409), data=data, headers=headers)
        if response.status_code in (404, 409):
            self.make_folder(folder)
            response = self.send("PUT", path, ok=ok, data=data, headers=headers)
        self.known(folder)
        return response

    def get(self, path: str) -> bytes:
        return self.send("GET", path, ok=(200,)).content

    def delete(self, path: str) -> bool:
        """Remove a file or folder; False when it was not there."""
        return self.send("DELETE", path, ok=(200, 204, 404)).status_code != 404

    def move(self, path: str, to: str, overwrite: bool = True) -> None:
        """Rename within the collection: how a file is replaced atomically (upload a temp, then MOVE)."""
        self.send("MOVE", path, ok=(201, 204), headers={"Destination": self.href(to),
                                                         "Overwrite": "T" if overwrite else "F"})

    def options(self) -> requests.Response:
        return self.send("OPTIONS", "", ok=(200, 204))

    def propfind(self, path: str, depth: int = 0) -> list[Entry] | None:
        """The entries of `path` (itself first; Depth 1 lists a folder's members too); None when it
        does not exist. Depth is always sent: a missing one means infinity."""
        target = path + "/" if path and depth else path
        response = self.send("PROPFIND", target, ok=(207, 404, 409), data=PROPFIND_BODY,
                             headers={"Depth": str(depth), "Content-Type": "application/xml; charset=utf-8"})
        if response.status_code != 207:
            return None
        entries = self.entries(response)
        if any(e.folder for e in entries if e.path == path):
            self.known(path)
        return entries

    def make_folder(self, folder: str) -> None:
        """MKCOL `folder`; when a level above it is missing too (409, rclone: 404), every level not
        known to exist is made from the top down (the collection itself, and above it, included)."""
        with self.lock:
            if folder in self.folders:
                return
        if folder:
            first = self.send("MKCOL", folder + "/", ok=(200, 201, 405, 404, 409))  # 405: it exists
            if first.status_code not in (404, 409):
                self.known(folder)
                return
        parts = folder.split("/") if folder else []
        for depth in range(len(parts) + 1):
            level = "/".join(parts[:depth])
            with self.lock:
                if level in self.folders:
                    continue
            if level:  # 409 on a level we made a moment ago: someone else is deleting
                self.send("MKCOL", level + "/", ok=(200, 201, 405))
            elif self.root_path != "/":  # a server's root always exists
                self._make_collection(self.root)
            self.known(level)

    def known(self, folder: str) -> None:
        """`folder` exists, and so does every folder above it."""
        parts = folder.split("/") if folder else []
        with self.lock:
            self.folders.update("/".join(parts[:depth]) for depth in range(len(parts) + 1))

    def _make_collection(self, url: str) -> None:
        """MKCOL `url`; when its parent is missing too (409, rclone: 404), the parent first."""
        response = self.send_url("MKCOL", url, ok=(200, 201, 405, 404, 409))
        if response.status_code in (404, 409):
            parent = url.rstrip("/").rpartition("/")[0] + "/"
            if urllib.parse.urlsplit(parent).path in ("", "/"):
                raise self.failure(response)
            self._make_collection(parent)
            self.send_url("MKCOL", url, ok=(200, 201, 405))

    # -- one request -------------------------------------------------------------------------
    def send(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        return self.send_url(method, self.href(path), ok, **kwargs)

    def send_url(self, method: str, url: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        """One request as the profile's user: Basic first, Digest when the server asks for it only;
        none at all once Nutstore has blocked us. Never redirected: credentials stay on this server."""
        auth = self.credentials()
        response = self.request(method, url, ok=(*ok, 401, 503), auth=auth, final=self.is_block, redirects=False,
                                **kwargs)
        if response.status_code == 401 and self.switch_to_digest(response, auth):
            response = self.request(method, url, ok=(*ok, 401, 503), auth=self.credentials(), final=self.is_block,
                                    redirects=False, **kwargs)
        if response.status_code not in ok:
            if self.is_block(response):
                raise self.block()
            raise self.failure(response)
        return response

    def before_send(self) -> None:
        """Before every attempt: wait for the budget, then make sure no block came meanwhile (other
        threads' requests may have met it while this one waited)."""
        if self.blocked is None and self.pacer is not None:
            self.pacer()
        if self.blocked is not None:
            raise self.blocked

    @staticmethod
    def is_block(response: requests.Response) -> bool:
        return response.status_code == 503 and b"BlockedTemporarily" in response.content[:4096]

    def block(self) -> PicpipeError:
        """Nutstore's rate limit: this request and every later one fail without being sent."""
        resume = iso_from_epoch(time.time() + BLOCK_SECONDS)
        with self.lock:
            if self.blocked is None:
                self.blocked = PicpipeError(
                    "rate_limited", f"{self.name}: the server blocks requests for a while (503 BlockedTemporarily)",
                    f"Nutstore allows 600 requests per 30 minutes; run the same command again after {resume} "
                    "(what is stored is not sent again), or lower the profile's pace",
                    status=503, code="BlockedTemporarily", resume_after=resume)
            return self.blocked

    def credentials(self) -> AuthBase | None:
        with self.lock:
            if self.auth is None and self.profile.get("user"):
                from requests.auth import HTTPBasicAuth

                self.auth = HTTPBasicAuth(str(self.profile["user"]), str(self.profile.get("password") or ""))
            return self.auth

    def switch_to_digest(self, response: requests.Response, sent: AuthBase | None) -> bool:
        """Whether to repeat a request refused with 401 (`sent` with the credentials it carried):
        yes when the server takes Digest only and Basic was sent (or another thread has switched to
        Digest meanwhile). Never on Nutstore: it takes Basic only, and its 401 means a wrong password."""
        from requests.auth import HTTPBasicAuth, HTTPDigestAuth

        offered = response.headers.get("WWW-Authenticate", "").lower()
        with self.lock:
            if self.auth is not sent:
                return True
            if self.nutstore or not isinstance(sent, HTTPBasicAuth) or "digest" not in offered or "basic" in offered:
                return False
            self.auth = HTTPDigestAuth(str(self.profile["user"]), str(self.profile.get("password") or ""))
        return True

    # -- answers -----------------------------------------------------------------------------
    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """Nutstore and other SabreDAV servers say why in <s:exception> and <s:message>."""
        fields = dict(_SABRE_FIELD.findall(response.text[:2000]))
        if fields:
            return fields.get("exception"), fields.get("message") or response.reason
        return super().parse_error(response)

    def entries(self, response: requests.Response) -> list[Entry]:
        """A 207 Multi-Status answer as entries, matched by the DAV: namespace, never by prefix."""
        from xml.etree import ElementTree

        try:
            tree = ElementTree.fromstring(response.content)
        except ElementTree.ParseError:
            raise PicpipeError("bad_answer", f"{self.name}: the PROPFIND answer is not WebDAV XML",
                               "check that url points at a WebDAV collection, not a web page", status=207) from None
        found = []
        for item in tree.iter("{DAV:}response"):
            # An href may be relative and hold dot segments: resolved against the URL asked.
            path = self.relative(urllib.parse.urljoin(response.url, (item.findtext("{DAV:}href") or "").strip()))
            if path is None:
                continue
            folder, size = False, None
            for propstat in item.iter("{DAV:}propstat"):
                if " 200 " not in (propstat.findtext("{DAV:}status") or " 200 ") + " ":
                    continue
                for prop in propstat.iter("{DAV:}prop"):
                    folder = folder or prop.find("{DAV:}resourcetype/{DAV:}collection") is not None
                    length = (prop.findtext("{DAV:}getcontentlength") or "").strip()
                    size = int(length) if length.isdigit() else size
            found.append(Entry(path, folder, size))
        return found


def dav_for(profile: dict[str, Any], purpose: str) -> WebDav:
    """The client for a webdav profile (a UsageError for other types)."""
    if profile.get("type") != "webdav":
        raise UsageError(f"profile {profile['name']!r} is of type {profile.get('type')!r}, not webdav",
                         "give a webdav profile ([profiles.NAME] with type = \"webdav\" and url)")
    return WebDav(profile, purpose)

