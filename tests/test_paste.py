"""pp-paste and picpipe.clipboard, with fake clipboard tools on PATH.

One fake (a Python script, linked as wl-paste, xclip, osascript and powershell) answers as
the real tool does, from a JSON file named by FAKE_CLIPBOARD: the types offered, the bytes of
each, or (osascript, powershell) the line the script prints and the image it writes. It
checks the arguments it gets and logs them, so the tests see which calls were made.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import command_path, parse_jsonl
from picpipe import clipboard
from picpipe.errors import PicpipeError

FAKE = f"""#!{sys.executable}
import json, os, re, shutil, sys, time

name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
args = sys.argv[1:]
spec = json.load(open(os.environ["FAKE_CLIPBOARD"]))
with open(spec["log"], "a") as log:
    log.write(json.dumps([name, *args]) + "\\n")
if spec.get("hang"):
    time.sleep(60)
if spec.get("fail"):
    sys.stderr.write(spec["fail"])
    sys.exit(1)


def give(kind):
    if kind not in spec.get("data", {{}}):
        sys.stderr.write("Clipboard content is not available as requested type\\n")
        sys.exit(1)
    with open(spec["data"][kind], "rb") as f:
        sys.stdout.buffer.write(f.read())


def answer(out):
    if spec.get("image"):
        shutil.copy(spec["image"], out)
    print(spec["answer"])


if name == "wl-paste":
    if args == ["--list-types"]:
        if not spec["types"]:
            sys.stderr.write("Nothing is copied\\n")
            sys.exit(1)
        print("\\n".join(spec["types"]))
    else:
        assert args[:2] == ["--no-newline", "--type"] and len(args) == 3, args
        give(args[2])
elif name == "xclip":
    assert args[:3] == ["-selection", "clipboard", "-t"] and args[4:] == ["-o"], args
    if args[3] == "TARGETS":
        if not spec["types"]:
            sys.stderr.write("Error: target TARGETS not available\\n")
            sys.exit(1)
        print("\\n".join(["TARGETS", "TIMESTAMP", *spec["types"]]))
    else:
        give(args[3])
elif name == "osascript":
    assert all(args[i] == "-e" for i in range(0, len(args) - 1, 2)), args
    script = "\\n".join(args[1:-1:2])
    assert "the clipboard as «class PNGf»" in script and "on run argv" in script, script
    answer(args[-1])
elif name == "powershell":
    assert args[:4] == ["-NoProfile", "-NonInteractive", "-STA", "-Command"], args
    script = args[4]
    assert "Get-Clipboard -Format Image" in script, script
    answer(re.search(r"\\.Save\\('((?:[^']|'')*)'", script).group(1).replace("''", "'"))
else:
    sys.exit("unknown fake " + name)
"""

TOOLS = {"wayland": "wl-paste", "x11": "xclip", "macos": "osascript", "windows": "powershell"}


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (5, 3)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


class Clipboard:
    """The fake tools' bin folder and what they answer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "fakebin"
        self.bin.mkdir()
        self.spec = root / "clipboard.json"
        self.log = root / "tools.log"
        self.write(types=[])

    def install(self, *names: str) -> None:
        for name in names:
            tool = self.bin / name
            tool.write_text(FAKE)
            tool.chmod(0o755)

    def write(self, **spec: object) -> None:
        self.spec.write_text(json.dumps({"log": str(self.log), **spec}))

    def file(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def offer(self, types: dict[str, bytes]) -> None:
        """wl-paste / xclip: these types, in this order, with these bytes."""
        data = {kind: self.file(f"offer-{i}", value) for i, (kind, value) in enumerate(types.items())}
        self.write(types=list(data), data=data)

    def answer(self, line: str, image: bytes | None = None) -> None:
        """osascript / powershell: the line the script prints, and the image it writes."""
        self.write(answer=line, image=self.file("answer.png", image) if image is not None else None)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def env(self, platform: str | None = None, **more: str) -> dict[str, str]:
        env = {"PATH": str(self.bin), "FAKE_CLIPBOARD": str(self.spec), "WAYLAND_DISPLAY": "", "DISPLAY": "", **more}
        if platform == "wayland":
            env["WAYLAND_DISPLAY"] = "wayland-1"
        elif platform == "x11":
            env["DISPLAY"] = ":0"
        elif platform is not None:
            env[clipboard.PLATFORM_ENV] = platform
        return env


@pytest.fixture
def clip(tmp_path: Path) -> Clipboard:
    return Clipboard(tmp_path)


@pytest.fixture
def paste(run, clip: Clipboard):
    def _paste(*args: str, platform: str | None = "wayland", **env: str) -> subprocess.CompletedProcess:
        return run("pp-paste", *args, extra_env=clip.env(platform, **env))

    return _paste


@pytest.fixture
def lib_env(monkeypatch: pytest.MonkeyPatch, clip: Clipboard):
    """The same environment for calls of the library in this process."""
    def _set(platform: str | None, **more: str) -> None:
        for key, value in clip.env(platform, **more).items():
            monkeypatch.setenv(key, value)
    monkeypatch.delenv(clipboard.PLATFORM_ENV, raising=False)
    return _set


def one(result: subprocess.CompletedProcess) -> dict:
    records = parse_jsonl(result.stdout)
    assert len(records) == 1, result
    return records[0]


def pasted_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "picpipe" / "pasted"


# -- an image on the clipboard, each platform -----------------------------------------------

def test_wayland_image(paste, clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    image = png()
    clip.offer({"text/html": b"<img src=x>", "image/png": image, "image/jpeg": b"\xff\xd8\xff"})
    result = paste()
    assert result.returncode == 0, result.stderr
    record = one(result)
    assert record["path"] == record["source"]
    assert Path(record["path"]).parent == pasted_dir(tmp_path)
    assert Path(record["path"]).read_bytes() == image
    assert Path(record["path"]).name == f"paste-{record['sha256'][:12]}.png"
    assert (record["format"], record["mime"], record["width"], record["height"], record["size"]) == \
        ("png", "image/png", 5, 3, len(image))
    assert record["pasted"]["tool"] == "wl-paste" and record["pasted"]["type"] == "image/png"
    assert record["pasted"]["at"].endswith("Z")
    assert clip.calls() == [["wl-paste", "--list-types"], ["wl-paste", "--no-newline", "--type", "image/png"]]
    assert result.stderr == ""


def test_x11_image(paste, clip: Clipboard) -> None:
    clip.install("xclip", "wl-paste")  # wl-paste installed, but no Wayland session
    clip.offer({"UTF8_STRING": b"hello", "image/png": png()})
    record = one(paste(platform="x11"))
    assert record["pasted"] == {**record["pasted"], "tool": "xclip", "type": "image/png"}
    assert [call[0] for call in clip.calls()] == ["xclip", "xclip"]
    assert clip.calls()[1] == ["xclip", "-selection", "clipboard", "-t", "image/png", "-o"]


def test_wayland_first_then_xwayland(paste, clip: Clipboard) -> None:
    """Both sessions: wl-paste when installed, else xclip on the XWayland clipboard."""
    clip.offer({"image/png": png()})
    clip.install("xclip")
    assert one(paste(DISPLAY=":0"))["pasted"]["tool"] == "xclip"
    clip.install("wl-paste")
    assert one(paste(DISPLAY=":0"))["pasted"]["tool"] == "wl-paste"


def test_other_image_types(paste, clip: Clipboard) -> None:
    """No PNG offered: the next format that may be published."""
    clip.install("wl-paste")
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 90, 200)).save(out, "JPEG")
    clip.offer({"image/tiff": b"II*\x00", "image/jpeg": out.getvalue()})
    record = one(paste())
    assert (record["format"], record["pasted"]["type"]) == ("jpeg", "image/jpeg")
    assert record["path"].endswith(".jpg")


def test_macos_image(paste, clip: Clipboard) -> None:
    clip.install("osascript")
    image = png((0, 128, 0))
    clip.answer("image", image)
    result = paste(platform="macos")
    record = one(result)
    assert result.returncode == 0 and Path(record["path"]).read_bytes() == image
    assert record["pasted"]["tool"] == "osascript" and record["pasted"]["type"] == "«class PNGf»"


def test_windows_image_temp_path_with_a_quote(paste, clip: Clipboard, tmp_path: Path) -> None:
    """The temp file's path goes into the PowerShell script as a literal: a quote in it is escaped."""
    clip.install("powershell")
    odd = tmp_path / "it's temp"
    odd.mkdir()
    image = png((10, 10, 250))
    clip.answer("image", image)
    result = paste(platform="windows", TMPDIR=str(odd))
    record = one(result)
    assert result.returncode == 0, result.stderr
    assert Path(record["path"]).read_bytes() == image
    assert record["pasted"]["tool"] == "powershell" and record["pasted"]["type"] == "Image"
    assert list(odd.iterdir()) == []  # the temp file is gone


def test_read_image_library(lib_env, clip: Clipboard) -> None:
    clip.install("wl-paste")
    image = png()
    clip.offer({"image/png": image})
    lib_env("wayland")
    assert clipboard.read_image() == (image, "image/png")


# -- no image -------------------------------------------------------------------------------

@pytest.mark.parametrize("platform", ["wayland", "x11", "macos", "windows"])
def test_text_only(paste, clip: Clipboard, tmp_path: Path, platform: str) -> None:
    clip.install(TOOLS[platform])
    if platform in ("wayland", "x11"):
        clip.offer({"text/plain;charset=utf-8": b"hello", "UTF8_STRING": b"hello"})
    else:
        clip.answer("none\ttext")
    result = paste(platform=platform)
    assert result.returncode == 1
    record = one(result)
    assert set(record) == {"error"}
    assert record["error"]["stage"] == "paste" and record["error"]["type"] == "clipboard_empty"
    assert "holds text" in record["error"]["message"] and "not an image" in record["error"]["message"]
    assert "holds text" in result.stderr and "copy an image" in result.stderr
    if platform in ("wayland", "x11"):  # the types offered are named; X11's TARGETS and TIMESTAMP are not
        assert "(text/plain;charset=utf-8, UTF8_STRING)" in record["error"]["message"]
    assert not pasted_dir(tmp_path).exists()


@pytest.mark.parametrize("platform", ["wayland", "x11", "macos", "windows"])
def test_empty_clipboard(paste, clip: Clipboard, platform: str) -> None:
    clip.install(TOOLS[platform])
    if platform in ("macos", "windows"):
        clip.answer("none")
    result = paste(platform=platform)
    assert result.returncode == 1
    assert one(result)["error"]["type"] == "clipboard_empty"
    assert "the clipboard is empty" in result.stderr


@pytest.mark.parametrize("platform, hint", [
    ("wayland", "install wl-clipboard"), ("x11", "install xclip"),
    ("macos", "osascript is part of macOS"), ("windows", "Windows PowerShell is part of Windows"),
])
def test_tool_missing(paste, lib_env, clip: Clipboard, platform: str, hint: str) -> None:
    clip.install(*(tool for name, tool in TOOLS.items() if name != platform))  # every other tool
    result = paste(platform=platform)
    assert result.returncode == 2 and result.stdout == ""
    assert f"{TOOLS[platform]} was not found on PATH" in result.stderr and hint in result.stderr
    assert "Traceback" not in result.stderr
    lib_env(platform)
    with pytest.raises(PicpipeError) as caught:
        clipboard.read_image()
    assert caught.value.type == "no_clipboard_tool" and hint in (caught.value.hint or "")


def test_no_session(paste, clip: Clipboard) -> None:
    clip.install("wl-paste", "xclip")
    result = paste(platform=None)
    assert result.returncode == 2
    assert "neither WAYLAND_DISPLAY nor DISPLAY is set" in result.stderr


def test_tool_fails(paste, clip: Clipboard) -> None:
    clip.install("wl-paste")
    clip.write(fail="Failed to connect to a Wayland server\n")
    result = paste()
    assert result.returncode == 1
    error = one(result)["error"]
    assert error["type"] == "clipboard_failed"
    assert "exit status 1: Failed to connect to a Wayland server" in error["message"]
    assert "WAYLAND_DISPLAY" in error["hint"]


@pytest.mark.parametrize("platform", ["macos", "windows"])
def test_script_fails(paste, clip: Clipboard, platform: str) -> None:
    clip.install(TOOLS[platform])
    clip.write(fail="execution error: Not authorized to send Apple events (-1743)\n")
    error = one(paste(platform=platform))["error"]
    assert error["type"] == "clipboard_failed" and "Not authorized to send Apple events" in error["message"]


def test_tool_hangs(lib_env, clip: Clipboard) -> None:
    clip.install("wl-paste")
    clip.write(types=[], hang=True)
    lib_env("wayland")
    start = time.monotonic()
    with pytest.raises(PicpipeError) as caught:
        clipboard.read_image(timeout=0.5)
    assert time.monotonic() - start < 3
    assert caught.value.type == "clipboard_timeout" and "wl-paste gave no answer within 0.5 s" in caught.value.message


def test_hung_tool_and_its_children_are_killed(lib_env, clip: Clipboard, tmp_path: Path) -> None:
    """A shell script whose child holds the pipe open: the whole process group goes."""
    tool = clip.bin / "xclip"
    pidfile = tmp_path / "child.pid"
    tool.write_text(f"#!/bin/sh\n/bin/sleep 60 &\necho $! > {pidfile}\nwait\n")
    tool.chmod(0o755)
    lib_env("x11")
    start = time.monotonic()
    with pytest.raises(PicpipeError) as caught:
        clipboard.read(timeout=0.5)
    assert time.monotonic() - start < 3 and caught.value.type == "clipboard_timeout"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the tool's child still runs")


# -- copied files ---------------------------------------------------------------------------

def test_copied_file(paste, clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    shots = tmp_path / "my shots"
    shots.mkdir()
    image = png((1, 2, 3))
    (shots / "a b.png").write_bytes(image)
    uri = (shots / "a b.png").as_uri()
    clip.offer({"text/uri-list": f"# copied\r\n{uri}\r\n".encode(), "x-special/gnome-copied-files": b"copy"})
    result = paste()
    assert result.returncode == 0, result.stderr
    record = one(result)
    assert record["path"] == record["source"] == str(shots / "a b.png")
    assert record["pasted"]["type"] == "text/uri-list"
    assert (record["format"], record["width"], record["size"]) == ("png", 5, len(image))
    assert not pasted_dir(tmp_path).exists()  # the file is the original: not copied


def test_copied_files_one_not_an_image(paste, clip: Clipboard, tmp_path: Path) -> None:
    """Each copied file is a record; a key file copied by mistake is refused, the image goes on."""
    clip.install("xclip")
    good = Path(clip.file("good.png", png()))
    secret = Path(clip.file("id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----\n"))
    clip.offer({"text/uri-list": f"{good.as_uri()}\n{secret.as_uri()}\n".encode()})
    result = paste(platform="x11")
    assert result.returncode == 1
    first, second = parse_jsonl(result.stdout)
    assert first["path"] == str(good) and "error" not in first
    assert second["path"] == str(secret) and second["error"]["type"] == "not_an_image"
    assert "--any-file" not in second["error"]["hint"]
    assert "BEGIN OPENSSH" not in result.stdout + result.stderr


@pytest.mark.parametrize("platform", ["macos", "windows"])
def test_copied_file_script(paste, clip: Clipboard, tmp_path: Path, platform: str) -> None:
    clip.install(TOOLS[platform])
    path = clip.file("shot.png", png())
    clip.answer(f"file\t{path}")
    record = one(paste(platform=platform))
    assert record["path"] == path
    assert record["pasted"]["type"] == {"macos": "«class furl»", "windows": "FileDropList"}[platform]


def test_web_uri_list_then_the_image(paste, clip: Clipboard) -> None:
    """A browser's Copy Image may offer the image's http URL as text/uri-list: the image is taken."""
    clip.install("wl-paste")
    clip.offer({"text/uri-list": b"https://example.com/a.png\n", "image/png": png()})
    record = one(paste())
    assert record["pasted"]["type"] == "image/png"


def test_file_paths() -> None:
    listed = "# comment\r\nfile:///tmp/a%20b.png\r\nhttps://x/y.png\nfile://localhost/tmp/c.png\nfile://other/d.png\n\n"
    assert clipboard.file_paths(listed) == ("/tmp/a b.png", "/tmp/c.png")


def test_file_paths_decode_once_as_links_reads_file_urls() -> None:
    """links.file_url_path is the one reading: %2525 is a literal %25 in the name, on Windows too."""
    listed = "file:///tmp/100%2525.png\nfile:///C:/My%20Pics/100%2525.png\n"
    assert clipboard.file_paths(listed, windows=False) == ("/tmp/100%25.png", "C:/My Pics/100%25.png")
    assert clipboard.file_paths(listed, windows=True) == ("\\tmp\\100%25.png", "C:\\My Pics\\100%25.png")


# -- what is no image is no file --------------------------------------------------------------

@pytest.mark.parametrize("data, kind", [(png()[:-20], "truncated"), (b"<html><body>hi</body></html>", "not_an_image"),
                                        (b"", "empty")])
def test_refused_by_the_publish_check(paste, clip: Clipboard, tmp_path: Path, data: bytes, kind: str) -> None:
    clip.install("wl-paste")
    clip.offer({"image/png": data})
    result = paste()
    assert result.returncode == 1
    record = one(result)
    assert record["error"]["type"] == kind and record["pasted"]["type"] == "image/png"
    assert "the clipboard's image/png (wl-paste)" in record["error"]["message"]
    assert "--any-file" not in record["error"]["hint"]
    assert "path" not in record
    assert not pasted_dir(tmp_path).exists() or list(pasted_dir(tmp_path).iterdir()) == []


# -- names ------------------------------------------------------------------------------------

def test_same_image_twice_same_file(paste, clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    clip.offer({"image/png": png()})
    first, second = one(paste()), one(paste())
    assert first["path"] == second["path"]
    assert len(list(pasted_dir(tmp_path).iterdir())) == 1


def test_never_over_another_image(paste, clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    out = tmp_path / "shots"
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    clip.offer({"image/png": red})
    first = one(paste("--out", str(out), "--name", "{year}/shot{ext}"))
    clip.offer({"image/png": blue})
    second = one(paste("--out", str(out), "--name", "{year}/shot{ext}"))
    assert Path(first["path"]).read_bytes() == red  # untouched
    assert Path(first["path"]).name == "shot.png" and Path(first["path"]).parent.parent == out
    assert Path(second["path"]).name == f"shot-{second['sha256'][:12]}.png"
    assert Path(second["path"]).read_bytes() == blue
    again = one(paste("--out", str(out), "--name", "{year}/shot{ext}"))
    assert again["path"] == second["path"]
    assert sorted(p.name for p in Path(first["path"]).parent.iterdir()) == ["shot-" + second["sha256"][:12] + ".png",
                                                                           "shot.png"]


def test_out_from_environment(paste, clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    clip.offer({"image/png": png()})
    record = one(paste(PICPIPE_PASTE_OUT=str(tmp_path / "env-out")))
    assert Path(record["path"]).parent == tmp_path / "env-out"


def test_usage_errors(paste, clip: Clipboard) -> None:
    clip.install("wl-paste")
    result = paste("--name", "{nope}.png")
    assert result.returncode == 2 and "unknown placeholder {nope}" in result.stderr
    assert paste("--bogus").returncode == 2
    assert clip.calls() == []  # nothing read before the options are right


# -- the pipeline ---------------------------------------------------------------------------

def test_paste_then_upload(env: dict[str, str], clip: Clipboard, tmp_path: Path) -> None:
    clip.install("wl-paste")
    image = png((9, 99, 199))
    clip.offer({"image/png": image})
    site = tmp_path / "site"
    full = {**env, **clip.env("wayland"), "PICPIPE_LOCAL_DIR": str(site),
            "PICPIPE_LOCAL_BASE_URL": "https://img.example.com/", "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl")}
    pasted = subprocess.run([command_path("pp-paste")], capture_output=True, env=full, cwd=tmp_path, timeout=60)
    uploaded = subprocess.run([command_path("pp-upload"), "--host", "local"], input=pasted.stdout,
                              capture_output=True, env=full, cwd=tmp_path, timeout=60)
    assert pasted.returncode == uploaded.returncode == 0, uploaded.stderr
    record = one(subprocess.CompletedProcess([], 0, uploaded.stdout.decode(), ""))
    assert record["url"].startswith("https://img.example.com/") and record["pasted"]["tool"] == "wl-paste"
    assert (site / record["key"]).read_bytes() == image


def test_piclist_name(paste, clip: Clipboard, tmp_path: Path) -> None:
    """PicList's rename placeholders work in --name; with no {ext}, the extension is appended."""
    clip.install("wl-paste")
    clip.offer({"image/png": png()})
    record = one(paste("--name", "{Y}/{md5-16}"))
    path = Path(record["path"])
    assert path.suffix == ".png" and len(path.stem) == 16 and path.parent.name == time.strftime("%Y", time.gmtime())


def test_closed_stdout_reads_nothing(env: dict[str, str], clip: Clipboard, tmp_path: Path) -> None:
    """With nowhere to write the record, the clipboard is not read and no file is made."""
    clip.install("wl-paste")
    clip.offer({"image/png": png()})
    result = subprocess.run(f"'{command_path('pp-paste')}' >&-", shell=True, capture_output=True, text=True,
                            env={**env, **clip.env("wayland")}, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "standard output is closed" in result.stderr
    assert clip.calls() == [] and not pasted_dir(tmp_path).exists()
