"""The bad-input matrix: every command × every kind of bad input (issue 13).

Each case puts one bad input between two good ones and checks the contract of DESIGN §1: the
bad one becomes an error record with a message and a hint (never `internal`), the good ones go
through untouched, the exit status is 1, and no traceback reaches the user. Files that no host
may receive are never published.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
import test_editors

from conftest import jsonl, parse_jsonl

config_env, serve = test_editors.config_env, test_editors.serve  # pp-server's fixtures

# -- fixtures: real images and the bad ones ------------------------------------------------------


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A small real PNG with some content (a gradient and a block), different per seed."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    ImageDraw.Draw(image).rectangle((seed % 20, 5, seed % 20 + 12, 20), fill=(200, 30 + seed, 90))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(seed, 96))).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A valid little PNG file that says it is 60000 × 60000 pixels (3.6 gigapixels)."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def make_bad_file(kind: str, folder: Path) -> Path:
    """One bad file (or non-file) of `kind` inside `folder`."""
    path = folder / f"bad-{kind}.png"
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated-png":
        data = png_bytes(7, 64)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-jpeg":
        path = folder / "bad-truncated.jpg"
        data = jpeg_bytes(7)
        path.write_bytes(data[: len(data) * 6 // 10])
    elif kind == "text-named-png":
        path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "symlink-loop":
        path.symlink_to(path.name)
    elif kind == "bomb":
        path.write_bytes(bomb_png())
    elif kind == "fifo":  # a named pipe nobody writes to: reading it would block forever
        os.mkfifo(path)
    else:
        raise AssertionError(kind)
    return path


BAD_FILES = ["zero-byte", "truncated-png", "truncated-jpeg", "text-named-png", "directory", "missing",
             "symlink-loop", "bomb", "fifo"]
#: A backup never decodes its originals, so no pixel limit applies to them: the bomb (a whole
#: PNG whose header says 3.6 gigapixels) is copied like any original (review finding 10).
COPIED = {("pp-backup", "bomb")}


@pytest.fixture
def good(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = folder / "good-1.png", folder / "good-2.jpg"
    first.write_bytes(png_bytes(1))
    second.write_bytes(jpeg_bytes(2))
    return [first, second]


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_contract(result, records: list[dict], bad_index: int, count: int) -> dict:
    """The bad record's error (returned) between good records that went through; exit 1, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(records) == count, result.stdout
    for index, record in enumerate(records):
        if index != bad_index:
            assert "error" not in record, record
    error = records[bad_index].get("error")
    assert isinstance(error, dict), records[bad_index]
    assert error.get("type") and error["type"] != "internal", error
    assert error.get("message") and error.get("hint"), error
    return error


# -- commands that read the bytes: every kind of bad file ----------------------------------------

#: command, its arguments, and the folder (relative to tmp_path) where anything it writes lands.
READERS = {
    "pp-compress": (["--out", "out"], "out", {}),
    "pp-upload": (["--host", "local", "--ledger", "ledger.jsonl"], "host", {"PICPIPE_LOCAL_DIR": "host"}),
    "pp-backup": (["--to", "usb", "--ledger", "ledger.jsonl"], "usb",
                  {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": "usb"}),
}


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("name", sorted(READERS))
def test_a_bad_file_is_an_error_record_and_nothing_of_it_leaves(run, tmp_path, good, name, kind):
    args, written, env = READERS[name]
    bad = make_bad_file(kind, tmp_path / "in")
    env = {key: str(tmp_path / value) if key.endswith("_DIR") else value for key, value in env.items()}
    paths = [good[0], bad, good[1]]
    result = run(name, *args, input=jsonl([{"path": str(p)} for p in paths]), extra_env=env, timeout=30)
    records = parse_jsonl(result.stdout)
    if (name, kind) in COPIED:
        assert result.returncode == 0 and len(records) == 3 and "error" not in records[1], result.stderr
        assert sorted(p.read_bytes() for p in files_in(tmp_path / written)) == sorted(p.read_bytes() for p in paths)
        return
    error = assert_contract(result, records, 1, 3)
    assert str(bad) in error["message"] or "bad-" in error["message"], error
    assert f"line 2: {error['message']}" in result.stderr or "line 2" in result.stderr
    made = files_in(tmp_path / written)
    if name != "pp-compress":  # what went out: the two good images' bytes and nothing else
        assert sorted(p.read_bytes() for p in made) == sorted(p.read_bytes() for p in good), made
    assert not any(p.name.startswith(".pp-") for p in made)


def test_typora_reports_each_bad_file_and_uploads_the_good_ones(run, tmp_path, good):
    bad = [make_bad_file(kind, tmp_path / "in") for kind in BAD_FILES]
    env = {"PICPIPE_PIPELINE_HOST": "local", "PICPIPE_LOCAL_DIR": str(tmp_path / "host"),
           "PICPIPE_LOCAL_BASE_URL": "https://img.example.com/", "PICPIPE_LEDGER": str(tmp_path / "l.jsonl")}
    result = run("pp-typora", str(good[0]), *map(str, bad), str(good[1]), extra_env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "internal" not in result.stderr, result.stderr
    for path in bad:
        assert path.name in result.stderr, (path, result.stderr)
    assert sorted(p.read_bytes() for p in files_in(tmp_path / "host")) == sorted(p.read_bytes() for p in good)


def test_server_refuses_each_bad_file_and_publishes_the_good_ones(serve, tmp_path, good):
    """pp-server, as Typora and Obsidian call it: paths in a JSON list, and files in a form."""
    server = serve()
    for kind in BAD_FILES:
        bad = make_bad_file(kind, tmp_path / "in")
        answer = server.post(json={"list": [str(good[0]), str(bad), str(good[1])]})
        assert answer.status_code == 500 and bad.name in answer.json()["message"], (kind, answer.text)
        if bad.is_file():
            form = [("files", ("a.png", good[0].read_bytes())), ("files", (bad.name, bad.read_bytes()))]
            answer = server.post(files=form)
            assert answer.status_code == 500 and answer.json()["success"] is False, (kind, answer.text)
    status, stderr = server.stop()
    assert "Traceback" not in stderr and "internal" not in stderr, stderr
    assert sorted(p.read_bytes() for p in files_in(tmp_path / "site")) == sorted(p.read_bytes() for p in good)


# -- commands that read records: every kind of bad line -------------------------------------------

BAD_LINES: dict[str, bytes] = {
    "invalid-json": b'{"path": oops}\n',
    "non-object-json": b"[1, 2, 3]\n",
    "wrong-typed-fields": b'{"path": 5, "url": 5, "sha256": ["x"], "size": "big"}\n',
    "binary": b"\x89PNG\x00\xff\xfe\xfd\x1a binary \xc3\x28\n",
    "5MB-line": b'{"path": "' + b"a" * (5 * 1024 * 1024) + b'.png"}\n',
}


def stream_cases(tmp_path: Path, good: list[Path]) -> dict[str, tuple[list[str], list[dict], dict[str, str]]]:
    """command → (arguments, the two good records, environment)."""
    with_url = [{"path": str(p), "url": f"https://img.example.com/{p.name}",
                 "sha256": __import__("hashlib").sha256(p.read_bytes()).hexdigest()} for p in good]
    paths = [{"path": str(p)} for p in good]
    return {
        "pp-compress": (["--out", str(tmp_path / "out")], paths, {}),
        "pp-upload": (["--host", "local", "--ledger", str(tmp_path / "l.jsonl")], paths,
                      {"PICPIPE_LOCAL_DIR": str(tmp_path / "host")}),
        "pp-backup": (["--to", "usb", "--ledger", str(tmp_path / "l.jsonl")], paths,
                      {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(tmp_path / "usb")}),
        "pp-link": (["--md", "--json"], with_url, {}),
        "pp-mark": (["--ledger", str(tmp_path / "l.jsonl")], with_url, {}),
        "pp-fetch": (["--out", str(tmp_path / "fetched")], paths, {}),
    }


STREAM_COMMANDS = ["pp-compress", "pp-upload", "pp-backup", "pp-link", "pp-mark", "pp-fetch"]
#: A 5 MB path is a record like any other to the stages that do not read the file: it passes.
PASSES = {("pp-mark", "5MB-line"), ("pp-fetch", "5MB-line")}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
@pytest.mark.parametrize("name", STREAM_COMMANDS)
def test_a_bad_line_is_an_error_record_naming_it(run, tmp_path, good, name, kind):
    args, records, env = stream_cases(tmp_path, good)[name]
    data = jsonl(records[:1]).encode() + BAD_LINES[kind] + jsonl(records[1:]).encode()
    result = run(name, *args, input=data, extra_env=env)
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    out = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    if (name, kind) in PASSES:
        assert result.returncode == 0 and len(out) == 3 and "error" not in out[1], stderr
        assert len(out[1]["path"]) > 5 * 1024 * 1024
        return
    error = assert_contract(type("R", (), {"stderr": stderr, "returncode": result.returncode, "stdout": stdout}),
                            out, 1, 3)
    assert "line 2" in error["message"] or "line 2" in stderr, (error, stderr)
    if kind == "wrong-typed-fields" and name == "pp-mark":
        ledger = (tmp_path / "l.jsonl").read_text()
        assert all(isinstance(json.loads(line).get("url"), str) for line in ledger.splitlines())


@pytest.mark.parametrize("name", STREAM_COMMANDS)
def test_an_image_piped_into_stdin_is_refused_line_by_line(run, tmp_path, good, name):
    args, _records, env = stream_cases(tmp_path, good)[name]
    result = run(name, *args, input=good[1].read_bytes(), extra_env=env)
    stderr = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "internal" not in stderr, stderr
    out = [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]
    assert result.returncode == 1 and out[0]["error"]["type"] == "bad_encoding", out[:1]
    assert "line 1" in out[0]["error"]["message"]


def test_rewrite_names_each_malformed_record_and_applies_the_good_ones(run, tmp_path):
    posts = tmp_path / "posts"
    posts.mkdir()
    post = posts / "a.md"
    post.write_text("![a](https://old.example.com/a.png)\n![b](https://old.example.com/b.png)\n")
    good = [{"url": "https://new.example.com/a.png", "replaces": "https://old.example.com/a.png"},
            {"url": "https://new.example.com/b.png", "replaces": "https://old.example.com/b.png"}]
    bad = [b'{"url": oops}\n', b"[1]\n", b'{"url": 5, "replaces": "https://old.example.com/c.png"}\n',
           b'{"url": "https://new.example.com/d.png", "replaces": ["x"]}\n', b"\xff\xfe\n"]
    data = jsonl(good[:1]).encode() + b"".join(bad) + jsonl(good[1:]).encode()
    result = run("pp-rewrite", "--no-backup", str(posts), input=data)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr and "internal" not in stderr, stderr
    for line in range(2, 2 + len(bad)):
        assert f"line {line}" in stderr, (line, stderr)
    assert post.read_text() == "![a](https://new.example.com/a.png)\n![b](https://new.example.com/b.png)\n"


# -- documents: pp-scan ----------------------------------------------------------------------------


def test_scan_reads_every_readable_document_around_bad_ones(run, tmp_path):
    posts = tmp_path / "posts"
    (posts / "sub").mkdir(parents=True)
    (posts / "a.md").write_text("![a](https://img.example.com/a.png)\n")
    (posts / "empty.md").write_bytes(b"")
    (posts / "binary.md").write_bytes(b"\xff\xfe\x00\x89PNG garbage")
    (posts / "loop.md").symlink_to("loop.md")
    (posts / "sub" / "up").symlink_to("..")  # a folder loop
    (posts / "z.md").write_text("![z](https://img.example.com/z.png)\n")
    result = run("pp-scan", str(posts), str(tmp_path / "missing"))
    assert "Traceback" not in result.stderr and "internal" not in result.stderr, result.stderr
    urls = [r.get("url") for r in parse_jsonl(result.stdout) if "url" in r]
    assert urls == ["https://img.example.com/a.png", "https://img.example.com/z.png"]
    assert result.returncode == 1 and "missing" in result.stderr


# -- a closed or early-closed stdout ---------------------------------------------------------------


@pytest.mark.parametrize("name, args", [("pp-link", ["--md"]), ("pp-mark", ["--ledger", "l.jsonl"]),
                                        ("pp-fetch", ["--out", "f"])])
def test_a_closed_stdout_is_a_message_not_an_internal_error(env, tmp_path, name, args):
    import subprocess

    from conftest import command_path

    records = jsonl([{"url": "https://img.example.com/a.png", "path": "a.png", "sha256": "0" * 64}])
    result = subprocess.run(f'"{command_path(name)}" {" ".join(args)} >&-', shell=True, input=records,
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert "Traceback" not in result.stderr and "internal" not in result.stderr, result.stderr
    assert result.returncode != 0 and result.stderr.strip(), result


def test_every_file_it_publishes_is_readable_by_the_web_server(run, tmp_path, good):
    old = os.umask(0o022)
    try:
        result = run("pp-upload", "--host", "local", "--ledger", str(tmp_path / "l.jsonl"), *map(str, good),
                     extra_env={"PICPIPE_LOCAL_DIR": str(tmp_path / "host")})
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    for path in files_in(tmp_path / "host"):
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))
