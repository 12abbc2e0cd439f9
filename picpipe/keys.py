"""Object keys for pp-upload: a template filled from the record, then made safe.

The default `{year}/{month}/{sha256:12}{ext}` names an image by its content, so the same bytes
always get the same key and different bytes never share one. Templates may also use PicList's
rename placeholders (`{Y}/{m}/{md5-16}`, `{localFolder:2}/{filename}-{str-6}`), with PicList's
meaning, so that a format copied from PicList names files the way PicList did. Whatever the
template, the file name and its folders hold, the key that comes out is relative, has no `.` or
`..` segment, no backslash, no drive and no control character: it cannot leave the folder,
bucket or repository it is put in.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import posixpath
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass

from picpipe.errors import PicpipeError, UsageError

DEFAULT_TEMPLATE = "{year}/{month}/{sha256:12}{ext}"
#: picpipe's placeholders: dates in UTC, {timestamp} in milliseconds as PicList has it.
PLACEHOLDERS = ("name", "ext", "sha256:N", "md5:N", "year", "month", "day", "timestamp", "uuid")
#: PicList's (PicList-Core src/utils/common/rename.ts, and {auto} of its batch rename): times in
#: local time, as PicList shows them.
PICLIST_PLACEHOLDERS = ("Y", "y", "m", "d", "h", "i", "s", "ms", "timestamp", "timestampS", "md5", "md5-16",
                        "sha1", "sha256", "sha256-N", "uuid", "ulid", "str-N", "filename", "localFolder:N", "auto")
MAX_RANDOM = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"^([A-Za-z]):")
_DRIVE_LIKE = re.compile(r"^([^/]):")  # Windows takes any character before a colon for a drive
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_DIGEST = re.compile(r"(sha256|sha1|md5)(?:[:-](\d+))?", re.IGNORECASE)
_RANDOM = re.compile(r"str-(\d+)", re.IGNORECASE)
_FOLDER = re.compile(r"localFolder:?(\d*)", re.IGNORECASE)
_SIMPLE = frozenset(("name", "filename", "ext", "year", "month", "day", "timestamp", "timestampS", "uuid", "ulid",
                     "auto", "Y", "y", "m", "d", "h", "i", "s", "ms"))
_ALPHANUMERIC = string.ascii_letters + string.digits
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: {auto}: PicList numbers the files of a batch rename 1, 2, 3 ...; here, the keys this process made.
_AUTO = itertools.count(1)
_AUTO_LOCK = threading.Lock()  # pp-upload makes keys in several threads


@dataclass(frozen=True)
class _Field:
    """One placeholder: its kind and its number ({sha256:12} → 12, {localFolder:2} → 2)."""

    kind: str
    number: int | None = None


def check_template(template: str) -> None:
    """Refuse a template with an unknown placeholder before any upload starts."""
    _compile(template)


@functools.lru_cache(maxsize=64)
def _compile(template: str) -> tuple[str | _Field, ...]:
    """The template as literal text and placeholders, or a UsageError naming what is wrong."""
    parts: list[str | _Field] = []
    at = 0
    for match in _TOKEN.finditer(template):
        parts.append(template[at:match.start()])
        at = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif match.group(1) is None:
            raise UsageError(f"bad key template {template!r}: a single {token!r} at character {match.start() + 1}",
                             "write placeholders as {name}; {{ and }} for a brace")
        else:
            parts.append(_field(match.group(1), template))
    parts.append(template[at:])
    return tuple(part for part in parts if part != "")


def _field(text: str, template: str) -> _Field:
    if text in _SIMPLE:
        return _Field("name" if text == "filename" else text)
    if match := _DIGEST.fullmatch(text):
        return _Field(match.group(1).lower(), int(match.group(2)) if match.group(2) else None)
    if match := _FOLDER.fullmatch(text):
        return _Field("localFolder", max(1, int(match.group(1) or 1)))  # PicList: at least one folder
    if (match := _RANDOM.fullmatch(text)) and 1 <= int(match.group(1)) <= MAX_RANDOM:
        return _Field("str", int(match.group(1)))
    if match:
        raise UsageError(f"{{{text}}} in the key template {template!r} asks for {int(match.group(1))} random "
                         f"characters", f"use {{str-N}} with N from 1 to {MAX_RANDOM}")
    raise UsageError(f"unknown placeholder {{{text}}} in the key template {template!r}",
                     "use picpipe's " + " ".join("{" + p + "}" for p in PLACEHOLDERS) + "; or PicList's "
                     + " ".join("{" + p + "}" for p in PICLIST_PLACEHOLDERS) + "; {{ and }} for a brace")


def make_key(template: str, path: str, data: bytes, sha256: str | None = None, now: float | None = None,
             source: str | None = None) -> str:
    """The key for the bytes `data` of file `path` (sha256 given when already known). `source`:
    the user's original file, whose folders {localFolder:N} names (else `path`'s). `now`: seconds
    since the epoch; the clock is read once, so every time placeholder of a key tells one instant.
    Without {ext} in the template the extension is appended, as PicList does."""
    parts = _compile(template)
    epoch_ms = time.time_ns() // 1_000_000 if now is None else round(now * 1000)
    stem, ext = os.path.splitext(os.path.basename(path.replace("\\", "/")))
    once: dict[str, str] = {}  # what a key shows the same wherever it stands: hashes, {uuid}, {auto}

    def value(field: _Field) -> str:
        kind, number = field.kind, field.number
        if kind in ("sha256", "sha1", "md5"):
            if kind not in once:
                once[kind] = sha256 if kind == "sha256" and sha256 else \
                    hashlib.new(kind, data, usedforsecurity=False).hexdigest()
            return once[kind][:number] if number is not None else once[kind]
        if kind == "str":
            return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(number or 0))
        if kind == "localFolder":
            return local_folders(source or path, number or 1)
        if kind not in once:
            once[kind] = _once(kind, stem, ext, epoch_ms)
        return once[kind]

    text = "".join(part if isinstance(part, str) else value(part) for part in parts)
    if not any(isinstance(part, _Field) and part.kind == "ext" for part in parts):
        text += ext.lower()
    return sanitize(text)


def _once(kind: str, stem: str, ext: str, epoch_ms: int) -> str:
    """A placeholder's value that does not change within one key."""
    if kind in ("name", "ext"):
        return stem if kind == "name" else ext.lower()
    if kind in ("timestamp", "timestampS", "ms"):
        return {"timestamp": str(epoch_ms), "timestampS": str(epoch_ms // 1000), "ms": f"{epoch_ms % 1000:03d}"}[kind]
    if kind == "uuid":
        return uuid.uuid4().hex
    if kind == "ulid":
        return ulid(epoch_ms)
    if kind == "auto":
        with _AUTO_LOCK:
            return str(next(_AUTO))
    if kind in ("year", "month", "day"):  # picpipe's: UTC
        utc = time.gmtime(epoch_ms // 1000)
        return {"year": f"{utc.tm_year:04d}", "month": f"{utc.tm_mon:02d}", "day": f"{utc.tm_mday:02d}"}[kind]
    local = time.localtime(epoch_ms // 1000)  # PicList's: local time
    return {"Y": f"{local.tm_year:04d}", "y": f"{local.tm_year % 100:02d}", "m": f"{local.tm_mon:02d}",
            "d": f"{local.tm_mday:02d}", "h": f"{local.tm_hour:02d}", "i": f"{local.tm_min:02d}",
            "s": f"{local.tm_sec:02d}"}[kind]


def ulid(epoch_ms: int) -> str:
    """A ULID (github.com/ulid/spec): 48 bits of milliseconds and 80 random bits in Crockford's
    base32, 26 characters that sort by time."""
    number = ((epoch_ms & ((1 << 48) - 1)) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def local_folders(source: str, count: int) -> str:
    """PicList's {localFolder:N}: the last N folders of the file's path, POSIX or Windows, joined
    with `/`, colons dropped (a drive `C:` is the folder `C`). A relative path is taken from the
    current folder, as the file is."""
    text = source.replace("\\", "/")
    if not text.startswith("/") and not _DRIVE.match(text):
        text = os.getcwd().replace("\\", "/").rstrip("/") + "/" + text
    folders = [part.replace(":", "") for part in posixpath.normpath(text).split("/")[:-1]]
    return "/".join(part for part in folders[-max(1, count):] if part)


def sanitize(key: str) -> str:
    """A relative key that stays inside its folder, or a PicpipeError when nothing is left."""
    cleaned = _CONTROL.sub("", key).replace("\\", "/")
    parts = [part.strip() for part in cleaned.split("/")]
    safe = [part for part in parts if part and part not in (".", "..")]
    while safe and _DRIVE_LIKE.match(safe[0]):  # Windows reads `C:x` as a path on drive C
        first = _DRIVE_LIKE.sub(r"\1", safe[0])
        safe[:1] = [first] if first not in (".", "..") else []
    if not safe:
        raise PicpipeError("bad_key", f"the key {key!r} is empty once made safe",
                           "check the --path template and the file name")
    return "/".join(safe)
