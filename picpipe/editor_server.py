"""The PicGo-Server API that pp-server answers (Typora "PicGo (app)", Obsidian, other PicGo
clients): HTTP handling, request bodies, and the queue in front of the pipeline.

The API is PicGo-Core 2.x's: `POST /upload` with `{"list": [paths]}` or multipart files,
`POST /heartbeat`, an optional secret. Security beyond PicGo's: a server that uploads any file
it can read by path must not obey web pages, so browser requests (an `Origin` of http(s),
file or null) are refused unless they carry the secret, no CORS header is sent to them
otherwise, the Host header must name this machine when listening on loopback (DNS rebinding),
and path lists from other machines need the secret.

Under load: connections wait in a real listen backlog, each has its own thread (so /heartbeat
is answered at once), received files are streamed to a temp folder in small chunks (memory
does not grow with the body), and uploads wait for one of a few pipeline runs, each taking the
images of every request waiting, each distinct path once.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from picpipe import console
from picpipe.errors import UsageError

if TYPE_CHECKING:
    from picpipe.pipeline import Outcome, Pipeline

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 36677
#: Larger request bodies are answered 413 without being read.
MAX_BODY = 100 * 1024 * 1024
#: A path list is parsed in memory: larger ones are answered 413 (10 000 paths take about 1 MB).
MAX_JSON = 8 * 1024 * 1024
#: Bytes read from a socket at a time; a multipart body holds about two of them in memory.
CHUNK = 64 * 1024
#: The headers of one multipart part (a file name, a type) are small: longer ones are refused.
MAX_PART_HEADERS = 64 * 1024
#: Request bodies held in memory at once, across all requests; a request waits for its share.
MEMORY = 64 * 1024 * 1024
#: Seconds a request waits for its share of MEMORY before it is answered 503.
MEMORY_WAIT = 30
#: Pipeline runs at once, and images per run: each run starts a process per stage.
WORKERS, BATCH = 2, 100
#: Connections the kernel keeps waiting for accept() (socketserver's default is 5).
BACKLOG = 1024
#: Received files wait in <temp folder>/pp-server-<pid>-*/ while their request is served.
SPOOL = "pp-server-"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
CLIPBOARD = ("picpipe does not read the clipboard: send image paths as {\"list\": [\"/abs/a.png\"]} "
             "or files as multipart/form-data")


class Reply(Exception):
    """An answer decided early (bad request, refused): status and JSON body."""

    def __init__(self, status: int, message: str | None = None, **body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"success": False, **body}
        if message is not None:
            self.body["message"] = message


class ClientLeft(Exception):
    """The client closed the connection or stopped sending: nobody is left to answer."""


class Budget:
    """Bytes held in memory by all requests together: a request takes its share or waits."""

    def __init__(self, total: int) -> None:
        self.total = self.free = total
        self.changed = threading.Condition()

    @contextmanager
    def hold(self, size: int, wait: float = MEMORY_WAIT) -> Iterator[None]:
        size = min(size, self.total)
        with self.changed:
            if not self.changed.wait_for(lambda: self.free >= size, wait):
                raise Reply(503, "pp-server is busy receiving other requests: try again in a moment", result=[])
            self.free -= size
        try:
            yield
        finally:
            with self.changed:
                self.free += size
                self.changed.notify_all()


class _Job:
    """One request's items, waiting for a pipeline run."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.distinct = len(set(items))
        self.done = threading.Event()
        self.outcomes: list[Outcome] = []
        self.error: BaseException | None = None


class Uploads:
    """The pipeline behind /upload: at most `workers` runs at once, each taking the items of the
    requests waiting (up to `batch` distinct ones, a larger request alone), each item once.

    A run starts a process per stage, so 200 requests at once become a few runs rather than
    200 pipelines, and a path named twice (in one request or two) is uploaded and recorded once.
    """

    def __init__(self, pipeline: Pipeline, workers: int = WORKERS, batch: int = BATCH) -> None:
        self.pipeline, self.batch = pipeline, batch
        self.waiting: deque[_Job] = deque()
        self.changed = threading.Condition()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True).start()

    def run(self, items: list[str]) -> list[Outcome]:
        """One Outcome per item, in order, once a worker has run them."""
        job = _Job(items)
        with self.changed:
            self.waiting.append(job)
            self.changed.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outcomes

    def _take(self) -> list[_Job]:
        with self.changed:
            self.changed.wait_for(lambda: bool(self.waiting))
            jobs = [self.waiting.popleft()]
            count = jobs[0].distinct
            while self.waiting and count + self.waiting[0].distinct <= self.batch:
                count += self.waiting[0].distinct
                jobs.append(self.waiting.popleft())
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            distinct = list(dict.fromkeys(item for job in jobs for item in job.items))
            try:
                outcomes = dict(zip(distinct, self.pipeline.run(distinct)))
                for job in jobs:
                    job.outcomes = [outcomes[item] for item in job.items]
            except BaseException as exc:  # each request answers it (a stage refused the configuration)
                for job in jobs:
                    job.error = exc
            finally:
                for job in jobs:
                    job.done.set()


class PicGoServer(ThreadingHTTPServer):
    """Serves the PicGo API for one pipeline; `secret` None means no authentication."""

    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], pipeline: Pipeline, secret: str | None = None,
                 always_200: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        sweep_spools()
        self.uploads = Uploads(pipeline)
        self.memory = Budget(MEMORY)
        self.secret = secret
        self.loopback = is_loopback(address[0])
        self.always_200 = always_200
        #: Temp folders of the requests being served, removed at the latest when the server closes.
        self.spools: set[str] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left is none of our errors; anything else is one line (--debug: a traceback)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, ClientLeft)):
            if console.debug:
                console.say(f"{client_address[0]}: the client left ({exc or type(exc).__name__})")
            return
        if exc is not None and console.debug:
            console.traceback(exc)
        console.error(f"internal error answering {client_address[0]}: {exc!r}",
                      "run again with --debug (or PICPIPE_DEBUG=1) for a traceback, and report it")

    @contextmanager
    def spool(self) -> Iterator[str]:
        """A temp folder for one request's files, gone when the request is (even if its client left)."""
        try:
            folder = tempfile.mkdtemp(prefix=f"{SPOOL}{os.getpid()}-")
        except OSError as exc:
            raise Reply(500, f"cannot store received files in {tempfile.gettempdir()}: {exc.strerror}",
                        result=[]) from None
        self.spools.add(folder)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self.spools.discard(folder)

    def server_close(self) -> None:
        super().server_close()
        for folder in list(self.spools):
            shutil.rmtree(folder, ignore_errors=True)


def sweep_spools() -> None:
    """Remove the temp folders a killed pp-server left (kill -9, a power cut): those of a pid that
    no longer runs. Another pp-server's, still running, stay."""
    from picpipe.files import pid_alive

    folder = tempfile.gettempdir()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = re.fullmatch(rf"{SPOOL}(\d+)-\w+", name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


class Body:
    """A request body read in chunks, never past its Content-Length; a client that stops short left."""

    def __init__(self, stream: BufferedIOBase, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, size: int = CHUNK) -> bytes:
        """Up to `size` bytes; b"" only at the end of the body."""
        if self.left <= 0:
            return b""
        try:
            data = self.stream.read1(min(size, self.left))
        except (ConnectionError, TimeoutError) as exc:
            raise ClientLeft(f"while sending its body: {exc}") from None
        if not data:
            raise ClientLeft(f"with {self.left} bytes of its body unsent")
        self.left -= len(data)
        return data

    def read_all(self) -> bytes:
        chunks = []
        while chunk := self.read(MAX_JSON):
            chunks.append(chunk)
        return b"".join(chunks)

    def drain(self) -> None:
        while self.read():
            pass


class Handler(BaseHTTPRequestHandler):
    server: PicGoServer
    protocol_version = "HTTP/1.1"
    server_version = "picpipe"
    sys_version = ""
    timeout = 60  # seconds a client may keep a connection silent (a body promised, never sent)

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own lines would show query strings (a ?secret=): `answer` writes ours."""

    def do_POST(self) -> None:
        self.answer()

    def do_GET(self) -> None:
        self.answer()

    def do_OPTIONS(self) -> None:
        self.answer()

    def answer(self) -> None:
        started, self.count, self.body_read = time.monotonic(), 0, False
        self.cors = False
        path = urlsplit(self.path).path
        try:
            status, body = self.route()
        except ClientLeft as exc:  # nobody to answer; the temp files are already gone
            self.close_connection = True
            if console.debug:
                console.say(f"{self.client_address[0]} {self.command} {path}: the client left {exc}")
            return
        except Reply as reply:
            status, body = reply.status, reply.body
        except UsageError as exc:  # a stage refused the configuration
            status, body = 500, {"success": False, "result": [], "message": f"{exc.message} ({exc.hint})"}
        except Exception as exc:
            if console.debug:
                console.traceback(exc)
            status, body = 500, {"success": False, "result": [], "message": f"internal error: {exc!r}"}
        if self.server.always_200 and status in (400, 401, 403, 500) and path == "/upload":
            status = 200  # the answer's `success` and `message` still say what happened
        left = ""
        try:
            self.send(status, body)
        except (ConnectionError, TimeoutError):  # the work is done (and in the ledger) all the same
            self.close_connection = True
            left = " (the client had left)"
        images = f" {console.counted(self.count, 'image')}" if self.count else ""
        console.say(f"{self.client_address[0]} {self.command} {path} {status}{images} "
                    f"{time.monotonic() - started:.2f}s{left}")

    def route(self) -> tuple[int, dict[str, Any]]:
        self.check_host()
        path = urlsplit(self.path).path
        origin = self.headers.get("Origin")
        if self.command == "OPTIONS":
            return self.preflight(origin)
        if self.command == "POST" and path == "/heartbeat":
            return 200, {"success": True, "result": "alive"}
        if self.command == "POST" and path == "/upload":
            authorized = self.authorize()
            if origin is not None and is_web_origin(origin) and not authorized:
                raise Reply(403, "requests from web pages are refused: set a [server] secret and send it "
                                 "as Authorization: Bearer ...")
            self.cors = origin is not None and (authorized or not is_web_origin(origin))
            return self.upload(authorized)
        raise Reply(404)

    def check_host(self) -> None:
        """On loopback, a Host that names another machine is a page that rebound its DNS to us."""
        host = self.headers.get("Host")
        if self.server.loopback and host is not None and host_name(host) not in LOOPBACK_NAMES:
            raise Reply(403, f"Host {host!r} is not this machine: use http://127.0.0.1:{self.server.server_address[1]}")

    def preflight(self, origin: str | None) -> tuple[int, dict[str, Any]]:
        """CORS for apps (app://, extensions) always; for web pages only when a secret guards /upload."""
        if origin is None or (is_web_origin(origin) and self.server.secret is None):
            raise Reply(403, "cross-origin requests from web pages are refused")
        self.cors = True
        return 204, {}

    def authorize(self) -> bool:
        """The secret, when one is set, from `Authorization: Bearer`, `X-PicGo-Secret` or `?secret=`
        (in PicGo's order); True when the request proved it. Raises 401 when it did not."""
        secret = self.server.secret
        if secret is None:
            return False
        if "Authorization" in self.headers:
            match = re.match(r"\s*Bearer\s+(.+?)\s*$", self.headers["Authorization"], re.IGNORECASE)
            token = match.group(1) if match else ""
        elif "X-PicGo-Secret" in self.headers:
            token = self.headers["X-PicGo-Secret"].strip()
        else:
            token = parse_qs(urlsplit(self.path).query).get("secret", [""])[0]
        if not hmac.compare_digest(token.encode("utf-8"), secret.encode("utf-8")):
            raise Reply(401, "Unauthorized")
        return True

    def body(self, limit: int, what: str) -> Body:
        """The body to come, refused before a byte of it is read when it is chunked or too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():  # its body stays unread: close
            self.close_connection = True
            raise Reply(411, "send the body with a Content-Length (chunked transfer encoding is not read)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Reply(400, "bad Content-Length") from None
        if length > limit:
            raise Reply(413, f"the request is larger than {limit // (1024 * 1024)} MB: send fewer {what} at once",
                        result=[])
        if length < 0:
            raise Reply(400, "bad Content-Length")
        return Body(self.rfile, length)

    def upload(self, authorized: bool) -> tuple[int, dict[str, Any]]:
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = self.body(MAX_BODY, "images")
            boundary = multipart_boundary(content_type)
            with self.server.spool() as folder:
                with self.server.memory.hold(2 * CHUNK + MAX_PART_HEADERS):
                    files = receive_files(body, boundary, folder)
                self.body_read = True
                if not files:
                    raise Reply(400, "no files in the form: send them in the field files (or list)", result=[])
                self.count = len(files)
                outcomes = self.server.uploads.run([path for _, path in files])
            return respond(outcomes, [name for name, _ in files])
        body = self.body(MAX_JSON, "paths")
        with self.server.memory.hold(body.left):
            items = path_list(body.read_all())
        self.body_read = True
        if not authorized and not is_loopback(self.client_address[0]):
            raise Reply(403, "file paths are taken from this machine only; from elsewhere send the files "
                             "as multipart/form-data, or set a [server] secret and send it", result=[])
        self.count = len(items)
        return respond(self.server.uploads.run(items), items)

    def send(self, status: int, body: dict[str, Any]) -> None:
        from picpipe.redact import mask_data

        data = json.dumps(mask_data(body), ensure_ascii=False).encode("utf-8") if status != 204 else b""
        # An unread body would be taken for the next request on this connection.
        unread = not self.body_read and (self.headers.get("Content-Length") or "0") != "0"
        self.close_connection = self.close_connection or unread
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        origin = self.headers.get("Origin")
        if self.cors and origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
            if self.command == "OPTIONS":
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Authorization, X-PicGo-Secret, Content-Type")
                self.send_header("Access-Control-Max-Age", "600")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def respond(outcomes: list[Outcome], names: list[str]) -> tuple[int, dict[str, Any]]:
    """200 with every URL in order, or 500 naming each image that failed (PicGo-Core 2.x)."""
    problems = []
    for outcome, name in zip(outcomes, names):
        problem = outcome.problem()
        if problem is not None:
            message, hint = problem
            message = message.replace(outcome.item, name)  # a temp file's path means nothing to the client
            problems.append(f"{message} ({hint})" if hint else message)
    if problems:
        return 500, {"success": False, "result": [], "message": "\n".join(dict.fromkeys(problems))}
    return 200, {"success": True, "result": [outcome.url for outcome in outcomes]}


def path_list(body: bytes) -> list[str]:
    """The `list` of a JSON body, checked as PicGo-Core checks it (400 on anything else)."""
    if not body.strip():
        raise Reply(400, CLIPBOARD, result=[])
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Reply(400, f"the body is not JSON: {exc}", result=[]) from None
    if not isinstance(data, dict):
        raise Reply(400, 'the body must be a JSON object {"list": [...]}', result=[])
    items = data.get("list")
    if items is None or items == []:
        raise Reply(400, CLIPBOARD, result=[])
    if not isinstance(items, list):
        raise Reply(400, "list must be an array of image paths or URLs", result=[])
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise Reply(400, "every item of list must be a non-empty string", result=[])
    return items


def multipart_boundary(content_type: str) -> bytes:
    from email.parser import HeaderParser

    header = HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise Reply(400, "multipart/form-data without a boundary", result=[])
    return boundary.encode("latin-1", "replace")


def receive_files(body: Body, boundary: bytes, folder: str) -> list[tuple[str, str]]:
    """(file name, saved path) of every file part, in order, streamed to `folder` as they arrive:
    PicGo-Core's field `files`, Obsidian's repeated `list`, or any other field name (as PicList).
    Plain fields are skipped. The whole body is read (a part cut short is a 400)."""
    from email.parser import HeaderParser

    # A delimiter is CRLF--boundary (RFC 2046), the CRLF belonging to it, not to the content;
    # the first one may open the body.
    delimiter = b"\r\n--" + boundary
    buffer = bytearray(b"\r\n")
    files: list[tuple[str, str]] = []
    _copy_until(body, buffer, delimiter, None)  # the preamble
    while True:
        _fill(body, buffer, 2)
        if buffer.startswith(b"--"):  # the closing delimiter
            break
        head = _part_head(body, buffer)
        name = HeaderParser().parsestr(head.split(b"\r\n", 1)[-1].decode("utf-8", "replace") + "\r\n\r\n") \
            .get_filename()
        if name is None:
            _copy_until(body, buffer, delimiter, None)
            continue
        try:
            path = spool_path(folder, len(files), name)
            files.append((name, path))
            with open(path, "wb") as sink:
                _copy_until(body, buffer, delimiter, sink)
        except OSError as exc:
            raise Reply(500, f"cannot store {name} in {tempfile.gettempdir()}: {exc.strerror}",
                        result=[]) from None
    body.drain()  # the epilogue
    return files


def _fill(body: Body, buffer: bytearray, size: int) -> None:
    while len(buffer) < size:
        chunk = body.read()
        if not chunk:
            raise Reply(400, "the multipart body ends inside a part (no closing boundary)", result=[])
        buffer += chunk


def _part_head(body: Body, buffer: bytearray) -> bytes:
    """The rest of the delimiter line and the part's headers, taken off the buffer."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_PART_HEADERS:
            raise Reply(400, "a malformed multipart part (no end of its headers)", result=[])
        _fill(body, buffer, len(buffer) + 1)
    head = bytes(buffer[:end])
    del buffer[:end + 4]
    return head


def _copy_until(body: Body, buffer: bytearray, delimiter: bytes, sink: IO[bytes] | None) -> None:
    """Move the bytes before the next `delimiter` to `sink` (None: drop them), chunk by chunk,
    and take the delimiter off the buffer. Only the bytes that may begin a delimiter are kept."""
    keep = len(delimiter) - 1
    while (at := buffer.find(delimiter)) < 0:
        if len(buffer) > keep:
            if sink is not None:
                sink.write(memoryview(buffer)[:-keep])
            del buffer[:-keep]
        _fill(body, buffer, len(buffer) + 1)
    if sink is not None:
        sink.write(memoryview(buffer)[:at])
    del buffer[:at + len(delimiter)]


def spool_path(folder: str, index: int, name: str) -> str:
    """Where one received file goes: <folder>/<index>/<a safe form of its name>.

    The name keeps its stem for {name} key templates, never its folders (Obsidian sends the
    whole vault path), control characters or a leading dot; one folder per file, so two files
    of one name never meet.
    """
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if c.isprintable() and c not in '<>:"|?*').strip().lstrip(".")
    stem, ext = os.path.splitext(base)
    base = (stem[:100] + ext[:16]) if stem else ""
    target = os.path.join(folder, str(index), base or f"image-{index}")
    os.mkdir(os.path.dirname(target))
    return target


def host_name(host: str) -> str:
    """`127.0.0.1:36677` → `127.0.0.1`, `[::1]:36677` → `::1`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


def is_web_origin(origin: str) -> bool:
    """A web site, as opposed to an app: app://obsidian.md, a browser extension, or an editor
    whose window is a local page (Typora's says `null` or file://, and PicGo serves it). A page
    in a sandboxed frame also says `null`: what it can do is bounded by what pp-server takes,
    image files only, and a secret closes it."""
    return origin.lower().startswith(("http:", "https:"))
