"""The JSON Lines record stream (DESIGN §1): lenient input, one flushed line per record.

Input: a JSON object per line, or a bare path, or positional paths; blank lines are skipped;
a line that looks like JSON but is not an object, or a record whose known field has the wrong
type (`{"url": 5}`), becomes an error record naming its line.
Output: compact UTF-8 JSON, one `write` + `flush` per record, never half a line (SIGINT is held
back while a line is written), registered secrets masked.
"""

from __future__ import annotations

import errno
import io
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from picpipe import console
from picpipe.errors import UsageError
from picpipe.redact import mask_data

#: Longer input lines are refused (as error records) instead of filling memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Deeper records are refused: every stage walks records recursively.
MAX_DEPTH = 100

Record = dict[str, Any]


class Item(NamedTuple):
    """One input record and where it came from (`line 3`, `argument 2`), for messages.

    A NamedTuple, not a dataclass: importing dataclasses costs a fast command 15 ms.
    """

    where: str
    record: Record
    #: The record is an input error made right here (bad JSON, bad encoding): report it here.
    bad_input: bool = False


def input_error(where: str, type: str, message: str, hint: str, raw: str | None) -> Record:
    record: Record = {"error": {"stage": "input", "type": type, "message": f"{where}: {message}", "hint": hint}}
    if raw is not None:
        record["raw"] = raw
    return record


#: First characters of a line that may be JSON; the rest are paths without a look.
_JSON_START = frozenset('{["-0123456789tfn')
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def parse_line(text: str, where: str) -> Record | None:
    """A record from one input line; None for a blank line."""
    return _parse(text, where)[0]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for JSON")
    return value


#: One decoder for all lines (json.loads with options would build a new one per line).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def _too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Nesting deeper than `limit` (counted cheaply, strings included: errs on the safe side)."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    for char in text:
        if char in "{[":
            depth += 1
            if depth > limit:
                return True
        elif char in "}]":
            depth -= 1
    return False


def _parse(text: str, where: str) -> tuple[Record | None, bool]:
    """(record, True when the record is an input error made here) for one line."""
    stripped = text.strip()
    if not stripped:
        return None, False
    if stripped[0] in _JSON_START:
        try:
            if _too_deep(stripped):
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            value = _DECODER.decode(stripped)
        except (json.JSONDecodeError, ValueError) as exc:
            if stripped[0] == "{":
                problem = f"at column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                return input_error(where, "bad_json", f"invalid JSON {problem}",
                                   "each line must be one JSON object, or a file path", text), True
        else:
            if isinstance(value, dict):
                return value, False
            return input_error(
                where, "not_an_object", f"a JSON {_JSON_KINDS.get(type(value), 'value')} is not a record",
                f"each line must be one JSON object ({{...}}) or a file path; for a file named {stripped}, "
                f"write ./{stripped}", text,
            ), True
    # A bare path (ls, find, fd, xargs). `[draft] a.png` or `2024.png`, which are no JSON, too.
    return {"path": text.rstrip("\r\n")}, False


#: The record fields of DESIGN §1 that every stage may take for what they are; null is absent.
_TEXT_FIELDS = ("path", "source", "url", "key", "host", "format", "mime", "uploaded_at", "marked_at", "deleted_at",
                "replaces", "link", "alt")
_COUNT_FIELDS = ("size", "width", "height")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")


def _kind(value: object) -> str:
    """`a number (5)`: the JSON type of a value and the start of the value, for a message."""
    kind = _JSON_KINDS.get(type(value), "object")
    shown = json.dumps(value, ensure_ascii=False)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({shown if len(shown) <= 40 else shown[:37] + '...'})"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def field_problem(record: Record) -> tuple[str, str] | None:
    """(field, what it must be) for the first known field of the wrong type, else None.

    Checked as each stage reads its input, so that `{"url": 5}` stops at the line that holds it
    instead of reaching the ledger or a host; unknown fields are the user's and pass untouched.
    """
    for name in _TEXT_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return name, "a string"
    for name in _COUNT_FIELDS:
        value = record.get(name)
        if value is not None and not _is_count(value):
            return name, "a whole number of 0 or more"
    sha256 = record.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
        return "sha256", "a string of 64 hex digits"
    backups = record.get("backups")
    if backups is not None and not (isinstance(backups, list) and all(
            isinstance(b, dict) and all(b.get(k) is None or isinstance(b[k], str) for k in ("target", "location"))
            for b in backups)):
        return "backups", 'a list of objects such as {"target": "nas", "location": "..."}'
    mirrors = record.get("mirrors")
    if mirrors is not None and not (isinstance(mirrors, list) and all(
            isinstance(m, dict) and all(m.get(k) is None or isinstance(m[k], str) for k in ("host", "key", "url"))
            for m in mirrors)):
        return "mirrors", 'a list of objects such as {"host": "b", "key": "...", "url": "..."} (as pp-upload writes)'
    if record.get("compress") is not None and not isinstance(record["compress"], dict):
        return "compress", "an object"
    ref = record.get("ref")
    if ref is not None and not (isinstance(ref, dict)
                                and all(ref.get(k) is None or isinstance(ref[k], str)
                                        for k in ("doc", "text", "target", "kind", "resolved"))
                                and (ref.get("line") is None or _is_count(ref["line"]))):
        return "ref", 'an object such as {"doc": "post.md", "line": 3, "target": "a.png"} (as pp-scan writes)'
    return None


def checked(item: Item) -> Item:
    """The item, or an error record naming its line when a known field has the wrong type.

    A record that already carries an error passes as it is: it is the stage before's to report.
    """
    record = item.record
    if item.bad_input or "error" in record:
        return item
    problem = field_problem(record)
    if problem is None:
        return item
    name, expected = problem
    error = input_error(item.where, "bad_field", f"{name} is {_kind(record[name])}, not {expected}",
                        f"{name} must be {expected}: fix the record (e.g. with jq) or the stage that wrote it", None)
    return Item(item.where, {**record, **error}, True)


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, complete) for each line, refusing lines over MAX_LINE_BYTES."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):  # skip the rest of the long line
                chunk = stream.readline(MAX_LINE_BYTES)
            yield number, b"", False
        else:
            yield number, chunk, True


#: Records are UTF-8 (RFC 8259), and so is a path line, whatever the locale: a line from another pp
#: command decodes the same under cp936 or LANG=C, and bytes that are no UTF-8 (binary data, GBK
#: from `dir /b`) are refused line by line rather than guessed at. A file name that is no UTF-8
#: (Latin-1 from an old disk) works as an argument: Python keeps its bytes (surrogateescape).
_NOT_UTF8_HINT = ("convert the input to UTF-8 (iconv -t UTF-8; Windows: chcp 65001); give file names that are not "
                  "UTF-8 as arguments: find . -name '*.png' -print0 | xargs -0 pp-...")


def read_stream(stream: BinaryIO) -> Iterator[Item]:
    """Items from a byte stream of JSON Lines or paths."""
    for number, chunk, complete in _lines(stream):
        where = f"line {number}"
        if not complete:
            yield Item(where, input_error(where, "line_too_long", f"longer than {MAX_LINE_BYTES} bytes",
                                          "split the input into one record per line", None), True)
            continue
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            raw = chunk.decode("utf-8", "backslashreplace").rstrip("\r\n")
            yield Item(where, input_error(where, "bad_encoding", "not valid UTF-8", _NOT_UTF8_HINT, raw), True)
            continue
        text = text.lstrip("\ufeff")  # a byte-order mark from Windows tools (also mid-stream, after cat)
        record, bad = _parse(text.rstrip("\r\n"), where)
        if record is not None:
            yield checked(Item(where, record, bad))


def read_items(paths: Iterable[str], stdin: BinaryIO | None = None) -> Iterator[Item]:
    """Positional paths if any (`-` is stdin), else stdin."""
    paths = list(paths)
    if not paths:
        yield from read_stream(stdin if stdin is not None else stdin_buffer())
        return
    for index, path in enumerate(paths, 1):
        if path == "-":
            yield from read_stream(stdin if stdin is not None else stdin_buffer())
        else:
            yield Item(f"argument {index}", {"path": path})


def stdin_buffer() -> BinaryIO:
    """stdin's bytes; a usage error when the command was started with stdin closed (`<&-`)."""
    if sys.stdin is None:
        raise UsageError("stdin is closed: there is no input to read",
                         "give image paths as arguments, or pipe records in")
    return sys.stdin.buffer


STDOUT = "standard output"


class ClosedStdout(io.RawIOBase):
    """Stands in for a stdout the command was started without (`>&-`): every write fails with
    EBADF naming it, so that the command says so instead of tripping over None."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.EBADF, "closed", STDOUT)


def stdout_closed() -> UsageError:
    """What a command says when its stdout is closed or not writable: nothing it writes arrives."""
    return UsageError(f"{STDOUT} is closed or not writable: what {console.prog} writes there would be lost",
                      "send it somewhere: > out.jsonl, | another command, or > /dev/null to discard it")


def dumps(record: Record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def encode_line(record: Record) -> bytes:
    """One output line: compact UTF-8 JSON, secrets masked.

    A lone surrogate (`"\\udcff"` in the input) cannot be UTF-8: that record is written with
    ASCII escapes instead, which is the same JSON value, rather than stopping the stream.
    """
    record = mask_data(record)
    try:
        return (dumps(record) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


class _HoldInterrupts:
    """Hold Ctrl-C back while a line is written, so that it never leaves half a line.

    A SIGINT that arrives inside the block only sets a flag (the interrupted write resumes,
    PEP 475); KeyboardInterrupt is raised when the block ends. Cheaper than masking the signal
    around every record, and a no-op outside the main thread or with a custom SIGINT handler.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.installed = False

    def install(self) -> None:
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
        self.installed = True

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.depth and not self.pending:
            self.pending = True
        else:  # outside a write, or a second Ctrl-C while a write is stuck on a full pipe
            raise KeyboardInterrupt

    def __enter__(self) -> None:
        if not self.installed:
            self.install()
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.pending and not self.depth:
            self.pending = False
            raise KeyboardInterrupt


#: `with no_interrupt:` around anything that must not be cut in half (a record, a ledger append).
no_interrupt = _HoldInterrupts()


class Progress:
    """Count and rate on stderr, only when stderr is a terminal and the run is long."""

    DELAY = 2.0  # seconds before the first update: short runs stay silent
    EVERY = 0.5

    def __init__(self, enabled: bool, noun: str = "records") -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.noun = noun
        self.count = 0
        self.start = time.monotonic()
        self._next = self.start + self.DELAY
        self._shown = False

    def tick(self) -> None:
        self.count += 1
        if self.enabled and time.monotonic() >= self._next:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\r{console.prog}: {self.count} {self.noun}, {self.count / elapsed:.0f}/s ")
            sys.stderr.flush()
            self._shown = console.progress_shown = True
            self._next = time.monotonic() + self.EVERY

    def done(self) -> None:
        if self._shown and console.progress_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            console.progress_shown = False


class Output:
    """Writes records (or text lines) to stdout and keeps the tally for the exit status."""

    def __init__(self, stream: BinaryIO | None = None, quiet: bool = False, noun: str = "records") -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        if isinstance(self.stream, ClosedStdout):  # before any work: nothing would reach the reader
            raise stdout_closed()
        self.errors = 0
        self.progress = Progress(not quiet, noun)

    def _write(self, data: bytes) -> None:
        try:
            with no_interrupt:
                self.stream.write(data)
                self.stream.flush()
        except OSError as exc:  # a full disk behind `> out.jsonl`, a read-only fd 1: say which file
            exc.filename = exc.filename or STDOUT
            raise
        self.progress.tick()

    def record(self, record: Record) -> None:
        """Write one record as a JSON line; an error record counts toward exit status 1."""
        if "error" in record:
            self.errors += 1
        self._write(encode_line(record))

    def text(self, line: str) -> None:
        self._write((mask_data(line) + "\n").encode("utf-8", "backslashreplace"))

    def report(self, item_where: str, record: Record) -> None:
        """Tell a person about an error record that leaves the JSON stream here (text output)."""
        self.errors += 1
        say_error(item_where, record)

    @property
    def status(self) -> int:
        return 1 if self.errors else 0


def say_error(where: str, record: Record) -> None:
    """`line 3: upload failed (http_403): message` + hint, on stderr."""
    err = record.get("error")
    if not isinstance(err, dict):
        console.say(f"{where}: error: {err!r}")
        return
    message = str(err.get("message", "failed"))
    label = f"{err.get('stage', '?')}/{err.get('type', '?')}"
    if not message.startswith(where):
        message = f"{where}: {message}"
    console.error(f"{message} [{label}]", err.get("hint"))
