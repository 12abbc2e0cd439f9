"""AList and OpenList as an image host: the files go into `dir` of the AList tree (a folder of
a mounted storage: a local disk, S3, OneDrive, a cloud drive), one `PUT /api/fs/put` each.

AList answers every API call with HTTP 200 and a JSON `{"code", "message", "data"}`; the
`code` inside says what happened (401 a refused token, 403 no permission, 500 the storage
failed), so each answer is read for it and a code other than 200 becomes an error record.

No silent overwrite: `Overwrite: false` makes AList answer code 403 "file exists" instead of
replacing a file, but only from AList v3.42.0 (January 2025, kept by OpenList); older servers
ignore the header and replace the file. The version is read once per run from the public
settings: on an older (or unrecognised) one each name is looked up with `/api/fs/get` before it
is written. A taken name is then compared: the size, the hashes AList reports when the storage
has them, else the bytes downloaded from the file's link. The same bytes are `reused`, others a
`conflict`.

Credentials: `token` (the admin token from Settings → Other) is sent as it is; `user` and
`password` log in once per run (`POST /api/auth/login`) and log in again once when AList refuses
the login token mid-run (expired after 48 hours, or void after OpenList restarted). URLs: AList's
own download link `{url}/d{dir}/{key}`, with the `?sign=` that `/api/fs/get` reports when signing
is on (the default: sign_all); `raw_url` is not used: on cloud drives it expires within hours.
With `base_url` (a web server or CDN in front of the folder) the URL is base_url + key.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored, conflict

if TYPE_CHECKING:
    import requests

#: The first version whose /api/fs/put honours `Overwrite: false` (alist-org/alist#7809).
OVERWRITE_SINCE = (3, 42)
#: Hashes AList may report in `hash_info` that hashlib computes.
_HASHES = ("sha256", "sha1", "md5")
_VERSION = re.compile(r"v?(\d+)\.(\d+)")


class AListHost(HttpHost):
    keys = ("url", "token", "user", "password", "dir")

    hints: ClassVar[dict[str | int, str]] = {
        413: "a reverse proxy in front of AList refused the file size (nginx: client_max_body_size): raise its "
             "limit or make the image smaller (pp-compress --max-width ...)",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.site = self.site_url("https")
        self.folder = _folder(str(profile.get("dir") or "/"), self.name)
        self.static_token = str(profile.get("token") or "")
        self.user, self.password = str(profile.get("user") or ""), str(profile.get("password") or "")
        if not self.static_token and not (self.user and self.password):
            raise UsageError(f"profile {self.name!r} (alist) needs token, or user and password",
                             f"set token in [profiles.{self.name}] (AList: Settings → Other → Token), or user and "
                             "password of an AList user who may write to dir")
        self.lock = threading.Lock()
        self.login_token: str | None = None
        self.checks_overwrite: bool | None = None  # does this server honour Overwrite: false? asked once

    # -- the Host interface --------------------------------------------------------------------

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        self.check_key(key)
        path = self.path(key)
        if not overwrite and not self.honours_overwrite():
            found = self.stat(path)
            if found is not None:
                return self.compare(key, found, data)
        headers = {"File-Path": urllib.parse.quote(path, safe="/"), "Content-Type": mime,
                   "Overwrite": "true" if overwrite else "false", "As-Task": "false"}
        body = self.call("PUT", "/api/fs/put", headers=headers, data=data)
        if not overwrite and body.get("code") == 403 and "file exists" in str(body.get("message")):
            found = self.stat(path)
            if found is None:  # deleted in between: nothing of ours is there either
                raise self.refused(body, f"upload of {path}")
            return self.compare(key, found, data)
        if body.get("code") != 200:
            raise self.refused(body, f"upload of {path}")
        return Stored(key, self.url(key))

    def delete(self, key: str) -> None:
        folder, _, name = self.path(key).rpartition("/")
        body = self.call("POST", "/api/fs/remove", json={"dir": folder or "/", "names": [name]})
        if body.get("code") != 200 and not _absent(body):  # AList itself counts a missing file as removed
            raise self.refused(body, f"delete of {folder}/{name}")

    def url(self, key: str) -> str:
        """base_url + key when set (no request); else AList's download link, signed when AList signs."""
        if self.profile.get("base_url"):
            return super().url(key)
        found = self.stat(self.path(key))
        if found is None:
            raise PicpipeError("not_found", f"{self.name}: {self.path(key)} is not there right after the upload",
                               "the storage may list new files late (a cloud drive's cache): re-run, or set base_url")
        return self.own_link(key, found)

    # -- helpers -------------------------------------------------------------------------------

    def path(self, key: str) -> str:
        return f"{self.folder.rstrip('/')}/{key}"

    def own_link(self, key: str, found: dict[str, Any]) -> str:
        """AList's download link of `key`, with the sign `/api/fs/get` reported (none when signing is off)."""
        link = f"{self.site}/d{urllib.parse.quote(self.path(key), safe='/')}"
        sign = found.get("sign")
        return f"{link}?sign={sign}" if isinstance(sign, str) and sign else link

    def stat(self, path: str) -> dict[str, Any] | None:
        """What `/api/fs/get` knows of `path` (size, sign, hash_info); None when nothing is there."""
        body = self.call("POST", "/api/fs/get", json={"path": path, "password": ""})
        if body.get("code") == 200 and isinstance(body.get("data"), dict):
            return body["data"]
        if _absent(body):
            return None
        raise self.refused(body, f"look-up of {path}")

    def compare(self, key: str, found: dict[str, Any], data: bytes) -> Stored:
        """The name is taken: the same bytes are a reuse, anything else (a folder too) a conflict."""
        if found.get("is_dir") or found.get("size") != len(data):
            raise conflict(self.name, key)
        link = self.own_link(key, found)
        same = _same_hash(found.get("hash_info"), data)
        if same is None:  # the storage reports no hash: read the file back
            same = self.request("GET", link).content == data
        if not same:
            raise conflict(self.name, key)
        return Stored(key, super().url(key) if self.profile.get("base_url") else link, reused=True)

    def honours_overwrite(self) -> bool:
        """Whether the server refuses to replace a file on `Overwrite: false` (v3.42.0 and later,
        read once from the public settings); an unknown version counts as older."""
        with self.lock:
            if self.checks_overwrite is None:
                body = self.json_object(self.request("GET", f"{self.site}/api/public/settings"))
                data = body.get("data")
                found = _VERSION.match(str(data.get("version") or "").strip()) if isinstance(data, dict) else None
                self.checks_overwrite = found is not None and (int(found[1]), int(found[2])) >= OVERWRITE_SINCE
            return self.checks_overwrite

    def call(self, method: str, api: str, headers: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
        """One API call with the token; AList's JSON answer whatever its code. A login token that AList
        refuses (code 401) is replaced by a fresh login once."""
        token = self.token()
        body = self.ask(method, api, token, headers, **kwargs)
        if body.get("code") == 401 and not self.static_token:
            with self.lock:
                if self.login_token == token:  # not yet replaced by another worker
                    self.login_token = None
            body = self.ask(method, api, self.token(), headers, **kwargs)
        return body

    def ask(self, method: str, api: str, token: str, headers: dict[str, str] | None, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, f"{self.site}{api}", headers={**(headers or {}), "Authorization": token},
                                ok=(200,), **kwargs)
        return self.answer(response)

    def token(self) -> str:
        if self.static_token:
            return self.static_token
        with self.lock:
            if self.login_token is None:
                self.login_token = self.login()
            return self.login_token

    def login(self) -> str:
        """A login token for user and password (no 2FA code: picpipe cannot type one)."""
        from picpipe import redact

        response = self.request("POST", f"{self.site}/api/auth/login", ok=(200,),
                                json={"username": self.user, "password": self.password})
        body = self.answer(response)
        data = body.get("data")
        if body.get("code") != 200 or not isinstance(data, dict) or not data.get("token"):
            raise self.refused(body, f"login as {self.user!r}", login=True)
        token = str(data["token"])
        redact.register(token)
        return token

    def answer(self, response: requests.Response) -> dict[str, Any]:
        """AList's JSON object; its `code` must be a number (anything else answered for AList)."""
        body = self.json_object(response)
        if not isinstance(body.get("code"), int):
            raise self.bad_answer(response, "the answer has no AList code", "check the profile's url: it must be "
                                  "the AList site itself (e.g. https://alist.example.com), not a page in front of it",
                                  quote=True)
        return body

    def refused(self, body: dict[str, Any], what: str, login: bool = False) -> PicpipeError:
        """AList's code and message inside an HTTP 200 as an error record, with what to do."""
        code, message = body.get("code"), str(body.get("message") or "")
        kind, hint = self.advice(code, message, login)
        return PicpipeError(kind, f"{self.name}: {what}: AList code {code}: {message}", hint, status=200, code=code)

    def advice(self, code: Any, message: str, login: bool) -> tuple[str, str]:
        lowered = message.lower()
        where = f"[profiles.{self.name}]"
        if login and code == 402:
            return "auth", (f"user {self.user!r} has two-factor authentication: picpipe cannot type its code; set "
                            f"token in {where} (AList: Settings → Other → Token) or use a user without 2FA")
        if code == 429:
            return "rate_limited", ("AList locks logins for 5 minutes after 5 failed ones from one address: fix "
                                    f"user and password in {where}, wait, and re-run")
        if login and code in (400, 401, 403):
            return "auth", f"AList refused user {self.user!r} and its password: check user and password in {where}"
        if code == 401 and self.static_token:
            return "auth", (f"AList refused the token: copy the current one from AList's Settings → Other → Token "
                            f"into token in {where} (resetting it voids the old one), or set user and password")
        if code == 401:
            return "auth", (f"AList refused a fresh login of {self.user!r} (the user disabled, the password changed?):"
                            f" check user and password in {where}")
        if code == 403 and "relative path" in lowered:
            return "bad_key", "keys are relative paths without '..': check dir and the --path template"
        if code == 403:
            return "auth", ("the user may not do this in dir: give it the Write and Delete permissions in AList's "
                            f"Users page (or a meta with write), or use the admin token; dir is {self.folder!r}")
        if "storage not found" in lowered or "failed get storage" in lowered:
            return "not_found", (f"no AList storage is mounted at dir {self.folder!r}: set dir in {where} to a folder "
                                 "inside a storage listed in AList's Manage → Storages (e.g. /local/img)")
        if code == 500:
            return "server_error", ("AList or the storage behind it failed (its message says why: a cloud drive's "
                                    "expired login, a full disk): check the storage in AList's Manage → Storages")
        return "rejected", "AList rejected the request: its message says why; check url and dir in " + where


def _folder(value: str, profile: str) -> str:
    """`dir` as an absolute AList path without '.', '..' or empty parts (keys cannot climb out of it)."""
    parts = [part for part in value.strip().replace("\\", "/").split("/") if part]
    if any(part in (".", "..") or any(ord(c) < 32 for c in part) for part in parts):
        raise UsageError(f"profile {profile!r}: dir {value!r} must be a plain folder path in AList's tree",
                         f"write it like dir = \"/local/img\" in [profiles.{profile}] (no '.' or '..')")
    return "/" + "/".join(parts)


def _absent(body: dict[str, Any]) -> bool:
    """AList says the file is not there ("object not found"; OpenList: "failed to get obj: object not found")."""
    return body.get("code") != 200 and "object not found" in str(body.get("message") or "").lower()


def _same_hash(hashes: Any, data: bytes) -> bool | None:
    """Whether AList's hash_info of a file says it holds `data`; None when it names no hash we know."""
    import hashlib

    if not isinstance(hashes, dict):
        return None
    for name in _HASHES:
        value = hashes.get(name)
        if isinstance(value, str) and value:
            return value.lower() == hashlib.new(name, data).hexdigest()
    return None


HOST = AListHost
