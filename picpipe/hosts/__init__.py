"""Image hosts for pp-upload: one small interface, one module per host type.

A host module defines `HOST`, a `Host` subclass built from a resolved profile (DESIGN §3).
Adding a host is adding a module named after its type; `open_host` imports it only when a
profile of that type is used, so a command pays for one host's imports at most.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError, UsageError

if TYPE_CHECKING:
    import requests


@dataclass(frozen=True)
class Stored:
    """Where an upload ended up; `reused` when the host already held these very bytes."""

    key: str
    url: str
    reused: bool = False


class Host(ABC):
    """One configured image host (a profile)."""

    #: Why a profile of this type cannot work without a base_url (the host returns no usable link);
    #: None when the host has a public URL of its own.
    base_url_required: ClassVar[str | None] = None

    def __init__(self, profile: dict[str, Any]) -> None:
        self.name: str = profile["name"]
        self.profile = profile
        if self.base_url_required and not profile.get("base_url"):  # before anything is sent
            raise UsageError(f"profile {self.name!r} ({profile['type']}) needs base_url: {self.base_url_required}",
                             f"set base_url in [profiles.{self.name}] (or PICPIPE_{self.name.upper()}_BASE_URL, "
                             "--base-url) to the domain bound to the bucket, e.g. https://img.example.com")

    @abstractmethod
    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """Store `data` under `key`. The same bytes already there are success (reused); different
        bytes are a `conflict` error unless `overwrite`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; one already gone counts as deleted."""

    def already_there(self, key: str, same: bool) -> Stored:
        """The key is taken: a reuse when it holds these very bytes, else the conflict that keeps it."""
        if same:
            return Stored(key, self.url(key), reused=True)
        raise conflict(self.name, key)

    def check_key(self, key: str) -> None:
        """Refuse a key from input (--delete) that could reach beyond this host's folder, bucket or
        repository: HTTP clients collapse `..` in a URL before it is sent, and signatures follow."""
        from picpipe.keys import sanitize

        if sanitize(key) != key:
            raise PicpipeError("bad_key", f"refusing {key!r}: it is not a key pp-upload makes",
                               "keys are relative paths without '.', '..', '//', backslashes or control characters")

    def url(self, key: str) -> str:
        """The public URL of `key`: base_url (custom domain or CDN) + the percent-encoded key."""
        base = self.profile.get("base_url") or self.default_base_url()
        return base.rstrip("/") + "/" + urllib.parse.quote(key, safe="/")

    def served_at(self, link: str) -> str:
        """A link the host made up itself (SM.MS, Imgur), moved under base_url when one is set (a CDN or
        reverse proxy in front of the host): base_url + the link's path."""
        base = self.profile.get("base_url")
        return base.rstrip("/") + urllib.parse.urlsplit(link).path if base else link

    def default_base_url(self) -> str:
        raise UsageError(f"profile {self.name!r} needs a base_url (the public URL prefix of the images)",
                         f"set base_url in [profiles.{self.name}] or pass --base-url")

    def close(self) -> None:  # noqa: B027 - a host without connections has nothing to release
        """Release connections."""


#: What a person can do about an HTTP status, when the host's own code has no better hint.
STATUS_HINTS: dict[int, tuple[str, str]] = {
    400: ("rejected", "the host rejected the request: its message above says why; check the profile's bucket, "
                      "region and endpoint"),
    401: ("auth", "the host refused the credentials: check the profile's keys or token, and the computer's clock"),
    403: ("auth", "the credentials lack permission here: check the key's policy or the token's scope, and the "
                  "bucket or repository name"),
    404: ("not_found", "the bucket, repository or endpoint does not exist: check the profile's bucket/repo, "
                       "region and endpoint"),
    413: ("too_large", "the file is larger than the host accepts: make it smaller (pp-compress --max-width ...)"),
    429: ("rate_limited", "the host limits how fast you may upload: re-run later (deduped images are not sent "
                          "again), or lower -j"),
}
SERVER_HINT = ("server_error", "the host's server failed: re-run later (what was uploaded is not sent twice)")
_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")


class HttpHost(Host):
    """A host spoken over HTTP: one pooled client with timeouts and retries, host errors as records.

    Profiles may set `timeout` (seconds per request, default 30) and `retries` (default 4).
    """

    #: The host's own error codes (or statuses) that deserve a better hint than STATUS_HINTS.
    hints: ClassVar[dict[str | int, str]] = {}
    #: Where the host puts its request id, quoted in error records for its support desk.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        from picpipe.net import Client

        retries = profile.get("retries")
        self.client = Client(self.name, timeout=float(profile.get("timeout") or 30),
                             retries=4 if retries in (None, "") else int(retries), jobs=16, purpose="upload")

    def setting(self, key: str) -> str:
        """A profile value the host cannot work without."""
        value = self.profile.get(key)
        if value in (None, ""):
            raise UsageError(f"profile {self.name!r} ({self.profile['type']}) needs {key}",
                             f"set {key} in [profiles.{self.name}] or PICPIPE_{self.name.upper()}_{key.upper()}")
        return str(value)

    def endpoint(self, default: str) -> str:
        """The API/upload URL: the profile's override (private regions, Enterprise servers, tests) or the host's.
        An override typed without a scheme (`oss-cn-hangzhou.aliyuncs.com`) means HTTPS."""
        url = str(self.profile.get("endpoint") or default).rstrip("/")
        return url if "://" in url else "https://" + url

    def request(self, method: str, url: str, *, ok: Collection[int] = (200, 201, 204), idempotent: bool = True,
                **kwargs: Any) -> requests.Response:
        """Send through the retrying client; a status outside `ok` becomes the host's error record."""
        response = self.client.send(method, url, idempotent=idempotent, **kwargs)
        if response.status_code not in ok:
            raise self.failure(response)
        return response

    def failure(self, response: requests.Response) -> PicpipeError:
        """The host's answer as an error: its code, message and request id kept, with a hint."""
        status = response.status_code
        code, message = self.parse_error(response)
        kind, hint = STATUS_HINTS.get(status, SERVER_HINT if status >= 500 else ("rejected", STATUS_HINTS[400][1]))
        hint = self.hints.get(code or "") or self.hints.get(status) or hint
        extra: dict[str, Any] = {"status": status}
        if code:
            extra["code"] = code
        request_id = next((response.headers[h] for h in self.request_id_headers if h in response.headers), None)
        if request_id:
            extra["request_id"] = request_id
        said = f" {code}" if code and code not in message else ""
        return PicpipeError(kind, f"{self.name}: HTTP {status}{said}: {message}", hint, **extra)

    def json_object(self, response: requests.Response) -> dict[str, Any]:
        """The JSON object the API documents; anything else (a proxy's HTML page, a captive portal) is
        a `bad_answer` error rather than a crash."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = " ".join(response.text[:200].split())
            raise PicpipeError("bad_answer", f"{self.name}: HTTP {response.status_code} answer is not the API's "
                               f"JSON: {text!r}", "something else answered for the host (a proxy, a captive "
                               "portal, a wrong endpoint): check the profile's endpoint and the network",
                               status=response.status_code)
        return body

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """(code, message) from a JSON or S3-style XML error body; the reason phrase when neither."""
        text = response.text[:2000]
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("code") or body.get("error_code")
            message = body.get("message") or body.get("msg") or body.get("error") or ""
            return (str(code) if code not in (None, "") else None), str(message) or response.reason
        fields = dict(_XML_FIELD.findall(text))
        if fields:
            return fields.get("Code"), fields.get("Message") or response.reason
        return None, response.reason or " ".join(text.split())[:200]

    def close(self) -> None:
        self.client.close()


def etag_matches(etag: str, data: bytes) -> bool | None:
    """Whether an object store's ETag says it holds `data`: a simple PUT's ETag is the MD5 (S3, OSS,
    COS); None when it cannot tell (multipart or encrypted objects), and the caller must look."""
    etag = etag.strip().strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    return None


def conflict(host: str, key: str) -> PicpipeError:
    return PicpipeError("conflict", f"{host} already has a different image at {key}",
                        "nothing was overwritten; pass --overwrite to replace it, or use a key template "
                        "with {sha256} in it (the default) so different images get different keys")


def open_host(profile: dict[str, Any]) -> Host:
    """The Host for a resolved profile (its `type` names the module)."""
    kind = profile["type"]
    try:
        module = importlib.import_module(f"picpipe.hosts.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"picpipe.hosts.{kind}":
            raise
        raise UsageError(f"host type {kind!r} is not built yet", "see issue #4; local works today") from None
    host: Host = module.HOST(profile)
    return host
