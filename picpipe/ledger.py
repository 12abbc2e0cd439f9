"""The ledger (the "mark file"): which bytes went to which URL and where each backup lives.

An append-only JSON Lines file. Appends take an exclusive `flock` and go out in one `write`,
so any number of concurrent writers leave whole lines; a torn line left by a crashed writer
is fenced off with a newline, reported and skipped by readers, and never rewritten away.

An image on a host is identified by (sha256, host, key), or by its URL when an imported entry
has no hash. Its state is the latest record for that identity; backups accumulate.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from picpipe.config import xdg_home
from picpipe.redact import drop_secret_fields, mask_data
from picpipe.stream import Record, encode_line, no_interrupt
from picpipe.timeutil import now_iso, parse_time

#: Fields that describe one pass through a pipeline, not the image: not kept in the ledger.
TRANSIENT_FIELDS = ("error", "link", "raw")

BadLine = Callable[[int, str], None]


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("PICPIPE_LEDGER"):
        return Path(environ["PICPIPE_LEDGER"]).expanduser()
    return xdg_home("XDG_DATA_HOME", os.path.join(".local", "share"), environ) / "ledger.jsonl"


def identity(record: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two ledger lines describe the same image on the same host."""
    if record.get("sha256") or record.get("key"):
        return ("image", str(record.get("sha256") or ""), str(record.get("host") or ""), str(record.get("key") or ""))
    return ("url", str(record.get("url") or ""))


def worth_keeping(record: Mapping[str, Any]) -> bool:
    """Only records that say where an image lives (a URL or a backup) go into the ledger."""
    return bool(record.get("url") or record.get("backups"))


def ledger_entry(record: Record, marked_at: str | None = None) -> Record:
    """The line the ledger keeps for a record: absolute local paths, a time, no secrets."""
    entry = {k: v for k, v in record.items() if k not in TRANSIENT_FIELDS}
    for key in ("path", "source"):
        if isinstance(entry.get(key), str) and entry[key] and not os.path.isabs(entry[key]):
            entry[key] = os.path.abspath(entry[key])
    entry["marked_at"] = marked_at or now_iso()  # when this state was seen: the latest one wins
    return drop_secret_fields(entry)


def canonical(record: Mapping[str, Any]) -> str:
    """A line's content independent of key order: how merge recognises a line it already has."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class Ledger:
    """One ledger file. Reading never fails on bad lines; writing never rewrites old lines."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._fd: int | None = None
        self._end = -1  # file size right after our last append

    # -- writing ---------------------------------------------------------------------------
    def open(self) -> Ledger:
        """Create the file (and its folder, private to the user) if needed, and keep it open."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        return self

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # cannot sync such a file: fine
                    raise
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Ledger:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The open file under an exclusive lock, with Ctrl-C held back until it is released."""
        import fcntl

        self.open()
        assert self._fd is not None
        with no_interrupt:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield self._fd
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write(self, fd: int, entries: list[Record]) -> int:
        if not entries:
            return 0
        data = b"".join(encode_line(entry) for entry in entries)
        size = os.fstat(fd).st_size
        # The file ends where our last line ended: its last byte is our newline, no need to look.
        if size and size != self._end and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # fence off a torn line left by a crashed writer
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        self._end = size + len(data)
        return len(entries)

    def append(self, entries: Iterable[Record]) -> int:
        """Append entries as whole lines under one lock; returns how many were written."""
        entries = list(entries)
        if not entries:
            return 0
        with self._locked() as fd:
            return self._write(fd, entries)

    def add_new(self, entries: Iterable[Record], on_bad_line: BadLine | None = None) -> tuple[int, int]:
        """Append only entries whose content the ledger does not hold yet: (added, already there).

        Reading and appending happen under one lock, which makes `merge` and `import`
        idempotent even when two of them run at once.
        """
        entries = list(entries)
        with self._locked() as fd:
            seen = {canonical(entry) for _, entry in self.lines(on_bad_line)}
            fresh: list[Record] = []
            for entry in entries:
                key = canonical(mask_data(entry))  # as it would be stored
                if key not in seen:
                    seen.add(key)
                    fresh.append(entry)
            return self._write(fd, fresh), len(entries) - len(fresh)

    # -- reading ---------------------------------------------------------------------------
    def lines(self, on_bad_line: BadLine | None = None) -> Iterator[tuple[int, Record]]:
        """(line number, record) for every good line; bad ones go to `on_bad_line`."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for number, raw in enumerate(handle, 1):
                problem = None
                try:
                    text = raw.decode("utf-8").strip()
                    if not text:
                        continue
                    value = json.loads(text)
                    if isinstance(value, dict):
                        yield number, value
                        continue
                    problem = "not a JSON object"
                except UnicodeDecodeError:
                    problem = "not valid UTF-8"
                except json.JSONDecodeError as exc:
                    torn = not raw.endswith(b"\n")
                    problem = "incomplete line (a writer was interrupted)" if torn else f"invalid JSON ({exc.msg})"
                if on_bad_line is not None:
                    on_bad_line(number, problem)

    def states(self, on_bad_line: BadLine | None = None) -> list[Record]:
        """The latest state of every image, in order of first appearance."""
        return resolve(entry for _, entry in self.lines(on_bad_line))


def _time_of(record: Mapping[str, Any]) -> str | None:
    value = record.get("marked_at") or record.get("uploaded_at")
    return value if isinstance(value, str) else None


def _newer(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """A later line wins unless both carry times and the old one's is later (merged ledgers)."""
    new_time, old_time = _time_of(new), _time_of(old)
    return not (new_time and old_time and new_time < old_time)


def _union_backups(*records: Mapping[str, Any]) -> list[Any]:
    """Every backup copy ever recorded, once each: copies do not vanish from the ledger."""
    seen: dict[str, Any] = {}
    for record in records:
        backups = record.get("backups")
        for backup in backups if isinstance(backups, list) else ():
            if isinstance(backup, dict):
                seen.setdefault(canonical({k: backup.get(k) for k in ("target", "location")}), backup)
    return list(seen.values())


def resolve(entries: Iterable[Record]) -> list[Record]:
    """Fold ledger lines into one state per identity.

    The newer record's fields win over the older one's, fields only the older one has stay
    (an imported gallery entry's host next to a mark.json entry's backups), backups accumulate,
    and a newer record without `deleted_at` (uploaded again) lifts an older deletion.
    """
    states: dict[tuple[str, ...], Record] = {}
    for entry in entries:
        key = identity(entry)
        old = states.get(key)
        if old is None:
            states[key] = entry
            continue
        older, newer = (old, entry) if _newer(entry, old) else (entry, old)
        state = {**older, **newer}
        if "deleted_at" not in newer:
            state.pop("deleted_at", None)
        backups = _union_backups(old, entry)
        if backups:
            state["backups"] = backups
        states[key] = state
    return list(states.values())


def matches(
    record: Mapping[str, Any],
    url: str | None = None,
    sha256: str | None = None,
    host: str | None = None,
    since: str | None = None,
    source: str | None = None,
) -> bool:
    """The filters of `pp-mark find`: URL and source are globs, sha256 a prefix, since a time."""
    if url is not None and not _glob(str(record.get("url") or ""), url):
        return False
    if sha256 is not None and not str(record.get("sha256") or "").startswith(sha256.lower()):
        return False
    if host is not None and record.get("host") != host:
        return False
    if since is not None:
        when = record.get("uploaded_at") or record.get("marked_at")
        try:
            if not when or parse_time(str(when)) < parse_time(since):
                return False
        except ValueError:
            return False
    if source is not None:
        value = str(record.get("source") or record.get("path") or "")
        if "/" in source or os.sep in source:
            # The ledger keeps absolute paths: a relative glob (shots/*.png) matches their end.
            if not (_glob(value, source) or not os.path.isabs(source) and _glob(value, "*/" + source.lstrip("./"))):
                return False
        elif not _glob(os.path.basename(value), source):
            return False
    return True


def _glob(value: str, pattern: str) -> bool:
    """Equal, or matching as a glob: so names with [brackets] are found as they are written."""
    return value == pattern or fnmatch.fnmatchcase(value, pattern)
