"""file: URLs read one way (`picpipe.links.file_url_path`) by pp-mark check, pp-scan and the local
host: a drive (file:///C:/x.png) or a UNC share (file://server/share/x.png) is a Windows path on every
system, which names no file on this one, never the POSIX path that its path part happens to be."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from picpipe import docs
from picpipe.links import file_url_path

URLS = [  # (url, on POSIX, on Windows)
    ("file:///home/me/a%20b.png", "/home/me/a b.png", "\\home\\me\\a b.png"),
    ("file://localhost/home/me/a.png", "/home/me/a.png", "\\home\\me\\a.png"),
    ("file:///C:/x/a.png", "C:/x/a.png", "C:\\x\\a.png"),
    ("file:///C|/x/a.png", "C:/x/a.png", "C:\\x\\a.png"),
    ("file://localhost/C:/a%20b.png", "C:/a b.png", "C:\\a b.png"),
    ("file://server/share/a%20b.png", "\\\\server\\share\\a b.png", "\\\\server\\share\\a b.png"),
]


@pytest.mark.parametrize(("url", "posix", "windows"), URLS)
def test_one_reading_of_file_urls(url: str, posix: str, windows: str) -> None:
    assert file_url_path(url, windows=False) == posix
    assert file_url_path(url, windows=True) == windows
    assert docs.classify(url, "/blog") == ("path", posix)  # pp-scan reads them the same way


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """tmp_path/a.png: what file://server<tmp_path>/a.png would name if the host part were dropped."""
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    return tmp_path / "a.png"


def test_pp_mark_check_calls_unc_and_drive_urls_missing_here(run, tmp_path: Path, image: Path) -> None:
    urls = [f"file://server{image}", f"file:///C:{image}", image.as_uri()]
    result = run("pp-mark", "check", "-", "--all", input=jsonl([{"url": url} for url in urls]))
    assert result.returncode == 1, result.stderr
    unc, drive, here = parse_jsonl(result.stdout)
    assert unc["error"]["type"] == drive["error"]["type"] == "file_missing"
    assert unc["error"]["message"] == "\\\\server" + str(image).replace("/", "\\") + \
        ": a Windows path, no such file on this system"
    assert drive["error"]["message"] == f"C:{image}: a Windows path, no such file on this system"
    assert "error" not in here and here["check"]["status"] is None


def test_pp_scan_reads_the_same_urls_as_windows_paths(run, tmp_path: Path, image: Path) -> None:
    (tmp_path / "post.md").write_text(f"![a](file://server{image})\n![b](file:///C:{image})\n![c]({image.as_uri()})\n")
    result = run("pp-scan", str(tmp_path / "post.md"))
    unc, drive, here = parse_jsonl(result.stdout)
    assert [r["ref"]["resolved"] for r in (unc, drive)] == [file_url_path(f"file://server{image}", windows=False),
                                                           f"C:{image}"]
    assert "a Windows path" in unc["error"]["message"] and "a Windows path" in drive["error"]["message"]
    assert here["path"] == str(image) and "error" not in here
