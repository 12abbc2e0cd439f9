"""picpipe.locks with both its backends: flock on the file itself (POSIX), and filelock on a
companion file (the Windows path, driven here by setting MANDATORY); the ledger's concurrent
appenders through the Windows path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from picpipe import locks
from picpipe.ledger import Ledger
from picpipe.pace import Pacer

BACKENDS = ["flock", "companion"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(locks, "MANDATORY", request.param == "companion")
    return request.param


def held_elsewhere(fd: int, readers: Path | None, shared: bool = False) -> bool:
    """Whether another descriptor (another open file, as another process has) cannot take the lock now."""
    with locks.locked(fd, shared=shared, wait=False, readers=readers) as free:
        return not free


def test_exclusive_excludes_other_open_files_and_is_released(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ledger.jsonl"
    one, two = os.open(path, os.O_RDWR | os.O_CREAT), os.open(path, os.O_RDONLY)
    try:
        with locks.locked(one, readers=path) as free:
            assert free and held_elsewhere(two, path)
            assert os.read(two, 10) == b""  # readers without the lock are never refused
        assert not held_elsewhere(two, path)
    finally:
        os.close(one)
        os.close(two)
    assert (tmp_path / "ledger.jsonl.lock").exists() == (backend == "companion")


def test_shared_locks_share_on_posix_and_wait_out_a_writer(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ledger.jsonl"
    one, two = os.open(path, os.O_RDWR | os.O_CREAT), os.open(path, os.O_RDONLY)
    try:
        with locks.locked(one, shared=True, readers=path):
            # flock shares; on Windows a shared lock is taken exclusive (only held for an fstat)
            assert held_elsewhere(two, path, shared=True) == (backend == "companion")
            assert held_elsewhere(two, path)
        done = threading.Event()

        def read_size() -> None:
            with locks.locked(two, shared=True, readers=path):
                done.set()

        with locks.locked(one, readers=path):
            waiter = threading.Thread(target=read_size)
            waiter.start()
            time.sleep(0.1)
            assert not done.is_set()  # waits for the writer
        waiter.join(5)
        assert done.is_set()
    finally:
        os.close(one)
        os.close(two)


def test_lock_file_try_and_wait(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "state" / "sync.lock"
    with locks.lock_file(path) as fd:
        assert fd is not None
        os.write(fd, b"mine")
        with locks.lock_file(path, wait=False) as other:
            assert other is None
    with locks.lock_file(path, wait=False) as fd:
        assert fd is not None and os.read(fd, 10) == b"mine"
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert not path.with_name("sync.lock.lock").exists()  # a lock file is locked itself


def test_an_exception_releases_the_lock(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "x"
    with pytest.raises(RuntimeError), locks.lock_file(path):
        raise RuntimeError("boom")
    with locks.lock_file(path, wait=False) as fd:
        assert fd is not None


def test_threads_counting_through_a_locked_file(tmp_path: Path, backend: str) -> None:
    """Each thread opens its own descriptor, as processes do: 8 × 50 read-increment-writes, none lost."""
    path = tmp_path / "count"

    def work() -> None:
        for _ in range(50):
            with locks.lock_file(path) as fd:
                assert fd is not None
                value = int(os.read(fd, 20) or b"0")
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, str(value + 1).encode())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() == "400"


def test_the_ledger_and_the_pacer_work_through_each_backend(tmp_path: Path, backend: str) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with ledger:
        assert ledger.append_new({"sha256": "a" * 64, "host": "h", "key": "k", "url": "https://x.example/k"})
        assert not ledger.append_new({"sha256": "a" * 64, "host": "h", "key": "k", "url": "https://x.example/k"})
    assert [s["key"] for s in Ledger(tmp_path / "ledger.jsonl").states_for(["a" * 64])] == ["k"]
    assert (tmp_path / "ledger.jsonl.lock").exists() == (backend == "companion")
    pacer = Pacer(tmp_path / "pace" / "acct.times", budget=2, window=60)
    assert pacer._take(1000.0) == 0 and pacer._take(1000.5) == 0
    assert pacer._take(1001.0) == pytest.approx(59.0)
    assert not pacer.broken


def test_posix_uses_no_library(tmp_path: Path) -> None:
    """The default on POSIX is the kernel's flock: filelock is not even imported (start-up time)."""
    code = ("import sys; from pathlib import Path; from picpipe.ledger import Ledger\n"
            f"Ledger(Path({str(tmp_path / 'l.jsonl')!r})).append([{{'url': 'https://x.example/a'}}])\n"
            "print('filelock' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == ("True" if os.name == "nt" else "False"), result.stderr


APPENDER = """
import json, sys
from picpipe import locks
locks.MANDATORY = True  # the Windows path: filelock on ledger.jsonl.lock
from picpipe.ledger import Ledger
ledger = Ledger(sys.argv[1])
for i in range(int(sys.argv[3])):
    ledger.append([{"url": f"https://x.example/{sys.argv[2]}/{i}", "writer": int(sys.argv[2]), "i": i,
                    "pad": "x" * 300}])
"""


def test_four_appenders_times_1000_through_the_companion_lock(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, str(ledger), str(w), "1000"], env=env,
                              stderr=subprocess.PIPE) for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    lines = ledger.read_text().splitlines()
    assert len(lines) == 4000
    seen = {(entry["writer"], entry["i"]) for entry in map(json.loads, lines)}
    assert seen == {(w, i) for w in range(4) for i in range(1000)}


# -- the companion file (Windows path) where the ledger's folder is linked or read-only ---------------
@pytest.fixture
def companion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "MANDATORY", True)


def test_two_spellings_of_one_ledger_share_one_companion(tmp_path: Path, companion: None) -> None:
    """Through a symlink (a junction on Windows): the lock is the real file's, as flock's is the inode's."""
    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    real, linked = tmp_path / "real" / "ledger.jsonl", tmp_path / "other" / "ledger.jsonl"
    real.touch()
    linked.symlink_to(real)
    one, two = os.open(real, os.O_RDWR), os.open(linked, os.O_RDONLY)
    try:
        with locks.locked(one, readers=real) as free:
            assert free and held_elsewhere(two, linked)
    finally:
        os.close(one)
        os.close(two)
    assert sorted(p.name for p in tmp_path.rglob("*.lock")) == ["ledger.jsonl.lock"]


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """read_only(companion) → tmp_path/ro: a folder this user may read, not write (also as root:
    os.open is refused there as Windows refuses it on a read-only share), holding a ledger of one
    line, and its companion lock file when `companion` says (made by a user who may write there)."""
    folder = tmp_path / "ro"

    def make(companion: bool) -> Path:
        folder.mkdir()
        with Ledger(folder / "ledger.jsonl") as ledger:
            ledger.append([{"sha256": "a" * 64, "host": "h", "key": "k", "url": "https://x.example/k"}])
        lock = folder / "ledger.jsonl.lock"
        lock.touch() if companion else lock.unlink(missing_ok=True)
        real_open = os.open

        def refuse_writes(path: object, flags: int, *args: object, **kwargs: object) -> int:
            if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(13, "Access is denied", str(path))
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", refuse_writes)
        folder.chmod(0o555)
        return folder

    yield make
    if folder.exists():
        folder.chmod(0o755)


def test_a_ledger_in_a_read_only_folder_is_read_without_a_companion(read_only, companion: None) -> None:
    folder = read_only(companion=False)
    assert [s["key"] for s in Ledger(folder / "ledger.jsonl").states_for(["a" * 64])] == ["k"]
    fd = os.open(folder / "ledger.jsonl", os.O_RDONLY)
    try:
        with locks.locked(fd, shared=True, readers=folder / "ledger.jsonl") as free:
            assert free
    finally:
        os.close(fd)
    assert not (folder / "ledger.jsonl.lock").exists()


def test_a_companion_there_in_a_read_only_folder_is_locked_read_only(read_only, companion: None) -> None:
    ledger = read_only(companion=True) / "ledger.jsonl"
    one, two = os.open(ledger, os.O_RDONLY), os.open(ledger, os.O_RDONLY)
    try:
        with locks.locked(one, readers=ledger) as free:
            assert free and held_elsewhere(two, ledger)
        assert not held_elsewhere(two, ledger)
    finally:
        os.close(one)
        os.close(two)
