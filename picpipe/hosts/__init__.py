"""Image hosts for pp-upload: one small interface, one module per host type.

A host module defines `HOST`, a `Host` subclass built from a resolved profile (DESIGN §3).
Adding a host is adding a module named after its type; `open_host` imports it only when a
profile of that type is used, so a command pays for one host's imports at most.
"""

from __future__ import annotations

import importlib
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from picpipe.errors import PicpipeError, UsageError


@dataclass(frozen=True)
class Stored:
    """Where an upload ended up; `reused` when the host already held these very bytes."""

    key: str
    url: str
    reused: bool = False


class Host(ABC):
    """One configured image host (a profile)."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.name: str = profile["name"]
        self.profile = profile

    @abstractmethod
    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """Store `data` under `key`. The same bytes already there are success (reused); different
        bytes are a `conflict` error unless `overwrite`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; one already gone counts as deleted."""

    def url(self, key: str) -> str:
        """The public URL of `key`: base_url (custom domain or CDN) + the percent-encoded key."""
        base = self.profile.get("base_url") or self.default_base_url()
        return base.rstrip("/") + "/" + urllib.parse.quote(key, safe="/")

    def default_base_url(self) -> str:
        raise UsageError(f"profile {self.name!r} needs a base_url (the public URL prefix of the images)",
                         f"set base_url in [profiles.{self.name}] or pass --base-url")

    def close(self) -> None:  # noqa: B027 - a host without connections has nothing to release
        """Release connections."""


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
