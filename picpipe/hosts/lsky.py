"""Lsky Pro (兰空图床), 2.x (`version = 2`, the default) and 1.x (`version = 1`).

Lsky names the files itself (its naming rules), so the key template does not apply and there
is no key to clash over: `overwrite` changes nothing and there is no conflict. Both versions
store the same bytes once per storage strategy (md5 + sha1 looked up before writing): the same
image again gets the existing file's URL. The answer does not say so, so `reused` is never set;
it is also what makes a retried upload safe (a 5xx after the file was stored leaves at most a
second entry in Lsky's image list, pointing at the same file).

- 2.x: the record's `key` is Lsky's image key (`data.key`); --delete is
  `DELETE /api/v1/images/{key}`, which Lsky answers with success for a key already gone.
- 1.x: the upload's answer names no image id, so the record's `key` is the image URL; --delete
  finds the ids of that URL in the account's list (`/api/images`) and posts them to `/api/delete`.

Sources: lsky-org/lsky-pro routes/api.php, app/Http/Controllers/Api/V1/ImageController.php,
app/Services/ImageService.php, app/Exceptions/Handler.php (2.x); route/route.php,
application/api/controller/{Upload,Image}.php, application/http/middleware/ApiAuthenticate.php,
application/common/controller/Upload.php (1.x); Kuingsmile/PicList-Core src/plugins/uploader/lsky.ts.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe import redact
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored
from picpipe.net import json_body

if TYPE_CHECKING:
    import requests

#: Pages of the 1.x image list read at most, and images a page, when --delete looks for a URL's ids.
LIST_PAGES, LIST_ROWS = 100, 100
#: 2.x upload settings sent as form fields when the profile sets them (2.x only).
V2_FIELDS = ("strategy_id", "album_id", "permission")
_PERMISSIONS = {"0": "0", "private": "0", "1": "1", "public": "1"}
_TOKEN_HINT = ("Lsky Pro refused the token: for 2.x make one on the site's API page or with POST /api/v1/tokens "
               "(email, password), with or without the word Bearer; for 1.x copy it from the user settings. "
               "Set it as the profile's token (env:NAME keeps it out of the file), and version to the site's")


class LskyHost(HttpHost):
    keys = ("url", "token", "version", "strategy_id", "album_id", "permission")
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {
        "version": ((int, str), "1 or 2"), "strategy_id": ((int, str), "a number"),
        "album_id": ((int, str), "a number"), "permission": ((int, str), "0, 1, public or private")}

    hints: ClassVar[dict[str | int, str]] = {
        401: _TOKEN_HINT,
        403: "the site does not allow API uploads (an admin turns the API on in Lsky's settings), or the "
             "token's user may not upload",
        200: "Lsky Pro refused the upload: its message says why (file type or size of the group, strategy_id, "
             "quota, account state)",
        429: "Lsky limits requests (its throttle, or the group's uploads per minute/hour/day): re-run later "
             "(what was uploaded is not sent again)",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        version = str(profile.get("version") or "2").strip().lower().removeprefix("v")
        if version not in ("1", "2"):
            raise UsageError(f"profile {self.name!r}: version = {profile.get('version')!r} is not 1 or 2",
                             f"set version = \"2\" (Lsky Pro 2.x, /api/v1) or \"1\" in [profiles.{self.name}]")
        self.v2 = version == "2"
        token = self.setting("token").strip()
        self.token = token[7:].strip() if token.lower().startswith("bearer ") else token  # PicList's form
        redact.register(self.token)  # the config registered "Bearer X" whole: X alone is masked too
        self.fields = {k: str(profile[k]).strip() for k in V2_FIELDS if profile.get(k) not in (None, "")}
        if self.fields and not self.v2:
            raise UsageError(f"profile {self.name!r}: {', '.join(self.fields)} are Lsky Pro 2.x settings",
                             "remove them, or set version = \"2\"")
        if "permission" in self.fields:
            permission = _PERMISSIONS.get(self.fields["permission"].lower())
            if permission is None:
                raise UsageError(f"profile {self.name!r}: permission = {self.fields['permission']!r} is not "
                                 "public or private", "set permission = \"public\" (1) or \"private\" (0)")
            self.fields["permission"] = permission
        site = self.site_url(needed=not profile.get("endpoint"))
        self.api = self.endpoint(site and site + ("/api/v1" if self.v2 else "/api"))

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """Lsky names the file; the same bytes come back at the same URL (see the module's docstring)."""
        name = posixpath.basename(key)
        if self.v2:
            response = self.request("POST", f"{self.api}/upload", headers=self.auth(), data=self.fields,
                                    files={"file": (name, data, mime)})
            found = self.succeeded(response)
            links = found.get("links")
            links = links if isinstance(links, dict) else {}
            if not links.get("url") or not found.get("key"):
                raise self.incomplete(response, "data.links.url and data.key")
            return Stored(str(found["key"]), self.served_at(str(links["url"])))
        response = self.request("POST", f"{self.api}/upload", headers=self.auth(), final=_refused,
                                files={"image": (name, data, mime)})
        found = self.succeeded(response)
        if not found.get("url"):
            raise self.incomplete(response, "data.url")
        return Stored(str(found["url"]), self.served_at(str(found["url"])))

    def check_key(self, key: str) -> None:
        """2.x keys are sent quoted as one path segment; 1.x keys are image URLs, only compared."""

    def delete(self, key: str) -> None:
        if self.v2:
            if "://" in key:
                raise PicpipeError("bad_key", f"{self.name}: {key!r} is a Lsky Pro 1.x record (its key is a URL)",
                                   "delete it with a profile of version = \"1\"")
            response = self.request("DELETE", f"{self.api}/images/{urllib.parse.quote(key, safe='')}",
                                    headers=self.auth())
            self.succeeded(response, data=False)
            return
        ids = self.ids_of(key)
        if ids:
            response = self.request("POST", f"{self.api}/delete", headers=self.auth(), data={"id": ",".join(ids)})
            self.succeeded(response, data=False)

    def ids_of(self, url: str) -> list[str]:
        """The 1.x image ids of the account's entries at `url` (Lsky keeps one entry per upload of the same
        bytes, all at one URL); empty when the whole list has none."""
        path = urllib.parse.urlsplit(url).path.lstrip("/")
        ids: list[str] = []
        for page in range(1, LIST_PAGES + 1):
            response = self.request("POST", f"{self.api}/images", headers=self.auth(),
                                    data={"page": str(page), "rows": str(LIST_ROWS)})
            listing = self.succeeded(response)
            items = listing.get("data")
            items = items if isinstance(items, list) else []
            ids += [str(i["id"]) for i in items if isinstance(i, dict) and i.get("id") is not None
                    and (i.get("url") == url or path and i.get("pathname") == path)]
            if not items or page >= int(listing.get("last_page") or page):
                return ids
        if ids:
            return ids
        raise PicpipeError("not_found", f"{self.name}: {url} is not among the first {LIST_PAGES * LIST_ROWS} images "
                           "of the account", "delete it on the site's image page; nothing was deleted")

    def auth(self) -> dict[str, str]:
        if self.v2:
            return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        return {"token": self.token}

    def succeeded(self, response: requests.Response, data: bool = True) -> dict[str, Any]:
        """The answer's `data` object when Lsky says it succeeded (2.x `status: true`, 1.x `code: 200`);
        its error otherwise, whatever the HTTP status said."""
        body = self.json_object(response)
        ok = body.get("status") is True if self.v2 else str(body.get("code")) == "200"
        if not ok:
            raise self.failure(response)
        found = body.get("data")
        if data and not isinstance(found, dict):
            raise self.incomplete(response, "data")
        return found if isinstance(found, dict) else {}

    def incomplete(self, response: requests.Response, what: str) -> PicpipeError:
        return self.bad_answer(response, f"Lsky Pro's answer has no {what}",
                               "check that version matches the site (2.x: /api/v1, 1.x: /api) and its url")

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """2.x: {"status": false, "message"}; 1.x: {"code", "msg"}, where code repeats the status."""
        code, message = super().parse_error(response)
        return (None if code in (None, str(response.status_code), "200") else code), message

    def failure(self, response: requests.Response) -> PicpipeError:
        """1.x answers a bad token with HTTP 401 but some releases with 200 or 500 and a message only,
        and every refused upload (type, size, quota, storage) with 500 and its reason."""
        error = super().failure(response)
        if not self.v2 and _refused(response):
            error.type, error.hint = "rejected", ("Lsky Pro 1.x answers a refused upload with HTTP 500: its message "
                                                  "says why (file type or size, quota, account, storage settings)")
        if response.status_code != 401 and any(w in error.message for w in ("认证失败", "Authentication failed",
                                                                             "Token 不存在", "Token does not exist")):
            error.type, error.hint = "auth", _TOKEN_HINT
        return error


def _refused(response: requests.Response) -> bool:
    """A 1.x HTTP 500 that Lsky itself wrote ({"code": 500, "msg": ...}): a refusal that will not pass on
    another try, not a failing server."""
    body = json_body(response) if response.status_code == 500 else None
    return body is not None and str(body.get("code")) == "500" and bool(body.get("msg"))


HOST = LskyHost
