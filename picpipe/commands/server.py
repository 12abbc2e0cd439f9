"""pp-server: a PicGo-Server-compatible HTTP server (Typora "PicGo (app)", Obsidian, other PicGo
clients) that runs the configured pipeline on what it receives.

The API is PicGo-Core 2.x's: `POST /upload` with `{"list": [paths]}` or multipart files,
`POST /heartbeat`, an optional secret. Security beyond PicGo's: a server that uploads any file
it can read by path must not obey web pages, so browser requests (an `Origin` of http(s),
file or null) are refused unless they carry the secret, no CORS header is sent to them
otherwise, the Host header must name this machine when listening on loopback (DNS rebinding),
and path lists from other machines need the secret.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import re
import shutil
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from picpipe import console
from picpipe.cli import EXIT_OK, Command, ledger_argument
from picpipe.errors import UsageError

if TYPE_CHECKING:
    from picpipe.pipeline import Outcome, Pipeline

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 36677
#: Larger request bodies are answered 413 without being read.
MAX_BODY = 100 * 1024 * 1024
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


class PicGoServer(ThreadingHTTPServer):
    """Serves the PicGo API for one pipeline; `secret` None means no authentication."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], pipeline: Pipeline, secret: str | None = None,
                 always_200: bool = False) -> None:
        host = address[0]
        if ":" in host:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.pipeline = pipeline
        self.secret = secret
        self.loopback = is_loopback(host)
        self.always_200 = always_200


class Handler(BaseHTTPRequestHandler):
    server: PicGoServer
    protocol_version = "HTTP/1.1"
    server_version = "picpipe"
    sys_version = ""
    timeout = 60  # seconds a client may keep a connection silent (a body promised, never sent)

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own lines would show query strings (a ?secret=): `log` writes ours."""

    def do_POST(self) -> None:
        self.answer()

    def do_GET(self) -> None:
        self.answer()

    def do_OPTIONS(self) -> None:
        self.answer()

    def answer(self) -> None:
        started, self.count, self.body_read = time.monotonic(), 0, False
        self.cors = False
        try:
            status, body = self.route()
        except Reply as reply:
            status, body = reply.status, reply.body
        except UsageError as exc:  # a stage refused the configuration
            status, body = 500, {"success": False, "result": [], "message": f"{exc.message} ({exc.hint})"}
        except Exception as exc:
            if console.debug:
                console.traceback(exc)
            status, body = 500, {"success": False, "result": [], "message": f"internal error: {exc!r}"}
        if self.server.always_200 and status in (400, 401, 403, 500) and urlsplit(self.path).path == "/upload":
            status = 200  # the answer's `success` and `message` still say what happened
        self.send(status, body)
        images = f" {console.counted(self.count, 'image')}" if self.count else ""
        console.say(f"{self.client_address[0]} {self.command} {urlsplit(self.path).path} {status}{images} "
                    f"{time.monotonic() - started:.2f}s")

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

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():  # its body stays unread: close
            self.close_connection = True
            raise Reply(411, "send the body with a Content-Length (chunked transfer encoding is not read)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Reply(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise Reply(413, f"the request is larger than {MAX_BODY // (1024 * 1024)} MB: send fewer images at once")
        if length < 0:
            raise Reply(400, "bad Content-Length")
        body = self.rfile.read(length)
        self.body_read = True
        return body

    def upload(self, authorized: bool) -> tuple[int, dict[str, Any]]:
        body = self.read_body()
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            files = multipart_files(content_type, body)
            if not files:
                raise Reply(400, "no files in the form: send them in the field files (or list)", result=[])
            self.count = len(files)
            folder = tempfile.mkdtemp(prefix="pp-server-")
            try:
                paths = [save(folder, index, name, data) for index, (name, data) in enumerate(files)]
                outcomes = self.server.pipeline.run(paths)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return respond(outcomes, [name for name, _ in files])
        items = path_list(body)
        if not authorized and not is_loopback(self.client_address[0]):
            raise Reply(403, "file paths are taken from this machine only; from elsewhere send the files "
                             "as multipart/form-data, or set a [server] secret and send it", result=[])
        self.count = len(items)
        return respond(self.server.pipeline.run(items), items)

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
        return 500, {"success": False, "result": [], "message": "\n".join(problems)}
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


def multipart_files(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every file part, in order: PicGo-Core's field `files`, Obsidian's
    repeated `list`, or any other field name (as PicList). Plain fields are skipped."""
    from email.parser import HeaderParser

    header = HeaderParser().parsestr(f"Content-Type: {content_type}\r\n\r\n")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise Reply(400, "multipart/form-data without a boundary", result=[])
    files = []
    # A delimiter is CRLF--boundary (RFC 2046), the CRLF belonging to it, not to the content.
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, found, content = part.partition(b"\r\n\r\n")
        if not found:
            raise Reply(400, "a malformed multipart part", result=[])
        headers = HeaderParser().parsestr(head.split(b"\r\n", 1)[-1].decode("utf-8", "replace") + "\r\n\r\n")
        name = headers.get_filename()
        if name is not None:
            files.append((name, content))
    return files


def save(folder: str, index: int, name: str, data: bytes) -> str:
    """Write one received file as <folder>/<index>/<a safe form of its name> and return the path.

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
    with open(target, "wb") as handle:
        handle.write(data)
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


class ServerCommand(Command):
    prog = "pp-server"
    description = (
        "Answer PicGo-Server requests on http://127.0.0.1:36677 (POST /upload, POST /heartbeat),\n"
        "so that Typora (\"PicGo (app)\"), Obsidian Image Auto Upload and other PicGo clients\n"
        "upload through the configured pipeline ([pipeline] in the config, as pp-typora). Only\n"
        "this machine can connect unless --host says otherwise. Optional secret: [server] secret,\n"
        "PICPIPE_SERVER_SECRET or --secret-file, sent as Authorization: Bearer S or X-PicGo-Secret."
    )
    examples = """\
  pp-server
  pp-server --port 36678 --secret-file ~/.config/picpipe/server-secret
  pp-server --host 0.0.0.0 --secret-file secret.txt     # reachable from the network: think twice
  pp-mark find --since 2024-06-01 | pp-link --md         # what the editors uploaded since June
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", metavar="ADDRESS",
                            help=f"listen on ADDRESS (default [server] host, else {DEFAULT_HOST}; other than "
                            "loopback only when given here)")
        parser.add_argument("--port", type=port_number, metavar="N", help=f"port (default [server] port, else "
                            f"{DEFAULT_PORT})")
        parser.add_argument("--secret-file", metavar="FILE", help="read the secret clients must send from FILE")
        parser.add_argument("--always-200", action="store_true",
                            help="answer /upload failures with HTTP 200 and success false, as PicGo GUI 2.x does "
                            "(Obsidian's requestUrl drops the message of a 4xx/5xx answer)")
        parser.add_argument("--secret", help=argparse.SUPPRESS)  # refused with a reason, never echoed
        ledger_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.pipeline import Pipeline, settings

        if args.secret is not None:
            raise UsageError("--secret on the command line is visible to every user of this machine (ps)",
                             "use --secret-file FILE, PICPIPE_SERVER_SECRET or [server] secret in the config")
        env, file = self.config.section_layers("server")
        host = args.host or self.config.resolve("[server]", "host", env.get("host") or file.get("host")) \
            or DEFAULT_HOST
        if not is_loopback(host) and args.host is None:
            raise UsageError(f"[server] host = {host!r} would accept connections from other machines",
                             f"to mean it, say so on the command line: pp-server --host {host}")
        port = args.port if args.port is not None else env.get("port") or file.get("port") or DEFAULT_PORT
        try:
            port = port_number(str(port))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"[server] port: {exc}", "PICPIPE_SERVER_PORT and port are whole numbers") from None
        secret = self.secret(args, env, file)
        pipeline = Pipeline(settings(self.config, ledger=args.ledger))
        try:
            server = PicGoServer((host, port), pipeline, secret, args.always_200)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                             "is PicGo or another pp-server running there? stop it, or use --port N "
                             "and give your editor the same port") from None
        address = f"[{host}]" if ":" in host else host
        console.say(f"listening on http://{address}:{server.server_address[1]} "
                    f"(upload to {pipeline.settings.host}; secret {'required' if secret else 'not set'}); "
                    "Ctrl-C stops")
        if not server.loopback:
            console.warn(f"listening on {host}: other machines can reach this server"
                         + ("" if secret else " and no secret is set: anyone who can connect can upload images "
                            "to your host") + "; file paths are only taken from this machine or with the secret")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.say("stopped")
        finally:
            server.server_close()
        return EXIT_OK

    def secret(self, args: argparse.Namespace, env: dict[str, Any], file: dict[str, Any]) -> str | None:
        """--secret-file, else PICPIPE_SERVER_SECRET, else [server] secret; None when none is set."""
        from picpipe import redact

        if args.secret_file:
            try:
                with open(os.path.expanduser(args.secret_file), encoding="utf-8") as handle:
                    value = handle.read().strip()
            except OSError as exc:
                raise UsageError(f"cannot read --secret-file {args.secret_file}: {exc.strerror}") from None
            if not value:
                raise UsageError(f"--secret-file {args.secret_file} is empty", "write the secret in it")
            redact.register(value)
            return value
        value = self.config.resolve("[server]", "secret", env.get("secret") or file.get("secret"))
        return str(value) if value else None


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text}")
    return value


def main() -> int:
    return ServerCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
