"""Backup copies of the originals: where they go, how they are found again, how they come back.

A target is a profile of type `local` (a folder) or `webdav` (Nutstore, a NAS, Nextcloud).
A copy is stored under a key (the upload key, else `{year}/{month}/{sha256}{ext}`) with the
same never-overwrite rule as pp-upload, and recorded as a `backups` entry of the record:

    {"target": "nutstore", "location": "https://dav.jianguoyun.com/dav/picpipe/2024/05/ab.png",
     "key": "2024/05/ab.png", "sha256": "...", "size": 1234, "at": "2024-05-01T08:00:00.000Z"}

`location` is where the copy can be fetched: an absolute path for a folder, the URL (never
with credentials) for WebDAV. Fetching checks that the location lies inside the target, so a
record can never make picpipe read outside a backup folder or send a password to another server.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picpipe.config import xdg_home
from picpipe.errors import PicpipeError, UsageError
from picpipe.files import holds, names_beside, publish, temp_copy
from picpipe.keys import make_key, sanitize
from picpipe.stream import Record
from picpipe.timeutil import now_iso

if TYPE_CHECKING:
    from picpipe.hosts import Host
    from picpipe.hosts.local import LocalHost
    from picpipe.hosts.webdav import WebDavHost

#: The key of a copy whose record has no upload key: the full hash, so names never collide.
DEFAULT_TEMPLATE = "{year}/{month}/{sha256}{ext}"
#: The single ledger file that earlier versions' `pp-backup ledger --to` wrote on a target: now only merged.
LEDGER_NAME = "picpipe-ledger.jsonl"
TYPES = ("local", "webdav")
#: Temp files of a restore, at the top of --out: `files.temp_copy` names them, `files.sweep_temps` removes stale ones.
RESTORE_TEMP = ".pp-restore-"
#: Whether restore walks `out` by open folders, race-free (POSIX: openat, mkdirat, linkat, renameat),
#: or by paths checked at each step (Windows: no dir_fd, no O_DIRECTORY). The tests turn it off.
FOLDER_FDS = hasattr(os, "O_DIRECTORY") and {os.open, os.mkdir, os.link, os.rename, os.unlink} <= os.supports_dir_fd
#: The bit of a reparse point's tag that says it stands for another path (IsReparseTagNameSurrogate):
#: set for symlinks (IO_REPARSE_TAG_SYMLINK) and junctions (IO_REPARSE_TAG_MOUNT_POINT), not for
#: OneDrive's cloud placeholders or deduplicated files, which are the folder or file itself.
NAME_SURROGATE = 0x20000000
#: Bytes per read of a file streamed from a target.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Listed:
    """One member of a folder on a target: its name, whether it is a folder, its size if known."""

    name: str
    folder: bool
    size: int | None


class Target(ABC):
    """Where copies go: one profile, written through its image host (the same never-overwrite rule)."""

    host: Host

    def __init__(self, profile: dict[str, Any]) -> None:
        from picpipe.concurrency import KeyedLocks

        self.name: str = profile["name"]
        self.busy = KeyedLocks()

    def store(self, key: str, data: bytes, ours: bool = False) -> tuple[str, bool]:
        """Store `data` at `key`: (location, True when these very bytes were already there).

        A different file already there is a `conflict` error, never replaced, unless the key is
        `ours` (named after these bytes' hash): then it can only be a copy of them cut short by an
        interrupted run, and it is replaced. One write per key at a time, whatever the threads.
        """
        with self.busy.hold(key):
            try:
                stored = self.host.put(key, data, "application/octet-stream")
            except PicpipeError as exc:
                if exc.type != "conflict":
                    raise
                if not ours:
                    raise PicpipeError("conflict", f"{self.name}: a different file is already at {key}",
                                       "nothing was replaced; give a --path template with {sha256} in it, so that "
                                       "different files get different names") from None
                stored = self.host.put(key, data, "application/octet-stream", overwrite=True)
        return self.location(key), stored.reused

    @abstractmethod
    def location(self, key: str) -> str:
        """Where the copy at `key` can be fetched: a path or a URL without credentials."""

    @abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key of a location inside this target; None when it lies elsewhere."""

    @abstractmethod
    def fetch(self, key: str) -> bytes:
        """The bytes of the copy at `key`."""

    # -- files of picpipe's own that are written once and never replaced (the ledger's segments)
    @abstractmethod
    def address(self) -> str:
        """Where this target is (a file:// or WebDAV URL, no credentials): what it holds is known
        per address, so a profile moved to another folder or server starts afresh."""

    @abstractmethod
    def list(self, folder: str) -> list[Listed] | None:
        """The members of `folder` (not the folder itself); None when there is no such folder."""

    @abstractmethod
    def size(self, name: str) -> int | None:
        """The size of the file `name`; None when there is none."""

    @abstractmethod
    def stream(self, name: str) -> Iterator[bytes] | None:
        """The bytes of `name` in chunks, read as they are consumed; None when there is no such file."""

    @abstractmethod
    def write_new(self, name: str, data: bytes, temp: str) -> bool:
        """Write `data` under the temp name `temp` (in the same folder), then rename it to `name`
        unless that name is taken: False then, and nothing was replaced. A reader never sees half a
        file; the folders on the way are made as needed; a failed write removes the temp file."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove the file `name` if it is there (a temp file a killed write left)."""

    def counting(self) -> Callable[[], int]:
        """Start counting the requests sent from now on: a function that says how many so far."""
        return lambda: 0

    def close(self) -> None:  # noqa: B027 - a folder has nothing to release
        """Release connections."""


class FolderTarget(Target):
    """A local folder (a USB disk, a synced folder): `dir`, default ~/.local/share/picpipe/backup."""

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        from picpipe.hosts.local import LocalHost

        profile.setdefault("dir", str(xdg_home("XDG_DATA_HOME", os.path.join(".local", "share")) / "backup"))
        self.host: LocalHost = LocalHost(profile)
        self.root = self.host.root

    def location(self, key: str) -> str:
        return str(self.host.path(key))

    def key_of(self, location: str) -> str | None:
        if not os.path.isabs(location):
            return None
        root = self.root.resolve()
        path = Path(location).resolve()
        return path.relative_to(root).as_posix() if root in path.parents else None

    def fetch(self, key: str) -> bytes:
        from picpipe.files import read_source

        return read_source(str(self.host.path(key)))

    def address(self) -> str:
        return self.root.resolve().as_uri()

    def list(self, folder: str) -> list[Listed] | None:
        try:
            with os.scandir(self.root / folder) as members:
                return [Listed(m.name, m.is_dir(follow_symlinks=False),
                               None if m.is_dir(follow_symlinks=False) else m.stat(follow_symlinks=False).st_size)
                        for m in members]
        except (FileNotFoundError, NotADirectoryError):
            return None

    def size(self, name: str) -> int | None:
        try:
            info = (self.root / name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_size if not os.path.isdir(self.root / name) else None

    def stream(self, name: str) -> Iterator[bytes] | None:
        try:
            handle = open(self.root / name, "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, NotADirectoryError):
            return None

        def chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

        return chunks()

    def write_new(self, name: str, data: bytes, temp: str) -> bool:
        path, temp_path = self.root / name, self.root / temp
        path.parent.mkdir(parents=True, exist_ok=True)
        with temp_copy(temp_path.parent, data, "", name=temp_path.name) as written:
            try:
                publish(written, path)
            except FileExistsError:
                return False
            return True

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class DavTarget(Target):
    """A WebDAV folder (`url`, `user`, `password`): one PUT per new copy, a listing per folder."""

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        from picpipe.hosts.webdav import WebDavHost

        self.host: WebDavHost = WebDavHost(profile)
        self.dav = self.host.dav

    def location(self, key: str) -> str:
        return self.dav.href(key)

    def key_of(self, location: str) -> str | None:
        """Only URLs on this very server and under its folder: the password goes nowhere else."""
        here, there = urllib.parse.urlsplit(self.dav.root), urllib.parse.urlsplit(location)
        if (there.scheme, there.netloc.rpartition("@")[2]) != (here.scheme, here.netloc):
            return None
        key = self.dav.relative(location)
        return key if key and sanitize(key) == key else None

    def fetch(self, key: str) -> bytes:
        return self.dav.get(key)

    def address(self) -> str:
        return self.dav.root

    def list(self, folder: str) -> list[Listed] | None:
        """One PROPFIND Depth 1 (never HEAD or GET on a folder: Nutstore answers 403)."""
        entries = self.dav.propfind(folder, depth=1)
        if entries is None:
            return None
        return [Listed(e.name, e.folder, e.size) for e in entries if e.path != folder.strip("/")]

    def size(self, name: str) -> int | None:
        """One PROPFIND Depth 0."""
        entries = self.dav.propfind(name, depth=0)
        found = [e for e in entries or () if e.path == name and not e.folder]
        return found[0].size if found and found[0].size is not None else (0 if found else None)

    def stream(self, name: str) -> Iterator[bytes] | None:
        """One GET, its body read as the chunks are consumed (a segment or an old whole ledger
        is never held in memory at once)."""
        import requests

        response = self.dav.send("GET", name, ok=(200, 404, 409), stream=True)  # Nutstore: 409, no folder
        if response.status_code != 200:
            response.close()
            return None

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_content(CHUNK)
            except requests.RequestException as exc:
                from picpipe.net import network_error

                raise network_error(exc, self.name, self.dav.client.timeout) from None
            finally:
                response.close()

        return chunks()

    def write_new(self, name: str, data: bytes, temp: str) -> bool:
        """PUT the temp file (the folders made only if missing), then MOVE it with Overwrite: F: two
        requests. A taken name answers 412."""
        self.dav.put(temp, data, "application/x-ndjson")
        try:
            self.dav.move(temp, name, overwrite=False)
        except PicpipeError as exc:
            try:
                self.dav.delete(temp)
            except PicpipeError:
                pass  # readers skip temp names; the next sync deletes it
            if exc.extra.get("status") == 412:
                return False
            raise
        return True

    def remove(self, name: str) -> None:
        try:
            self.dav.delete(name)
        except PicpipeError as exc:
            if exc.extra.get("status") != 409:  # Nutstore: the folder is not there either
                raise

    def counting(self) -> Callable[[], int]:
        """Counted at the session: retries and a Digest challenge are requests too."""
        answers = [0]

        def count(response: object, *args: object, **kwargs: object) -> None:
            answers[0] += 1

        self.dav.client.session.hooks["response"].append(count)
        return lambda: answers[0]

    def close(self) -> None:
        self.host.close()


def open_target(profile: dict[str, Any]) -> Target:
    kind = profile.get("type")
    if kind == "local":
        return FolderTarget(profile)
    if kind == "webdav":
        return DavTarget(profile)
    raise UsageError(f"profile {profile['name']!r} is of type {kind!r}: backups go to a folder or WebDAV",
                     f"give a profile of type {' or '.join(TYPES)} (e.g. a Nutstore profile with type = \"webdav\")")


def copies_of(record: Record) -> list[tuple[str, bytes, str]]:
    """(file, bytes, what) to keep: the user's original (`source`, while it is there), and the
    bytes that were published (`path`) when they differ: the original is what a backup is for,
    the published bytes (made smaller, GPS and EXIF stripped by pp-compress) are what a repair
    puts back online."""
    from picpipe.files import read_source
    from picpipe.ledger import bare_imported_source

    source, path = record.get("source"), record.get("path")
    copies: list[tuple[str, bytes, str]] = []
    if isinstance(source, str) and source and not bare_imported_source(record) and os.path.isfile(source):
        copies.append((source, read_source(source), "original"))
    if isinstance(path, str) and path and path != source and (not copies or os.path.isfile(path)):
        data = read_source(path)
        if not copies or data != copies[0][1]:
            copies.append((path, data, "published"))
    if not copies:
        if isinstance(path, str) and path:
            read_source(path)  # says why not (missing, a folder, unreadable)
        raise PicpipeError("no_path", "the record has no path or source to back up",
                           "give file paths or records with \"path\"")
    return copies


def copy_key(record: Record, file: str, data: bytes, sha256: str, template: str | None) -> str:
    """Where the copy goes: the template if given; else the upload key with the original's
    extension (a compressed .webp's original is a .png) when that key is the path of the image's
    URL (SM.MS and Imgur keys are delete hashes: no name for a file); else by content hash."""
    key, url = record.get("key"), record.get("url")
    if template is None and isinstance(key, str) and isinstance(url, str) and key.strip("/") and \
            urllib.parse.unquote(urllib.parse.urlsplit(url).path).endswith("/" + key.strip("/")):
        stem, ext = os.path.splitext(sanitize(key))
        return stem + (os.path.splitext(file)[1].lower() or ext)
    return make_key(template or DEFAULT_TEMPLATE, file, data, sha256)


def named_after(key: str, *digests: object) -> bool:
    """Whether the key's file name holds one of these hashes (12 hex digits at least, as in the
    default templates): then a file there can only hold those bytes, whole or cut short."""
    name = key.rpartition("/")[2].lower()
    return any(isinstance(d, str) and len(d) >= 12 and d[:12].lower() in name for d in digests)


def entries(record: Record) -> list[Any]:
    """The record's `backups` list (empty when it has none)."""
    backups = record.get("backups")
    if backups is None:
        return []
    if not isinstance(backups, list):
        raise PicpipeError("bad_record", f"backups is {type(backups).__name__}, not a list",
                           "backups is the list pp-backup writes: [{\"target\": ..., \"location\": ...}]")
    return backups


def backed_up(record: Record, target: Target, sha256: str) -> dict[str, Any] | None:
    """The record's own backup entry of these bytes inside `target` (its profile may have moved to
    another folder or server since: then the old entries are not copies there)."""
    for entry in entries(record):
        if isinstance(entry, dict) and entry.get("target") == target.name and entry.get("sha256") == sha256 \
                and target.key_of(str(entry.get("location"))) is not None:
            return entry
    return None


def back_up(record: Record, target: Target, known: dict[str, dict[str, Any]] | None = None,
            template: str | None = None, verify: bool = False,
            copies: list[tuple[str, bytes, str]] | None = None) -> tuple[Record, str]:
    """(the record with `backups` entries for `target`, how): "copied" once the target holds each
    whole copy (and with `verify` read it back the same), "on_target" when these bytes were there
    already, "known" when the record or `known` (sha256 → ledger entry) shows every copy: then no
    request is sent. An original and its published form (pp-compress) are two copies: the
    published one under the upload key, the original under its own hash. `copies`: those the
    caller read already (`copies_of`), so that each file is read once."""
    copies = copies_of(record) if copies is None else copies
    backups = entries(record)
    result = dict(record)
    if "sha256" not in result:  # the ledger tells images apart by the hash of the bytes at `path`
        result["sha256"] = hashlib.sha256(copies[-1][1]).hexdigest()
    added, hows = [], set()
    for file, data, what in copies:
        sha256 = hashlib.sha256(data).hexdigest()
        if backed_up(record, target, sha256):
            hows.add("known")
            continue
        entry = (known or {}).get(sha256)
        if entry is not None:
            hows.add("known")
        else:
            own_key = len(copies) == 2 and what == "original" and template is None
            key = make_key(DEFAULT_TEMPLATE, file, data, sha256) if own_key else \
                copy_key(record, file, data, sha256, template)
            location, reused = target.store(key, data, ours=named_after(key, sha256, record.get("sha256")))
            if verify and hashlib.sha256(target.fetch(key)).hexdigest() != sha256:
                raise PicpipeError("corrupted", f"{target.name}: the copy at {location} does not read back as "
                                   "written", "re-run with --verify; if it persists, the target's storage is "
                                   "unreliable")
            entry = {"target": target.name, "location": location, "key": key, "sha256": sha256, "size": len(data),
                     "of": what, "at": now_iso()}
            hows.add("on_target" if reused else "copied")
        added.append(entry)
    if added:
        result["backups"] = [*backups, *added]
    return result, next(how for how in ("copied", "on_target", "known") if how in hows)


def restore(record: Record, targets: TargetFinder, out: Path, only: str | None = None) -> Record:
    """The record with `path` at a restored copy: the first backup entry that can be fetched and
    whose bytes match its sha256 is written into `out` (under its key), the published bytes
    before the original."""
    copies = [b for b in entries(record) if isinstance(b, dict) and b.get("location")]
    if only is not None:
        copies = [b for b in copies if b.get("target") == only or targets.owner(only, b)]
    # What was published first (the same bytes go back online); the original when that is all there is.
    copies.sort(key=lambda b: b.get("sha256") != record.get("sha256"))
    if not copies:
        raise PicpipeError("no_backup", "the record lists no backup copy" + (f" on {only}" if only else ""),
                           "records from pp-mark find / pp-mark check carry the ledger's backups; "
                           "pp-backup --to TARGET makes them")
    failures = []
    for entry in copies:
        try:
            data, key = targets.fetch(entry, only)
        except PicpipeError as exc:
            failures.append(f"{entry.get('target')}: {exc.message}")
            continue
        sha256 = hashlib.sha256(data).hexdigest()
        if entry.get("sha256") not in (None, sha256):
            failures.append(f"{entry.get('target')}: {entry['location']} holds other bytes than were backed up")
            continue
        path = write_restored(out, key, data)
        result = {k: v for k, v in record.items() if k != "error"}
        if record.get("sha256") != sha256:  # the original, not the compressed upload: facts are stale
            for stale in ("width", "height", "format", "mime"):
                result.pop(stale, None)
        result.update(path=str(path), sha256=sha256, size=len(data),
                      restored_from={"target": entry.get("target"), "location": entry["location"]})
        return result
    raise PicpipeError("restore_failed", "no backup copy could be restored: " + "; ".join(failures),
                       "check that the backup target's profile is configured and reachable (pp-davtest --target "
                       "NAME)")


def write_restored(out: Path, key: str, data: bytes) -> Path:
    """`data` at out/key, made atomically and only where no file is (a link cannot replace one): the
    same bytes already there are that file; other bytes get the hash in their name. Nothing is
    written outside `out` through a symlink planted in it (one could lead anywhere).

    POSIX (`FOLDER_FDS`): each folder on the way is made and opened relative to the one before,
    without following a symlink, and the file is made inside the folder so opened: no race.

    Windows has no dir_fd and no O_DIRECTORY: the folders are walked by path, each made and then
    looked at (lstat) and refused when it is a symlink, a junction or another reparse point that
    names another path (`_leads_elsewhere`), and the file is published by path. What this cannot
    guarantee: a folder swapped for a link between its check and the write is followed. That needs
    someone writing into `out` during the restore, racing it, and on Windows making a symlink takes
    administrator rights or developer mode; a junction needs neither, but one made before the
    restore is refused, as is a symlink.
    """
    parts = sanitize(key).split("/")
    out.mkdir(parents=True, exist_ok=True)
    if not FOLDER_FDS:
        folder = out
        for part in parts[:-1]:
            folder = _checked_folder(folder / part)
        return folder / _place(out, None, folder, None, parts[-1], data)
    top = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    folder_fd = os.dup(top)
    try:
        for depth, part in enumerate(parts[:-1], 1):
            inner = _open_folder(folder_fd, part, out.joinpath(*parts[:depth]))
            os.close(folder_fd)
            folder_fd = inner
        where = out.joinpath(*parts[:-1])
        return where / _place(out, top, where, folder_fd, parts[-1], data)
    finally:
        os.close(folder_fd)
        os.close(top)


def _open_folder(parent: int, name: str, where: Path) -> int:
    """The folder `name` inside the open folder `parent`, made when missing, never a symlink."""
    import errno

    try:
        os.mkdir(name, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise _unsafe(where) from None


def _checked_folder(where: Path) -> Path:
    """The folder at `where`, made when missing, then looked at (also when just made: another
    process may have put a link there first): never a symlink, a junction or a file."""
    import stat

    try:
        os.mkdir(where)
    except FileExistsError:
        pass
    info = os.lstat(where)
    if not stat.S_ISDIR(info.st_mode) or _leads_elsewhere(info):
        raise _unsafe(where)
    return where


def _leads_elsewhere(info: os.stat_result) -> bool:
    """Whether lstat's `info` is of a link: a symlink, or on Windows a reparse point standing for
    another path (a junction has S_IFDIR, only its attributes tell). A reparse point whose tag
    is unknown counts as one."""
    import stat

    if stat.S_ISLNK(info.st_mode):
        return True
    if not getattr(info, "st_file_attributes", 0) & stat.FILE_ATTRIBUTE_REPARSE_POINT:
        return False
    tag = getattr(info, "st_reparse_tag", 0)
    return not tag or bool(tag & NAME_SURROGATE)


def _unsafe(where: Path) -> PicpipeError:
    return PicpipeError("unsafe_path", f"{where} is a symlink or a file, not a folder: nothing was written "
                        "through it", "restore into a new --out folder, or remove what is at that name")


def _place(out: Path, top: int | None, folder: Path, folder_fd: int | None, name: str, data: bytes) -> str:
    """The name in `folder` where `data` now is (see write_restored): a temp file at the top of
    `out` (where the next restore sweeps what a killed one left), linked to `name`, or renamed to
    a name with the hash in it. With `top` and `folder_fd` (both folders open: POSIX) the names
    are relative to them; without (Windows), paths."""
    def at(file: str) -> str:
        return file if folder_fd is not None else str(folder / file)

    with temp_copy(out, data, RESTORE_TEMP, dir_fd=top) as temp:
        try:
            publish(temp, at(name), src_dir_fd=top, dst_dir_fd=folder_fd)
            return name
        except FileExistsError:
            if holds(at(name), data, dir_fd=folder_fd):  # Windows (no dir_fd): lstat, then read
                return name
        named = names_beside(name, hashlib.sha256(data).hexdigest())[1]  # a name taken: rare
        os.replace(temp, at(named), src_dir_fd=top, dst_dir_fd=folder_fd)  # named after its bytes: same for all
        return named


class TargetFinder:
    """Targets opened on demand from the configuration, for restoring from many of them. A copy is
    fetched only through a profile whose folder or server holds its location."""

    def __init__(self, profile: Callable[[str], dict[str, Any]]) -> None:
        import threading

        self.profile = profile  # Config.profile: a name → its resolved settings, UsageError when unknown
        self.open: dict[str, Target | None] = {}
        self.lock = threading.Lock()

    def get(self, name: str) -> Target | None:
        with self.lock:
            if name not in self.open:
                try:
                    self.open[name] = open_target(self.profile(name))
                except UsageError:
                    self.open[name] = None
            return self.open[name]

    def owner(self, name: str, entry: dict[str, Any]) -> bool:
        target = self.get(name)
        return target is not None and target.key_of(str(entry.get("location"))) is not None

    def fetch(self, entry: dict[str, Any], only: str | None) -> tuple[bytes, str]:
        """(bytes, key) of one backup entry, from its own target or `only`."""
        location = str(entry["location"])
        for name in dict.fromkeys(n for n in (only, entry.get("target")) if isinstance(n, str) and n):
            target = self.get(name)
            key = target.key_of(location) if target is not None else None
            if target is not None and key is not None:
                return target.fetch(key), key
        raise PicpipeError("no_target", f"no configured profile reaches {location} (target {entry.get('target')!r})",
                           f"add a [profiles.{entry.get('target') or 'NAME'}] whose dir or url holds it (a local "
                           "folder of picgo-plugin-autobackup copies: type = \"local\", dir = that folder), or "
                           "name one with --from")

    def close(self) -> None:
        for target in self.open.values():
            if target is not None:
                target.close()
