"""The clipboard's image, read with the tool each platform has (what PicGo's hotkey reads).

    from picpipe.clipboard import read_image
    data, mime = read_image()   # or PicpipeError: clipboard_empty, no_clipboard_tool, ...

The tools, per platform, in PicGo's order:
- Wayland (WAYLAND_DISPLAY set): `wl-paste --list-types`, then `wl-paste --type image/png`
  (package wl-clipboard). When wl-paste is missing and DISPLAY is set too, xclip reads the
  XWayland clipboard, which most desktops keep in step.
- X11 (DISPLAY set): `xclip -selection clipboard -t TARGETS -o`, then `-t image/png -o`.
- macOS: `osascript` with PicGo's AppleScript: the clipboard as «class PNGf» written to a
  temp file (pbpaste gives text only, never an image).
- Windows: Windows PowerShell's `Get-Clipboard -Format Image`, saved as PNG to a temp file.

A copied file (a file manager's copy: `text/uri-list`, «class furl», FileDropList) counts before
an image, as in PicGo: its own bytes are read, never a re-encoding of its icon or preview.
Whatever is read passes `publish.check`, the rule of everything that leaves the machine, so
text or a broken PNG on the clipboard is an error, never a file. Each tool runs without a
shell, with stdin closed and a timeout (TIMEOUT), in a process group of its own, so that a
hung tool and whatever it started are killed; its stderr is part of the error message.

`PICPIPE_CLIPBOARD_PLATFORM` (linux, wayland, x11, macos, windows) forces the platform: it
exists for the tests, which run the macOS and Windows paths with fake tools on Linux; it is
not a user setting.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from picpipe.errors import PicpipeError

#: Seconds a clipboard tool may take: a screenshot's PNG comes in milliseconds; more means the
#: program that owns the clipboard hangs.
TIMEOUT = 5.0
#: Tests only: force the platform (see the module's docstring).
PLATFORM_ENV = "PICPIPE_CLIPBOARD_PLATFORM"
PLATFORMS = ("linux", "wayland", "x11", "macos", "windows")

#: Image types asked for first: PNG is lossless and what every screenshot tool offers.
_PREFERRED = ("image/png", "image/webp", "image/jpeg", "image/gif", "image/avif", "image/bmp")
#: X11 targets that say how the selection works, not what it holds.
_META_TARGETS = {"TARGETS", "TIMESTAMP", "MULTIPLE", "SAVE_TARGETS", "DELETE", "INCR"}
_TEXT_TARGETS = {"UTF8_STRING", "STRING", "TEXT", "COMPOUND_TEXT"}


class Clip(NamedTuple):
    """What the clipboard gave: image bytes, or the paths of copied files."""

    tool: str
    #: The clipboard type read: image/png, text/uri-list, «class PNGf», «class furl», Image, FileDropList.
    type: str
    data: bytes | None = None
    files: tuple[str, ...] = ()


def read_image(platform: str | None = None, timeout: float = TIMEOUT) -> tuple[bytes, str]:
    """(bytes, MIME type) of the clipboard's image, or of the first copied file; checked as
    images that may be published are (a PicpipeError naming what is wrong otherwise)."""
    clip = read(platform, timeout)
    if clip.data is not None:
        data, name = clip.data, describe(clip)
    else:
        from picpipe.files import read_source
        from picpipe.publish import MAX_BYTES

        data = read_source(clip.files[0], MAX_BYTES)
        name = clip.files[0]
    return data, check_image(data, name)["mime"]


def describe(clip: Clip) -> str:
    """`the clipboard's image/png (wl-paste)`: how messages name pasted bytes."""
    return f"the clipboard's {clip.type} ({clip.tool})"


def check_image(data: bytes, name: str) -> dict[str, Any]:
    """`publish.check`, with hints for a paste (pp-paste has no --any-file to offer)."""
    from picpipe.publish import ANY_FILE, check

    try:
        return check(data, name)
    except PicpipeError as exc:
        hint = re.sub(rf"[;,]?\s*(or )?{re.escape(ANY_FILE)}( if you trust it)?", "", exc.hint or "")
        if exc.type in ("empty", "not_an_image", "truncated"):
            hint = "copy the image again (a screenshot tool, or a browser's Copy Image), then paste"
        raise PicpipeError(exc.type, exc.message, hint or None) from None


def read(platform: str | None = None, timeout: float = TIMEOUT) -> Clip:
    """The clipboard's image or copied files, by the tool of this platform (`PLATFORMS`)."""
    platform = platform or os.environ.get(PLATFORM_ENV) or current_platform()
    if platform not in PLATFORMS:
        raise PicpipeError("no_clipboard_tool", f"unknown clipboard platform {platform!r}",
                           f"{PLATFORM_ENV} is for tests: one of {', '.join(PLATFORMS)}, or unset")
    if platform == "linux":
        platform = _linux_session()
    tool = shutil.which(_TOOLS[platform])
    if tool is None:
        raise PicpipeError("no_clipboard_tool", f"{_TOOLS[platform]} was not found on PATH, so the clipboard "
                           f"cannot be read ({_SESSIONS[platform]})", _INSTALL[platform])
    return _READERS[platform](tool, timeout)


def current_platform() -> str:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return "linux"


def _linux_session() -> str:
    """wayland or x11, by the session's variables and the tools installed."""
    wayland, x11 = os.environ.get("WAYLAND_DISPLAY"), os.environ.get("DISPLAY")
    if wayland and (shutil.which("wl-paste") or not (x11 and shutil.which("xclip"))):
        return "wayland"
    if x11:
        return "x11"
    raise PicpipeError("no_clipboard_tool", "no graphical session here: neither WAYLAND_DISPLAY nor DISPLAY is "
                       "set (an SSH login or a text console has no clipboard)",
                       "run pp-paste in a terminal of the desktop session (over SSH: ssh -X, with xclip installed)")


_TOOLS = {"wayland": "wl-paste", "x11": "xclip", "macos": "osascript", "windows": "powershell"}
_SESSIONS = {"wayland": "a Wayland session", "x11": "an X11 session", "macos": "macOS", "windows": "Windows"}
_INSTALL = {
    "wayland": "install wl-clipboard (Debian/Ubuntu: sudo apt install wl-clipboard; Fedora: sudo dnf install "
               "wl-clipboard; Arch: sudo pacman -S wl-clipboard)",
    "x11": "install xclip (Debian/Ubuntu: sudo apt install xclip; Fedora: sudo dnf install xclip; "
           "Arch: sudo pacman -S xclip)",
    "macos": "osascript is part of macOS (/usr/bin/osascript): put /usr/bin back on PATH",
    "windows": "Windows PowerShell is part of Windows (powershell.exe): put "
               r"%SystemRoot%\System32\WindowsPowerShell\v1.0 back on PATH",
}


# -- running a tool -------------------------------------------------------------------------

class _Result(NamedTuple):
    code: int
    out: bytes
    err: str


def _run(tool: str, args: list[str], timeout: float) -> _Result:
    """Run `tool args` without a shell, stdin closed; a timeout kills its whole process group."""
    name = _name(tool)
    options: dict[str, Any] = ({"start_new_session": True} if os.name == "posix"
                               else {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)})
    try:
        process = subprocess.Popen([tool, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, **options)
    except OSError as exc:
        raise PicpipeError("clipboard_failed", f"{name} could not be started: {exc.strerror or exc}",
                           f"check the program at {tool}") from None
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise PicpipeError("clipboard_timeout", f"{name} gave no answer within {timeout:g} s",
                           "the program that holds the clipboard may hang: copy the image again, "
                           "or close that program and retry") from None
    except BaseException:  # Ctrl-C: leave no tool behind
        _kill(process)
        raise
    return _Result(process.returncode, out, _text(err))


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:  # gone already
        pass
    try:
        process.communicate(timeout=1)
    except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
        pass


def _name(tool: str) -> str:
    return os.path.splitext(os.path.basename(tool))[0]


def _text(data: bytes, limit: int = 300) -> str:
    """A tool's stderr as one line for a message."""
    text = " / ".join(line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _failed(tool: str, what: str, result: _Result, hint: str) -> PicpipeError:
    said = f": {result.err}" if result.err else " (and said nothing on stderr)"
    return PicpipeError("clipboard_failed", f"{_name(tool)} {what} failed with exit status {result.code}{said}", hint)


def _empty(holds: str | None) -> PicpipeError:
    if holds is None:
        message = "the clipboard is empty"
    else:
        message = f"the clipboard holds {holds}, not an image"
    return PicpipeError("clipboard_empty", message, "copy an image (a screenshot, a browser's Copy Image) or an "
                        "image file in the file manager, then paste")


def _holds(types: list[str]) -> str | None:
    """What the offered types say is there: `text (text/plain, UTF8_STRING)`, or None when nothing."""
    shown = [t for t in types if t not in _META_TARGETS]
    if not shown:
        return None
    text = any(t.startswith("text/") or t in _TEXT_TARGETS for t in shown)
    listed = ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")
    return f"{'text' if text else 'something else'} ({listed})"


def file_paths(uri_list: str, windows: bool = os.name == "nt") -> tuple[str, ...]:
    """Local paths in a text/uri-list (RFC 2483: comments start with #), read as every file: URL is
    (links.file_url_path); other URLs, and files on other machines, are left out."""
    from picpipe.links import file_url_path

    paths = []
    for line in uri_list.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = urlsplit(line)
        if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
            paths.append(file_url_path(line, windows))
    return tuple(paths)


# -- Linux ----------------------------------------------------------------------------------

def _choose(types: list[str]) -> str | None:
    """The image type to ask for: PNG first, then the formats that may be published, then any image."""
    for wanted in _PREFERRED:
        if wanted in types:
            return wanted
    return next((t for t in types if t.startswith("image/")), None)


def _offers(tool: str, ask: Callable[[str], _Result], types: list[str]) -> Clip:
    """Copied files first, then an image; else clipboard_empty saying what is there."""
    if "text/uri-list" in types:
        listed = ask("text/uri-list")
        files = file_paths(listed.out.decode("utf-8", "replace")) if listed.code == 0 else ()
        if files:
            return Clip(_name(tool), "text/uri-list", files=files)
    kind = _choose(types)
    if kind is None:
        raise _empty(_holds(types))
    result = ask(kind)
    if result.code != 0:
        raise _failed(tool, f"reading {kind}", result, "copy the image again, then paste")
    return Clip(_name(tool), kind, data=result.out)


def _wayland(tool: str, timeout: float) -> Clip:
    listed = _run(tool, ["--list-types"], timeout)
    if listed.code != 0:
        if re.search(r"nothing is copied|no selection|no suitable type", listed.err, re.I):
            raise _empty(None)
        raise _failed(tool, "--list-types", listed,
                      "check that WAYLAND_DISPLAY names the running session (echo $WAYLAND_DISPLAY)")
    types = [line.strip() for line in listed.out.decode("utf-8", "replace").splitlines() if line.strip()]
    return _offers(tool, lambda kind: _run(tool, ["--no-newline", "--type", kind], timeout), types)


def _x11(tool: str, timeout: float) -> Clip:
    listed = _run(tool, ["-selection", "clipboard", "-t", "TARGETS", "-o"], timeout)
    if listed.code != 0:
        if re.search(r"target \S+ not available", listed.err, re.I):
            raise _empty(None)
        raise _failed(tool, "-t TARGETS", listed, "check that DISPLAY names the running X server (echo $DISPLAY)")
    types = [line.strip() for line in listed.out.decode("utf-8", "replace").splitlines() if line.strip()]
    return _offers(tool, lambda kind: _run(tool, ["-selection", "clipboard", "-t", kind, "-o"], timeout), types)


# -- macOS and Windows: a script writes the image to a temp file and says what it did -----------
# Its answer, one line each: `image` (written), `file<TAB>path` (copied files), `none<TAB>what`.

_APPLESCRIPT = """\
on run argv
\tset kinds to ""
\ttry
\t\tset kinds to (clipboard info) as string
\tend try
\tif kinds contains "«class furl»" then return "file" & tab & (POSIX path of (the clipboard as «class furl»))
\ttry
\t\tset png to the clipboard as «class PNGf»
\ton error
\t\tif kinds contains "utf8" or kinds contains "string" or kinds contains "text" then return "none" & tab & "text"
\t\treturn "none"
\tend try
\tset out to open for access (POSIX file (item 1 of argv)) with write permission
\ttry
\t\tset eof out to 0
\t\twrite png to out
\ton error message
\t\tclose access out
\t\terror message
\tend try
\tclose access out
\treturn "image"
end run"""

_POWERSHELL = """\
$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = [Text.Encoding]::UTF8
Add-Type -AssemblyName System.Drawing
$files = Get-Clipboard -Format FileDropList
if ($files) { foreach ($f in $files) { "file`t" + $f.FullName }; exit 0 }
$image = Get-Clipboard -Format Image
if ($image) { $image.Save({out}, [System.Drawing.Imaging.ImageFormat]::Png); 'image'; exit 0 }
if (Get-Clipboard -Format Text -Raw) { "none`ttext" } else { 'none' }"""


def _macos(tool: str, timeout: float) -> Clip:
    args = [arg for line in _APPLESCRIPT.splitlines() for arg in ("-e", line)]
    return _scripted(tool, lambda out: _run(tool, [*args, out], timeout), "«class PNGf»", "«class furl»")


def _windows(tool: str, timeout: float) -> Clip:
    def run(out: str) -> _Result:
        script = _POWERSHELL.replace("{out}", "'" + out.replace("'", "''") + "'")
        return _run(tool, ["-NoProfile", "-NonInteractive", "-STA", "-Command", script], timeout)

    return _scripted(tool, run, "Image", "FileDropList")


def _scripted(tool: str, run: Callable[[str], _Result], image_type: str, files_type: str) -> Clip:
    folder = tempfile.mkdtemp(prefix="pp-paste-")
    out = os.path.join(folder, "clipboard.png")
    try:
        result = run(out)
        if result.code != 0:
            raise _failed(tool, "reading the clipboard", result, "copy the image again, then paste")
        lines = [line.strip("\r") for line in result.out.decode("utf-8", "replace").splitlines() if line.strip()]
        files = tuple(line.split("\t", 1)[1] for line in lines if line.startswith("file\t"))
        if files:
            return Clip(_name(tool), files_type, files=files)
        if lines[:1] == ["image"]:
            try:
                with open(out, "rb") as handle:
                    return Clip(_name(tool), image_type, data=handle.read())
            except FileNotFoundError:
                raise PicpipeError("clipboard_failed", f"{_name(tool)} said it wrote the image but no file is there",
                                   "copy the image again, then paste") from None
        holds = lines[0].split("\t", 1)[1] if lines and lines[0].startswith("none\t") else None
        raise _empty(holds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_READERS: dict[str, Callable[[str, float], Clip]] = {
    "wayland": _wayland, "x11": _x11, "macos": _macos, "windows": _windows,
}
