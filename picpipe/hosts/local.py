"""A folder as an image host: `dir` holds the files, `base_url` is where a web server serves them.

Also the embedded default (`--host local` with no configuration): $XDG_DATA_HOME/picpipe/host,
with file:// URLs, so the whole pipeline runs without an account.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePath
from typing import Any

from picpipe.config import xdg_home
from picpipe.errors import PicpipeError
from picpipe.files import CLAIM_ABANDONED, publish, sweep_once, temp_copy
from picpipe.hosts import Host, Stored, conflict

#: How the temp files of an upload begin (hidden, and picpipe's: swept after a killed run).
TEMP = ".pp-upload-"


class LocalHost(Host):
    keys = ("dir",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        folder = profile.get("dir")
        self.root = (Path(os.path.expanduser(folder)) if folder else xdg_home("XDG_DATA_HOME", ".local/share") / "host")

    def default_base_url(self) -> str:
        return folder_url(self.root.resolve())

    def path(self, key: str) -> Path:
        root = self.root.resolve()
        target = (root / key).resolve()
        if root not in target.parents:  # keys are sanitised; a symlink inside the folder is not
            raise PicpipeError("bad_key", f"{key!r} leads out of {root} (through a symlink?)",
                               "keep symlinks that point elsewhere out of the host folder")
        return target

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_once(target.parent, TEMP)  # what versions that wrote their temp files beside the image left
        try:
            # The temp file is made at the top, so that the next run removes what a killed one left
            # whichever {year}/{month} folder it writes into; a link into a subfolder is as atomic.
            return self._put(self.root.resolve(), target, key, data, overwrite)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return self._put(target.parent, target, key, data, overwrite)  # a disk mounted inside the folder

    def _put(self, folder: Path, target: Path, key: str, data: bytes, overwrite: bool) -> Stored:
        with temp_copy(folder, data, TEMP) as temp:
            if overwrite:
                os.replace(temp, target)
                return Stored(key, self.url(key))
            try:
                publish(temp, target)
            except FileExistsError:
                there = target.read_bytes()
                if there == data:
                    return Stored(key, self.url(key), reused=True)
                if not there:  # another upload's claim, or one a crash left younger than CLAIM_ABANDONED
                    raise PicpipeError(
                        "empty_file", f"{target} is an empty file: another upload is writing it, or one that "
                        "stopped mid-way left it", f"run again; the name is freed {CLAIM_ABANDONED:.0f} s after "
                        "a crash left it (or remove the empty file)") from None
                raise conflict(self.name, key) from None
            return Stored(key, self.url(key))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def folder_url(folder: PurePath) -> str:
    """The file: URL of an absolute folder, ending in a slash (RFC 8089, as pathlib writes it):
    file:///home/me/host/, file:///C:/Users/me/host/, a UNC share file://server/share/host/;
    `picpipe.links.file_url_path` reads each back."""
    return folder.as_uri().rstrip("/") + "/"


HOST = LocalHost
