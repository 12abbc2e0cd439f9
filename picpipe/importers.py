"""Read PicGo / PicList upload history so `pp-mark import` can bring it into the ledger.

Accepted files, recognised by their content rather than their name:

- ``picgo-gallery``: PicGo >= 2.3 ``picgo.db`` / ``picgo.bak.db`` and PicList ``piclist.db``,
  gzip-compressed (or plain) JSON ``{"gallery": [item, ...], ...}`` as @picgo/store writes it;
- ``picgo-data-json``: PicGo < 2.3 ``data.json``, whose ``uploaded`` array holds the same items
  (after PicGo's migration it is empty, which gives zero records);
- ``autobackup-mark``: picgo-plugin-autobackup ``mark.json``, ``{"images": [...]}``;
- ``picgo-log``: ``picgo.log`` (``piclist.log``), the plain-text log of PicGo-Core, the only
  history its CLI keeps (``~/.picgo/picgo.log``); the GUIs write the same lines to theirs.

A gallery item keeps the name of the file it was made from: ``filePath`` (PicGo-Core >= 1.6.1
stores the absolute path) becomes the record's ``source`` when it is an absolute path here,
else the bare ``fileName`` does (PicList and older PicGo store nothing else), so that
``pp-mark find --source a.png`` and the alt text of ``pp-link`` work as for uploaded images.
The log names no local files: its records have no ``source``.

Use ``HistoryReader(path)``: the constructor reads and recognises the file (``.format``), and
iterating yields one record per usable entry. Entries without an http(s) URL are not records:
each one adds a reason to ``.skipped`` (reset at the start of every iteration), so the caller
can say "imported 40 records, skipped 2". ``read_history(path)`` is the same without the report.

Those files also hold uploader credentials (PicList's per-item ``config``, ``data.json``'s
``picBed``, config dumps and error stacks in the log). Records are built from named fields
only, userinfo and secret-named query parameters (signatures, tokens) are stripped from every
URL, and secret-named fields are dropped on top, so no credential reaches a record.
Problems with the file itself raise `PicpipeError`: ``not_found``, ``io``, ``corrupt_file``,
``unknown_format``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from picpipe.errors import PicpipeError
from picpipe.redact import drop_secret_fields, is_secret_key
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

_CLI_HINT = "PicGo-Core's CLI keeps no gallery; picgo.log holds the URLs: pp-mark import ~/.picgo/picgo.log"
_LOCATIONS_HINT = (
    "give one of: the PicGo gallery picgo.db (~/.config/picgo/picgo.db on Linux, "
    "%APPDATA%\\picgo\\picgo.db on Windows, ~/Library/Application Support/picgo/picgo.db on macOS), "
    "its backup picgo.bak.db, PicList's piclist.db in the same kind of folder (piclist instead of picgo), "
    "PicGo's older data.json, or the autobackup plugin's Autobackup/mark.json. " + _CLI_HINT
)
_CORRUPT_HINT = (
    "close PicGo/PicList so it is not writing the file and try again; "
    "if it stays broken, import the backup picgo.bak.db (piclist.bak.db) next to it"
)

# PicGo-Core's src/lib/Logger.ts (handleWriteLog) starts every entry with
# `${dayjs().format('YYYY-MM-DD HH:mm:ss')} [PicGo ${type.toUpperCase()}] ` (PicList-Core: PicList)
# and appends each message part followed by a space; parts holding newlines (an upload's URLs,
# JSON dumps, error stacks) go on as lines without that header.
_LOG_HEADER = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \[(PicGo|PicList) (SUCCESS|INFO|WARN|ERROR)\] ?(.*)$")
# src/core/Lifecycle.ts, doUpload: ctx.log.info(`Uploading... Current uploader is [${type}]`)
_LOG_UPLOADER = re.compile(r"Uploading\.\.\. Current uploader is \[([^\]]+)\]")
# Logger.handleLog: the entry that finds the log over its size limit empties the file and puts
# this before its own message, an upload's URLs too.
_LOG_RECREATED = re.compile(r"^Log file is too large \(> [^)]*\), recreate log file ?")

#: Query parameters that carry credentials in signed or private URLs (S3 X-Amz-*, OSS, COS
#: q-signature, Qiniu token, upyun _upt, API keys), beside every secret setting name.
_SECRET_PARAMS = frozenset({"key", "sign", "q-ak", "ossaccesskeyid", "auth_key", "_upt", "apikey"})
_SECRET_PARAM_WORDS = ("signature", "token", "secret", "password", "credential")


class HistoryReader:
    """One history file: `.format` once constructed, records when iterated, `.skipped` reasons."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.skipped: list[str] = []
        self._entries: list[Any]
        data = _load(self.path)
        if isinstance(data, _Log):
            self.format, self._entries, self._list_name = "picgo-log", data.uploads, ""
            self._from = "piclist" if data.app == "PicList" else "picgo"
            return
        self.format, self._entries, self._list_name = _recognise(data)
        if self.format == "autobackup-mark":
            self._from = "autobackup"
        else:
            self._from = "piclist" if any(_is_piclist_item(e) for e in self._entries) else "picgo"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.skipped = []
        for index, entry in enumerate(self._entries):
            if isinstance(entry, _Upload):
                where = f"line {entry.line}"
                record, problem = self._log_record(entry)
            else:
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
        source, file_path = _gallery_source(item.get("filePath"), item.get("fileName"))
        if source is not None:
            record["source"] = source
        for key in ("width", "height"):
            value = item.get(key)
            # PicGo writes 0 when it could not measure the image: that is no size.
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                record[key] = value
        when = _iso_from_ms(item.get("createdAt"))
        if when is not None:
            record["uploaded_at"] = record["marked_at"] = when
        origin: dict[str, Any] = {"from": self._from, "file": self.path}
        for field, target in (("id", "id"), ("fileName", "file_name"), ("type", "type")):
            value = item.get(field)
            if isinstance(value, str) and value:
                origin[target] = value
        if file_path is not None:
            origin["file_path"] = file_path
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
            clean = _clean_url(location)
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

    def _log_record(self, upload: _Upload) -> tuple[dict[str, Any] | None, str]:
        """One URL of a log's upload entry as a record, or None and why it cannot be one."""
        url = _http_url(upload.text)
        if url is None:
            return None, "not an http(s) URL in the upload's output"
        record: dict[str, Any] = {"url": url}
        if upload.uploader:
            record["host"] = HOST_TYPES.get(upload.uploader.lower(), upload.uploader.lower())
        when = _iso_from_local(upload.time)
        if when is not None:
            record["uploaded_at"] = record["marked_at"] = when
        origin: dict[str, Any] = {"from": self._from, "file": self.path, "line": upload.line}
        if upload.uploader:
            origin["type"] = upload.uploader
        record["import"] = origin
        return record, ""


def read_history(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one picpipe record per entry of a PicGo/PicList gallery, log or autobackup mark.json."""
    yield from HistoryReader(path)


class _Upload:
    """One line of an upload's output in a PicGo log: a URL, with its entry's time and uploader."""

    __slots__ = ("line", "text", "time", "uploader")

    def __init__(self, line: int, text: str, time: str, uploader: str | None) -> None:
        self.line, self.text, self.time, self.uploader = line, text, time, uploader


class _Log:
    """A PicGo/PicList log: the lines of its upload outputs, and which app wrote it."""

    def __init__(self, uploads: list[_Upload], app: str) -> None:
        self.uploads, self.app = uploads, app


def _load(path: str) -> Any:
    """The file's JSON (gunzipped first when it starts with the gzip magic bytes), or a `_Log`."""
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
        if path.endswith(".log"):  # PicGo empties its log when it passes the size limit (10 MB)
            return _Log([], "PicList" if os.path.basename(path).lower().startswith("piclist") else "PicGo")
        raise PicpipeError("corrupt_file", f"{path} is empty", _CORRUPT_HINT)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problem: PicpipeError = PicpipeError(
            "corrupt_file", f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})",
            _CORRUPT_HINT)
    except (ValueError, RecursionError):  # not UTF-8/16/32 text, or absurdly nested
        problem = PicpipeError("corrupt_file", f"{path} is neither gzip nor JSON text", _CORRUPT_HINT)
    if b"\x00" in raw:  # binary: no log, no JSON
        raise PicpipeError("corrupt_file", f"{path} is neither gzip nor JSON text", _CORRUPT_HINT)
    text = raw.decode("utf-8", errors="replace")
    log = _parse_log(text)
    if log is not None:
        return log
    if text.lstrip("\ufeff \t\r\n").startswith("{") or "\ufffd" in text:
        raise problem  # a history file (a JSON object) cut short or damaged, or binary bytes
    raise PicpipeError(
        "unknown_format",
        f"{path} is plain text, neither a PicGo/PicList history file (JSON) nor a PicGo log "
        "(lines such as \"2024-05-01 10:00:00 [PicGo SUCCESS] \" followed by the URLs)",
        _LOCATIONS_HINT,
    )


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


def _parse_log(text: str) -> _Log | None:
    """The upload outputs of a PicGo/PicList log, or None when no line has the log's header.

    An upload that worked ends with one SUCCESS entry whose message is a newline and the URLs,
    one a line (Lifecycle.ts, afterUpload: ctx.log.success(`\\n${msg}`)); it follows the INFO
    entry "Uploading... Current uploader is [NAME]" of that upload. A failed upload writes WARN
    "failed" and an ERROR entry with the stack instead: no SUCCESS, so nothing of it is taken.
    Other SUCCESS entries ("Welcome: ...", plugin installs) carry text on their header line.
    """
    uploads: list[_Upload] = []
    apps: set[str] = set()
    uploader: str | None = None
    taking: str | None = None  # the time of the upload output whose lines follow, if one does
    for number, line in enumerate(text.split("\n"), 1):  # Node writes "\n"; a URL may hold \u2028
        line = line.removesuffix("\r")
        header = _LOG_HEADER.match(line)
        if header is None:
            if taking is not None and line.strip():
                uploads.append(_Upload(number, line.strip(), taking, uploader))
            continue
        when, app, level, message = header.groups()
        apps.add(app)
        message = _LOG_RECREATED.sub("", message)
        taking = when if level == "SUCCESS" and not message.strip() else None
        if level == "INFO":
            chosen = _LOG_UPLOADER.search(message)
            if chosen is not None:
                uploader = chosen.group(1).strip() or None
    if not apps:
        return None
    return _Log(uploads, "PicList" if apps == {"PicList"} else "PicGo")


def _gallery_source(file_path: Any, file_name: Any) -> tuple[str | None, str | None]:
    """(source, path kept under import.file_path) for a gallery item.

    The absolute ``filePath`` of this machine is the original; else the file name alone, which
    `pp-mark find --source NAME` matches by its base name. A path that is not absolute here (a
    Windows gallery read on Linux) is kept aside: as a source it would name a file in the cwd.
    """
    path = file_path.strip() if isinstance(file_path, str) and "://" not in file_path else ""
    if path and os.path.isabs(path):
        return path, None
    for candidate in (file_name, path):
        if isinstance(candidate, str):
            name = re.split(r"[\\/]", candidate.strip().rstrip("/\\"))[-1]
            if name and name not in (".", ".."):
                return name, path or None
    return None, path or None


def _http_url(value: Any) -> str | None:
    """`value` as an http(s) URL without userinfo or secret parameters, or None when it is not one."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc.rpartition("@")[2]:
        return None
    return _clean_url(url)


def _clean_url(text: str) -> str | None:
    """`text` without `user:password@` and secret query parameters; None for a URL too broken
    to clean safely. A local or UNC path (//server@SSL/...) stays as it is."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(p for p in parts.query.split("&") if p and not _secret_param(p.partition("=")[0]))
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret_param(name: str) -> bool:
    """Whether a query parameter's name says it holds a credential (X-Amz-Signature, token, ...)."""
    lowered = unquote_plus(name).strip().lower()
    return (is_secret_key(lowered) or lowered in _SECRET_PARAMS
            or any(word in lowered for word in _SECRET_PARAM_WORDS))


def _iso_from_ms(value: Any) -> str | None:
    """ISO time of a millisecond epoch, or None when it is missing, not a number or out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return iso_from_epoch(value / 1000)
    except (OverflowError, OSError, ValueError):
        return None


def _iso_from_local(value: str) -> str | None:
    """ISO time (UTC) of a log's `YYYY-MM-DD HH:mm:ss`: dayjs writes the local time of the
    machine that logged, taken to be this one's zone. None for an impossible date."""
    try:
        return iso_from_epoch(datetime.strptime(value, "%Y-%m-%d %H:%M:%S").timestamp())
    except (OverflowError, OSError, ValueError):
        return None
