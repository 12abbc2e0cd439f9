"""Windows paths on input and in documents: `C:\\Users\\me\\截图 1.png`, `C:/Users/me/x.png`, UNC
`\\\\server\\share\\x.png` and `file:///C:/...` are local paths, never URLs with the scheme `c:`.
On this (POSIX) system such a path names no file: each is an error record naming it intact. The
Windows branch (documents read on Windows) runs here with ntpath standing in for os.path.

The tests named `test_docs_patch_*` need /tmp/i18/consoles-for-lead.patch (picpipe/docs.py, the
lead's file) and fail until it is applied."""

from __future__ import annotations

import io
import json
import ntpath
import os
import types

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from picpipe.links import file_name, format_link
from picpipe.stream import read_stream

DRIVE = "C:\\Users\\me\\截图 1.png"
UNC = "\\\\server\\share\\x.png"
FORWARD = "C:/Users/me/x.png"
WINDOWS_PATHS = (DRIVE, UNC, FORWARD)


def test_a_windows_path_line_is_a_path_record_kept_intact():
    data = "".join(p + "\r\n" for p in WINDOWS_PATHS).encode() + jsonl([{"path": DRIVE}]).encode()
    records = [item.record for item in read_stream(io.BytesIO(data))]
    assert records == [{"path": p} for p in WINDOWS_PATHS] + [{"path": DRIVE}]


@pytest.mark.parametrize("name,args", [("pp-compress", ["--out", "out"]), ("pp-upload", ["--host", "local"]),
                                       ("pp-backup", ["--to", "local"])])
def test_a_windows_path_is_a_missing_file_here_named_intact(run, tmp_path, name, args):
    lines = "".join(p + "\n" for p in WINDOWS_PATHS) + jsonl([{"path": DRIVE}])
    result = run(name, *args, input=lines, extra_env={"PICPIPE_LOCAL_DIR": str(tmp_path / "host")})
    out = parse_jsonl(result.stdout)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [r["path"] for r in out] == [*WINDOWS_PATHS, DRIVE]
    for record in out:
        assert record["error"]["type"] == "not_found", record
        assert record["error"]["message"].startswith(record["path"] + ": "), record
        assert "url" not in record
    assert f"line 1: {DRIVE}: no such file" in result.stderr


def test_pp_link_names_an_image_by_the_last_part_of_a_windows_path(run):
    assert file_name({"source": UNC}) == "x.png" and file_name({"path": FORWARD}) == "x.png"
    record = {"url": "https://img.example.com/a.png", "source": DRIVE}
    assert format_link(record, "md") == "![截图 1](https://img.example.com/a.png)"
    result = run("pp-link", "--template", "$fileName$extName", input=jsonl([record]))
    assert result.stdout == "截图 1.png\n", result.stderr


def test_a_windows_path_argument_is_no_url(run, tmp_path):
    """`pp-upload C:\\x.png` on POSIX: a missing file, not a URL with the scheme c."""
    result = run("pp-upload", "--host", "local", DRIVE, FORWARD,
                 extra_env={"PICPIPE_LOCAL_DIR": str(tmp_path / "host")})
    assert result.returncode == 1
    assert [r["error"]["type"] for r in parse_jsonl(result.stdout)] == ["not_found", "not_found"]


# -- documents (picpipe/docs.py: the patch for the lead) ------------------------------------------
POST = """\
# Typora on Windows wrote this

![a](C:\\Users\\me\\截图%201.png)

![b](<C:\\Users\\me\\截图 1.png>)

![c](C:/Users/me/x.png)

<img src="C:\\Users\\me\\截图 2.png">

![d](file:///C:/Users/me/x.png)

![e](\\\\server\\share\\x.png)

<img src="\\\\server\\share\\y.png">

![f](file://server/share/z.png)

![g](C:\\Users\\me\\%E6%88%AA%E5%9B%BE.png)

![here](here.png)
"""


def test_docs_patch_every_windows_reference_is_a_local_path_with_a_clear_error(run, tmp_path):
    (tmp_path / "posts").mkdir()
    (tmp_path / "posts" / "post.md").write_text(POST, encoding="utf-8")
    Image.new("RGB", (8, 8)).save(tmp_path / "posts" / "here.png")
    result = run("pp-scan", "posts")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    out = parse_jsonl(result.stdout)
    expected = [DRIVE, DRIVE, FORWARD, "C:\\Users\\me\\截图 2.png", "C:/Users/me/x.png", UNC,
                "\\\\server\\share\\y.png", "\\\\server\\share\\z.png", "C:\\Users\\me\\截图.png"]
    assert [r["ref"].get("resolved") for r in out[:-1]] == expected
    for record in out[:-1]:
        assert "url" not in record and "path" not in record, record
        assert record["error"]["type"] == "not_found", record
        assert "a Windows path, no such file on this system" in record["error"]["message"], record
        ref = record["ref"]
        assert record["error"]["message"].startswith(f"posts/post.md:{ref['line']}: {ref['target']}: ")
    assert out[-1]["path"] == str(tmp_path / "posts" / "here.png") and "error" not in out[-1]
    assert [r["ref"]["target"] for r in out][:2] == ["C:\\Users\\me\\截图%201.png", DRIVE]
    assert "posts/post.md:3: C:\\Users\\me\\截图%201.png: a Windows path" in result.stderr


def test_docs_patch_cp936_console_shows_the_windows_path_error(run, tmp_path):
    (tmp_path / "post.md").write_text(f"![a](<{DRIVE}>)\n", encoding="utf-8")
    result = run("pp-scan", "post.md", input=b"", extra_env={"PYTHONIOENCODING": "cp936"})
    assert result.returncode == 1
    assert json.loads(result.stdout.decode("utf-8"))["ref"]["resolved"] == DRIVE
    assert f"post.md:1: {DRIVE}: a Windows path" in result.stderr.decode("gbk")


class WindowsOs(types.ModuleType):
    """The os module as picpipe.docs sees it on Windows: os.name, os.path and os.sep; the rest is os."""

    name, path, sep = "nt", ntpath, "\\"

    def __getattr__(self, attr: str) -> object:
        return getattr(os, attr)


@pytest.fixture
def on_windows(monkeypatch):
    """picpipe.docs, and picpipe.links beneath it, run as on Windows (their module-level os only:
    pytest itself stays on POSIX)."""
    from picpipe import docs, links

    monkeypatch.setattr(docs, "os", WindowsOs("os"))
    monkeypatch.setattr(links, "os", WindowsOs("os"))


@pytest.mark.parametrize("target,expected", [
    (DRIVE, DRIVE), (FORWARD, "C:\\Users\\me\\x.png"), (UNC, UNC),
    ("file:///C:/Users/me/x.png", "C:\\Users\\me\\x.png"), ("file:///C|/Users/me/x.png", "C:\\Users\\me\\x.png"),
    ("file://server/share/z.png", "\\\\server\\share\\z.png"), ("img\\a%20b.png", "D:\\blog\\img\\a b.png"),
])
def test_docs_patch_on_windows_a_windows_path_resolves_as_windows_does(on_windows, target, expected):
    from picpipe import docs

    assert docs.classify(target, "D:\\blog") == ("path", expected)


@pytest.mark.parametrize("target,expected", [
    (DRIVE, DRIVE), (FORWARD, FORWARD), (UNC, UNC), ("file:///C:/Users/me/x.png", FORWARD),
    ("file://server/share/z.png", "\\\\server\\share\\z.png"), ("file:///home/me/x.png", "/home/me/x.png"),
    ("c:x.png", None), ("https://img.example.com/a.png", "https://img.example.com/a.png"),
])
def test_docs_patch_on_posix_a_windows_path_is_kept_as_written(target, expected):
    from picpipe import docs

    where = docs.classify(target, "/blog")
    assert (where[1] if where else None) == expected


def test_docs_patch_markdown_does_not_eat_a_unc_paths_backslashes():
    from picpipe import docs

    refs = docs.find_refs(f"![e]({UNC})\n![f](a\\_b.png)\n", "post.md")
    assert [r.resolved for r in refs] == [UNC, os.path.abspath("a_b.png")]
