"""File locks between picpipe's processes (ledger appends, the ledger index's writers, the shared
request budget, one ledger sync at a time), the same wherever picpipe runs.

POSIX (Linux, macOS, BSD): `fcntl.flock` on the file itself, as picpipe always did: advisory,
shared or exclusive, held per open file (two descriptors of one process exclude each other),
released on unlock or when the descriptor closes; a wait blocks in the kernel, no polling. The
standard library's own: nothing to import, nothing for a command's start-up to pay.

Windows: locks are mandatory byte-range locks (`LockFileEx`): while a writer held a lock on the
ledger, another process's plain read of those bytes would fail. So a file that others read
without the lock (the ledger) is locked through a companion file beside it, `<name>.lock` (made
once, empty, left in place: removing a lock file races with the next one to open it), named from
the file's real path (two spellings through a symlink or a junction share one). Where the folder
cannot be written (a read-only share), a companion that is there is locked read-only; where there
is none and none can be made, no process of this user can hold one, and the lock is skipped: the
ledger's readers take whole lines and index what appears under them. The lock
is taken with `filelock.lock_descriptor` (LockFileEx on the companion's first byte; a wait polls
every POLL seconds). Windows has no shared lock there: a shared one is taken exclusive (only ever
held for an fstat). `filelock` is imported on Windows only, when the first lock is taken.

`MANDATORY` says which of the two is in force; the tests set it to drive the Windows path here.

The code paths of locking and publishing that differ by OS, all of them (each tested on Linux,
the Windows and macOS ones through their stand-ins):
- `locked`: flock (POSIX) or filelock on a companion file (Windows);
- `picpipe.files.links_refused`: errno (POSIX) or winerror (Windows) says a hard link is refused;
- `picpipe.files.rename_noreplace`: renameat2 (Linux), renameatx_np (macOS), os.rename (Windows);
- `picpipe.files.NOFOLLOW`, `CLOEXEC`, `NONBLOCK`: flags Windows lacks, 0 there; `BINARY`: the flag
  it needs on every os.open of a file's bytes, 0 elsewhere;
- `picpipe.links.file_url_path`: file: URLs of drives and UNC shares (backslashes on Windows);
- `picpipe.backup.write_restored`: --out walked by open folders (POSIX, `FOLDER_FDS`) or by paths,
  each lstat-checked for a symlink or junction (Windows, no dir_fd).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from picpipe.files import BINARY

#: Whether this OS's file locks are mandatory (Windows): then filelock on companion files.
MANDATORY = os.name == "nt"
#: Seconds between two tries of a waiting lock on Windows (the kernel queues waiters on POSIX).
POLL = 0.01


@contextmanager
def locked(fd: int, shared: bool = False, wait: bool = True, readers: Path | None = None) -> Iterator[bool]:
    """`fd` locked while the block runs: exclusive, or `shared`; yields False (and holds nothing)
    when `wait` is off and another process holds a conflicting lock.

    `readers`: the path `fd` has open, when other processes read that file without taking the
    lock (the ledger); on Windows the lock is then taken on the companion file `<path>.lock`.
    Files only ever opened under their lock (a lock file, the request budget) are locked
    themselves on every OS.
    """
    if not MANDATORY:
        import fcntl

        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return
    if readers is None:
        with _mandatory(fd, wait) as free:
            yield free
        return
    companion = _companion(readers)
    if companion is None:
        yield True
        return
    try:
        with _mandatory(companion, wait) as free:
            yield free
    finally:
        os.close(companion)


def _companion(readers: Path) -> int | None:
    """The companion lock file of `readers` (Windows), open; None where it is not there and this
    user cannot make it (the folder is read-only to them)."""
    name = os.path.realpath(readers) + ".lock"
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | BINARY, 0o600)
    except OSError:  # a read-only folder or share, or a lock file another user made
        try:
            return os.open(name, os.O_RDONLY | BINARY)  # LockFileEx takes a handle opened for reading
        except OSError:
            return None


@contextmanager
def _mandatory(fd: int, wait: bool) -> Iterator[bool]:
    from filelock import lock_descriptor, unlock_descriptor

    if not lock_descriptor(fd, blocking=wait, poll_interval=POLL):
        yield False
        return
    try:
        yield True
    finally:
        unlock_descriptor(fd)


@contextmanager
def lock_file(path: Path, wait: bool = True) -> Iterator[int | None]:
    """The file at `path` (made when missing, in a folder private to the user) open and locked
    exclusive while the block runs: a lock file, or a small state file read and rewritten through
    the descriptor yielded. None instead when `wait` is off and another process holds the lock."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | BINARY, 0o600)
    try:
        with locked(fd, wait=wait) as free:
            yield fd if free else None
    finally:
        os.close(fd)
