"""Reading the user's files, with each way that fails named for a person; writing a file into
place whole and never over another (`temp_copy`, then `publish`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from picpipe.errors import PicpipeError


def read_source(path: str, max_bytes: int | None = None) -> bytes:
    """The bytes of an input file, with the ways that fails named for a person.

    Only a regular file is read: a FIFO or a device named by a document or an editor's request
    (`/dev/zero`, a pipe nobody writes to) would block a worker or never end, so it is refused
    without waiting (opened O_NONBLOCK, judged by fstat). A file over `max_bytes` is refused
    before it is read: the commands hold the bytes in memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | NONBLOCK | BINARY | CLOEXEC)
    except FileNotFoundError:
        raise PicpipeError("not_found", f"{path}: no such file",
                           "check the path (relative to the current folder)") from None
    except PermissionError:
        raise PicpipeError("unreadable", f"{path}: permission denied", "check the file's permissions") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a device without its driver
            raise _not_a_file(path, "socket or device") from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise PicpipeError("is_a_folder", f"{path} is a folder", "give image files, e.g. find DIR -name '*.png'")
        if not stat.S_ISREG(info.st_mode):
            raise _not_a_file(path, _SPECIAL.get(stat.S_IFMT(info.st_mode), "special file"))
        if max_bytes is not None and info.st_size > max_bytes:
            raise _too_big(path, max_bytes)
        if NONBLOCK:
            os.set_blocking(fd, True)
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:  # it grew after fstat
        raise _too_big(path, max_bytes)
    return data


_SPECIAL = {stat.S_IFIFO: "named pipe (FIFO)", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
            stat.S_IFSOCK: "socket"}


def _not_a_file(path: str, kind: str) -> PicpipeError:
    return PicpipeError("not_a_file", f"{path} is a {kind}, not a regular file",
                        "give image files; a pipe or a device is never read (it could block or never end)")


def _too_big(path: str, max_bytes: int) -> PicpipeError:
    return PicpipeError("too_large", f"{path} is larger than {max_bytes} bytes ({max_bytes >> 20} MiB), the "
                        "limit of a file read whole", "check that this is the file you meant; shrink an image "
                        "first (pp-compress --max-width 4000)")


#: A temp file untouched this long is left over from a run that died (kill -9, a crash): no live
#: writer keeps one for more than seconds, since each is written in one go and moved at once.
STALE_AFTER = 3600.0

#: Temp files this process made and has not moved yet: removed at exit, since Ctrl-C stops the
#: worker threads where they are, without their `finally`.
_live: set[str] = set()
#: (folder, prefix) pairs this process has swept already.
_swept: set[tuple[str, str]] = set()


@cache
def _machine() -> str:
    """Eight hex digits naming this machine: a run judges the pids of its own machine only (the
    folder may be shared or synced)."""
    import platform
    import zlib

    return f"{zlib.crc32(platform.node().encode()):08x}"  # os.uname() is POSIX only


def _remove_live() -> None:
    for name in list(_live):
        try:
            os.unlink(name)
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs, so that what it left is still in use:
    another user's process counts as running; a pid no process can have does not."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows: assume it runs
        return True
    if pid <= 0:  # 0 and negative pids name process groups, never a process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # EPERM: another user's live process
        pass
    return True


def _is_stale(entry: os.DirEntry[str], machine: str | None, pid: str | None, now: float) -> bool:
    """Left by a run that is gone: a dead pid on this machine, or untouched for STALE_AFTER."""
    if machine == _machine() and pid is not None and int(pid) != os.getpid() and not pid_alive(int(pid)):
        return True
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER
    except OSError:
        return False


def sweep_temps(folder: Path, prefix: str) -> int:
    """Remove the temp files of `temp_copy` that a killed run left in `folder`; returns how many.

    Only names temp_copy makes are touched (never an editor's `.post.md.swp` beside a post), and
    only when their run is gone, so concurrent runs in one folder keep their files.
    """
    pattern = re.compile(re.escape(prefix) + r"(?:([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}\.tmp"
                         # mkstemp's names from earlier versions: judged by age alone, in picpipe's own prefixes
                         # (and pp-backup restore's .pp-restore-<12 hex>)
                         + (r"|[a-z0-9_]{8}|[0-9a-f]{12}" if prefix.startswith(".pp-") else "") + r")\Z")
    removed, now = 0, time.time()
    try:
        with os.scandir(folder) as entries:
            found = [(entry, match) for entry in entries
                     if entry.name.startswith(prefix) and (match := pattern.match(entry.name))]
    except OSError:
        return 0
    for entry, match in found:
        if entry.is_file(follow_symlinks=False) and _is_stale(entry, match.group(1), match.group(2), now):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:  # another run swept it first, or the folder is not ours to clean
                pass
    return removed


def sweep_once(folder: Path, prefix: str) -> None:
    """`sweep_temps`, the first time this process writes into `folder`: a scan per folder and run."""
    if (str(folder), prefix) not in _swept:
        _swept.add((str(folder), prefix))
        sweep_temps(folder, prefix)


@contextmanager
def temp_copy(folder: Path, data: bytes, prefix: str, dir_fd: int | None = None,
              name: str | None = None) -> Iterator[str]:
    """`data` written and fsynced to a temp file in `folder`, removed on exit unless moved away:
    the caller renames or links it into place, so a reader never sees half a file.

    Created with the user's umask (0644 under 022) like any file a person saves: a published
    image must be readable by the web server that serves the folder. The name carries this
    machine and pid, so that the first write of a later run into the folder removes what a
    killed run left (`sweep_temps`); a failed write names the file.

    With `dir_fd` (`folder`, opened), the file is made inside that open folder and its name,
    relative to it, is yielded: a symlink planted at `folder` afterwards cannot redirect it.

    `name`: the temp file's name, given by a caller that records it to remove it after a kill (the
    ledger sync's segments); FileExistsError when taken, and nothing is swept (`prefix` is unused).
    """
    if name is None:
        sweep_once(folder, prefix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC | BINARY
    while True:
        given, name = name, name or f"{prefix}{_machine()}-{os.getpid()}-{os.urandom(4).hex()}.tmp"
        temp = os.path.join(folder, name)
        try:  # the umask applies, as mkstemp's fixed 0600 would not
            fd = os.open(name if dir_fd is not None else temp, flags, 0o666, dir_fd=dir_fd)
            break
        except FileExistsError:
            if given is not None:
                raise
            name = None
    if not _live:
        import atexit

        atexit.register(_remove_live)
    _live.add(temp)
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            exc.filename = exc.filename or temp
            raise
        yield name if dir_fd is not None else temp
    finally:
        _live.discard(temp)
        try:
            os.unlink(name if dir_fd is not None else temp, dir_fd=dir_fd)
        except FileNotFoundError:  # moved into place
            pass


def replace_file(path: Path, data: bytes, prefix: str) -> None:
    """`data` as the whole of `path`, put there by a rename over it (from a `temp_copy`: fsynced,
    removed after a Ctrl-C, swept after a kill): a reader or a crash sees the old file or the
    new one, never half of one."""
    with temp_copy(path.parent, data, prefix) as temp:
        os.replace(temp, path)


#: os.open flags that POSIX has and Windows lacks (where nothing needs them: no symlink is followed
#: by O_EXCL creation there, handles are not inherited by default, and there are no FIFOs to block on).
NOFOLLOW, CLOEXEC, NONBLOCK = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_CLOEXEC", 0), getattr(os, "O_NONBLOCK", 0)
#: The flag Windows needs on every os.open of a file's bytes: without it the descriptor is in text
#: mode, reads turn \r\n into \n and stop at ^Z, writes turn \n into \r\n. 0 on POSIX.
BINARY: int = getattr(os, "O_BINARY", 0)


# -- putting a finished file in place, never over another ------------------------------------
#: errno of a hard link that the file system refuses (a taken name is EEXIST, never one of these):
#: EPERM from Linux on vfat and exfat (no link operation), EOPNOTSUPP/ENOTSUP from macOS on msdos,
#: exfat and smbfs and from Linux cifs, ENOSYS from a FUSE file system without link, EMLINK where
#: a file may have one name only, EACCES from SMB servers that refuse so.
LINKS_REFUSED = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EACCES})
#: Windows' codes for the same (CreateHardLinkW): ERROR_INVALID_FUNCTION on FAT32 and exFAT,
#: ERROR_ACCESS_DENIED and ERROR_NOT_SUPPORTED from SMB shares, ERROR_INVALID_PARAMETER,
#: ERROR_TOO_MANY_LINKS.
WIN_LINKS_REFUSED = frozenset({1, 5, 50, 87, 1142})


def links_refused(exc: OSError) -> bool:
    """Whether `exc`, raised by os.link, says the file system makes no hard links (not: the name is taken)."""
    winerror = getattr(exc, "winerror", None)
    return winerror in WIN_LINKS_REFUSED if winerror is not None else exc.errno in LINKS_REFUSED


def publish(temp: str, target: str | os.PathLike[str], src_dir_fd: int | None = None,
            dst_dir_fd: int | None = None) -> None:
    """Give the complete, fsynced file `temp` the name `target` in one step, never over a file:
    FileExistsError when the name is taken (the caller compares bytes or picks another name), so
    of two writers racing for one name exactly one wins. With the dir fds, the names are relative
    to those open folders (as os.link has them). `temp` is left where it was (a link) or is gone
    (a rename): `temp_copy`'s exit takes either.

    A hard link first. Where the file system refuses hard links (`links_refused`: FAT32, exFAT,
    many SMB shares), a rename that refuses a taken name (`rename_noreplace`). Where there is no
    such rename either, the name is claimed with an empty file made O_EXCL and `temp` renamed over
    that claim: a reader may see the empty file for a moment, never part of a file. A crash in
    between (nothing is written there) leaves an empty file at the name, which no image is: a
    taken name for CLAIM_ABANDONED seconds, then removed by the next writer of that name
    (`_claim`), since a content-hash key can go nowhere else.
    """
    try:
        os.link(temp, target, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if not links_refused(exc):  # EXDEV is not among them: re-raised, as a rename cannot cross disks
            raise
    if not rename_noreplace(temp, target, src_dir_fd, dst_dir_fd):
        _claim_and_replace(temp, target, src_dir_fd, dst_dir_fd)


def rename_noreplace(src: str | os.PathLike[str], dst: str | os.PathLike[str], src_dir_fd: int | None = None,
                     dst_dir_fd: int | None = None) -> bool:
    """Rename `src` to `dst` in one step unless `dst` exists (FileExistsError); False, with
    nothing done, where the OS or the file system has no such rename.

    Windows: os.rename (MoveFileExW without MOVEFILE_REPLACE_EXISTING) refuses a taken name.
    Linux: renameat2(RENAME_NOREPLACE) (kernel 3.15, glibc 2.28; EINVAL from a file system
    without it). macOS: renameatx_np(RENAME_EXCL) (10.12; ENOTSUP from a file system without it).
    """
    if os.name == "nt":
        if src_dir_fd is not None or dst_dir_fd is not None:  # os.rename would drop them without a word
            raise NotImplementedError("rename_noreplace: dir_fd unavailable on this platform")
        os.rename(src, dst)
        return True
    call = _noreplace_rename()
    if call is None:
        return False
    if call(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst)) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(dst))  # EEXIST: FileExistsError


#: (src_dir_fd, src, dst_dir_fd, dst) → 0, or -1 with ctypes' errno set.
NoReplace = Callable[[int | None, bytes, int | None, bytes], int]


@cache
def _noreplace_rename() -> NoReplace | None:
    """The C library's rename that refuses a taken name, on Linux and macOS; None elsewhere."""
    import ctypes

    if sys.platform.startswith("linux"):
        name, here, flag = "renameat2", -100, 1  # AT_FDCWD, RENAME_NOREPLACE
    elif sys.platform == "darwin":
        name, here, flag = "renameatx_np", -2, 4  # AT_FDCWD, RENAME_EXCL
    else:
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), name, None)
    if function is None:  # a C library without it (glibc before 2.28)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int

    def call(src_dir_fd: int | None, src: bytes, dst_dir_fd: int | None, dst: bytes) -> int:
        return int(function(here if src_dir_fd is None else src_dir_fd, src,
                            here if dst_dir_fd is None else dst_dir_fd, dst, flag))

    return call


def _claim_and_replace(temp: str, target: str | os.PathLike[str], src_dir_fd: int | None,
                       dst_dir_fd: int | None) -> None:
    """`publish`'s last resort: the name claimed with an empty file made O_EXCL (`_claim`), then
    `temp` renamed over that claim (ours: every writer of new names refuses a taken one)."""
    claim, replaced = _claim(target, dst_dir_fd), False
    try:
        os.replace(temp, target, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        replaced = True
    except BaseException:
        # Our empty claim only, never the file just published: a Ctrl-C may land after os.replace
        # returned and before the flag is set, and then the name no longer holds the claim's inode.
        if not replaced and _same_file(target, dst_dir_fd, claim):
            try:
                os.unlink(target, dir_fd=dst_dir_fd)
            except OSError:
                pass
        raise


#: Seconds after which an empty file at a name is a claim whose writer died (`_claim`): a live
#: writer replaces its claim within milliseconds. Ample for clocks of two machines sharing a folder.
CLAIM_ABANDONED = 60.0
#: Seconds `_settle` waits for another writer's claim to be filled.
SETTLE = 1.0


def _claim(target: str | os.PathLike[str], dir_fd: int | None, retry: bool = True) -> os.stat_result:
    """The name taken with an empty file made O_EXCL; that file's stat. FileExistsError when taken.

    An empty file that has been there CLAIM_ABANDONED seconds is a claim left by a crash: it is
    removed and the name claimed again, once. The removal is made by one writer at a time (the
    O_EXCL file `<name>.pp-reclaim`), which checks under it that the name still holds that old
    empty file: two writers that find one dead claim never remove the fresh claim of the first.
    (A crash inside that step leaves the guard: the name then waits for a person, as before.)
    """
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY, 0o666, dir_fd=dir_fd)
    except FileExistsError:
        left = _settle(target, dir_fd)
        if retry and left is not None and _abandoned(left) and _reclaim(target, dir_fd, left):
            return _claim(target, dir_fd, retry=False)
        raise
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _abandoned(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_size == 0 and time.time() - info.st_mtime > CLAIM_ABANDONED


def _same_file(target: str | os.PathLike[str], dir_fd: int | None, info: os.stat_result) -> bool:
    try:
        now = os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)


def _reclaim(target: str | os.PathLike[str], dir_fd: int | None, left: os.stat_result) -> bool:
    """Remove the abandoned claim `left` at `target`; False when another writer is at it, or the
    name holds something else by now."""
    guard = os.fspath(target) + ".pp-reclaim"
    try:
        os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY, 0o600, dir_fd=dir_fd))
    except OSError:
        return False
    try:
        try:
            now = os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return True  # gone already: claim it
        if (now.st_dev, now.st_ino) != (left.st_dev, left.st_ino) or not _abandoned(now):
            return False
        os.unlink(target, dir_fd=dir_fd)
        return True
    except OSError:
        return False
    finally:
        try:
            os.unlink(guard, dir_fd=dir_fd)
        except OSError:
            pass


def _settle(target: str | os.PathLike[str], dir_fd: int | None) -> os.stat_result | None:
    """Wait (SETTLE seconds at most) while the taken name holds an empty file: another writer's
    claim, about to be replaced by its file, so that the caller compares the bytes that will be
    there. The empty file's stat when it stays empty; None once it is filled or gone."""
    deadline = time.monotonic() + SETTLE
    while True:
        try:
            info = os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return None
        if info.st_size or not stat.S_ISREG(info.st_mode):
            return None
        if time.monotonic() >= deadline:
            return info
        time.sleep(0.01)


def names_beside(name: str, sha256: str) -> list[str]:
    """Where bytes go when `name` holds other bytes: `name`, then with the first 12 hex digits of
    their sha256 before the extension, then with all of it."""
    stem, ext = os.path.splitext(name)
    return [name, f"{stem}-{sha256[:12]}{ext}", f"{stem}-{sha256}{ext}"]


def write_first_free(data: bytes, targets: Iterable[Path], prefix: str) -> tuple[Path, bool] | None:
    """`data` at the first of `targets` that is free or holds these very bytes already (a regular
    file): (that path, whether it was written now); None when each holds other bytes. Written by
    `temp_copy` (temp names begin with `prefix`) and `publish`: never over a file, and of two
    writers racing for a name one gets it and the other the next name (or finds its bytes)."""
    for target in targets:
        if not os.path.lexists(target):
            with temp_copy(target.parent, data, prefix) as temp:
                try:
                    publish(temp, target)
                    return target, True
                except FileExistsError:
                    pass
        _settle(target, None)  # another writer's empty claim: compare the bytes it is putting there
        if holds(target, data):
            return target, False
    return None


def holds(path: str | os.PathLike[str], data: bytes, dir_fd: int | None = None) -> bool:
    """Whether `path` is a regular file (not a symlink) of exactly these bytes (size first: no read
    for most mismatches). With `dir_fd` (an open folder, POSIX), `path` is a name in it, opened
    without following a symlink there (nor blocking on a FIFO)."""
    try:
        if dir_fd is None:
            info = os.lstat(path)
            return stat.S_ISREG(info.st_mode) and info.st_size == len(data) and Path(path).read_bytes() == data
        with os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW | NONBLOCK | CLOEXEC | BINARY, dir_fd=dir_fd), "rb") as f:
            info = os.fstat(f.fileno())
            return stat.S_ISREG(info.st_mode) and info.st_size == len(data) and f.read() == data
    except OSError:
        return False


#: errno → (error type, what happened, what to do) for writes that failed on the disk, not the path.
_DISK_ERRORS = {
    errno.ENOSPC: ("disk_full", "disk full", "free space on that disk (df -h shows what is left) and run again"),
    errno.EDQUOT: ("disk_full", "disk quota exceeded", "free space or ask for a larger quota, and run again"),
    errno.EFBIG: ("disk_full", "file too large for the disk or the file size limit (ulimit -f)",
                  "free space, raise the limit (ulimit -f), or write to another disk"),
    errno.EROFS: ("read_only", "read-only file system", "write to another folder, or remount that disk read-write"),
}
_HINTS = {
    errno.ENOENT: "check that the file or folder exists",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EISDIR: "give a file, not a folder",
}


def os_error(exc: OSError) -> PicpipeError:
    """An OSError as a record's error, naming the file: a full or read-only disk said as such
    (`disk_full`, `read_only`), anything else `io` with the hint that fits it."""
    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in _DISK_ERRORS:
        kind, problem, hint = _DISK_ERRORS[exc.errno]
        return PicpipeError(kind, f"{where}{problem}", hint)
    return PicpipeError("io", f"{where}{exc.strerror or exc}",
                        _HINTS.get(exc.errno or 0, "check the file, its folder and the disk"))


def pread(fd: int, size: int, offset: int) -> bytes:
    """`os.pread`: up to `size` bytes at `offset`, the file position untouched. Windows has no
    pread: there a seek and a read, under one lock so that threads sharing a descriptor (pp-server's
    ledger) never move each other's position, which is put back after."""
    if _os_pread is not None:
        return _os_pread(fd, size, offset)
    with _seek_lock:
        position = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)
        finally:
            os.lseek(fd, position, os.SEEK_SET)


_os_pread: Callable[[int, int, int], bytes] | None = getattr(os, "pread", None)
_seek_lock = threading.Lock()
