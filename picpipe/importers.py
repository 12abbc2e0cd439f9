"""Read PicGo / PicList upload history so `pp-mark import` can bring it into the ledger.

Accepted files, recognised by their content rather than their name:

- ``picgo-gallery``: PicGo >= 2.3 ``picgo.db`` / ``picgo.bak.db`` and PicList ``piclist.db``,
  gzip-compressed (or plain) JSON ``{"gallery": [item, ...], ...}``;
- ``picgo-data-json``: PicGo < 2.3 ``data.json``, whose ``uploaded`` array holds the same items
  (after PicGo's migration it is empty, which gives zero records);
- ``autobackup-mark``: picgo-plugin-autobackup ``mark.json``, ``{"images": [...]}``.

Use ``HistoryReader(path)``: the constructor reads and recognises the file (``.format``), and
iterating yields one record per usable entry. Entries without an http(s) URL are not records:
each one adds a reason to ``.skipped`` (reset at the start of every iteration), so the caller
can say "imported 40 records, skipped 2". ``read_history(path)`` is the same without the report.

Those files also hold uploader credentials (PicList's per-item ``config``, ``data.json``'s
``picBed``). Records are built from named fields only, userinfo is stripped from every URL, and
secret-named fields are dropped on top, so no credential reaches a record.
Problems with the file itself raise `PicpipeError`: ``not_found``, ``io``, ``corrupt_file``,
``unknown_format``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from picpipe.errors import PicpipeError
from picpipe.redact import drop_secret_fields
from picpipe.timeutil import iso_from_epoch

#: PicGo / PicList uploader ids that have a picpipe host type of another name.
HOST_TYPES = {
    "smms": "smms",
    "tcyun": "tencent",
    "github": "github",
    "qiniu": "qiniu",
    "imgur": "imgur",
    "aliyun": "aliyun",
    "upyun": "upyun",
    "gitee": "gitee",
    "webdav": "webdav",
    "webdavplist": "webdav",
    "local": "local",
    "localplist": "local",
    "s3": "s3",
    "aws-s3": "s3",
    "aws-s3-plist": "s3",
}

_LOCATIONS_HINT = (
    "give one of: the PicGo gallery picgo.db (~/.config/picgo/picgo.db on Linux, "
    "%APPDATA%\\picgo\\picgo.db on Windows, ~/Library/Application Support/picgo/picgo.db on macOS), "
    "its backup picgo.bak.db, PicList's piclist.db in the same kind of folder (piclist instead of picgo), "
    "PicGo's older data.json, or the autobackup plugin's Autobackup/mark.json"
)
_CORRUPT_HINT = (
    "close PicGo/PicList so it is not writing the file and try again; "
    "if it stays broken, import the backup picgo.bak.db (piclist.bak.db) next to it"
)


class HistoryReader:
    """One history file: `.format` once constructed, records when iterated, `.skipped` reasons."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.skipped: list[str] = []
        data = _load_json(self.path)
        self.format, self._entries, self._list_name = _recognise(data)
        if self.format == "autobackup-mark":
            self._from = "autobackup"
        else:
            self._from = "piclist" if any(_is_piclist_item(e) for e in self._entries) else "picgo"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = []
        for index, entry in enumerate(self._entries):
            where = f"{self._list_name}[{index}]"
            if not isinstance(entry, dict):
                self.skipped.append(f"{where}: not an object")
                continue
            if self.format == "autobackup-mark":
                record, problem = self._mark_record(entry)
            else:
                record, problem = self._gallery_record(entry)
            if record is None:
                self.skipped.append(f"{where}: {problem}")
            else:
                # Records hold named fields only; dropping secret names again guards future fields.
                yield drop_secret_fields(record)

    def _gallery_record(self, item: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A PicGo/PicList gallery item as a record, or None and why it cannot be one."""
        url = _http_url(item.get("imgUrl")) or _http_url(item.get("originImgUrl"))
        if url is None:
            return None, "no URL (imgUrl and originImgUrl are missing, empty or not http(s))"
        record: dict[str, Any] = {"url": url}
        kind = item.get("type")
        if isinstance(kind, str) and kind.strip():
            name = kind.strip().lower()
            record["host"] = HOST_TYPES.get(name, name)
        for key in ("width", "height"):
            value = item.get(key)
            # PicGo writes 0 when it could not measure the image: that is no size.
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                record[key] = value
        when = _iso_from_ms(item.get("createdAt"))
        if when is not None:
            record["uploaded_at"] = record["marked_at"] = when
        origin: dict[str, Any] = {"from": self._from, "file": self.path}
        for source, target in (("id", "id"), ("fileName", "file_name"), ("type", "type")):
            value = item.get(source)
            if isinstance(value, str) and value:
                origin[target] = value
        record["import"] = origin
        return record, ""

    def _mark_record(self, image: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """An autobackup mark.json image as a record, or None and why it cannot be one."""
        url = _http_url(image.get("url"))
        if url is None:
            return None, "no URL (url is missing, empty or not http(s))"
        when = _iso_from_ms(image.get("time"))
        backup: dict[str, Any] = {}
        space, location = image.get("space"), image.get("path")
        if isinstance(space, str) and space:
            backup["target"] = space
        if isinstance(location, str) and location:
            clean = _without_userinfo(location)
            if clean is not None:
                backup["location"] = clean
        record: dict[str, Any] = {"url": url}
        if backup:
            if when is not None:
                backup["at"] = when
            record["backups"] = [backup]
        if when is not None:
            record["marked_at"] = when
        record["import"] = {"from": "autobackup", "file": self.path}
        return record, ""


def read_history(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one picpipe record per entry of a PicGo/PicList gallery or an autobackup mark.json."""
    yield from HistoryReader(path)


def _load_json(path: str) -> Any:
    """The file's JSON, gunzipped first when it starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise PicpipeError("not_found", f"{path}: no such file", _LOCATIONS_HINT) from None
    except IsADirectoryError:
        raise PicpipeError("io", f"{path} is a folder, not a history file", _LOCATIONS_HINT) from None
    except OSError as exc:
        raise PicpipeError("io", f"cannot read {path}: {exc.strerror or exc}",
                           "check that the file is readable by you") from None
    if raw.startswith(b"\x1f\x8b"):
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise PicpipeError("corrupt_file", f"{path} is a truncated gzip file", _CORRUPT_HINT) from None
        except (OSError, zlib.error) as exc:
            raise PicpipeError("corrupt_file", f"{path} is a damaged gzip file ({exc})", _CORRUPT_HINT) from None
    if not raw.strip():
        raise PicpipeError("corrupt_file", f"{path} is empty", _CORRUPT_HINT)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PicpipeError("corrupt_file", f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: "
                           f"{exc.msg})", _CORRUPT_HINT) from None
    except (ValueError, RecursionError):  # not UTF-8/16/32 text, or absurdly nested
        raise PicpipeError("corrupt_file", f"{path} is neither gzip nor JSON text", _CORRUPT_HINT) from None


def _recognise(data: Any) -> tuple[str, list[Any], str]:
    """(format, entries, name of the entry list) for the JSON of a history file."""
    if isinstance(data, dict):
        if isinstance(data.get("gallery"), list):
            return "picgo-gallery", data["gallery"], "gallery"
        if isinstance(data.get("uploaded"), list):
            return "picgo-data-json", data["uploaded"], "uploaded"
        if data.get("__migrateUploaded") is True and "uploaded" not in data:
            return "picgo-data-json", [], "uploaded"
        if isinstance(data.get("images"), list):
            return "autobackup-mark", data["images"], "images"
    shape = "an object" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
    raise PicpipeError(
        "unknown_format",
        f"not a PicGo/PicList history file: found {shape} without a \"gallery\" list (picgo.db, piclist.db), "
        "an \"uploaded\" list (PicGo's older data.json) or an \"images\" list (autobackup mark.json)",
        _LOCATIONS_HINT,
    )


def _is_piclist_item(item: Any) -> bool:
    """PicList stores the uploader config with each item and names its own uploaders `...plist`."""
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    return "config" in item or (isinstance(kind, str) and kind.strip().lower().endswith("plist"))


def _http_url(value: Any) -> str | None:
    """`value` as an http(s) URL without userinfo, or None when it is not one."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc.rpartition("@")[2]:
        return None
    return _without_userinfo(url)


def _without_userinfo(text: str) -> str | None:
    """`text` with any `user:password@` removed; None for a URL too broken to clean safely."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if not parts.scheme or "@" not in parts.netloc:  # a local or UNC path (//server@SSL/...) stays as it is
        return text
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _iso_from_ms(value: Any) -> str | None:
    """ISO time of a millisecond epoch, or None when it is missing, not a number or out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return iso_from_epoch(value / 1000)
    except (OverflowError, OSError, ValueError):
        return None
