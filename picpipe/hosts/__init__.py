"""Image hosts for pp-upload: one small interface, one module per host type.

A host module defines `HOST`, a `Host` subclass built from a resolved profile (DESIGN §3).
Adding a host is adding a module named after its type; `open_host` imports it only when a
profile of that type is used, so a command pays for one host's imports at most.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from picpipe.errors import PicpipeError, UsageError
from picpipe.net import ProfileValues, Service, check_url, url_hint


@dataclass(frozen=True)
class Stored:
    """Where an upload ended up; `reused` when the host already held these very bytes."""

    key: str
    url: str
    reused: bool = False


class Host(ProfileValues, ABC):
    """One configured image host (a profile)."""

    #: The profile keys of this type besides config.COMMON_KEYS (read from PICPIPE_<NAME>_<KEY>,
    #: checked in the config file): a host module is all a new host type needs.
    keys: ClassVar[tuple[str, ...]] = ()
    #: The types a key of `keys` may have in the config file besides a string, and how to say them.
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {}
    #: Why a profile of this type cannot work without a base_url (the host returns no usable link);
    #: None when the host has a public URL of its own.
    base_url_required: ClassVar[str | None] = None

    def __init__(self, profile: dict[str, Any]) -> None:
        self.name: str = profile["name"]
        self.profile = profile
        if self.base_url_required and not profile.get("base_url"):  # before anything is sent
            raise UsageError(f"profile {self.name!r} ({profile['type']}) needs base_url: {self.base_url_required}",
                             f"set base_url in [profiles.{self.name}] (or PICPIPE_{self.name.upper()}_BASE_URL, "
                             "--base-url) to the address the files are served from (the domain bound to a bucket, a "
                             "web server over an SFTP folder), e.g. https://img.example.com")
        if profile.get("base_url"):
            profile["base_url"] = check_url(profile["base_url"], f"profile {self.name!r}: base_url",
                                            url_hint(self.name, "base_url"), schemes=("http", "https", "file"))

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

    def on_own_site(self, link: str, *sites: str | None) -> bool:
        """Whether a record's link (a deletion link the host gave) is on one of the profile's `sites`:
        the only place picpipe sends a request a record names."""
        return origin(link) in {origin(site) for site in sites if site}

    def foreign_link(self, link: str) -> PicpipeError:
        """The refusal of a record's link that `on_own_site` (or its shape) says is no deletion link here."""
        return PicpipeError("bad_key", f"{self.name}: refusing a link that is no deletion link of the profile's "
                            f"site ({origin(link)})",
                            "give records that pp-upload wrote with this profile, or fix the profile's url")

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


class HttpHost(Service, Host):
    """A host spoken over HTTP: `net.Service` (the retrying client, errors as records) plus `Host`."""

    def __init__(self, profile: dict[str, Any]) -> None:
        Host.__init__(self, profile)
        Service.__init__(self, profile, purpose="upload")

    def site_url(self, default_scheme: str | None = None, *, needed: bool = True, default: str = "") -> str:
        """The profile's `url` (the site's address, where its API is; `default` when unset), checked and
        without a trailing '/'; "" when it is unset and not `needed` (an `endpoint` names the API itself)."""
        given = self.profile.get("url") or default
        if not given:
            if needed:
                self.setting("url")  # raises: the site is needed to find its API
            return ""
        return check_url(given, f"profile {self.name!r}: url", url_hint(self.name, "url"),
                         default_scheme=default_scheme).rstrip("/")


def etag_matches(etag: str, data: bytes) -> bool | None:
    """Whether an object store's ETag says it holds `data`: a simple PUT's ETag is the MD5 (S3, OSS,
    COS); None when it cannot tell (multipart or encrypted objects), and the caller must look."""
    etag = etag.strip().strip('"').lower()
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    return None


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-cased: what says whether two links are on one server."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def conflict(host: str, key: str) -> PicpipeError:
    return PicpipeError("conflict", f"{host} already has a different image at {key}",
                        "nothing was overwritten; pass --overwrite to replace it, or use a key template "
                        "with {sha256} in it (the default) so different images get different keys")


def open_host(profile: dict[str, Any]) -> Host:
    """The Host for a resolved profile (its `type` names the module: config.host_class)."""
    from picpipe.config import host_class, host_types

    host = host_class(profile["type"])
    if host is None:  # Config.profile refuses such a type first; a profile made elsewhere may have it
        raise UsageError(f"profile {profile['name']!r} has type {profile['type']!r}",
                         f"use one of: {', '.join(host_types())}")
    return host(profile)
