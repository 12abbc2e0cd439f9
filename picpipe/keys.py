"""Object keys for pp-upload: a template filled from the record, then made safe.

The default `{year}/{month}/{sha256:12}{ext}` names an image by its content, so the same bytes
always get the same key and different bytes never share one. Whatever the template and the
file name hold, the key that comes out is relative, has no `.` or `..` segment, no backslash
and no control character: it cannot leave the folder, bucket or repository it is put in.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import time
import uuid
from collections.abc import Mapping
from typing import Any

from picpipe.errors import PicpipeError, UsageError

DEFAULT_TEMPLATE = "{year}/{month}/{sha256:12}{ext}"
#: Placeholders a template may use; {sha256:N} and {md5:N} take the first N hex digits.
PLACEHOLDERS = ("name", "ext", "sha256", "md5", "year", "month", "day", "timestamp", "uuid")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_template(template: str) -> None:
    """Refuse a template with an unknown placeholder before any upload starts."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise UsageError(f"bad key template {template!r}: {exc}",
                         "write placeholders as {name}; {{ for a brace") from None
    for field in fields:
        if field not in PLACEHOLDERS:
            raise UsageError(f"unknown placeholder {{{field}}} in the key template {template!r}",
                             f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


def make_key(template: str, path: str, data: bytes, sha256: str | None = None, now: float | None = None) -> str:
    """The key for the bytes `data` of file `path` (sha256 given when already known)."""
    now = time.time() if now is None else now
    moment = time.gmtime(now)
    stem, ext = os.path.splitext(os.path.basename(path))
    values: Mapping[str, Any] = {
        "name": stem, "ext": ext.lower(), "sha256": _Digest(sha256 or hashlib.sha256(data).hexdigest()),
        # md5 only when asked for: a second hash of every image is not free.
        "md5": _Digest(hashlib.md5(data, usedforsecurity=False).hexdigest() if "{md5" in template else ""),
        "year": f"{moment.tm_year:04d}", "month": f"{moment.tm_mon:02d}", "day": f"{moment.tm_mday:02d}",
        "timestamp": str(int(now)), "uuid": uuid.uuid4().hex,
    }
    return sanitize(template.format_map(values))


def sanitize(key: str) -> str:
    """A relative key that stays inside its folder, or a PicpipeError when nothing is left."""
    cleaned = _CONTROL.sub("", key).replace("\\", "/")
    parts = [part.strip() for part in cleaned.split("/")]
    safe = [part for part in parts if part and part not in (".", "..")]
    if not safe:
        raise PicpipeError("bad_key", f"the key {key!r} is empty once made safe",
                           "check the --path template and the file name")
    return "/".join(safe)


class _Digest(str):
    """A hex digest that `{sha256:12}` cuts to 12 characters."""

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        if not spec.isdigit():
            raise PicpipeError("bad_key", f"{{sha256:{spec}}} / {{md5:{spec}}} takes a number of characters",
                               "write e.g. {sha256:12}")
        return str(self)[: int(spec)]
