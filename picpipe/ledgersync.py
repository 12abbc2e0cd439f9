"""Ledger sync (pp-backup ledger): each machine sends only its new ledger lines to a backup target,
as files that are written once and never replaced, and merges the other machines' files, so that
every ledger ends with the union, at a cost that follows what changed, not the ledger's size.

Layout on the target (a folder, or a WebDAV collection such as Nutstore):

    picpipe-ledger/<machine>/00000001.jsonl       a segment: whole ledger lines, never rewritten
    picpipe-ledger/<machine>/00000002.jsonl
    picpipe-ledger/<machine>/.00000003.jsonl.<random>.tmp   a push under way, or killed: readers skip it
    picpipe-ledger.jsonl                          the whole-file sync of earlier versions: merged once

`<machine>` names one ledger on one machine: the host name and a random suffix, made on the first
sync. Only that machine writes into its folder. A push writes one segment (at most SEGMENT_MAX
bytes: a first push of a big ledger makes several) under a temp name and renames it, so a reader
never sees half of one. A pull lists the machines' folders and reads the segments it has not
merged yet, line by line into `Ledger.add_new`, which keeps what the ledger holds already out.

What was sent and merged is kept per ledger in $XDG_STATE_HOME/picpipe/ledger-sync/ (state, not
cache: a cache cleaner must not make picpipe re-send a whole ledger), per target address: the
offset of the local ledger sent so far and a digest of the bytes before it (a ledger replaced or
rewritten meanwhile is sent whole again: harmless, merging is a union), the byte ranges that
pulling appended (never sent back), and the segments merged (name and size). Next to it: a lock
held during a sync, the lock of the automatic sync, its log, and its last failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from picpipe import console, files
from picpipe.config import xdg_home
from picpipe.errors import PicpipeError, UsageError
from picpipe.timeutil import now_iso

if TYPE_CHECKING:
    from picpipe.backup import Target
    from picpipe.config import Config
    from picpipe.ledger import Ledger

#: The folder of the segments on a target.
SEGMENTS = "picpipe-ledger"
#: The names readers take: a segment, and a machine's folder.
SEGMENT = re.compile(r"[0-9]{8}\.jsonl")
MACHINE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
#: Bytes per segment at most: well below Nutstore's 500 MB per file, and what a push holds in memory.
SEGMENT_MAX = 64 << 20
#: Bytes read from the ledger at a time while a segment is put together.
BLOCK = 1 << 20
#: The prefix of the temp files a state file is written to before it is renamed into place.
TEMP = ".pp-sync-"
#: Seconds an automatic sync waits at most for the rest of a pipeline to add its lines.
SETTLE = 2.0
#: The automatic sync's log is started afresh past this size (the previous one kept as .1).
LOG_MAX = 1 << 20


def state_home(environ: Any = os.environ) -> Path:
    return xdg_home("XDG_STATE_HOME", os.path.join(".local", "state"), environ) / "ledger-sync"


def state_files(ledger: Path, environ: Any = os.environ) -> tuple[Path, str]:
    """(the state folder, the stem of this ledger's files in it): one set per ledger path."""
    path = os.path.abspath(ledger)
    return state_home(environ), hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class StatePaths(NamedTuple):
    """The files of one ledger's sync state, in its folder (`state_files`)."""

    folder: Path
    state: Path  # what was sent and merged, per target
    lock: Path  # held during a sync
    auto: Path  # held by the automatic sync while it waits or runs
    failed: Path  # the last automatic sync's failure, until a command says it
    told: Path  # ... and once one did
    log: Path  # the automatic sync's log


def state_paths(ledger: Path, environ: Any = os.environ) -> StatePaths:
    folder, stem = state_files(ledger, environ)
    kinds = ("json", "lock", "auto", "failed", "told", "log")
    return StatePaths(folder, *(folder / f"{stem}.{kind}" for kind in kinds))


def machine_name() -> str:
    """This host's name as a folder name any server accepts, and a random suffix: two machines
    called `laptop` never write into one folder."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")[:40]
    return f"{host or 'machine'}-{os.urandom(3).hex()}"


class SyncState:
    """The sync state of one local ledger (module docstring), and the files beside it."""

    def __init__(self, ledger: Path, environ: Any = os.environ) -> None:
        self.ledger = Path(os.path.abspath(ledger))
        self.paths = state_paths(self.ledger, environ)
        self.folder, self.path = self.paths.folder, self.paths.state
        self.data: dict[str, Any] = {}
        self.load()

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            console.warn(f"cannot read the ledger sync state {self.path} ({exc}): starting afresh, so the "
                         "whole ledger is sent once more (merging is a union: nothing is doubled)")
            data = {}
        self.data = data if isinstance(data, dict) and isinstance(data.get("targets"), dict) else \
            {"ledger": str(self.ledger), "targets": {}}

    def save(self) -> None:
        """Written to a temp file and renamed: a crash leaves the old state or the new one."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        files.replace_file(self.path, (json.dumps(self.data, indent=1, sort_keys=True) + "\n").encode(), TEMP)

    @property
    def machine(self) -> str:
        if not isinstance(self.data.get("machine"), str) or not MACHINE.fullmatch(self.data["machine"]):
            self.data["machine"] = machine_name()
            self.save()
        return str(self.data["machine"])

    def target(self, target: Target) -> dict[str, Any]:
        """What was sent to and merged from this target (by its address, not its profile name)."""
        key = hashlib.sha256(target.address().encode()).hexdigest()[:16]
        state = self.data["targets"].setdefault(key, {})
        state.update(name=target.name, address=target.address())
        for field, empty in (("sent", 0), ("digest", ""), ("pulled", []), ("merged", {}), ("seq", 0)):
            state.setdefault(field, empty)
        return state

    @contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """The sync lock of this ledger: one sync at a time (an interactive one waits for the
        automatic one, saying so). Yields False when `wait` is off and another one holds it."""
        with _lock(self.paths.lock, wait=False) as free:
            if free or not wait:
                yield free
                return
        console.say(f"waiting for another sync of {self.ledger} to end")
        with _lock(self.paths.lock, wait=True) as free:
            yield free


@contextmanager
def _lock(path: Path, wait: bool) -> Iterator[bool]:
    """The lock file at `path` held while the block runs; False when `wait` is off and another holds it."""
    from picpipe.locks import lock_file

    with lock_file(path, wait) as fd:
        yield fd is not None


@dataclass
class Report:
    """What one sync did, for the line on stderr (and for tests and benchmarks)."""

    sent_lines: int = 0
    sent_bytes: int = 0
    segments_sent: int = 0
    received_lines: int = 0
    received_bytes: int = 0
    segments_received: int = 0
    added: int = 0
    bad_lines: int = 0
    requests: int = 0
    remote: bool = False
    replaced: bool = False

    def summary(self, target: str, push: bool) -> str:
        """`nas: sent 10 lines (6310 bytes) in 1 segment; received ...; 4 requests`."""
        parts = []
        if push:
            parts.append(f"sent {console.counted(self.sent_lines, 'line')} ({self.sent_bytes} bytes) in "
                         f"{console.counted(self.segments_sent, 'segment')}" if self.segments_sent else
                         "nothing new to send")
            if self.replaced:
                parts[-1] += " (the ledger was replaced or rewritten since the last sync: sent whole)"
        parts.append(f"received {console.counted(self.received_lines, 'line')} ({self.received_bytes} bytes) in "
                     f"{console.counted(self.segments_received, 'file')}, {self.added} added to the ledger"
                     if self.segments_received else "nothing new to receive")
        if self.bad_lines:
            parts.append(f"{console.counted(self.bad_lines, 'bad line')} skipped")
        if self.remote:
            parts.append(console.counted(self.requests, "request"))
        return f"{target}: " + "; ".join(parts)


class Sync:
    """One sync of one local ledger with one target; the caller holds the state's lock."""

    def __init__(self, target: Target, state: SyncState) -> None:
        from picpipe.backup import FolderTarget

        self.target, self.state = target, state
        self.ledger_path = state.ledger
        self.ts = state.target(target)
        self.report = Report(remote=not isinstance(target, FolderTarget))
        self._ledger: Ledger | None = None
        self.saved = time.monotonic()

    def run(self, push: bool = True, legacy: bool = False) -> Report:
        """Pull the old whole-file ledger (once per target, or when `legacy`), push, then pull segments."""
        count = self.target.counting()
        try:
            if legacy or not self.ts.get("legacy_checked"):
                self.pull_legacy()
            if push:
                self.push()
            self.pull()
            self.ts["synced_at"] = time.time()
        finally:
            self.report.requests = count()
            if self._ledger is not None:
                self._ledger.close()
            self.state.save()
        return self.report

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from picpipe.ledger import Ledger

            self._ledger = Ledger(self.ledger_path)
        return self._ledger

    # -- push ------------------------------------------------------------------------------
    def push(self) -> None:
        """Send the ledger's bytes past the sent offset, less what pulling appended, as one new
        segment (several past SEGMENT_MAX); nothing to send, no request."""
        ts = self.ts
        if ts.get("temp"):  # a push killed between its PUT and its rename left this
            self.target.remove(ts["temp"])
            ts["temp"] = None
        try:
            fd = os.open(self.ledger_path, os.O_RDONLY | files.BINARY)
        except FileNotFoundError:
            return
        try:
            unsent = _unsent(fd, self.ledger_path, ts)
            if unsent.replaced:
                self.report.replaced = True
                # Another file now: send it whole, and merge everything again (its own older lines too).
                ts.update(sent=0, digest="", pulled=[], merged={}, pull_own=True, legacy_checked=False)
                self.state.save()
            for data, upto in _segments(fd, unsent.sent, unsent.end, unsent.skip):
                self.write_segment(data)
                self._sent_to(fd, upto)
            if unsent.end > ts["sent"]:  # what is left are lines pulled from this target: nothing to send
                self._sent_to(fd, unsent.end)
        finally:
            os.close(fd)

    def _sent_to(self, fd: int, offset: int) -> None:
        from picpipe.ledger import tail_digest

        self.ts.update(sent=offset, digest=tail_digest(fd, offset),
                       pulled=[r for r in self.ts["pulled"] if r[1] > offset])
        self.state.save()

    def write_segment(self, data: bytes) -> None:
        """`data` as the next segment of this machine, under a temp name then renamed. When the
        name is taken, another machine writes into this folder: this one's state was copied there
        with its home (a restored backup, a cloned disk), and neither reads its own folder. So this
        machine takes a new name: each then reads the other's folder. (A push whose answer was
        lost meets its own segment the same way: its lines are merged back, a union.)"""
        ts = self.ts
        machine = self.state.machine
        folder = f"{SEGMENTS}/{machine}"
        while True:
            ts["seq"] = int(ts["seq"]) + 1
            name = f"{ts['seq']:08d}.jsonl"
            ts["temp"] = f"{folder}/.{name}.{os.urandom(6).hex()}.tmp"
            self.state.save()  # the temp name first: a killed push's temp file is removed next time
            try:
                written = self.target.write_new(f"{folder}/{name}", data, ts["temp"])
            except BaseException:
                ts["seq"] -= 1  # no segment was made (or, if its answer was lost, the next try meets it)
                raise  # the temp name stays in the state: the next push removes what may be there
            ts["temp"] = None
            if written:
                break
            self.state.data["machine"] = machine = machine_name()
            folder, ts["seq"] = f"{SEGMENTS}/{machine}", 0
        ts["merged"][f"{machine}/{name}"] = len(data)  # ours: never read back
        self.report.sent_lines += data.count(b"\n")
        self.report.sent_bytes += len(data)
        self.report.segments_sent += 1

    # -- pull ------------------------------------------------------------------------------
    def pull(self) -> None:
        """Merge the segments not merged yet: one listing of the machines, one per other machine,
        one GET per new segment (this machine's own folder only after its ledger was replaced)."""
        ts, own = self.ts, self.state.machine
        machines = self.target.list(SEGMENTS) or []
        for folder in sorted(m.name for m in machines if m.folder and MACHINE.fullmatch(m.name)):
            if folder == own and not ts.get("pull_own"):
                continue
            for entry in sorted((e for e in self.target.list(f"{SEGMENTS}/{folder}") or ()
                                 if not e.folder and SEGMENT.fullmatch(e.name)), key=lambda e: e.name):
                key = f"{folder}/{entry.name}"
                done = ts["merged"].get(key)
                if done is not None and (entry.size is None or done == entry.size):
                    continue
                self.merge(f"{SEGMENTS}/{key}", key)
        ts["pull_own"] = False

    def pull_legacy(self) -> None:
        """The single picpipe-ledger.jsonl of earlier versions, merged when it is new or changed.
        When it is this very ledger's beginning (the old sync uploaded the whole local ledger),
        those bytes count as sent: a first sync does not send them again."""
        ts = self.ts
        from picpipe.backup import LEDGER_NAME

        size = self.target.size(LEDGER_NAME)
        if size is not None and ts["merged"].get(LEDGER_NAME) != size:
            digest = hashlib.sha256()
            merged = self.merge(LEDGER_NAME, LEDGER_NAME, digest.update)
            if merged and not ts["sent"] and _prefix_digest(self.ledger_path, merged) == digest.digest():
                fd = os.open(self.ledger_path, os.O_RDONLY | files.BINARY)
                try:
                    self._sent_to(fd, merged)
                finally:
                    os.close(fd)
        ts["legacy_checked"] = True

    def merge(self, name: str, key: str, tee: Callable[[bytes], object] | None = None) -> int:
        """Merge one file of the target into the ledger, streamed; the ranges appended are kept
        (never sent back), even when the download fails half-way. Its size in bytes."""
        chunks = self.target.stream(name)
        if chunks is None:  # gone since the listing
            return 0
        counts = _Counts()
        written: list[tuple[int, int]] = []

        def bad(number: int, problem: str) -> None:
            counts.bad += 1

        try:
            added, _ = self.ledger.add_new(_records(chunks, counts, tee), on_bad_line=bad, written=written)
        finally:  # run() saves the state at its end, whatever happens
            self.ts["pulled"] = _coalesce([*map(tuple, self.ts["pulled"]), *written])
            self.report.received_bytes += counts.size
            self.report.received_lines += counts.lines
            self.report.bad_lines += counts.bad
        self.ts["merged"][key] = counts.size
        self.report.added += added
        self.report.segments_received += 1
        if time.monotonic() - self.saved > 1.0:  # a kill loses a second's work at most (merged again: a union)
            self.state.save()
            self.saved = time.monotonic()
        return counts.size

    def pending(self) -> int:
        """Bytes of whole lines past the sent offset that push would send (the ledger replaced:
        all of it)."""
        return pending(self.ledger_path, self.ts)


def pending(ledger: Path, ts: dict[str, Any]) -> int:
    try:
        fd = os.open(ledger, os.O_RDONLY | files.BINARY)
    except FileNotFoundError:
        return 0
    try:
        unsent = _unsent(fd, ledger, ts)
        return unsent.size if unsent.replaced else sum(b - a for a, b in _outside(unsent.sent, unsent.end, unsent.skip))
    finally:
        os.close(fd)


class _Unsent(NamedTuple):
    size: int  # the ledger's, between two appends
    replaced: bool  # the ledger is another file than the one sent from (then all of it is unsent)
    sent: int  # the offset sent up to (0 when replaced)
    end: int  # the end of the last whole line
    skip: list[tuple[int, int]]  # the byte ranges past `sent` that pulling appended (none when replaced)


def _unsent(fd: int, ledger: Path, ts: dict[str, Any]) -> _Unsent:
    """What a push of the ledger open at `fd` sends to the target of `ts`: [sent, end) less `skip`."""
    from picpipe.ledger import tail_digest

    size = _settled_size(fd, ledger)
    sent = int(ts.get("sent", 0))
    replaced = bool(sent) and (sent > size or tail_digest(fd, sent) != ts.get("digest"))
    sent = 0 if replaced else sent
    skip = [] if replaced else [(int(a), int(b)) for a, b in ts.get("pulled", []) if b > sent]
    return _Unsent(size, replaced, sent, _last_line_end(fd, sent, size), skip)


# -- reading the local ledger ------------------------------------------------------------------
def _settled_size(fd: int, ledger: Path) -> int:
    """The ledger's size between two appends: writers append under an exclusive lock."""
    from picpipe.locks import locked

    with locked(fd, shared=True, readers=ledger):
        return os.fstat(fd).st_size


def _prefix_digest(path: Path, size: int) -> bytes | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            left = size
            while left and (chunk := handle.read(min(BLOCK, left))):
                digest.update(chunk)
                left -= len(chunk)
    except FileNotFoundError:
        return None
    return None if left else digest.digest()


def _last_line_end(fd: int, start: int, end: int) -> int:
    """The offset after the last newline in [start, end); `start` when there is none (a line
    still being written, or torn by a crash, waits until it is whole or fenced off)."""
    pos = end
    while pos > start:
        low = max(start, pos - BLOCK)
        found = files.pread(fd, pos - low, low).rfind(b"\n")
        if found >= 0:
            return low + found + 1
        pos = low
    return start


def _outside(start: int, end: int, skip: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The ranges of [start, end) outside the `skip` ranges."""
    pos = start
    for low, high in sorted(skip):
        if high <= pos or low >= end:
            continue
        if low > pos:
            yield pos, low
        pos = max(pos, high)
    if pos < end:
        yield pos, end


def _segments(fd: int, start: int, end: int, skip: list[tuple[int, int]]) -> Iterator[tuple[bytes, int]]:
    """(segment bytes, the ledger offset it reaches) for the whole lines of [start, end) outside
    `skip`, at most SEGMENT_MAX bytes each unless one line is longer."""
    parts: list[bytes] = []
    size, reach = 0, start
    for upto, block in _line_blocks(fd, start, end, skip):
        if size and size + len(block) > SEGMENT_MAX:
            yield b"".join(parts), reach
            parts, size = [], 0
        parts.append(block)
        size += len(block)
        reach = upto
    if parts:
        yield b"".join(parts), reach


def _line_blocks(fd: int, start: int, end: int, skip: list[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """(the ledger offset reached, bytes) in blocks of whole lines of about BLOCK bytes. The
    ranges begin and end at line ends: `end` is one, and so are the edges of pulled ranges."""
    for low, high in _outside(start, end, skip):
        pos, carry = low, b""
        while pos < high:
            chunk = files.pread(fd, min(BLOCK, high - pos), pos)
            if not chunk:  # cannot be: the ledger is only appended to, and `end` was read from it
                raise PicpipeError("ledger_changed", "the ledger became shorter while it was read",
                                   "run the sync again")
            pos += len(chunk)
            data = carry + chunk
            cut = len(data) if pos >= high else data.rfind(b"\n") + 1
            if cut:
                yield pos - (len(data) - cut), data[:cut]
            carry = data[cut:]


# -- reading what comes from the target ---------------------------------------------------------
@dataclass
class _Counts:
    size: int = 0
    lines: int = 0
    bad: int = 0


def _records(chunks: Iterable[bytes], counts: _Counts,
             tee: Callable[[bytes], object] | None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a stream of ledger bytes, line by line, read as the ledger reads its
    own lines (`parse_line`); bad lines are counted."""
    carry = b""
    for chunk in chunks:
        counts.size += len(chunk)
        if tee is not None:
            tee(chunk)
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        yield from _parse(lines, counts)
    if carry:
        yield from _parse([carry], counts)


def _parse(lines: list[bytes], counts: _Counts) -> Iterator[dict[str, Any]]:
    from picpipe.ledger import parse_line

    for raw in lines:
        try:
            value = parse_line(raw)
        except ValueError:  # UnicodeDecodeError included
            counts.lines += 1
            counts.bad += 1
            continue
        if value is not None:
            counts.lines += 1
            yield value


def _coalesce(ranges: Iterable[tuple[int, int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


# -- one sync, as pp-backup ledger runs it ---------------------------------------------------------
def sync(target: Target, ledger: Path, push: bool = True, legacy: bool = False,
         environ: Any = os.environ) -> Report:
    """Push (unless not `push`) and pull `ledger` with `target`, under the ledger's sync lock."""
    state = SyncState(ledger, environ)
    with state.locked():
        state.load()  # as the sync before us left it
        return Sync(target, state).run(push=push, legacy=legacy)


# -- the automatic sync ------------------------------------------------------------------------
def log(message: str) -> None:
    """A line of the automatic sync's log (its stderr), with the time."""
    console.say(f"{now_iso()} {message}")


def auto_sync(config: Config, name: str, ledger: Path, every: float, environ: Any = os.environ) -> int:
    """`pp-backup ledger --to NAME --auto`: one at a time per ledger, at least `every` seconds
    after the last sync, then again while lines keep coming. A second one exits at once: the one
    running looks for new lines after it lets go of its lock, and goes on when it finds some."""
    from picpipe.backup import open_target

    state = SyncState(ledger, environ)
    target: Target | None = None
    try:
        while True:
            with _lock(state.paths.auto, wait=False) as mine:
                if not mine:
                    return 0  # the one holding it takes these lines too
                if target is None:
                    try:
                        target = open_target(config.profile(name))
                    except UsageError as exc:  # a profile that is no backup target: said by the next command too
                        _failed(state, name, _reason(exc))
                        return 2
                status = _auto_round(state, target, every)
                if status:
                    return status
            state.load()
            if not pending(state.ledger, state.target(target)):
                return 0
    finally:
        if target is not None:
            target.close()


def _auto_round(state: SyncState, target: Target, every: float) -> int:
    """Syncs until no line is waiting; 1 after a failure (logged, and remembered for the next
    command to say)."""
    first = True
    while True:
        state.load()
        ts = state.target(target)
        if not first and not pending(state.ledger, ts):
            return 0
        # A sync time in the future (the clock was set back) waits `every` at most, not until then.
        since = min(float(ts.get("synced_at") or 0), time.time())
        wait = max(since + every, float(ts.get("blocked_until") or 0)) - time.time()
        wait = max(wait, min(SETTLE, every) if first else 0.0)  # the rest of the pipeline's lines
        first = False
        if wait > 0:
            time.sleep(wait)
        state.load()
        ts = state.target(target)
        if ts.get("synced_at") and not pending(state.ledger, ts):  # an interactive sync took them meanwhile
            return 0
        try:
            with state.locked():
                state.load()
                report = Sync(target, state).run()
        except PicpipeError as exc:
            _failed(state, target.name, _reason(exc), exc.extra.get("resume_after"), target)
            return 1
        except OSError as exc:
            from picpipe.files import os_error

            _failed(state, target.name, os_error(exc).message)
            return 1
        log(report.summary(target.name, push=True))
        for stale in (state.paths.failed, state.paths.told):
            stale.unlink(missing_ok=True)


def _reason(exc: PicpipeError | UsageError) -> str:
    return exc.message + (f" ({exc.hint})" if exc.hint else "")


def _failed(state: SyncState, name: str, reason: str, resume_after: str | None = None,
            target: Target | None = None) -> None:
    """Log a failed sync to the profile `name`, and leave it for the next command to say; a
    server's block (`resume_after`) holds the next syncs to `target` back until it ends."""
    log(f"sync to {name} failed: {reason}")
    if resume_after and target is not None:
        from picpipe.timeutil import parse_time

        with state.locked():  # beside an interactive sync's sent offset and segments, not over them
            state.load()
            state.target(target)["blocked_until"] = parse_time(resume_after).timestamp()
            state.save()
    failure = {"target": name, "at": now_iso(), "reason": reason, "log": str(state.paths.log)}
    files.replace_file(state.paths.failed, (json.dumps(failure) + "\n").encode(), TEMP)


def tell_failure(ledger: Path, environ: Any = os.environ) -> None:
    """One warning line about the last automatic sync of `ledger`, when it failed and no
    command has said so yet (the file is taken by a rename: one process of a pipeline says it)."""
    from picpipe.redact import redact_text

    paths = state_paths(ledger, environ)
    try:
        os.replace(paths.failed, paths.told)  # os.rename refuses an existing .told on Windows
        failure = json.loads(paths.told.read_bytes())
    except (OSError, ValueError):
        return
    console.warn(redact_text(f"ledger sync to {failure.get('target')} failed at {failure.get('at')}: "
                             f"{failure.get('reason')}; see {failure.get('log')}"))


def start_auto_sync(name: str, ledger: Path, environ: Any = os.environ) -> bool:
    """Start `pp-backup ledger --to NAME --auto` in the background, detached from this command's
    terminal, pipes and exit status: False when one is waiting or running already (it takes
    this run's lines too)."""
    import subprocess
    import sys

    paths = state_paths(ledger, environ)
    with _lock(paths.auto, wait=False) as free:
        if not free:
            return False
    try:
        if paths.log.stat().st_size > LOG_MAX:
            os.replace(paths.log, paths.log.with_suffix(".log.1"))
    except OSError:  # none yet; or, on Windows, a sync started a moment ago holds it open: rotated next time
        pass
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package, env.get("PYTHONPATH")) if p)
    fd = os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | files.BINARY, 0o600)
    try:
        subprocess.Popen([sys.executable, "-m", "picpipe.commands.backup", "ledger", "--to", name, "--auto",
                          "--ledger", str(Path(os.path.abspath(ledger)))],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fd, cwd=paths.folder,
                         env=env, start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    return True


def after_command(config: Config, appended: set[Path], environ: Any = os.environ) -> None:
    """The hook of picpipe.cli: after a command run, say when the last automatic sync failed,
    and start one when this run added lines to the configured ledger."""
    name, _ = config.ledger_sync()
    if name is None:
        return
    from picpipe.ledger import default_path

    ledger = Path(os.path.abspath(config.ledger() or default_path(environ)))
    tell_failure(ledger, environ)
    if any(Path(os.path.abspath(path)) == ledger for path in appended):
        try:
            config.profile(name)  # a profile that is not there is said now, not in a log
        except UsageError as exc:
            console.warn(f"[ledger] sync = {name!r}: {exc.message}; the ledger was not synced")
            return
        start_auto_sync(name, ledger, environ)

