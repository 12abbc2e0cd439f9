"""The ledger (the "mark file"): which bytes went to which URL and where each backup lives.

An append-only JSON Lines file. Appends take an exclusive lock (`picpipe.locks`: flock; a
companion lock file on Windows) and go out in one `write`, so any number of concurrent writers
leave whole lines; a torn line left by a crashed writer is fenced off with a newline, reported
and skipped by readers, and never rewritten away.

An image on a host is identified by (sha256, host, key), or by its URL when an imported entry
has no hash. Its state is the latest record for that identity; backups accumulate.

`Ledger.append_new` (pp-mark) leaves out a line that would repeat what the ledger already says
of an image, so that re-running a pipeline after a crash adds nothing. It asks an index kept
beside as a cache (sqlite, under $XDG_CACHE_HOME/picpipe/ledger-index/), which reads only the
lines added since it last looked: one image costs the same at 1k and 1M lines.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import stat
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picpipe import console, files, locks
from picpipe.config import xdg_home
from picpipe.errors import PicpipeError
from picpipe.links import UrlSet, url_identity
from picpipe.redact import drop_secret_fields, mask_data
from picpipe.stream import Record, encode_line, field_problem, no_interrupt
from picpipe.timeutil import now_iso, parse_time

#: Fields that describe one pass through a pipeline, not the image: not kept in the ledger.
TRANSIENT_FIELDS = ("error", "link", "raw")

BadLine = Callable[[int, str], None]

if TYPE_CHECKING:
    import sqlite3


#: The ledgers this process appended to: an automatic sync follows a run that appended.
_APPENDED: set[Path] = set()


def appended() -> set[Path]:
    """The ledger files this process has appended lines to."""
    return set(_APPENDED)


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("PICPIPE_LEDGER"):
        return Path(environ["PICPIPE_LEDGER"]).expanduser()
    return xdg_home("XDG_DATA_HOME", os.path.join(".local", "share"), environ) / "ledger.jsonl"


def identity(record: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two ledger lines describe the same image on the same host."""
    if record.get("sha256") or record.get("key"):
        return ("image", str(record.get("sha256") or ""), str(record.get("host") or ""), str(record.get("key") or ""))
    return ("url", str(record.get("url") or ""))


def worth_keeping(record: Record) -> bool:
    """Only records that say where an image lives (a URL or a backup) go into the ledger, and
    never one whose known fields have the wrong type (`{"url": 5}`)."""
    return bool(record.get("url") or record.get("backups")) and field_problem(record) is None


def not_recorded(exc: OSError, done: str) -> PicpipeError:
    """The error of a record whose work was done (`done`: "copied to X") but whose ledger line
    could not be written: the work is not reported as failed, the ledger's problem is named."""
    from picpipe.files import os_error

    problem = os_error(exc)
    return PicpipeError("not_recorded", f"{done}, but the ledger could not record it: {problem.message}",
                        f"{problem.hint}; the record holds what was done: pipe it into pp-mark to record it")


def bare_imported_source(record: Mapping[str, Any]) -> bool:
    """Whether the record's `source` is a relative name an import took from a history file as it
    was written there (PicList keeps no folder): it names no file in this cwd, so it is neither
    made absolute nor read."""
    source = record.get("source")
    return "import" in record and isinstance(source, str) and not os.path.isabs(source)


def ledger_entry(record: Record, marked_at: str | None = None) -> Record:
    """The line the ledger keeps for a record: absolute local paths, a time, no secrets."""
    entry = {k: v for k, v in record.items() if k not in TRANSIENT_FIELDS}
    for key in ("path", "source"):
        if key == "source" and bare_imported_source(entry):
            continue
        if isinstance(entry.get(key), str) and entry[key] and not os.path.isabs(entry[key]):
            entry[key] = os.path.abspath(entry[key])
    entry["marked_at"] = marked_at or now_iso()  # when this state was seen: the latest one wins
    return drop_secret_fields(entry)


#: `canonical`'s encoder, made once: json.dumps builds one per call.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


def ledger_entries(record: Record, marked_at: str | None = None) -> list[Record]:
    """The lines the ledger keeps for a record: one per copy on a host (`picpipe.mirrors`), so
    that each host's copy is looked up, deduped and deleted as an upload of its own."""
    from picpipe import mirrors

    when = marked_at or now_iso()
    return [ledger_entry(copy, when) for copy in mirrors.copies(record)]


def canonical(record: Mapping[str, Any]) -> str:
    """A line's content independent of key order: how merge recognises a line it already has."""
    return _CANONICAL(record)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


_SAID = ("sha256", "host", "key", "url", "source", "replaces")


def _says(entry: Mapping[str, Any]) -> str:
    """What a line says about where its image lives (sha256, host, key, url), its source, what
    it replaces and whether it is deleted: times and a pipeline's passing facts (path, size) do
    not count, and copies are counted apart (`_copies`), since they accumulate."""
    return _CANONICAL([*(entry.get(k) for k in _SAID), bool(entry.get("deleted_at"))])


def _copies(entry: Mapping[str, Any]) -> set[str]:
    """A line's backup copies, one per (target, location) as `resolve` unions them."""
    backups = entry.get("backups")
    if not isinstance(backups, list):
        return set()
    return {_copy_id(b) for b in backups if isinstance(b, dict)}


def _copy_id(backup: Mapping[str, Any]) -> str:
    """What makes two backup entries one copy: its target and location."""
    return _CANONICAL([backup.get("target"), backup.get("location")])


#: A line's rows for the index's lookup tables, (key, offset, length) each: by its image's sha256,
#: its URL, its (host, key), and the sha256 of each backup copy it names (`_add_spans`).
Spans = tuple[list[tuple[int, int, int]], list[tuple[int, int, int]], list[tuple[int, int, int]],
              list[tuple[int, int, int]]]

_HEX = re.compile(r"[0-9a-f]{0,16}")
_SIGN = 1 << 63


def _new_spans() -> Spans:
    return [], [], [], []


def sha_key(sha: str) -> int:
    """A sha256's key in the index: its first 16 hex digits as a (signed) 64-bit number, so
    that the images whose sha256 starts with a hex prefix are one range of keys (`prefix_keys`).
    A value that is no hex (an imported entry's) counts by the hex digits it starts with: keys
    are shared, and lookups keep only the lines that really match."""
    head16 = sha[:16]
    if len(head16) == 16 and head16.isalnum():  # the usual case, fast (A-F reads as a-f: a superset)
        try:
            return int(head16, 16) - _SIGN
        except ValueError:
            pass
    head = _HEX.match(sha)
    return int((head.group() if head else "").ljust(16, "0"), 16) - _SIGN


def prefix_keys(prefix: str) -> tuple[int, int] | None:
    """The range of `sha_key` of the sha256s that start with `prefix`; None for no hex prefix."""
    if not prefix or _HEX.fullmatch(prefix[:16]) is None:
        return None
    return int(prefix[:16].ljust(16, "0"), 16) - _SIGN, int(prefix[:16].ljust(16, "f"), 16) - _SIGN


def text_key(*parts: str) -> int:
    """A URL's or a (host, key)'s key in the index: 64 bits of two checksums (CRC-32, Adler-32),
    half the cost of a digest over a million lines; keys that collide only cost a lookup the
    reading of a line it then leaves out."""
    data = "\0".join(parts).encode("utf-8", "surrogatepass")
    return (zlib.crc32(data) << 32 | zlib.adler32(data)) - _SIGN


def url_key(url: str) -> int:
    """A URL's key in the index: by `links.url_identity`, so any spelling of it finds its lines."""
    return text_key(url_identity(url))


def _add_spans(spans: Spans, entry: Mapping[str, Any], off: int, length: int) -> None:
    """Where the line at `off` (`length` bytes, without its newline) is found: by its image's
    sha256, its URL, its (host, key) and the sha256 of each backup copy it names other than its
    image's own. `_where` names the table that holds every line of an image's identity."""
    sha = str(entry.get("sha256") or "")
    if sha:
        spans[0].append((sha_key(sha), off, length))
    url = entry.get("url")
    if url or not (sha or entry.get("key")):  # a line known by its URL alone: even an empty one
        spans[1].append((url_key(str(url or "")), off, length))
    if entry.get("key"):
        spans[2].append((text_key(str(entry.get("host") or ""), str(entry["key"])), off, length))
    backups = entry.get("backups")
    if isinstance(backups, list):
        for copy in {str(b["sha256"]) for b in backups if isinstance(b, dict) and b.get("sha256")} - {sha}:
            spans[3].append((sha_key(copy), off, length))


class Ledger:
    """One ledger file. Reading never fails on bad lines; writing never rewrites old lines."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._fd: int | None = None
        self._end = -1  # file size right after our last append
        self._index: LedgerIndex | None = None
        self._index_failed = False
        self._guard = threading.RLock()  # one thread at a time in the index (lookups run in workers)

    # -- writing ---------------------------------------------------------------------------
    def open(self) -> Ledger:
        """Create the file (and its folder, private to the user) if needed, and keep it open."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | files.BINARY, 0o600)
        return self

    def close(self) -> None:
        if self._index is not None:
            import sqlite3

            try:
                if self._fd is not None:  # only our own appends leave rows to write
                    with self._locked() as fd:
                        self._index.flush(fd)
            except sqlite3.Error:
                pass  # the lines are in the ledger: the next look at it indexes them
            self._index.close()
            self._index = None
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
        self.open()
        assert self._fd is not None
        with no_interrupt, locks.locked(self._fd, readers=self.path):
            yield self._fd

    def _write(self, fd: int, entries: list[Record], written: list[tuple[int, int]] | None = None) -> int:
        if entries:
            start = self._write_data(fd, b"".join(encode_line(entry) for entry in entries))
            if written is not None:
                written.append((start, self._end))
        return len(entries)

    def _write_data(self, fd: int, data: bytes) -> int:
        """Append whole lines; returns the offset where they start (after a fence)."""
        size = os.fstat(fd).st_size
        # The file ends where our last line ended: its last byte is our newline, no need to look.
        start = size
        if size and size != self._end and files.pread(fd, 1, size - 1) != b"\n":
            data, start = b"\n" + data, size + 1  # fence off a torn line left by a crashed writer
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:  # a full disk: the message names the ledger, not a bare errno
            exc.filename = str(self.path)
            raise
        self._end = size + len(data)
        _APPENDED.add(self.path)
        return start

    def append(self, entries: Iterable[Record]) -> int:
        """Append entries as whole lines under one lock; returns how many were written."""
        entries = list(entries)
        if not entries:
            return 0
        with self._locked() as fd:
            return self._write(fd, entries)

    def append_new(self, entry: Record) -> bool:
        """Append `entry` unless the ledger's latest line for its image already says the same
        and the copies it names are all recorded; True when it was appended. Without a usable index (a ledger that is no
        regular file, a cache folder that cannot be written) every entry is appended, as before."""
        import sqlite3

        line = encode_line(entry)
        with self._guard, self._locked() as fd:
            index = self._open_index(fd)
            if index is None:
                self._write_data(fd, line)
                return True
            written = False
            try:
                index.catch_up(fd)
                # What the line says once written (secrets masked): what a later look reads back.
                masked = mask_data(entry)
                if index.holds(fd, masked):
                    return False
                start = self._write_data(fd, line)
                written = True
                index.add(fd, start, masked, len(line) - 1)
                return True
            except sqlite3.Error as exc:
                self._index_broken(exc)
                if not written:
                    self._write_data(fd, line)
                return True

    def catch_up_index(self) -> None:
        """Bring the index up to date before the first `append_new`, where Ctrl-C still stops
        the command (an append holds it back): the first look at a ledger of 1M lines takes
        seconds."""
        import sqlite3

        self.open()
        assert self._fd is not None
        with locks.locked(self._fd, readers=self.path):
            try:
                index = self._open_index(self._fd)
                if index is not None:
                    index.catch_up(self._fd)
            except sqlite3.Error as exc:
                self._index_broken(exc)

    def index_file(self) -> Path | None:
        """The index's database file, once a look at the ledger opened it; else None."""
        return self._index.file if self._index is not None else None

    def rebuild_index(self) -> Path | None:
        """Read the whole ledger into its index again (after the ledger was edited in place by
        hand: an edit that keeps the file and its last 4 KB is not noticed otherwise); returns
        the index's file, None when the ledger cannot have one. Other processes keep using
        the same database, which they find rebuilt."""
        import sqlite3

        with self._guard, self._locked() as fd:
            index = self._open_index(fd)
            if index is None:
                return None
            try:
                index.forget()
                index.catch_up(fd)
            except sqlite3.Error as exc:
                self._index_broken(exc)
                return None
            return index.file

    def _open_index(self, fd: int) -> LedgerIndex | None:
        import sqlite3

        if self._index is None and not self._index_failed:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/full, a pipe: nothing to index
                self._index_failed = True
                return None
            try:
                self._index = LedgerIndex(self.path)
            except (OSError, sqlite3.Error) as exc:
                self._index_broken(exc)
        return self._index

    def _index_broken(self, exc: Exception) -> None:
        """Go on without the index, appending every entry and reading the whole file for a
        lookup: a cache never stops the ledger."""
        if self._index is not None:
            self._index.close()
            self._index = None
        self._index_failed = True
        console.warn(f"the ledger's index cannot be used ({exc}): the whole ledger is read instead")

    # -- lookups through the index ---------------------------------------------------------
    def _lookup(self, find: Callable[[LedgerIndex, int], list[Record]]) -> list[Record] | None:
        """`find(index, fd)` on an index brought up to date under the ledger's lock (so a line
        appended before this call is never missed); None when there is no usable index (the
        caller reads the whole file). No ledger yet: nothing to find."""
        import sqlite3

        with self._guard:
            if self._index_failed:
                return None
            try:
                fd = os.open(self.path, os.O_RDONLY | files.BINARY)
            except FileNotFoundError:
                return []
            except OSError:
                return None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    return None
                with locks.locked(fd, readers=self.path):  # the lock that serialises the index's writers
                    index = self._open_index(fd)
                    if index is None:
                        return None
                    try:
                        index.flush(fd)
                        index.catch_up(fd)
                        return find(index, fd)
                    except sqlite3.Error as exc:
                        self._index_broken(exc)
                        return None
                    finally:
                        if self._index is not None:
                            self._index.end_read()
            finally:
                os.close(fd)

    def states_for(self, sha256s: Iterable[str]) -> list[Record]:
        """The states of the images with these sha256s (any host, key), as `states()` has them,
        in the same order; through the index, reading only their lines."""
        wanted = {str(sha) for sha in sha256s if sha}

        def find(index: LedgerIndex, fd: int) -> list[Record]:
            return resolve(_read_spans(fd, index.spans("line", map(sha_key, wanted))))

        found = self._lookup(find) if wanted else []
        if found is None:
            found = resolve(entry for _, entry in self.lines())
        return [state for state in found if identity(state)[0] == "image" and identity(state)[1] in wanted]

    def states_with_copies(self, sha256s: Iterable[str]) -> list[Record]:
        """The states (as `states()` has them, in the same order) of the images whose lines name
        a backup copy with one of these sha256s: the copy of an original has the original's hash,
        not the image's, so its lines are found by the copy and then whole images by identity."""
        wanted = {str(sha) for sha in sha256s if sha}

        def find(index: LedgerIndex, fd: int) -> list[Record]:
            keys = [sha_key(sha) for sha in wanted]  # a line's copy of its own image is under its image
            lines = index.spans("copy", keys) | index.spans("line", keys)
            return _states_of(index, fd, {identity(entry) for entry in _read_spans(fd, lines)
                                          if wanted & _copy_shas(entry)})

        found = self._lookup(find) if wanted else []
        if found is None:
            found = resolve(entry for _, entry in self.lines())
        return [state for state in found if wanted & _copy_shas(state)]

    def states_by_sha256_prefix(self, prefix: str, on_bad_line: BadLine | None = None) -> list[Record]:
        """The states of the images whose sha256 starts with `prefix` (a superset of them without
        an index: the caller filters with `matches`), in the order of `states()`."""
        keys = prefix_keys(prefix)
        if keys is None:  # no hex: the index does not order such prefixes
            return self.states(on_bad_line)

        def find(index: LedgerIndex, fd: int) -> list[Record]:
            return resolve(_read_spans(fd, index.spans_between("line", *keys)))

        found = self._lookup(find)
        return self.states(on_bad_line) if found is None else found

    def states_by_url(self, url: str, on_bad_line: BadLine | None = None) -> list[Record]:
        """The states of the images that any line shows at this URL, however it is spelled (a
        superset of those whose state has it: the caller filters with `matches`), in the order of `states()`."""
        def find(index: LedgerIndex, fd: int) -> list[Record]:
            lines = _read_spans(fd, index.spans("url", [url_key(url)]))
            wanted = url_identity(url)
            return _states_of(index, fd, {identity(line) for line in lines
                                          if url_identity(str(line.get("url") or "")) == wanted})

        found = self._lookup(find)
        return self.states(on_bad_line) if found is None else found

    def iter_states(self, on_bad_line: BadLine | None = None) -> Iterator[Record]:
        """Every image's state, as `states()` has them and in their order, one at a time: what it
        holds stays flat however long the ledger (`states()` holds them all: 1M lines, 2 GB).

        Each image's state is folded where its first line stands, from its lines found through
        the index. The ledger is locked only while the index catches up; then the lines it
        covers are read in one snapshot of the index (others append meanwhile, and what they
        append is left for the next look). Without a usable index: `states()`.
        """
        import sqlite3

        snapshot = self._snapshot()
        if snapshot is None:
            yield from self.states(on_bad_line)
            return
        index, fd, end = snapshot
        try:
            chunk: list[tuple[int, Record]] = []
            for _, off, entry in self._scan(on_bad_line, end, fd):
                chunk.append((off, entry))
                if len(chunk) >= self.STATES_CHUNK:
                    yield from _first_states(index, fd, chunk)
                    chunk = []
            yield from _first_states(index, fd, chunk)
        except sqlite3.Error as exc:  # the snapshot was taken: cannot happen but on a broken disk
            raise OSError(f"the ledger's index cannot be read: {exc}") from exc
        finally:
            os.close(fd)
            with self._guard:
                if self._index is not None:
                    self._index.end_read()

    #: Lines `iter_states` looks up at once.
    STATES_CHUNK = 5000

    def _snapshot(self) -> tuple[LedgerIndex, int, int] | None:
        """(index, open ledger, end): the index brought up to date under the lock, then a read
        transaction opened on it (a snapshot for as long as the caller reads), the lock released;
        `end` is where the index's lines end. None without a usable index or ledger file."""
        import sqlite3

        with self._guard:
            if self._index_failed:
                return None
            try:
                fd = os.open(self.path, os.O_RDONLY | files.BINARY)
            except OSError:
                return None
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    with locks.locked(fd, readers=self.path):  # released before the caller reads
                        index = self._open_index(fd)
                        if index is not None:
                            try:
                                index.flush(fd)
                                index.catch_up(fd)
                                end = index.covered()  # starts the read transaction
                                return index, fd, end
                            except sqlite3.Error as exc:
                                self._index_broken(exc)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            return None

    #: Entries `add_new` takes per lock through the index: other writers wait one batch at most,
    #: and what it keeps in memory stays flat however long the merged ledger is.
    MERGE_BATCH = 10_000

    def add_new(self, entries: Iterable[Record], on_bad_line: BadLine | None = None,
                written: list[tuple[int, int]] | None = None) -> tuple[int, int]:
        """Append only entries whose content the ledger does not hold yet: (added, already there).

        Each entry is compared, as it would be stored (secrets masked) and independent of key
        order (`canonical`), with the lines of its image, found through the index: a merge of 1k
        lines costs the same at 1k and 1M lines. Entries are taken in batches of MERGE_BATCH,
        each checked and appended under one lock, which makes `merge` and `import` idempotent
        even when two of them run at once. Without a usable index the whole ledger is read
        under one lock instead (then its bad lines go to `on_bad_line`). The byte ranges
        (start, end) of the lines it appended go to `written` (a sync skips them when it sends).
        """
        import itertools
        import sqlite3

        pending = iter(entries)
        added = present = 0
        first = True
        while True:
            batch = list(itertools.islice(pending, self.MERGE_BATCH))  # read outside the lock
            if not batch and not first:
                return added, present
            first = False
            with self._guard, self._locked() as fd:
                index = self._open_index(fd)
                if index is not None:
                    try:
                        index.flush(fd)
                        index.catch_up(fd)
                        fresh = _fresh_by_index(index, fd, batch)
                    except sqlite3.Error as exc:
                        self._index_broken(exc)
                        index = None
                    finally:
                        if self._index is not None:
                            self._index.end_read()
                if index is not None:
                    added += self._write(fd, fresh, written)
                    present += len(batch) - len(fresh)
                    if fresh:
                        try:  # index what was appended now, while its lines are in the page cache
                            index.catch_up(fd)
                        except sqlite3.Error as exc:
                            self._index_broken(exc)
                    continue
            # No usable index: the rest of the entries against a full read, as before the index.
            more, already = self._add_new_by_reading([*batch, *pending], on_bad_line, written)
            return added + more, present + already

    def _add_new_by_reading(self, entries: list[Record], on_bad_line: BadLine | None,
                            written: list[tuple[int, int]] | None) -> tuple[int, int]:
        with self._locked() as fd:
            seen = {canonical(entry) for _, entry in self.lines(on_bad_line)}
            fresh: list[Record] = []
            for entry in entries:
                key = canonical(mask_data(entry))  # as it would be stored
                if key not in seen:
                    seen.add(key)
                    fresh.append(entry)
            return self._write(fd, fresh, written), len(entries) - len(fresh)

    # -- reading ---------------------------------------------------------------------------
    def lines(self, on_bad_line: BadLine | None = None) -> Iterator[tuple[int, Record]]:
        """(line number, record) for every good line; bad ones go to `on_bad_line`."""
        for number, _, record in self._scan(on_bad_line):
            yield number, record

    def _scan(self, on_bad_line: BadLine | None = None, end: int | None = None,
              fd: int | None = None) -> Iterator[tuple[int, int, Record]]:
        """(line number, byte offset, record) for every good line (up to byte `end`: a line
        beyond it was added later, only reported when it is bad, as a torn last line is), of
        the file open at `fd` if given (the one an index snapshot covers), else at the path."""
        try:
            handle = os.fdopen(os.dup(fd), "rb") if fd is not None else open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            if fd is not None:
                handle.seek(0)  # a dup shares its offset: read from the start whatever it was
            offset = 0
            for number, raw in enumerate(handle, 1):
                at, offset = offset, offset + len(raw)
                later = end is not None and offset > end
                try:
                    value = parse_line(raw)
                except UnicodeDecodeError:
                    problem = "not valid UTF-8"
                except json.JSONDecodeError as exc:
                    torn = not raw.endswith(b"\n")
                    problem = "incomplete line (a writer was interrupted)" if torn else f"invalid JSON ({exc.msg})"
                except ValueError:
                    if later:
                        return
                    problem = "not a JSON object"
                else:
                    if value is None:
                        continue
                    if later:
                        return
                    yield number, at, value
                    continue
                if on_bad_line is not None:
                    on_bad_line(number, problem)
                if later:
                    return

    def replaced(self, on_bad_line: BadLine | None = None) -> UrlSet:
        """The URLs any line says were replaced (`replaces`: a dead link's image uploaded again),
        compared by `url_identity`: `url in replaced` holds for any spelling of one."""
        return UrlSet(entry["replaces"] for _, entry in self.lines(on_bad_line)
                      if isinstance(entry.get("replaces"), str))

    def states(self, on_bad_line: BadLine | None = None) -> list[Record]:
        """The latest state of every image, in order of first appearance."""
        return resolve(entry for _, entry in self.lines(on_bad_line))


#: Bytes before an offset whose digest tells the same ledger file from a replaced or rewritten one.
TAIL = 4096


def tail_digest(fd: int, offset: int) -> str:
    """The digest of the TAIL bytes before `offset` in the ledger open at `fd`: how the index and a
    sync tell that the file they read up to `offset` is still the one there (appended to only)."""
    start = max(0, offset - TAIL)
    return hashlib.sha256(files.pread(fd, offset - start, start)).hexdigest()


_DECODER = json.JSONDecoder()


def parse_line(raw: bytes) -> Record | None:
    """The record of one ledger line (its newline or not), None for a blank one: the one reading
    of a line, for the ledger's readers, its index and a sync's segments alike. Blanks around
    the object are any Unicode white space (`str.strip`: \\f, \\v, no-break spaces too).
    Raises UnicodeDecodeError (not UTF-8), json.JSONDecodeError (not JSON, or torn) or another
    ValueError (JSON, but no object)."""
    text = raw.decode("utf-8")
    try:  # a line as we write it: `decode` would look for blanks around it (a 10th of an index build)
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        value, end = None, -1
    if end < 0 or end != len(text) and text[end:].strip():
        text = text.strip()
        if not text:
            return None
        value = _DECODER.decode(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _copy_shas(entry: Mapping[str, Any]) -> set[str]:
    backups = entry.get("backups")
    return {str(b["sha256"]) for b in backups if isinstance(b, dict) and b.get("sha256")} \
        if isinstance(backups, list) else set()


def _read_spans(fd: int, spans: Iterable[tuple[int, int]]) -> Iterator[Record]:
    """The records of the lines at these (offset, length), in the ledger's order."""
    return (record for _, record in _read_at(fd, spans))


def _read_at(fd: int, spans: Iterable[tuple[int, int]]) -> Iterator[tuple[int, Record]]:
    """(offset, record) of the lines at these (offset, length), in the ledger's order."""
    for off, length in sorted(set(spans)):
        try:
            value = parse_line(files.pread(fd, length, off))
        except ValueError:  # the index covers whole good lines only: a file changed under it
            continue
        if value is not None:
            yield off, value


def _states_of(index: LedgerIndex, fd: int, idents: set[tuple[str, ...]]) -> list[Record]:
    """The states of these identities (`identity`), from their lines found through the index."""
    spans: set[tuple[int, int]] = set()
    for ident in idents:
        if ident[0] == "url":
            spans |= index.spans("url", [url_key(ident[1])])
        elif ident[1]:
            spans |= index.spans("line", [sha_key(ident[1])])
        else:
            spans |= index.spans("hostkey", [text_key(ident[2], ident[3])])
    return [state for state in resolve(_read_spans(fd, spans)) if identity(state) in idents]


def _first_states(index: LedgerIndex, fd: int, chunk: list[tuple[int, Record]]) -> Iterator[Record]:
    """The states of the images whose first line is among `chunk` ((offset, line) in the
    ledger's order), in that order: each folded from all its lines, found through the index
    (those in `chunk` are not read again).

    A later line of an image is told from its first by the lines before it, read one at a time
    up to the first of its image (most often the first one): all of an image's lines are read
    only for its first line, once, not again for each later one (K lines: about 2K reads, not K²)."""
    here = dict(chunk)
    found: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for off, entry in chunk:
        where = _where(entry)
        spans = found.get(where)
        if spans is None:
            spans = found[where] = sorted(index.spans(where[0], [where[1]]))
        if len(spans) <= 1:  # its image's only line (or one the index does not know: a new file)
            yield entry
            continue
        ident = identity(entry)
        if off not in (at for at, _ in spans) or any(
                identity(line) == ident for line in _lines_at(fd, here, [span for span in spans if span[0] < off])):
            continue  # a later line of its image (or one the index does not know: read as not first)
        later = _lines_at(fd, here, [span for span in spans if span[0] > off])
        yield resolve([entry, *(line for line in later if identity(line) == ident)])[0]


def _lines_at(fd: int, here: Mapping[int, Record], spans: list[tuple[int, int]]) -> Iterator[Record]:
    """The records at these (offset, length), in the ledger's order, read one at a time (lazily:
    a caller may stop early), those in `here` (offset → record) taken from it."""
    for span in sorted(spans):
        if span[0] in here:
            yield here[span[0]]
        else:
            yield from _read_spans(fd, [span])


def _where(entry: Mapping[str, Any]) -> tuple[str, int]:
    """The index's table and key under which `_add_spans` puts a line by its image's identity:
    every line that reads back equal to `entry` is there (among others sharing the key)."""
    sha = str(entry.get("sha256") or "")
    if sha:
        return "line", sha_key(sha)
    if entry.get("key"):
        return "hostkey", text_key(str(entry.get("host") or ""), str(entry["key"]))
    return "url", url_key(str(entry.get("url") or ""))


def _fresh_by_index(index: LedgerIndex, fd: int, entries: list[Record]) -> list[Record]:
    """The entries whose stored line (`canonical`, secrets masked) is neither among the ledger's
    lines of its image, read through the index (up to date), nor earlier in `entries`."""
    held: dict[tuple[str, int], set[str]] = {}  # the lines under each key looked at
    fresh: list[Record] = []
    for entry in entries:
        masked = mask_data(entry)
        where = _where(masked)
        lines = held.get(where)
        if lines is None:
            lines = held[where] = {canonical(line) for line in _read_spans(fd, index.spans(where[0], [where[1]]))}
        key = canonical(masked)
        if key not in lines:
            lines.add(key)
            fresh.append(entry)
    return fresh


class _Moved(Exception):
    """The index was remade for another ledger file or format while we held rows for it."""


class LedgerIndex:
    """A cache of one ledger: where each line is (byte offset and length), by what lookups ask
    for (`_add_spans`). It remembers how far it has read (with a digest of the bytes before that
    point, so a ledger that was replaced or rewritten is read again from the start) and only
    ever reads what was added since. Used under the ledger's lock, which is what serialises its
    writers. An image's state is never stored: it is folded from its lines, read back by offset,
    so the index holds nothing a lookup could find stale, and building it is only parsing.

    A bulk pp-mark appends line after line: checking the stored position and the digest, then
    committing each line, cost more than the rest of pp-mark together (100k records: 11 s, not
    3 s). So where the lines we append ourselves are is kept in memory (`_pending`) and written
    into the index every FLUSH_EVERY lines and at close, and the checks are skipped while the
    ledger is as we left it (same file, size and time). The stored position lags behind our
    unwritten lines, so whoever looks next (another process, or the next run after a crash)
    reads them from the ledger, which stays the truth; no write transaction is held between
    lines (a read one is, see `_select`: WAL lets others write). Another process that commits
    meanwhile without appending only read the same lines into the same rows; `flush` still
    checks that the index is of our file and format before writing to it.
    """

    #: Reading more than this says so on stderr, since it takes seconds (the first look at a ledger).
    SAY_ABOVE = 64 << 20
    VERSION = "5"  # 5: URL keys resolve dot segments (links.url_identity)
    #: Our own lines kept in memory at most before they are written into the index.
    FLUSH_EVERY = 1000
    #: Reading more than this (bytes) uses a page cache of BIG_CACHE_KB while it builds.
    BIG_READ = 16 << 20
    BIG_CACHE_KB = 32768
    #: The lookup tables and their key columns, in the order of `Spans`.
    TABLES = ("line", "url", "hostkey", "copy")

    def __init__(self, ledger: Path) -> None:
        import sqlite3

        self.ledger = ledger
        real = os.path.realpath(ledger)
        folder = xdg_home("XDG_CACHE_HOME", ".cache") / "ledger-index"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.file = folder / f"{_digest(real).hex()}.sqlite3"
        try:
            self.db = self._connect(sqlite3)
        except sqlite3.DatabaseError:  # a damaged cache is no loss: start it again
            self.file.unlink(missing_ok=True)
            self.db = self._connect(sqlite3)
        #: Where our own appended lines are, not yet in the database: by (table, key), and as rows.
        self._pending: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._pending_spans = _new_spans()
        self._lines = 0  # our lines behind `_pending`
        #: The ledger's (device, inode, size, mtime) when the index (with `_pending`) covered it
        #: to its end, as of our last look or append; None when that must be checked again.
        self._seen: tuple[int, ...] | None = None

    def _connect(self, sqlite3: Any) -> sqlite3.Connection:
        db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # a cache: a power cut costs a rebuild at worst
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        # Where each line is (byte offset, length without the newline), by what lookups ask for.
        for table in self.TABLES:
            db.execute(f"CREATE TABLE IF NOT EXISTS {table} (k INTEGER, off INTEGER, len INTEGER,"
                       " PRIMARY KEY (k, off)) WITHOUT ROWID")
        return db

    def close(self) -> None:
        self._end_read()
        self.db.close()

    def _end_read(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    end_read = _end_read

    def _store_spans(self, spans: Spans, staged: bool = False) -> None:
        """Rows into the lookup tables, or into their staging tables (`_staging`) for a long read."""
        for table, rows in zip(self.TABLES, spans):
            if rows:
                into = f"new_{table}" if staged else table
                self.db.executemany(f"INSERT OR REPLACE INTO {into} VALUES (?, ?, ?)", rows if staged else sorted(rows))

    @contextmanager
    def _staging(self) -> Iterator[None]:
        """Rows of a long read go into unsorted temp tables first and into the lookup tables at
        the end, in key order: inserting millions of random keys into a b-tree directly costs
        twice as much (1M lines: 6.3 s against 3.1 s)."""
        for table in self.TABLES:
            self.db.execute(f"CREATE TEMP TABLE IF NOT EXISTS new_{table} (k INTEGER, off INTEGER, len INTEGER)")
        yield
        for table in self.TABLES:
            self.db.execute(f"INSERT OR REPLACE INTO {table} SELECT k, off, len FROM new_{table} ORDER BY k, off")
            self.db.execute(f"DELETE FROM new_{table}")

    def spans(self, table: str, keys: Iterable[int]) -> set[tuple[int, int]]:
        """(offset, length) of the lines under these keys in `table` (a superset: keys are shared),
        our own lines not yet written into the database included."""
        found: set[tuple[int, int]] = set()
        for key in set(keys):
            found.update(self._select(f"SELECT off, len FROM {table} WHERE k = ?", (key,)))
            found.update(self._pending.get((table, key), ()))
        return found

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        if not self.db.in_transaction:
            # One read transaction across many lookups (ended by the next write or slow look):
            # starting one per SELECT costs more than the SELECT. WAL lets others write meanwhile.
            self.db.execute("BEGIN")
        return self.db.execute(sql, args).fetchall()

    def spans_between(self, table: str, low: int, high: int) -> set[tuple[int, int]]:
        return set(self.db.execute(f"SELECT off, len FROM {table} WHERE k BETWEEN ? AND ?", (low, high)).fetchall())

    def forget(self) -> None:
        """Empty the index: the next `catch_up` reads the ledger from its start."""
        self._drop_pending()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM meta")
        self.db.execute("COMMIT")

    def covered(self) -> int:
        """Where the lines the index holds end, in a read transaction left open: a snapshot."""
        offset = self._select("SELECT value FROM meta WHERE name = 'offset'", ())
        return int(offset[0][0]) if offset else 0

    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, value FROM meta").fetchall())

    @staticmethod
    def _look(info: os.stat_result) -> tuple[int, ...]:
        return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns

    def _unchanged(self, fd: int) -> bool:
        """Nothing was appended to (or rewritten in) the ledger since our last look."""
        return self._seen is not None and self._seen == self._look(os.fstat(fd))

    def catch_up(self, fd: int) -> None:
        """Read the lines added since the last look (all of them when the file is another one)."""
        if self._unchanged(fd):
            return
        # Someone else moved on: forget our unwritten rows, their lines are read again below.
        self._drop_pending()
        info = os.fstat(fd)
        meta = self._meta()
        same = (meta.get("version") == self.VERSION and meta.get("file") == f"{info.st_dev}:{info.st_ino}"
                and meta.get("offset", "").isdigit() and int(meta["offset"]) <= info.st_size)
        offset = int(meta["offset"]) if same else 0
        if same and meta.get("tail") != tail_digest(fd, offset):
            same, offset = False, 0
        if not (same and offset == info.st_size):
            if info.st_size - offset > self.SAY_ABOVE:
                console.say(f"indexing {(info.st_size - offset) >> 20} MB of the ledger {self.ledger} (once)")
            big = info.st_size - offset > self.BIG_READ
            if big:  # the final sorted inserts and their trees fit in memory
                self.db.execute(f"PRAGMA cache_size = -{self.BIG_CACHE_KB}")
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if not same:
                    self.db.execute("DROP TABLE IF EXISTS image")  # version 2's
                    for table in self.TABLES:
                        self.db.execute(f"DELETE FROM {table}")
                if big:
                    with self._staging():
                        offset = self._read(fd, offset, info.st_size, staged=True)
                else:
                    offset = self._read(fd, offset, info.st_size)
                self._store_position(fd, info, offset)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            finally:
                if big:  # a lookup's process stays small
                    self.db.execute("PRAGMA cache_size = -2000")
        if offset == info.st_size:  # else a torn line at the end: looked at again next time
            self._seen = self._look(info)

    def _store_position(self, fd: int, info: os.stat_result, offset: int) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
            ("version", self.VERSION), ("file", f"{info.st_dev}:{info.st_ino}"), ("offset", str(offset)),
            ("tail", tail_digest(fd, offset))])

    def add(self, fd: int, start: int, entry: Mapping[str, Any], length: int) -> None:
        """Index the line we have just appended at `start` from memory rather than by reading it
        back; written into the database by `flush`."""
        if self._seen is None or start != self._seen[2]:  # others' bytes came before it: read it
            self._seen = None
            return
        spans = _new_spans()
        _add_spans(spans, entry, start, length)
        for table, rows in zip(self.TABLES, spans):
            for key, off, size in rows:
                self._pending.setdefault((table, key), []).append((off, size))
            self._pending_spans[self.TABLES.index(table)].extend(rows)
        self._lines += 1
        self._seen = self._look(os.fstat(fd))
        if self._lines >= self.FLUSH_EVERY:
            self.flush(fd)

    def flush(self, fd: int) -> None:
        """Write our pending rows and the position after our last line into the database. When
        the ledger or the index moved on meanwhile (another file, format or writer), our rows are
        dropped: the lines are in the ledger, whoever looks next reads them."""
        self._end_read()
        if self._pending and self._unchanged(fd):
            info = os.fstat(fd)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                meta = self._meta()
                if (meta.get("version") != self.VERSION or meta.get("file") != f"{info.st_dev}:{info.st_ino}"
                        or int(meta.get("offset") or 0) > info.st_size):
                    raise _Moved
                self._store_spans(self._pending_spans)
                self._store_position(fd, info, info.st_size)
                self.db.execute("COMMIT")
            except _Moved:
                self.db.execute("ROLLBACK")
                self._seen = None
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        self._pending.clear()
        self._pending_spans = _new_spans()
        self._lines = 0

    def _drop_pending(self) -> None:
        """Forget where our unwritten lines are, and that we saw the ledger's end: the lines are
        read from the ledger again."""
        self._end_read()
        self._pending.clear()
        self._pending_spans = _new_spans()
        self._lines = 0
        self._seen = None

    def _read(self, fd: int, offset: int, end: int, chunk: int = 1 << 20, staged: bool = False) -> int:
        """Index the whole lines between offset and end; returns where the last one ended (a
        torn line at the end waits for its fence). A last line without its newline that reads
        as a record (a file edited by hand) is one: the readers (`_scan`) take it too."""
        position, rest = offset, b""
        while position < end:
            block = files.pread(fd, min(chunk, end - position), position)
            if not block:
                break
            position += len(block)
            data = rest + block
            cut = data.rfind(b"\n") + 1  # 0: one line longer than the chunk, read on
            if cut:
                self._index_lines(data[:cut].split(b"\n")[:-1], position - len(data), staged)
            rest = data[cut:]
        if rest and position == end and self._index_lines([rest], position - len(rest), staged):
            rest = b""  # the next writer fences it off with a newline, which reads as a blank line
        return position - len(rest)

    def _index_lines(self, lines: list[bytes], base: int, staged: bool = False) -> int:
        """Note where each line (the first at offset `base`) is, by what lookups ask for; returns
        how many lines were records."""
        spans = _new_spans()
        position, records = base, 0
        for raw in lines:
            off, position = position, position + len(raw) + 1
            try:
                entry = parse_line(raw)
            except ValueError:  # torn, corrupt (UnicodeDecodeError too): the readers report it
                continue
            if entry is not None:
                _add_spans(spans, entry, off, len(raw))
                records += 1
        self._store_spans(spans, staged)
        return records

    def holds(self, fd: int, entry: Record) -> bool:
        """The ledger already says what `entry` says: the latest of its image's lines says the
        same of where the image lives (`_says`), and every copy `entry` names is recorded."""
        ident, (table, key) = identity(entry), _where(entry)
        lines = [line for line in _read_spans(fd, self.spans(table, [key])) if identity(line) == ident]
        if not lines:
            return False
        latest, copies = lines[0], _copies(lines[0])
        for line in lines[1:]:
            copies |= _copies(line)
            if _newer(line, latest):
                latest = line
        return _says(latest) == _says(entry) and _copies(entry) <= copies


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
                seen.setdefault(_copy_id(backup), backup)
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
    """The filters of `pp-mark find`: URL and source are globs, sha256 a prefix, since a time; a
    URL matches any spelling of itself (`url_identity`)."""
    value = str(record.get("url") or "")
    if url is not None and not (_glob(value, url) or url_identity(value) == url_identity(url)):
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
