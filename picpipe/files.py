"""Reading the user's files, with each way that fails named for a person."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from picpipe.errors import PicpipeError


def read_source(path: str) -> bytes:
    """The bytes of an input file, with the ways that fails named for a person."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise PicpipeError("not_found", f"{path}: no such file",
                           "check the path (relative to the current folder)") from None
    except IsADirectoryError:
        raise PicpipeError("is_a_folder", f"{path} is a folder",
                           "give image files, e.g. find DIR -name '*.png'") from None
    except PermissionError:
        raise PicpipeError("unreadable", f"{path}: permission denied", "check the file's permissions") from None


@contextmanager
def temp_copy(folder: Path, data: bytes, prefix: str) -> Iterator[str]:
    """`data` written and fsynced to a temp file in `folder`, removed on exit unless moved away:
    the caller renames or links it into place, so a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield temp
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


#: How image files begin (the formats browsers show); SVG is text and is looked for in its head.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"), (b"\x00\x00\x01\x00", "ico"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def image_type(path: str) -> str | None:
    """The image format a file's first bytes show, or None: what an editor may hand to the
    pipeline is an image, never ~/.ssh/id_rsa or a .txt."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError:
        return None
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
        return "avif" if head[8:11] == b"avi" else "heic"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head.lower():
        return "svg"
    return None
