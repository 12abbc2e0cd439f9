"""The commands on a system without POSIX's extras, as on Windows: no `os.pread` (the ledger, its
index and its sync read by seek and read), no `/dev/stdin` (`pp-mark merge -` copies stdin first),
no `os.fchmod` (pp-rewrite sets a document's mode by name), no `O_NONBLOCK`, `O_NOFOLLOW`,
`O_CLOEXEC` or `os.uname`. A sitecustomize on PYTHONPATH takes them away from the real commands."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from picpipe import files

NO_POSIX = (
    "import os\n"
    "del os.pread, os.fchmod, os.O_NONBLOCK, os.O_NOFOLLOW, os.O_CLOEXEC, os.uname\n"
    "import picpipe.commands.mark\n"
    "picpipe.commands.mark.STDIN = os.path.join(os.sep, 'no', 'dev', 'stdin')\n"
)


@pytest.fixture
def windows_like(env, tmp_path: Path) -> dict[str, str]:
    """extra_env for `run`: the commands start without pread, fchmod and /dev/stdin."""
    site = tmp_path / "no-posix"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_POSIX)
    extra = {"PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]])}
    check = "import os; assert not any(hasattr(os, n) for n in ('pread', 'fchmod', 'O_NONBLOCK', 'uname'))"
    subprocess.run([sys.executable, "-c", check], env={**env, **extra}, check=True)
    return extra


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_seek_and_read_stand_in_reads_what_pread_reads_and_keeps_the_position(tmp_path, monkeypatch):
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 64)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        expected = [os.pread(fd, 37, offset) for offset in range(0, 16384, 997)]
        monkeypatch.setattr(files, "_os_pread", None)
        results: list[list[bytes]] = []

        def reader() -> None:
            results.append([files.pread(fd, 37, offset) for offset in range(0, 16384, 997)])

        threads = [threading.Thread(target=reader) for _ in range(8)]  # one descriptor, eight threads
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [expected] * 8
        assert os.lseek(fd, 0, os.SEEK_CUR) == 100
        assert files.pread(fd, 10, 16380) == bytes(range(252, 256))  # short at the end, as pread is
    finally:
        os.close(fd)


def test_ledger_index_and_lookups_without_pread(run, tmp_path, windows_like):
    folder = tmp_path / "images"
    folder.mkdir()
    images = {f"{n}.png": png((n * 40, 10, 200)) for n in range(5)}
    for name, data in images.items():
        (folder / name).write_bytes(data)
    ledger = str(tmp_path / "ledger.jsonl")
    local = {"PICPIPE_LOCAL_DIR": str(tmp_path / "host"), **windows_like}
    uploaded = run("pp-upload", "--host", "local", "--ledger", ledger, *map(str, sorted(folder.iterdir())),
                   extra_env=local)
    assert uploaded.returncode == 0, uploaded.stderr
    marked = run("pp-mark", "--ledger", ledger, input=uploaded.stdout, extra_env=windows_like)
    assert marked.returncode == 0, marked.stderr
    again = run("pp-upload", "--host", "local", "--ledger", ledger, str(folder / "3.png"), extra_env=local)
    assert parse_jsonl(again.stdout)[0]["deduped"] is True  # the look-up read the ledger by offset
    digest = hashlib.sha256(images["2.png"]).hexdigest()
    for rebuild in ((), ("index", "--rebuild")):
        if rebuild:
            assert run("pp-mark", "--ledger", ledger, *rebuild, extra_env=windows_like).returncode == 0
        found = run("pp-mark", "--ledger", ledger, "find", "--sha256", digest, extra_env=windows_like)
        assert [r["sha256"] for r in parse_jsonl(found.stdout)] == [digest], found.stderr


def test_merge_from_stdin_without_dev_stdin(run, tmp_path, windows_like):
    other = [{"sha256": hashlib.sha256(str(n).encode()).hexdigest(), "url": f"https://img.example.com/{n}.png",
              "host": "github", "key": f"{n}.png", "at": "2026-01-02T03:04:05.000Z"} for n in range(3)]
    ledger, temp = tmp_path / "ledger.jsonl", tmp_path / "temp"
    temp.mkdir()
    merged = run("pp-mark", "--ledger", str(ledger), "merge", "-", input=jsonl(other),
                 extra_env={**windows_like, "TMPDIR": str(temp)})
    assert merged.returncode == 0, merged.stderr
    assert [r["url"] for r in parse_jsonl(ledger.read_text())] == [r["url"] for r in other]
    assert list(temp.iterdir()) == []  # the copy of stdin is gone


def test_rewrite_keeps_the_documents_mode_without_fchmod(run, tmp_path, windows_like):
    doc = tmp_path / "post.md"
    doc.write_text("![a](https://old.example/a.png)\n")
    doc.chmod(0o640)
    record = {"url": "https://new.example/a.png", "replaces": "https://old.example/a.png"}
    result = run("pp-rewrite", str(doc), input=jsonl([record]), extra_env=windows_like)
    assert result.returncode == 0, result.stderr
    assert doc.read_text() == "![a](https://new.example/a.png)\n"
    assert stat.S_IMODE(doc.stat().st_mode) == 0o640


def test_a_ledger_sync_without_pread(run, tmp_path, windows_like):
    from test_ledger_sync import Machine, Place, lines, records

    root = tmp_path / "server"
    place = Place({"PICPIPE_NAS_TYPE": "local", "PICPIPE_NAS_DIR": str(root / "backup")}, root / "backup")
    laptop, desktop = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "desktop", place)
    laptop.append(records("a", 30))
    desktop.append(records("b", 20))
    assert "sent 30 lines" in laptop.sync(**windows_like).stderr
    both = desktop.sync(**windows_like).stderr
    assert "sent 20 lines" in both and "received 30 lines" in both
    assert "20 added" in laptop.sync(**windows_like).stderr
    assert lines(laptop.ledger) == lines(desktop.ledger) and len(lines(laptop.ledger)) == 50


def test_every_os_open_of_a_files_bytes_is_binary_on_windows():
    """Windows opens a descriptor in text mode unless told O_BINARY: reads would turn \\r\\n into
    \\n and stop at ^Z, corrupting images and ledgers. So every os.open in picpipe names
    files.BINARY (0 on POSIX), but those of os.devnull and of folders."""
    import ast

    root = Path(__file__).resolve().parent.parent / "picpipe"
    checked, offenders = 0, []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        binary_flags = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                        and "BINARY" in ast.unparse(node.value) for target in node.targets
                        if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "os.open"):
                continue
            checked += 1
            name, flags = ast.unparse(node.args[0]), node.args[1]
            if "BINARY" in ast.unparse(flags) or "O_DIRECTORY" in ast.unparse(flags) or name == "os.devnull" \
                    or isinstance(flags, ast.Name) and flags.id in binary_flags:
                continue
            offenders.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    assert checked > 15 and offenders == []
