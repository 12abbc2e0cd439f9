"""pp-backup restore's two ways of walking --out: by open folders (POSIX, race-free) and by paths
checked at each step (Windows: no dir_fd, no O_DIRECTORY). Here the Windows way is forced
(`backup.FOLDER_FDS` off, os without O_DIRECTORY and O_NOFOLLOW, every dir_fd refused as Windows
refuses it) and each scenario runs through both ways with the same outcome; a junction is a folder
whose lstat carries the reparse-point attribute."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from picpipe import backup
from picpipe.backup import TargetFinder, restore, write_restored
from picpipe.errors import PicpipeError

#: IO_REPARSE_TAG_MOUNT_POINT (a junction), IO_REPARSE_TAG_SYMLINK, IO_REPARSE_TAG_CLOUD_6 (OneDrive).
JUNCTION, SYMLINK, CLOUD = 0xA0000003, 0xA000000C, 0x9000601A


def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The os module as Windows has it, as far as restore can tell."""
    monkeypatch.setattr(backup, "FOLDER_FDS", False)
    monkeypatch.delattr(os, "O_DIRECTORY")
    monkeypatch.delattr(os, "O_NOFOLLOW")
    for name in ("open", "mkdir", "link", "rename", "replace", "unlink", "stat"):
        monkeypatch.setattr(os, name, _without_dir_fd(getattr(os, name)))


def _without_dir_fd(call: Callable[..., Any]) -> Callable[..., Any]:
    def strict(*args: Any, **kwargs: Any) -> Any:
        if any(kwargs.get(fd) is not None for fd in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
            raise NotImplementedError(f"{call.__name__}: dir_fd unavailable on this platform")
        return call(*args, **kwargs)
    return strict


@pytest.fixture(params=["folder fds", "paths"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "paths":
        windows(monkeypatch)
    return str(request.param)


def temps(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(backup.RESTORE_TEMP)]


def test_posix_walks_by_open_folders() -> None:
    assert backup.FOLDER_FDS  # Linux has dir_fd for each call restore makes: the race-free way


def test_nested_key_folders_are_made(way: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write_restored(out, "2024/05/deep/a.png", b"one")
    assert path == out / "2024" / "05" / "deep" / "a.png" and path.read_bytes() == b"one"
    assert temps(out) == []


def test_the_same_bytes_already_there_are_that_file(way: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = write_restored(out, "x/a.png", b"one")
    again = write_restored(out, "x/a.png", b"one")
    assert first == again == out / "x" / "a.png" and os.listdir(out / "x") == ["a.png"]
    assert temps(out) == []


def test_other_bytes_go_beside_with_their_hash(way: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / "a.png").write_bytes(b"a file of the user's")
    path = write_restored(out, "x/a.png", b"two")
    assert path.name == f"a-{hashlib.sha256(b'two').hexdigest()[:12]}.png" and path.read_bytes() == b"two"
    assert write_restored(out, "x/a.png", b"two") == path  # named after its bytes: found again
    assert (out / "x" / "a.png").read_bytes() == b"a file of the user's" and temps(out) == []


def test_a_folder_link_planted_in_out_is_refused(way: str, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "x").mkdir(parents=True)
    (out / "x" / "y").symlink_to(elsewhere)  # deeper than the first step
    with pytest.raises(PicpipeError) as raised:
        write_restored(out, "x/y/z/a.png", b"one")
    assert raised.value.type == "unsafe_path" and f"{out / 'x' / 'y'} is a symlink" in raised.value.message
    assert raised.value.hint and list(elsewhere.iterdir()) == [] and temps(out) == []


def test_a_file_where_a_folder_goes_is_refused(way: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_bytes(b"a file")
    with pytest.raises(PicpipeError, match="not a folder") as raised:
        write_restored(out, "x/a.png", b"one")
    assert raised.value.type == "unsafe_path" and (out / "x").read_bytes() == b"a file"


def test_a_file_link_at_the_name_is_left_and_the_copy_goes_beside(way: str, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_bytes(b"one")  # even the very bytes: a link is never the restored file
    (out / "x").mkdir(parents=True)
    (out / "x" / "a.png").symlink_to(elsewhere / "a.png")
    path = write_restored(out, "x/a.png", b"one")
    assert path.parent == out / "x" and not path.is_symlink() and path.read_bytes() == b"one"
    assert path.name != "a.png" and (elsewhere / "a.png").read_bytes() == b"one"
    assert os.listdir(elsewhere) == ["a.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_at_the_name_is_left_without_waiting_for_a_writer(way: str, tmp_path: Path) -> None:
    """Whether the name holds these bytes is asked without blocking on a FIFO planted there."""
    import threading

    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    os.mkfifo(out / "x" / "a.png")
    placed: list[Path] = []
    worker = threading.Thread(target=lambda: placed.append(write_restored(out, "x/a.png", b"one")), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "blocked opening the FIFO"
    [path] = placed
    assert path.name == f"a-{hashlib.sha256(b'one').hexdigest()[:12]}.png" and path.read_bytes() == b"one"
    assert stat.S_ISFIFO((out / "x" / "a.png").lstat().st_mode) and temps(out) == []


def test_a_dangling_link_at_the_name_is_never_written_through(way: str, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "x").mkdir(parents=True)
    (out / "x" / "a.png").symlink_to(elsewhere / "new.png")
    path = write_restored(out, "x/a.png", b"one")
    assert path.name != "a.png" and path.read_bytes() == b"one" and list(elsewhere.iterdir()) == []


def test_where_hard_links_are_refused(way: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FAT32 and exFAT (a USB disk restored onto): the no-replace rename instead, by path too."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    (out / "x" / "a.png").write_bytes(b"mine")
    assert write_restored(out, "x/b.png", b"one").read_bytes() == b"one"
    assert write_restored(out, "x/a.png", b"two").name == f"a-{hashlib.sha256(b'two').hexdigest()[:12]}.png"
    assert (out / "x" / "a.png").read_bytes() == b"mine" and temps(out) == []


class Reparse:
    """An lstat result with the reparse-point attribute and `tag`, as Windows gives one."""

    def __init__(self, real: os.stat_result, tag: int) -> None:
        self.real, self.st_file_attributes, self.st_reparse_tag = real, stat.FILE_ATTRIBUTE_REPARSE_POINT, tag

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def reparse_point(monkeypatch: pytest.MonkeyPatch, at: Path, tag: int) -> list[Path]:
    """os.lstat says `at` is a reparse point with `tag`; returns the paths lstat was asked about."""
    real, asked = os.lstat, []

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(Path(path))
        info = real(path, *args, **kwargs)
        return Reparse(info, tag) if Path(path) == at else info

    monkeypatch.setattr(os, "lstat", lstat)
    return asked


@pytest.mark.parametrize("tag", [JUNCTION, SYMLINK, 0], ids=["junction", "symlink", "unknown tag"])
def test_a_junction_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tag: int) -> None:
    """A junction (no privilege needed to make one) lstats as a folder: only its attributes tell.
    A reparse point whose tag is unknown (0) is refused as well."""
    windows(monkeypatch)
    out = tmp_path / "out"
    (out / "x" / "j").mkdir(parents=True)  # stands for a junction to a folder elsewhere
    asked = reparse_point(monkeypatch, out / "x" / "j", tag)
    with pytest.raises(PicpipeError) as raised:
        write_restored(out, "x/j/a.png", b"one")
    assert raised.value.type == "unsafe_path" and str(out / "x" / "j") in raised.value.message
    assert asked == [out / "x", out / "x" / "j"] and list((out / "x" / "j").iterdir()) == []
    assert temps(out) == []


def test_a_onedrive_placeholder_folder_is_the_folder_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    windows(monkeypatch)
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    reparse_point(monkeypatch, out / "x", CLOUD)
    assert write_restored(out, "x/a.png", b"one") == out / "x" / "a.png"


def test_a_link_made_between_mkdir_and_the_check_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another process wins the name first: mkdir finds it taken, and the check after sees a link."""
    windows(monkeypatch)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    mkdir = os.mkdir

    def racing(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == out / "x":
            (out / "x").symlink_to(elsewhere)
        mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", racing)
    with pytest.raises(PicpipeError, match="is a symlink"):
        write_restored(out, "x/a.png", b"one")
    assert list(elsewhere.iterdir()) == []


def test_restore_by_paths_end_to_end(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What test_roots.test_restore_writes_nothing_outside_out runs as a command, through restore()."""
    windows(monkeypatch)
    usb, out, elsewhere = tmp_path / "usb", tmp_path / "restored", tmp_path / "elsewhere"
    copies = {"x/a.png": b"red", "y/b.png": b"green", "z/c.png": b"blue"}
    for key, data in copies.items():
        (usb / key).parent.mkdir(parents=True, exist_ok=True)
        (usb / key).write_bytes(data)
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(b"not yours")
    out.mkdir()
    (out / "x").symlink_to(elsewhere)
    (out / "y").mkdir()
    (out / "y" / "b.png").symlink_to(elsewhere / "b.png")
    finder = TargetFinder(lambda name: {"type": "local", "dir": str(usb), "name": name})
    results = []
    for key, data in copies.items():
        digest = hashlib.sha256(data).hexdigest()
        record = {"url": f"https://dead.example/{key}", "sha256": digest,
                  "backups": [{"target": "usb", "location": str(usb / key), "sha256": digest}]}
        try:
            results.append(restore(record, finder, out))
        except PicpipeError as exc:
            results.append({"error": exc.type})
    assert results[0] == {"error": "unsafe_path"}
    assert Path(results[1]["path"]).parent == out / "y" and Path(results[1]["path"]).read_bytes() == b"green"
    assert results[2]["path"] == str(out / "z" / "c.png") and results[2]["restored_from"]["target"] == "usb"
    assert sorted(os.listdir(elsewhere)) == ["b.png"] and (elsewhere / "b.png").read_bytes() == b"not yours"
    assert temps(out) == []
