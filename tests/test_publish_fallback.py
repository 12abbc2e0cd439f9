"""picpipe.files.publish where hard links are refused (FAT32, exFAT, SMB shares, Windows): each
fallback forced (os.link made to fail as those file systems fail, renameat2 made unsupported),
the no-overwrite guarantee under races, and each of the five writers end to end."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path, PureWindowsPath

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from fakehost import FakeHandler, serving
from picpipe import files
from picpipe.backup import FolderTarget
from picpipe.errors import PicpipeError
from picpipe.files import publish, temp_copy, write_first_free
from picpipe.hosts.local import LocalHost, folder_url
from picpipe.links import file_url_path

#: How os.link fails where a file system makes no hard links: errno names, or win:<winerror>.
REFUSALS = ["EPERM", "EOPNOTSUPP", "ENOSYS", "EMLINK", "EACCES", "win:1", "win:5", "win:50", "win:87", "win:1142"]
#: The fallbacks: renameat2 as this kernel has it; a file system that says EINVAL to its flag;
#: a C library without it (both end in the O_EXCL claim).
MODES = ["noreplace", "einval", "absent"]


def refusal(code: str) -> OSError:
    if code.startswith("win:"):  # how CPython raises a Windows error: errno mapped, winerror kept
        exc = OSError(errno.EINVAL, "Incorrect function")
        exc.winerror = int(code[4:])  # type: ignore[attr-defined]
        return exc
    number = getattr(errno, code)
    return OSError(number, os.strerror(number))


def force(monkeypatch: pytest.MonkeyPatch, code: str, mode: str) -> list[tuple]:
    """os.link refused with `code`; the no-replace rename as `mode` says; returns the link calls."""
    calls: list[tuple] = []

    def refuse(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise refusal(code)

    monkeypatch.setattr(os, "link", refuse)
    if mode == "einval":
        def unsupported(*args: object) -> int:
            ctypes.set_errno(errno.EINVAL)
            return -1
        monkeypatch.setattr(files, "_noreplace_rename", lambda: unsupported)
    elif mode == "absent":
        monkeypatch.setattr(files, "_noreplace_rename", lambda: None)
    return calls


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# -- the helper -----------------------------------------------------------------------------
def test_a_hard_link_where_the_file_system_makes_them(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    with temp_copy(tmp_path, b"one", ".pp-t-") as temp:
        publish(temp, target)
        assert os.path.samefile(temp, target)  # linked, not copied
    with temp_copy(tmp_path, b"two", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, target)
    assert target.read_bytes() == b"one" and temps(tmp_path) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", REFUSALS)
def test_each_refusal_falls_back_and_never_overwrites(monkeypatch, tmp_path: Path, code: str, mode: str) -> None:
    calls = force(monkeypatch, code, mode)
    target = tmp_path / "a.png"
    with temp_copy(tmp_path, b"first", ".pp-t-") as temp:
        publish(temp, target)
    assert calls and target.read_bytes() == b"first"
    with temp_copy(tmp_path, b"second", ".pp-t-") as temp:
        with pytest.raises(FileExistsError):
            publish(temp, target)
        assert Path(temp).read_bytes() == b"second"  # still there for the caller's other name
    assert target.read_bytes() == b"first" and temps(tmp_path) == []


@pytest.mark.parametrize("code", ["EXDEV", "ENOSPC", "EROFS"])
def test_other_link_errors_are_not_hidden_by_a_fallback(monkeypatch, tmp_path: Path, code: str) -> None:
    force(monkeypatch, code, "noreplace")
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(OSError) as raised:
        publish(temp, tmp_path / "a.png")
    assert raised.value.errno == getattr(errno, code) and not (tmp_path / "a.png").exists()


def test_winerror_decides_on_windows_not_the_mapped_errno() -> None:
    assert files.links_refused(refusal("win:1")) and files.links_refused(refusal("EPERM"))
    exdev = OSError(errno.EXDEV, "Not same device")
    exdev.winerror = 17  # type: ignore[attr-defined]  # ERROR_NOT_SAME_DEVICE
    assert not files.links_refused(exdev) and not files.links_refused(OSError(errno.ENOSPC, "full"))


def test_the_real_renameat2_refuses_a_taken_name(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"new")
    (tmp_path / "dst").write_bytes(b"old")
    if files._noreplace_rename() is None:
        pytest.skip("this C library has no renameat2")
    with pytest.raises(FileExistsError):
        files.rename_noreplace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == b"old"
    assert files.rename_noreplace(tmp_path / "src", tmp_path / "new") and (tmp_path / "new").read_bytes() == b"new"


def test_windows_renames_with_os_rename(monkeypatch, tmp_path: Path) -> None:
    """On Windows os.rename is MoveFileExW without MOVEFILE_REPLACE_EXISTING: it refuses a taken
    name itself. Here only the dispatch is seen (POSIX rename replaces): a stand-in that refuses."""
    def move_file(src: object, dst: object) -> None:
        if os.path.lexists(dst):  # type: ignore[arg-type]
            raise FileExistsError(errno.EEXIST, "Cannot create a file when that file already exists", dst)
        os.replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setattr(os, "rename", move_file)
    monkeypatch.setattr(files, "_noreplace_rename", lambda: pytest.fail("no C rename on Windows"))
    force(monkeypatch, "win:1", "noreplace")
    target = tmp_path / "a.png"
    for data in (b"one", b"two"):
        with temp_copy(tmp_path, data, ".pp-t-") as temp:
            try:
                publish(temp, target)
            except FileExistsError:
                assert data == b"two"
    assert target.read_bytes() == b"one"


@pytest.mark.parametrize("mode", MODES)
def test_dir_fd_names_as_restore_uses_them(monkeypatch, tmp_path: Path, mode: str) -> None:
    force(monkeypatch, "EPERM", mode)
    (tmp_path / "sub").mkdir()
    top, folder = os.open(tmp_path, os.O_RDONLY), os.open(tmp_path / "sub", os.O_RDONLY)
    try:
        with temp_copy(tmp_path, b"one", ".pp-t-", dir_fd=top) as temp:
            publish(temp, "a.png", src_dir_fd=top, dst_dir_fd=folder)
        with temp_copy(tmp_path, b"two", ".pp-t-", dir_fd=top) as temp, pytest.raises(FileExistsError):
            publish(temp, "a.png", src_dir_fd=top, dst_dir_fd=folder)
    finally:
        os.close(top)
        os.close(folder)
    assert (tmp_path / "sub" / "a.png").read_bytes() == b"one" and temps(tmp_path) == []


def test_a_failed_rename_over_the_claim_removes_only_the_claim(monkeypatch, tmp_path: Path) -> None:
    force(monkeypatch, "EPERM", "absent")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(OSError, match="No space"):
        publish(temp, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
    (tmp_path / "b.png").write_bytes(b"someone else's")
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == b"someone else's"


@pytest.fixture
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for another writer's claim, a tenth of its second."""
    monkeypatch.setattr(files, "SETTLE", 0.1, raising=False)


def aged(path: Path, seconds: float) -> Path:
    os.utime(path, (time.time() - seconds,) * 2)
    return path


def test_a_fresh_empty_file_reads_as_a_taken_name(monkeypatch, tmp_path: Path, quick_settle) -> None:
    force(monkeypatch, "EPERM", "absent")
    (tmp_path / "a.png").touch()  # a writer between its claim and its rename, or one that just died
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, tmp_path / "a.png")
    placed = write_first_free(b"x", [tmp_path / "a.png", tmp_path / "a-2.png"], ".pp-t-")
    assert placed == (tmp_path / "a-2.png", True) and (tmp_path / "a.png").read_bytes() == b""


def test_a_claim_abandoned_by_a_crash_is_removed_and_the_name_taken(monkeypatch, tmp_path: Path,
                                                                   quick_settle) -> None:
    force(monkeypatch, "EPERM", "absent")
    (tmp_path / "a.png").touch()
    aged(tmp_path / "a.png", files.CLAIM_ABANDONED + 5)
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp:
        publish(temp, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == b"x" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    aged(tmp_path / "a.png", 3600)  # an old file with bytes is never a claim
    with temp_copy(tmp_path, b"y", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == b"x"


def test_a_dead_claim_is_removed_by_one_writer_at_a_time(monkeypatch, tmp_path: Path, quick_settle) -> None:
    force(monkeypatch, "EPERM", "absent")
    target = tmp_path / "a.png"
    target.touch()
    aged(target, 120)
    (tmp_path / "a.png.pp-reclaim").touch()  # another writer is removing it
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, target)
    assert target.read_bytes() == b"" and (tmp_path / "a.png.pp-reclaim").exists()


def test_a_dead_claim_replaced_by_a_fresh_one_meanwhile_is_left(monkeypatch, tmp_path: Path, quick_settle) -> None:
    """Two writers found the dead claim; the first removed it and claimed the name anew: the
    second, checking under the guard, finds that fresh claim and leaves it."""
    force(monkeypatch, "EPERM", "absent")
    target = tmp_path / "a.png"
    target.touch()
    aged(target, 120)
    settle = files._settle

    def first_writer_meanwhile(*args: object) -> os.stat_result | None:
        left = settle(*args)  # type: ignore[arg-type]
        target.unlink()
        keep = tmp_path / "keep"  # the old inode stays taken: the fresh claim gets another
        keep.touch()
        target.touch()
        return left

    monkeypatch.setattr(files, "_settle", first_writer_meanwhile)
    before = target.stat().st_ino
    with temp_copy(tmp_path, b"x", ".pp-t-") as temp, pytest.raises(FileExistsError):
        publish(temp, target)
    assert target.exists() and target.stat().st_ino != before and target.read_bytes() == b""
    assert not (tmp_path / "a.png.pp-reclaim").exists()


@pytest.mark.parametrize("age", [0, 120])
def test_the_local_host_names_an_empty_file_and_frees_an_abandoned_one(monkeypatch, tmp_path: Path,
                                                                       quick_settle, age: int) -> None:
    force(monkeypatch, "EPERM", "absent")
    host = LocalHost({"name": "local", "type": "local", "dir": str(tmp_path)})
    key = "2026/12/85c1d332c6f6.png"
    target = host.path(key)
    target.parent.mkdir(parents=True)
    target.touch()
    aged(target, age)
    if not age:
        with pytest.raises(PicpipeError) as raised:
            host.put(key, b"image", "image/png")
        assert raised.value.type == "empty_file" and str(target) in raised.value.message
        assert target.read_bytes() == b""
    else:
        assert not host.put(key, b"image", "image/png").reused and target.read_bytes() == b"image"


def test_ctrl_c_after_the_rename_keeps_the_published_file(monkeypatch, tmp_path: Path) -> None:
    """A KeyboardInterrupt that arrives as os.replace returns: the name holds the image, not the
    claim, and is left alone."""
    force(monkeypatch, "EPERM", "absent")
    replace = os.replace

    def interrupted(*args: object, **kwargs: object) -> None:
        replace(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with temp_copy(tmp_path, b"image", ".pp-t-") as temp, pytest.raises(KeyboardInterrupt):
        publish(temp, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == b"image"


def test_write_first_free_waits_for_a_claim_of_the_same_bytes(tmp_path: Path) -> None:
    """Another writer's empty claim at the name, filled a moment later with these very bytes:
    found there, not written again under the next name."""
    target = tmp_path / "a.png"
    target.touch()

    def fill() -> None:
        time.sleep(0.2)
        (tmp_path / "other.tmp").write_bytes(b"same")
        os.replace(tmp_path / "other.tmp", target)

    filler = threading.Thread(target=fill)
    filler.start()
    try:
        placed = write_first_free(b"same", [target, tmp_path / "a-2.png"], ".pp-t-")
    finally:
        filler.join()
    assert placed == (target, False) and not (tmp_path / "a-2.png").exists()


def test_windows_rename_refuses_dir_fds(monkeypatch, tmp_path: Path) -> None:
    """os.rename on Windows drops dir fds without a word: refused as os.link refuses them."""
    renamed: list[tuple] = []
    with monkeypatch.context() as windows:  # undone before pytest reports (it builds paths from os.name)
        windows.setattr(os, "name", "nt")
        windows.setattr(os, "rename", lambda *args, **kwargs: renamed.append(args))
        with pytest.raises(NotImplementedError) as raised:
            files.rename_noreplace("a", "b", src_dir_fd=3, dst_dir_fd=3)
    assert raised.type is NotImplementedError and renamed == []


# -- races: exactly one writer gets a name, the other's bytes go elsewhere -----------------------
def race(publishers: int, body) -> list:
    """Run body(i) in `publishers` threads released together; their results."""
    gate = threading.Barrier(publishers)
    results: list = [None] * publishers

    def one(i: int) -> None:
        gate.wait()
        try:
            results[i] = body(i)
        except FileExistsError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("mode", MODES)
def test_two_threads_one_name_exactly_one_wins(monkeypatch, tmp_path: Path, mode: str) -> None:
    force(monkeypatch, "EPERM", mode)
    for round_ in range(40):
        target = tmp_path / f"{round_}.png"

        def put(i: int, target: Path = target) -> bytes:
            data = f"writer {i}".encode()
            with temp_copy(tmp_path, data, ".pp-t-") as temp:
                publish(temp, target)
            return data

        results = race(2, put)
        won = [r for r in results if isinstance(r, bytes)]
        assert len(won) == 1 and sum(isinstance(r, FileExistsError) for r in results) == 1, results
        assert target.read_bytes() == won[0]
    assert temps(tmp_path) == []


@pytest.mark.parametrize("mode", MODES)
def test_racing_writers_keep_every_image(monkeypatch, tmp_path: Path, mode: str) -> None:
    """Different bytes: one takes the name, the other the name with its hash; the same bytes: one
    file, found by the other (the claim's empty moment is waited out)."""
    force(monkeypatch, "EPERM", mode)
    for round_ in range(20):
        def put(i: int, round_: int = round_) -> tuple[Path, bool] | None:
            data = b"same" if round_ % 2 else f"image {i}".encode()
            digest = hashlib.sha256(data).hexdigest()
            return write_first_free(data, [tmp_path / f"{round_}{n}.png" for n in ("", "-" + digest[:12])], ".pp-t-")

        results = race(2, put)
        assert all(isinstance(r, tuple) for r in results), results
        if round_ % 2:
            assert results[0][0] == results[1][0] and sorted(r[1] for r in results) == [False, True]
            assert results[0][0].read_bytes() == b"same"
        else:
            assert {r[0].read_bytes() for r in results} == {b"image 0", b"image 1"}
            assert all(r[1] for r in results)


def _publish_in_child(target: str, data: bytes, gate, queue) -> None:
    folder = os.path.dirname(target)
    gate.wait()
    with temp_copy(Path(folder), data, ".pp-t-") as temp:
        try:
            publish(temp, target)
            queue.put("won")
        except FileExistsError:
            queue.put("taken")


def test_two_processes_one_name_in_the_last_fallback(monkeypatch, tmp_path: Path) -> None:
    force(monkeypatch, "EPERM", "absent")  # forked children keep the patches
    fork = multiprocessing.get_context("fork")
    for round_ in range(10):
        target, gate, queue = str(tmp_path / f"{round_}.png"), fork.Barrier(2), fork.Queue()
        children = [fork.Process(target=_publish_in_child, args=(target, b"child %d" % i, gate, queue))
                    for i in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
        assert sorted(queue.get(timeout=5) for _ in children) == ["taken", "won"]
        assert Path(target).read_bytes() in (b"child 0", b"child 1")


# -- the five writers, end to end -----------------------------------------------------------
@pytest.fixture
def no_links(tmp_path: Path, env: dict[str, str]):
    """An environment whose Python processes have os.link refused as `code` says (each refusal
    logged to tmp_path/refused.log), and the no-replace rename as `mode` says: renameat2 as the
    kernel has it, or absent (a sitecustomize on PYTHONPATH)."""
    site = tmp_path / "nolinks"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import ctypes, errno, os\n"
        "code, mode = os.environ['PP_TEST_LINK'], os.environ['PP_TEST_RENAME']\n"
        "def refuse(*args, **kwargs):\n"
        "    with open(os.environ['PP_TEST_LOG'], 'a') as log: log.write(repr(args) + '\\n')\n"
        "    if code.startswith('win:'):\n"
        "        exc = OSError(errno.EINVAL, 'Incorrect function'); exc.winerror = int(code[4:]); raise exc\n"
        "    raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))\n"
        "os.link = refuse\n"
        "if mode == 'absent':\n"
        "    import picpipe.files\n"
        "    picpipe.files._noreplace_rename = lambda: None\n")

    def _env(code: str = "EPERM", mode: str = "noreplace") -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]]), "PP_TEST_LINK": code,
                "PP_TEST_RENAME": mode, "PP_TEST_LOG": str(tmp_path / "refused.log")}

    return _env


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def refused(tmp_path: Path) -> int:
    """How many links the processes of `no_links` were refused."""
    log = tmp_path / "refused.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize(("code", "mode"), [("EPERM", "noreplace"), ("win:1", "absent"), ("EOPNOTSUPP", "absent")])
def test_upload_to_the_local_host(run, no_links, tmp_path: Path, code: str, mode: str) -> None:
    images = []
    for i in range(3):
        images.append(tmp_path / f"p{i}.png")
        images[-1].write_bytes(png((i * 60, 10, 10)))
    extra = {**no_links(code, mode), "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl")}
    first = run("pp-upload", "--host", "local", *map(str, images), extra_env=extra)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for image, record in zip(images, records):
        path = Path(file_url_path(record["url"]))
        assert path.read_bytes() == image.read_bytes() and os.stat(path).st_nlink == 1
        assert temps(path.parent) == [] and temps(tmp_path / "data" / "picpipe" / "host") == []
    extra["PICPIPE_LEDGER"] = str(tmp_path / "other.jsonl")  # no dedupe: each file is written again
    again = run("pp-upload", "--host", "local", *map(str, images), extra_env=extra)
    assert again.returncode == 0, again.stderr  # the same bytes at the same names: no conflict
    assert [r["url"] for r in parse_jsonl(again.stdout)] == [r["url"] for r in records]
    assert refused(tmp_path) == 6


class OneImage(FakeHandler):
    def handle_request(self) -> None:
        data = self.server.objects.get(self.path.split("?")[0])
        if data is None:
            self.reply(404, "<html>Not Found</html>", content_type="text/html")
        else:
            self.reply(200, data, content_type="image/png")


def test_fetch(run, no_links, tmp_path: Path) -> None:
    red = png((255, 0, 0))
    out = tmp_path / "fetched"
    (out / "127.0.0.1" / "a").mkdir(parents=True)
    (out / "127.0.0.1" / "a" / "x.png").write_bytes(b"a file of the user's")
    extra = {**no_links("win:50", "absent"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with serving(OneImage) as site:
        site.objects.update({"/a/x.png": red, "/b/x.png": red})
        paths = []
        for url in ("/a/x.png", "/b/x.png", "/a/x.png"):
            result = run("pp-fetch", "--out", str(out), input=jsonl([{"url": site.url + url}]), extra_env=extra)
            assert result.returncode == 0, result.stderr
            paths.append(Path(parse_jsonl(result.stdout)[0]["path"]))
    assert (out / "127.0.0.1" / "a" / "x.png").read_bytes() == b"a file of the user's"  # never over a file
    assert paths[0] == paths[2] == out / "127.0.0.1" / "a" / f"x-{hashlib.sha256(red).hexdigest()[:12]}.png"
    assert paths[1] == out / "127.0.0.1" / "b" / "x.png"
    assert all(p.read_bytes() == red for p in paths)
    assert not [p for p in out.rglob("*") if p.name.startswith(".pp-fetch-")]
    assert refused(tmp_path) == 2  # the third found its bytes


def test_paste(run, no_links, tmp_path: Path) -> None:
    from test_paste import Clipboard

    clip = Clipboard(tmp_path)
    clip.install("wl-paste")
    out = tmp_path / "shots"
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    paths = []
    for data in (red, blue, blue):
        clip.offer({"image/png": data})
        result = run("pp-paste", "--out", str(out), "--name", "shot{ext}",
                     extra_env={**clip.env("wayland"), **no_links("EPERM", "absent")})
        assert result.returncode == 0, result.stderr
        paths.append(parse_jsonl(result.stdout)[0]["path"])
    assert Path(paths[0]).read_bytes() == red  # never over another image
    assert Path(paths[1]).name == f"shot-{hashlib.sha256(blue).hexdigest()[:12]}.png" == Path(paths[2]).name
    assert Path(paths[1]).read_bytes() == blue
    assert sorted(p.name for p in out.iterdir()) == sorted({Path(p).name for p in paths})
    assert refused(tmp_path) == 2  # the third found its bytes


def test_backup_to_a_folder_and_restore(run, no_links, tmp_path: Path) -> None:
    originals = []
    for i in range(3):
        originals.append(tmp_path / "in" / f"p{i}.png")
        originals[-1].parent.mkdir(exist_ok=True)
        originals[-1].write_bytes(png((i * 50, 90, 9)))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in originals]
    env = {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(tmp_path / "usb"), **no_links("win:1", "absent")}
    ledger = tmp_path / "ledger.jsonl"
    uploaded = [{"path": str(p), "host": "old", "key": f"x/{p.name}", "url": f"https://dead.example/x/{p.name}"}
                for p in originals]
    backup = run("pp-backup", "--to", "usb", "--ledger", str(ledger), input=jsonl(uploaded), extra_env=env)
    assert backup.returncode == 0, backup.stderr
    assert "3 copied" in backup.stderr
    again = run("pp-backup", "--to", "usb", "--ledger", str(ledger), input=jsonl(uploaded), extra_env=env)
    assert again.returncode == 0 and "0 copied, 3 already there" in again.stderr
    dead = [{**r, "error": {"stage": "check", "type": "http_404", "message": "gone"}}
            for r in parse_jsonl(backup.stdout)]
    out = tmp_path / "restored"
    (out / "x").mkdir(parents=True)
    (out / "x" / "p0.png").write_bytes(b"a file of the user's")
    result = run("pp-backup", "restore", "--out", str(out), input=jsonl(dead), extra_env=env)
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert [hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() for r in records] == digests
    assert (out / "x" / "p0.png").read_bytes() == b"a file of the user's"  # never over a file
    assert Path(records[0]["path"]).name == f"p0-{digests[0][:12]}.png"
    assert not [p for p in out.rglob("*") if p.name.startswith(".pp-restore")]
    assert refused(tmp_path) == 3 + 3  # three copies, three restored (one to the hashed name, by rename)


@pytest.mark.parametrize("mode", MODES)
def test_ledger_segments_on_a_folder_target(monkeypatch, tmp_path: Path, mode: str) -> None:
    """FolderTarget.write_new (the ledger sync's segments): its racy exists()-then-replace is gone."""
    force(monkeypatch, "EACCES", mode)
    target = FolderTarget({"type": "local", "dir": str(tmp_path / "usb"), "name": "usb"})
    assert target.write_new("ledger/seg-1.jsonl", b"one\n", "ledger/.seg-1.tmp")
    assert not target.write_new("ledger/seg-1.jsonl", b"two\n", "ledger/.seg-1b.tmp")
    assert (tmp_path / "usb" / "ledger" / "seg-1.jsonl").read_bytes() == b"one\n"
    assert sorted(p.name for p in (tmp_path / "usb" / "ledger").iterdir()) == ["seg-1.jsonl"]
    results = race(2, lambda i: target.write_new("ledger/seg-2.jsonl", b"%d\n" % i, f"ledger/.seg-2-{i}.tmp"))
    assert sorted(results) == [False, True]


def test_a_segment_is_written_by_temp_copy(monkeypatch, tmp_path: Path) -> None:
    """FolderTarget.write_new goes through temp_copy: its temp file under the name the sync
    recorded, made close-on-exec and removed at exit should Ctrl-C stop the thread mid-way."""
    from picpipe import backup

    target = FolderTarget({"type": "local", "dir": str(tmp_path / "usb"), "name": "usb"})
    opened: dict[str, int] = {}
    real_open, real_publish = os.open, backup.publish

    def record_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        opened[os.fspath(path)] = flags  # type: ignore[arg-type]
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def publish_seen(temp: str, path: object, *args: object) -> None:
        assert temp == str(tmp_path / "usb" / "ledger" / ".seg-1.tmp") and temp in files._live
        real_publish(temp, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", record_open)
    monkeypatch.setattr(backup, "publish", publish_seen)
    assert target.write_new("ledger/seg-1.jsonl", b"one\n", "ledger/.seg-1.tmp")
    assert opened[str(tmp_path / "usb" / "ledger" / ".seg-1.tmp")] & files.CLOEXEC == files.CLOEXEC != 0
    assert not files._live and sorted(p.name for p in (tmp_path / "usb" / "ledger").iterdir()) == ["seg-1.jsonl"]


def test_ledger_sync_to_a_folder_with_no_links(run, no_links, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps({"sha256": "a" * 64, "host": "h", "key": "k", "url": "https://x.example/k"}) + "\n")
    env = {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(tmp_path / "usb"), **no_links("ENOSYS", "absent")}
    push = run("pp-backup", "ledger", "--to", "usb", "--ledger", str(ledger), extra_env=env)
    assert push.returncode == 0, push.stderr
    segments = [p for p in (tmp_path / "usb").rglob("*") if p.is_file()]
    assert segments and not [p for p in segments if p.name.endswith(".tmp")]
    assert refused(tmp_path) >= 1


# -- file: URLs of the local host on Windows ------------------------------------------------
@pytest.mark.parametrize(("folder", "url", "path"), [
    ("C:/Users/me/host", "file:///C:/Users/me/host/", r"C:\Users\me\host"),
    ("//server/share/host", "file://server/share/host/", r"\\server\share\host"),
    ("D:/", "file:///D:/", "D:\\"),
])
def test_windows_file_urls_round_trip(folder: str, url: str, path: str) -> None:
    base = folder_url(PureWindowsPath(folder))
    assert base == url
    key = "2024/05/图 a.png"
    from urllib.parse import quote

    assert file_url_path(base + quote(key), windows=True) == str(PureWindowsPath(path, *key.split("/")))
    assert file_url_path("file://localhost/C:/a%20b.png", windows=True) == r"C:\a b.png"


def test_posix_file_urls_round_trip(tmp_path: Path) -> None:
    from urllib.parse import quote

    base = folder_url(tmp_path / "host 图")
    assert base.startswith("file:///") and base.endswith("/")
    assert file_url_path(base + quote("a b.png"), windows=False) == str(tmp_path / "host 图" / "a b.png")
