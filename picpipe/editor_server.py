"""The PicGo-Server API that pp-server answers (Typora "PicGo (app)", Obsidian, PicList and
other PicGo clients): HTTP handling, request bodies, and the queue in front of the pipeline.

The API is PicGo-Core's and PicList's: `POST /upload` with `{"list": [paths]}`, multipart files
or an empty body (the clipboard), answered with PicGo 2.x's `result` (the URLs), PicGo 3.x's
`items` and PicList's `fullResult`; `?uploader=` (PicGo 3.x), `?picbed=` and `?configName=`
(PicList) choose the host profile (`HostChoice`); `POST /delete` with PicList's
`{"list": [fullResult, ...]}` deletes uploads the ledger knows; `POST /heartbeat`; an optional
secret (Authorization: Bearer, X-PicGo-Secret, ?secret=, PicList's ?key=). Security beyond
PicGo's: a server that uploads any file it can read by path must not obey web pages, so
browser requests (an `Origin` of http(s)) are refused unless they carry the secret, no CORS
header is sent to them otherwise, the Host header must name this machine when listening on
loopback (DNS rebinding), and path lists, the clipboard and deletions need the secret when
they come from other machines (the clipboard and deletions also from a page, `Origin: null`).

Under load: connections wait in a real listen backlog; one thread (the doorman) holds every
connection until its request head has arrived, so idle and slow clients cost a socket, not a
thread, and one that takes longer than HEAD_TIMEOUT is dropped. A request whose head is in gets
a thread of its own (so /heartbeat is answered at once), at most MAX_CONNECTIONS at a time;
beyond that it waits up to QUEUE_WAIT seconds, then is answered 503. Received files are
streamed to a temp folder in small chunks (memory does not grow with the body), at most
SPOOL_LIMIT bytes across requests; uploads wait for one of a few pipeline runs, each taking the
images of every request waiting, each distinct path once.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from picpipe import console
from picpipe.errors import PicpipeError, UsageError

if TYPE_CHECKING:
    from picpipe.config import Config
    from picpipe.pipeline import Outcome, Pipeline
    from picpipe.stream import Record

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
#: Requests served at once, each by a thread; more wait for one (QUEUE_WAIT), then get a 503.
MAX_CONNECTIONS = 256
#: Seconds a request whose head is in waits for a thread before it is answered 503.
QUEUE_WAIT = 2.0
#: Connections held open at once (idle, sending their head, waiting, served); more get a 503 at once.
MAX_OPEN = 900
#: Seconds a client has to send a request's head (its first line and headers), and then each
#: chunk of its body: a client slower than that (slowloris) is dropped without an answer.
HEAD_TIMEOUT = BODY_TIMEOUT = 30
#: A request head longer than this is answered 431 (http.server's own limits are 64 KiB a line).
MAX_HEAD = 256 * 1024
#: Bytes of received files on disk at once, across requests (as their Content-Length says);
#: a request that would pass it is answered 503, to retry in a moment.
SPOOL_LIMIT = 1024 * 1024 * 1024
#: Seconds a refused client gets to read its 503 before its socket is closed.
LINGER = 2.0
#: Received files wait in <temp folder>/pp-server-<pid>-*/ while their request is served.
SPOOL = "pp-server-"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
BUSY = "pp-server is busy receiving other requests: try again in a moment"
#: Items of one POST /delete at most (each is looked up in the ledger).
MAX_DELETE = 1000
#: PicGo's and PicList's uploader names for picpipe's host types (`?uploader=aws-s3` is a profile of
#: type s3). The other PicGo names (qiniu, aliyun, upyun, github, smms, imgur, local) are picpipe's own.
PICGO_TYPES = {"aws-s3": "s3", "aws-s3-plist": "s3", "tcyun": "tencent", "webdavplist": "webdav"}
#: The query parameters that choose a host, in the order they are read.
HOST_PARAMETERS = ("uploader", "picbed", "configName", "configId")


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
        """`size` bytes (at most all) for the block, waiting up to `wait` seconds; 503 if they stay taken."""
        size = min(size, self.total)
        with self.changed:
            if not self.changed.wait_for(lambda: self.free >= size, wait):
                raise Reply(503, BUSY, result=[])
            self.free -= size
        try:
            yield
        finally:
            with self.changed:
                self.free += size
                self.changed.notify_all()


class HostChoice:
    """The host profiles a request's `?uploader=` / `?picbed=` (a profile name, else the one
    profile of that type: PicGo's uploader names are understood, aws-s3 is s3) and `?configName=`
    / `?configId=` (a profile name; `Default`, the name PicGo and PicList give a type's first
    configuration, is the type's profile) choose; None without them. Errors are PicGo 3.x's codes."""

    def __init__(self, config: Config, default: tuple[str, ...]) -> None:
        self.config, self.default = config, default
        #: profile name → its type, for the profiles of the file and of PICPIPE_<NAME>_TYPE.
        self.types: dict[str, str] = {}
        names = list(config.profiles)
        names += [m.group(1).lower() for var in config.environ if (m := re.fullmatch(r"PICPIPE_(\w+)_TYPE", var))]
        for name in dict.fromkeys(names):
            try:
                self.types[name] = str(config.profile(name)["type"])
            except UsageError:  # a bad profile is reported when it is used, not here
                continue

    def kind(self, host: Any) -> str | None:
        """A profile's type: PicGo's `type` of an item."""
        return self.types.get(str(host)) if host else None

    def choose(self, query: str) -> tuple[str, ...] | None:
        asked: dict[str, str] = {}
        for parameter, values in parse_qs(query, keep_blank_values=True).items():
            if parameter in HOST_PARAMETERS:
                if len(values) != 1 or not values[0].strip():
                    raise self.error("INVALID_UPLOAD_OPTION", f'Invalid upload option parameter "{parameter}": '
                                     "provide one non-empty string value.")
                asked[parameter] = values[0].strip()
        if not asked:
            return None
        uploader = asked.get("uploader") or asked.get("picbed")
        name = asked.get("configName") or asked.get("configId")
        if name is not None and uploader is not None and name.lower() == "default" and self.named(name) is None:
            name = None  # PicGo's and PicList's name of a type's first configuration: that type's profile
        if name is not None:
            chosen = self.named(name)
            if chosen is None or (uploader is not None and uploader != chosen and
                                  self.types[chosen] != PICGO_TYPES.get(uploader, uploader)):
                scope = f'uploader="{uploader}"' if uploader else f"uploader=[{', '.join(self.available())}]"
                raise self.error("UPLOAD_CONFIG_NOT_FOUND", f'No upload configuration matched configName="{name}" '
                                 f"in {scope}.")
        else:
            assert uploader is not None
            chosen = self.for_uploader(uploader)
        return self.default if chosen == self.default[0] else (chosen,)

    def named(self, name: str) -> str | None:
        """The profile of this name (PicGo compares config names without case)."""
        if name in self.types:
            return name
        same = [known for known in self.types if known.lower() == name.lower()]
        return same[0] if len(same) == 1 else None

    def for_uploader(self, uploader: str) -> str:
        """A profile named `uploader`, else the one of its type (the pipeline's host among several)."""
        named = self.named(uploader)
        if named is not None:
            return named
        kind = PICGO_TYPES.get(uploader, uploader)
        of_kind = [name for name, its in self.types.items() if its == kind]
        if len(of_kind) == 1:
            return of_kind[0]
        if self.default[0] in of_kind:  # PicGo: the type's active configuration
            return self.default[0]
        if of_kind:
            raise self.error("UPLOAD_CONFIG_AMBIGUOUS", f'Upload configuration uploader="{uploader}" is ambiguous: '
                             f"profiles {', '.join(of_kind)} have type {kind}. Specify one with ?configName=NAME.")
        raise self.error("UNKNOWN_UPLOADER", f'Uploader "{uploader}" is not registered. Available uploaders: '
                         f"[{', '.join(self.available())}].")

    def available(self) -> list[str]:
        return list(dict.fromkeys([*self.types, *self.types.values()]))

    @staticmethod
    def error(code: str, message: str) -> Reply:
        return Reply(400, message, result=[], items=[], code=code)


class _Job:
    """One request's items, waiting for a pipeline run on its hosts (None: the configured ones)."""

    def __init__(self, items: list[str], hosts: tuple[str, ...] | None = None) -> None:
        self.items, self.hosts = items, hosts
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

    def run(self, items: list[str], hosts: tuple[str, ...] | None = None) -> list[Outcome]:
        """One Outcome per item, in order, once a worker has run them (on `hosts` if given)."""
        job = _Job(items, hosts)
        with self.changed:
            self.waiting.append(job)
            self.changed.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outcomes

    def _take(self) -> list[_Job]:
        """The oldest job and those after it for the same hosts, up to `batch` distinct items."""
        with self.changed:
            self.changed.wait_for(lambda: bool(self.waiting))
            jobs = [self.waiting.popleft()]
            count, others = jobs[0].distinct, deque[_Job]()
            while self.waiting:
                job = self.waiting.popleft()
                if job.hosts != jobs[0].hosts:
                    others.append(job)
                elif count + job.distinct <= self.batch:
                    count += job.distinct
                    jobs.append(job)
                else:
                    others.append(job)
                    break
            self.waiting.extendleft(reversed(others))
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            distinct = list(dict.fromkeys(item for job in jobs for item in job.items))
            try:
                outcomes = dict(zip(distinct, self.pipeline.run(distinct, jobs[0].hosts)))
                for job in jobs:
                    job.outcomes = [outcomes[item] for item in job.items]
            except BaseException as exc:  # each request answers it (a stage refused the configuration)
                for job in jobs:
                    job.error = exc
            finally:
                for job in jobs:
                    job.done.set()


class Connection:
    """A client's socket and the bytes read from it that no request has taken yet."""

    def __init__(self, sock: socket.socket, address: Any, buffer: bytes = b"") -> None:
        self.sock, self.address, self.buffer = sock, address, bytearray(buffer)
        self.deadline = 0.0
        self.registered = False  # in the doorman's selector
        self.closing = False  # answered 503: only waiting for the client to read it

    def has_head(self) -> bool:
        return b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer


class Doorman:
    """One thread holding the connections that have no request to serve yet (idle, sending their
    head slowly, back from a kept-alive request): each gets a thread from `serve` once its head
    is in, at most MAX_CONNECTIONS at once; the rest wait QUEUE_WAIT seconds, then get a 503."""

    def __init__(self, serve: Any) -> None:
        self.serve = serve  # (Connection) → None, on a thread of its own
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.lock = threading.Lock()
        self.inbox: deque[Connection] = deque()  # given by other threads
        self.queue: deque[Connection] = deque()  # heads in, waiting for a thread
        self.serving = 0
        self.refused: dict[str, int] = {}  # why → how many, since the last line about it
        self.told = 0.0
        self.stopped = False
        threading.Thread(target=self._loop, name="pp-server-doorman", daemon=True).start()

    def take(self, conn: Connection) -> None:
        """A new connection, or one whose request was answered and that stays open."""
        with self.lock:
            self.inbox.append(conn)
        self._wake()

    def done(self) -> None:
        """A serving thread is free again."""
        with self.lock:
            self.serving -= 1
        self._wake()

    def stop(self) -> None:
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:  # its buffer is full: the doorman is awake already
            pass

    def _loop(self) -> None:
        while not self.stopped:
            for key, _ in self.selector.select(self._timeout()):
                if key.data is None:
                    try:
                        self.wake_r.recv(4096)
                    except OSError:
                        pass
                else:
                    self._read(key.data)
            self._admit()
            self._dispatch()
            self._expire()
            if self.refused and time.monotonic() - self.told >= 1:
                self._tell()
        self._tell()
        for key in list(self.selector.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        for conn in self.queue:
            conn.sock.close()
        self.selector.close()

    def _timeout(self) -> float:
        deadlines = [key.data.deadline for key in self.selector.get_map().values() if key.data is not None]
        deadlines += [conn.deadline for conn in self.queue]
        if self.refused:
            deadlines.append(self.told + 1)
        return max(0.0, min([time.monotonic() + 1.0, *deadlines]) - time.monotonic())

    def _admit(self) -> None:
        with self.lock:
            arrived, self.inbox = self.inbox, deque()
        for conn in arrived:
            if len(self.selector.get_map()) + len(self.queue) + self.serving > MAX_OPEN:
                self._refuse(conn, f"pp-server holds {MAX_OPEN} connections already: try again in a moment")
                continue
            conn.sock.setblocking(False)
            self._held(conn)

    def _held(self, conn: Connection) -> None:
        """A connection with bytes in hand: queued when they hold a head, else read on."""
        if conn.has_head():
            conn.deadline = time.monotonic() + QUEUE_WAIT
            self.queue.append(conn)
        elif len(conn.buffer) > MAX_HEAD:
            self._refuse(conn, "the request head is too long", 431)
        else:
            conn.deadline = time.monotonic() + HEAD_TIMEOUT
            self._register(conn)

    def _register(self, conn: Connection) -> None:
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.registered = True

    def _unregister(self, conn: Connection) -> None:
        if conn.registered:
            self.selector.unregister(conn.sock)
            conn.registered = False

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:  # reset: the client left
            data = b""
        if not data:
            self._drop(conn)
        elif not conn.closing:  # a refused client's further bytes are dropped
            conn.buffer += data
            if conn.has_head() or len(conn.buffer) > MAX_HEAD:
                self._unregister(conn)
                self._held(conn)

    def _dispatch(self) -> None:
        while self.queue:
            with self.lock:
                if self.serving >= MAX_CONNECTIONS:
                    return
                self.serving += 1
            conn = self.queue.popleft()
            conn.sock.setblocking(True)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def _expire(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0].deadline <= now:
            self._refuse(self.queue.popleft(),
                         f"pp-server is serving {MAX_CONNECTIONS} requests: try again in a moment")
        for key in list(self.selector.get_map().values()):
            if key.data is not None and key.data.deadline <= now:
                self._drop(key.data)  # a slow or silent client (slowloris), or a 503 read or not

    def _drop(self, conn: Connection) -> None:
        self._unregister(conn)
        conn.sock.close()

    def _refuse(self, conn: Connection, message: str, status: int = 503) -> None:
        """Answer at once without a thread, then give the client LINGER seconds to read it (a close
        with its request unread would reset the connection before it could)."""
        body = json.dumps({"success": False, "result": [], "message": message}).encode()
        reason = {503: "Service Unavailable", 431: "Request Header Fields Too Large"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nServer: picpipe\r\nContent-Type: application/json; "
                f"charset=utf-8\r\nContent-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
        try:
            conn.sock.setblocking(False)
            conn.sock.send(head.encode() + body)  # a few hundred bytes: the socket buffer takes them
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.sock.close()
            return
        conn.closing, conn.deadline = True, time.monotonic() + LINGER
        self._register(conn)
        why = f"answered {status}: {message.split(':')[0]}"
        self.refused[why] = self.refused.get(why, 0) + 1

    def _tell(self) -> None:
        """One line per reason and second, not one per refused client."""
        for why, count in self.refused.items():
            console.say(f"{console.counted(count, 'connection')} {why}")
        self.refused, self.told = {}, time.monotonic()


class PicGoServer(HTTPServer):
    """Serves the PicGo API for one pipeline; `secret` None means no authentication. `config`
    holds the profiles ?uploader= may choose, `ledger` the uploads /delete may delete (None:
    the configuration's, else the default)."""

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], pipeline: Pipeline, secret: str | None = None,
                 always_200: bool = False, config: Config | None = None, ledger: str | None = None) -> None:
        from picpipe.config import Config

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        sweep_spools()
        raise_open_files()
        self.pipeline = pipeline
        self.uploads = Uploads(pipeline)
        config = config or Config()
        self.hosts = HostChoice(config, pipeline.settings.hosts)
        self.ledger = ledger or pipeline.settings.ledger or config.ledger()
        self.memory = Budget(MEMORY)
        self.disk = Budget(SPOOL_LIMIT)
        self.secret = secret
        self.loopback = is_loopback(address[0])
        self.always_200 = always_200
        #: Temp folders of the requests being served, removed at the latest when the server closes.
        self.spools: set[str] = set()
        self.doorman = Doorman(self.serve)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A new connection goes to the doorman: no thread until its request head is in."""
        self.doorman.take(Connection(request, client_address))

    def serve(self, conn: Connection) -> None:
        """Serve one request on this thread; a connection kept alive goes back to the doorman."""
        kept = False
        try:
            handler = Handler(conn, conn.address, self)  # type: ignore[arg-type]  # see Handler.setup
            if not handler.close_connection:
                conn.buffer = handler.rfile.buffer
                kept = True
        except Exception:
            self.handle_error(conn.sock, conn.address)
        finally:
            if kept:
                self.doorman.take(conn)
            else:
                conn.sock.close()
            self.doorman.done()

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
        self.doorman.stop()
        for folder in list(self.spools):
            shutil.rmtree(folder, ignore_errors=True)


def raise_open_files() -> None:
    """Let this process hold MAX_OPEN connections: raise its soft limit of open files (often 1024)
    toward the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = MAX_OPEN + 256  # spool files, pipes to the pipeline's processes, the ledger
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY
                                                        else min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):  # no such limit here, or not ours to raise
        pass


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


class Reader:
    """A connection's incoming bytes for http.server (readline) and Body (read1), starting with
    what the doorman read already; what is left over after a request stays in `buffer` for the
    next one on the connection."""

    def __init__(self, sock: socket.socket, buffer: bytearray) -> None:
        self.sock, self.buffer = sock, buffer

    def _more(self) -> bool:
        data = self.sock.recv(CHUNK)  # TimeoutError after BODY_TIMEOUT seconds of silence
        self.buffer += data
        return bool(data)

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def readline(self, limit: int = -1) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0 and (limit < 0 or len(self.buffer) < limit) and self._more():
            pass
        size = end + 1 if end >= 0 else len(self.buffer)
        return self._take(size if limit < 0 else min(size, limit))

    def read1(self, size: int) -> bytes:
        if not self.buffer:
            self._more()
        return self._take(size)

    def close(self) -> None:
        """The socket is the server's to close (or to keep for the next request)."""


class Writer(io.BufferedIOBase):
    """The answer, each write sent whole (a socket's send may take part of it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        return len(memoryview(data))


class Body:
    """A request body read in chunks, never past its Content-Length; a client that stops short left."""

    def __init__(self, stream: Reader, length: int) -> None:
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
    """One request on a connection whose head the doorman read (`request` is its Connection)."""

    server: PicGoServer
    rfile: Reader  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    server_version = "picpipe"
    sys_version = ""
    timeout = BODY_TIMEOUT  # seconds a client may keep a connection silent (a body promised, never sent)

    def setup(self) -> None:
        conn: Connection = self.request
        self.connection = self.request = conn.sock
        self.connection.settimeout(self.timeout)
        self.rfile = Reader(conn.sock, conn.buffer)
        self.wfile = Writer(conn.sock)

    def handle(self) -> None:
        """One request: a connection kept alive waits for the next with the doorman, not here."""
        self.close_connection = True
        self.handle_one_request()

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
        if path == "/upload" and "result" in body:
            body.setdefault("items", [])  # PicGo 3.x's shape, failures included
        if self.server.always_200 and status in (400, 401, 403, 500) and path in ("/upload", "/delete"):
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
        if self.command == "POST" and path in ("/upload", "/delete"):
            authorized = self.authorize()
            if origin is not None and is_web_origin(origin) and not authorized:
                raise Reply(403, "requests from web pages are refused: set a [server] secret and send it "
                                 "as Authorization: Bearer ...")
            self.cors = origin is not None and (authorized or not is_web_origin(origin))
            if path == "/delete":
                self.own_machine(authorized, "deletes uploads")
                return self.delete()
            return self.upload(authorized)
        raise Reply(404)

    def own_machine(self, authorized: bool, what: str) -> None:
        """What only the user may ask for (read their clipboard, delete their uploads): a program on
        this machine, not a page (Origin null or file:, which a sandboxed page sends), or the secret."""
        if authorized:
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower().startswith(("null", "file:")):
            raise Reply(403, f"pp-server {what} for programs, not for pages (Origin: {origin}): set a [server] "
                        "secret and send it", result=[])
        if not is_loopback(self.client_address[0]):
            raise Reply(403, f"pp-server {what} for programs on this machine only; from elsewhere set a "
                        "[server] secret and send it", result=[])

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
        """The secret, when one is set, from `Authorization: Bearer`, `X-PicGo-Secret`, `?secret=`
        (in PicGo's order) or `?key=` (PicList's); True when the request proved it. Raises 401
        when it did not."""
        secret = self.server.secret
        if secret is None:
            return False
        if "Authorization" in self.headers:
            match = re.match(r"\s*Bearer\s+(.+?)\s*$", self.headers["Authorization"], re.IGNORECASE)
            token = match.group(1) if match else ""
        elif "X-PicGo-Secret" in self.headers:
            token = self.headers["X-PicGo-Secret"].strip()
        else:
            query = parse_qs(urlsplit(self.path).query)
            token = (query.get("secret") or query.get("key") or [""])[0]
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
        hosts = self.server.hosts.choose(urlsplit(self.path).query)  # before the body: a 400 reads none
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = self.body(MAX_BODY, "images")
            boundary = multipart_boundary(content_type)
            with self.server.disk.hold(body.left, wait=0), self.server.spool() as folder:
                with self.server.memory.hold(2 * CHUNK + MAX_PART_HEADERS):
                    files = receive_files(body, boundary, folder)
                self.body_read = True
                if not files:
                    raise Reply(400, "no files in the form: send them in the field files (or list)", result=[])
                self.count = len(files)
                outcomes = self.server.uploads.run([path for _, path in files], hosts)
            return self.respond(outcomes, [name for name, _ in files])
        body = self.body(MAX_JSON, "paths")
        with self.server.memory.hold(body.left):
            items = path_list(body.read_all())
        self.body_read = True
        if not items:  # PicGo and PicList: no list means the clipboard
            self.own_machine(authorized, "reads the clipboard")
            return self.clipboard(hosts)
        if not authorized and not is_loopback(self.client_address[0]):
            raise Reply(403, "file paths are taken from this machine only; from elsewhere send the files "
                             "as multipart/form-data, or set a [server] secret and send it", result=[])
        self.count = len(items)
        return self.respond(self.server.uploads.run(items, hosts), items)

    def clipboard(self, hosts: tuple[str, ...] | None) -> tuple[int, dict[str, Any]]:
        """The clipboard's image, written to the spool as PicGo names it (a time stamp), uploaded."""
        from picpipe.clipboard import read_image

        try:
            data, mime = read_image()
        except PicpipeError as exc:
            raise Reply(400, f"{exc.message} ({exc.hint})" if exc.hint else exc.message, result=[]) from None
        extension = {"image/jpeg": ".jpg", "image/svg+xml": ".svg"}.get(mime, "." + mime.rsplit("/", 1)[-1])
        name = time.strftime("%Y%m%d%H%M%S") + extension
        with self.server.disk.hold(len(data), wait=0), self.server.spool() as folder:
            path = spool_path(folder, 0, name)
            with open(path, "wb") as sink:
                sink.write(data)
            self.count = 1
            return self.respond(self.server.uploads.run([path], hosts), [name])

    def respond(self, outcomes: list[Outcome], names: list[str]) -> tuple[int, dict[str, Any]]:
        """200 with every URL in order (`result`), PicGo 3.x's `items` and PicList's `fullResult`,
        or 500 naming each image that failed (PicGo-Core 2.x)."""
        problems = []
        for outcome, name in zip(outcomes, names):
            problem = outcome.problem()
            if problem is not None:
                message, hint = problem
                message = message.replace(outcome.item, name)  # a temp file's path means nothing to the client
                problems.append(f"{message} ({hint})" if hint else message)
        if problems:
            return 500, {"success": False, "result": [], "message": "\n".join(dict.fromkeys(problems))}
        items = [picgo_item(outcome.record, name, self.server.hosts.kind(outcome.record.get("host")))
                 for outcome, name in zip(outcomes, names)]
        return 200, {"success": True, "result": [outcome.url for outcome in outcomes], "items": items,
                     "fullResult": [full_result(item, outcome.record) for item, outcome in zip(items, outcomes)]}

    def delete(self) -> tuple[int, dict[str, Any]]:
        """PicList's /delete: each item (a fullResult) is looked up in the ledger, and the upload
        found there (not what the client says), with its mirrors' copies, is deleted from its
        host with a tombstone. An item counts as deleted when every copy of it is."""
        body = self.body(MAX_JSON, "items")
        with self.server.memory.hold(body.left):
            items = delete_list(body.read_all())
        self.body_read = True
        self.count = len(items)
        found, results = self.recorded(items)
        copies = [(index, record) for index in sorted(found) for record in found[index]]
        deleted = self.server.pipeline.delete([record for _, record in copies]) if copies else []
        for (index, asked), record in zip(copies, deleted):
            error = record.get("error")
            if (error or not record.get("deleted_at")) and results.get(index) is None:
                results[index] = f"{asked.get('url')}: " + (str(error.get("message")) if isinstance(error, dict)
                                                             else "not deleted")
        problems = [problem for problem in (results.get(i) for i in range(len(items))) if problem is not None]
        done = len(items) - len(problems)
        answer: dict[str, Any] = {"success": done > 0, "message": f"delete success: {done}, fail: {len(problems)}"}
        if problems:
            answer["errors"] = problems
        if done:
            return 200, answer
        return (400 if not found else 500), {**answer, "message": "delete error: " + "; ".join(problems)}

    def recorded(self, items: list[dict[str, Any]]) -> tuple[dict[int, list[Record]], dict[int, str | None]]:
        """(index → the ledger's live copies each item names, its upload first, then those of its
        `mirrors`; index → why an item is refused)."""
        from picpipe.ledger import Ledger

        found: dict[int, list[Record]] = {}
        refused: dict[int, str | None] = {}
        ledger = Ledger(self.server.ledger)
        try:
            for index, item in enumerate(items):
                url = item.get("url") or item.get("imgUrl")
                sha256 = item.get("sha256")
                if not (item.get("host") or isinstance(url, str) and url):  # a hash alone names no one copy
                    refused[index] = f"item {index + 1} names no upload: send the fullResult /upload answered"
                    continue
                if isinstance(sha256, str) and sha256:
                    states = ledger.states_for([sha256])
                elif isinstance(url, str) and url:
                    states = ledger.states_by_url(url)
                else:
                    refused[index] = f"item {index + 1} names no upload: send the fullResult /upload answered"
                    continue
                matching = named_in(states, item.get("host"), item.get("key"), url)
                live = [state for state in matching if not state.get("deleted_at")]
                if not live:
                    what = url or f"{item.get('host')}:{item.get('key')}"
                    refused[index] = (f"{what}: deleted already ({matching[-1]['deleted_at']})" if matching else
                                      f"{what}: not an upload in the ledger ({ledger.path}), so not deleted")
                    continue
                mirrors = item.get("mirrors")
                mirrors = mirrors if isinstance(mirrors, list) else []
                # A mirror names its host and its key or URL: `{}` would name every copy of the image.
                named = [copy for copy in mirrors if isinstance(copy, dict) and copy.get("host")
                         and (copy.get("key") or copy.get("url"))]
                found[index] = [live[-1], *(state for copy in named
                                            for state in named_in(states, copy["host"], copy.get("key"),
                                                                  copy.get("url"))[-1:]
                                            if not state.get("deleted_at") and state is not live[-1])]
        finally:
            ledger.close()
        return found, refused

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
        if status == 503:
            self.send_header("Retry-After", "1")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def picgo_item(record: Record, name: str, kind: str | None) -> dict[str, Any]:
    """PicGo 3.x's item of an upload: `origin` is what the client sent (a path, URL or file name)."""
    file_name = re.split(r"[\\/]", urlsplit(name).path if name.startswith(("http://", "https://")) else name)[-1]
    extension = os.path.splitext(str(record.get("key") or ""))[1] or os.path.splitext(file_name)[1]
    return {"origin": name, "imgUrl": record.get("url"), "fileName": file_name, "type": kind,
            "contentType": record.get("mime"), "size": record.get("size"), "width": record.get("width"),
            "height": record.get("height"), "extname": extension}


def named_in(states: list[Record], host: Any, key: Any, url: Any) -> list[Record]:
    """The ledger states of uploads that are the host, key and URL given (those given). The URL
    as `states_by_url` found them, however it is spelled (`%28` or `(`): not a glob, as
    `Ledger.matches` is, since it names what to delete."""
    from picpipe.links import url_identity

    wanted = url_identity(url) if isinstance(url, str) else None
    return [state for state in states if state.get("host") and state.get("key")
            and (host is None or state.get("host") == host) and (key is None or state.get("key") == key)
            and (url is None or isinstance(state.get("url"), str) and url_identity(state["url"]) == wanted)]


def full_result(item: dict[str, Any], record: Record) -> dict[str, Any]:
    """PicList's fullResult of an upload: its item, and what POST /delete looks up in the ledger."""
    kept = ("host", "key", "url", "sha256", "uploaded_at", "mirrors")
    return {**item, **{field: record[field] for field in kept if field in record}}


def path_list(body: bytes) -> list[str]:
    """The `list` of a JSON body, checked as PicGo-Core checks it (400 on anything else); an
    empty list for an empty body, `{}` or `{"list": []}`: the clipboard."""
    if not body.strip():
        return []
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Reply(400, f"the body is not JSON: {exc}", result=[]) from None
    if not isinstance(data, dict):
        raise Reply(400, 'the body must be a JSON object {"list": [...]}', result=[])
    items = data.get("list")
    if items is None or items == []:
        return []
    if not isinstance(items, list):
        raise Reply(400, "list must be an array of image paths or URLs", result=[])
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise Reply(400, "every item of list must be a non-empty string", result=[])
    return items


def delete_list(body: bytes) -> list[dict[str, Any]]:
    """PicList's `{"list": [fullResult, ...]}`, each item an object (400 on anything else)."""
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise Reply(400, f"the body is not JSON: {exc}") from None
    items = data.get("list") if isinstance(data, dict) else None
    if not items:
        raise Reply(400, "no file to delete")  # PicList's words
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Reply(400, 'list must be an array of the fullResult objects /upload answered')
    if len(items) > MAX_DELETE:
        raise Reply(413, f"more than {MAX_DELETE} items: send fewer at once")
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
