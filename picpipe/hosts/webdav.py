"""WebDAV as an image host (Nutstore/坚果云, Nextcloud, a NAS, rclone, Apache): `url` is the
collection the images go into, `base_url` where a web server shows them (default: `url`).

Not every server honours `If-None-Match: *` on PUT (rclone serve webdav replaces the file and
answers 201), so "never overwrite" cannot rest on it. Instead each folder is listed once per
run (PROPFIND Depth 1) and a name already there is compared before anything is written: one
request per new image plus one per folder, which also suits Nutstore's 600 requests per 30
minutes. The PUT still carries `If-None-Match: *` for servers that do honour it, which closes
the gap between the listing and the write. The protocol itself is picpipe.webdav's.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from picpipe.concurrency import KeyedLocks
from picpipe.hosts import Host, Stored
from picpipe.webdav import WebDav


class WebDavHost(Host):
    keys = ("url", "user", "password", "vendor", "pace")
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {
        "pace": ((int, str), "a whole number of requests")}

    def __init__(self, profile: dict[str, Any]) -> None:
        self.dav = WebDav(profile, purpose="upload")  # first: it moves user:password@ out of the url
        super().__init__(profile)
        self.listings: dict[str, dict[str, int | None]] = {}  # folder → {name: size}, asked once per run
        self.busy = KeyedLocks()
        self.lock = threading.Lock()

    def default_base_url(self) -> str:
        return self.dav.root

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        folder, _, name = key.rpartition("/")
        listed = self.listing(folder) if not overwrite else {}
        if name in listed:  # taken: another size settles it without a download
            return self.already_there(key, False) if listed[name] not in (None, len(data)) else self.compare(key, data)
        response = self.dav.put(key, data, mime, if_none_match=not overwrite)
        if response.status_code == 412:
            return self.compare(key, data)
        with self.lock:
            if folder in self.listings:
                self.listings[folder][name] = len(data)
        return Stored(key, self.url(key))

    def compare(self, key: str, data: bytes) -> Stored:
        """A name that is taken: the same bytes are a reuse, others a conflict."""
        return self.already_there(key, self.dav.get(key) == data)

    def delete(self, key: str) -> None:
        self.dav.delete(key)

    def listing(self, folder: str) -> dict[str, int | None]:
        """The files in `folder` and their sizes, asked once per run however many workers arrive at
        once; a missing folder is made now, so that the PUT that follows succeeds first time."""
        with self.busy.hold(folder):
            if folder not in self.listings:
                entries = self.dav.propfind(folder, depth=1)
                if entries is None:
                    self.dav.make_folder(folder)
                names = {e.name: e.size for e in entries or () if not e.folder and e.path != folder}
                with self.lock:
                    self.listings[folder] = names
            return self.listings[folder]

    def close(self) -> None:
        self.dav.close()


HOST = WebDavHost
