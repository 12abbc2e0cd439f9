"""Download images named by URL into local files: the library behind `pp-fetch`.

A live migration (`pp-scan docs/ | pp-fetch | pp-upload --host NEW`) needs the bytes of images
that are still online as files. Each file is named after its URL (host as the first folder, the
URL's path below it) so that a person can find it, and a name can never leave the output folder.
Requests go through `picpipe.net.Client` (retries, timeouts, TLS verified, proxies honoured), a
few at a time per host as in `pp-mark check`, with the same error types (`http_404`, `timeout`, ...).
`requests` and Pillow are imported inside the functions: commands must start fast.

    fetcher = Fetcher("fetched")
    record = fetcher.fetch_record({"url": "https://img.example.com/2024/05/a.png"})
    record["path"]  # .../fetched/img.example.com/2024/05/a.png
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urldefrag, urlsplit

from picpipe import console
from picpipe.concurrency import KeyedLocks, KeyedSlots
from picpipe.errors import PicpipeError
from picpipe.files import names_beside, write_first_free
from picpipe.keys import sanitize
from picpipe.linkcheck import find_command, host_of, http_error, masked_error, url_problem
from picpipe.links import url_identity
from picpipe.net import Client, backoff, failure_kind, may_retry, network_error
from picpipe.publish import sniff
from picpipe.stream import Record
from picpipe.timeutil import now_iso

if TYPE_CHECKING:
    import requests

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
DEFAULT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_PER_HOST = 30.0, 2, 4
CHUNK = 64 * 1024
#: Bytes of one file name made from a URL; room is left for "-<sha256>" (65 bytes) within 255.
MAX_NAME_BYTES = 180
#: Extensions a URL's file name may keep; any other (`image.php`, none) gets the image's own.
IMAGE_EXTENSIONS = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".webp", ".avif",
                              ".bmp", ".tif", ".tiff", ".ico", ".svg", ".heic", ".heif"})
#: Record fields that describe the bytes at `path`: replaced by the fetched file's, never kept stale.
FACT_FIELDS = ("sha256", "size", "width", "height", "format", "mime")
_REFERER_HINT = ("hotlink protection: many hosts (Weibo's sinaimg.cn, Gitee) serve images only to pages of their "
                 "own site: re-run with --referer https://weibo.com/ (or the site the images were posted on)")


class Download(NamedTuple):
    data: bytes
    url: str  # where the bytes came from, after redirects
    status: int
    content_type: str


class Fetcher:
    """Fetch records' URLs into files under `out`; safe to share between threads.

    The same URL (by `url_identity`: however it is spelled, fragment aside) is downloaded once per
    Fetcher: later records get the first one's file, or its error. An existing file with the same
    bytes is reused; different bytes at a taken name go beside it, with the start of their sha256
    in the name.
    """

    def __init__(self, out: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, per_host: int = DEFAULT_PER_HOST,
                 max_size: int = DEFAULT_MAX_SIZE, referer: str | None = None) -> None:
        """Creates `out` (OSError when it cannot be a folder)."""
        self.root = Path(out).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.real_root = self.root.resolve()
        self.timeout, self.retries, self.per_host, self.max_size = timeout, retries, per_host, max_size
        self.referer = referer
        self.headers = {"Referer": referer} if referer else {}
        self.slots = KeyedSlots(per_host)
        self.busy = KeyedLocks()
        self.lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.done: dict[str, dict[str, Any] | PicpipeError] = {}
        #: downloaded, written (new files), reused (a file with these bytes was there)
        self.counts: Counter[str] = Counter()

    # -- records ---------------------------------------------------------------------------
    def fetch_record(self, record: Record) -> Record:
        """The record with `path`, the file's facts and `fetched`; `url` stays as it was.

        A record with a path and no url is returned as it is (a local image needs no fetch).
        """
        url = record.get("url")
        if not isinstance(url, str) or not url:
            if isinstance(record.get("path"), str) and record["path"]:
                return record
            raise PicpipeError("no_url", "the record has neither a url to fetch nor a path",
                               'give records with a url, e.g. from pp-scan or pp-mark find, or {"url": "https://..."}')
        kept = {key: value for key, value in record.items() if key not in FACT_FIELDS}
        return {**kept, **self.fetch(url)}

    def fetch(self, url: str) -> dict[str, Any]:
        """{"path", "sha256", "size", ..., "fetched"} for one URL, downloaded at most once."""
        key = url_identity(url)
        with self.busy.hold(key):
            with self.lock:
                known = self.done.get(key)
            if known is None:
                try:
                    known = self._fetch(url)
                except PicpipeError as exc:
                    known = exc
                with self.lock:
                    self.done[key] = known
        if isinstance(known, PicpipeError):  # a copy: one exception object raised in two threads is not safe
            raise PicpipeError(known.type, known.message, known.hint, **known.extra)
        return known

    def _fetch(self, url: str) -> dict[str, Any]:
        problem = url_problem(url)
        if problem is not None:
            raise masked_error("bad_url", f"{problem}: {url}", "only http:// and https:// URLs can be fetched")
        with self.slots.hold(host_of(url).lower()):
            download = self._download(url)
        facts = identify(download, url)
        path = self._store(local_name(url, str(facts["mime"])), download.data, str(facts["sha256"]))
        return {"path": str(path), **facts,
                "fetched": {"url": download.url, "status": download.status, "at": now_iso()}}

    # -- HTTP ------------------------------------------------------------------------------
    def client(self, url: str) -> Client:
        """One client per host: its name is what network errors and retry messages quote."""
        host = host_of(url).lower()
        with self.lock:
            client = self.clients.get(host)
            if client is None:
                client = self.clients[host] = Client(host, timeout=self.timeout, retries=self.retries,
                                                     jobs=self.per_host, purpose="fetch")
            return client

    def _download(self, url: str) -> Download:
        """GET with the client's retries; a body cut short is fetched again the same way."""
        import requests

        client = self.client(url)
        attempt = 0
        while True:
            try:
                response = client.send("GET", url, headers=self.headers, stream=True)  # read against --max-size
            except PicpipeError as exc:
                raise self._network_hint(exc, url) from None
            except (requests.RequestException, ValueError) as exc:  # refused before sending: the URL itself
                raise masked_error("bad_url", f"not a valid URL ({exc}): {url}",
                                   "fix the url field of the record") from None
            try:
                if not 200 <= response.status_code < 300:
                    raise self._status_error(url, response)
                data = self._read(response, url)
                # As the record wrote it unless redirected: requests would give it percent-encoded.
                came_from = response.url if response.history else urldefrag(url)[0]
                return Download(data, came_from, response.status_code, response.headers.get("Content-Type", ""))
            except requests.RequestException as exc:
                if attempt >= self.retries or not may_retry(exc, idempotent=True):
                    raise self._network_hint(network_error(exc, client.who, self.timeout), url) from None
                why = failure_kind(exc)
            finally:
                response.close()
            delay = backoff(attempt)
            attempt += 1
            console.say(f"{client.who}: {why} while reading, try {attempt + 1} of {self.retries + 1} in {delay:.1f} s")
            time.sleep(delay)

    def _read(self, response: requests.Response, url: str) -> bytes:
        """The body, refused as soon as it passes max_size (the declared length is believed first)."""
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_size:
            raise self._too_large(url, int(length))
        body = bytearray()
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if len(body) > self.max_size:
                raise self._too_large(url, None)
        return bytes(body)

    def _too_large(self, url: str, length: int | None) -> PicpipeError:
        size = f"{length} bytes" if length is not None else "more"
        return masked_error("too_large", f"{url} is {size}, over the limit of {self.max_size} bytes",
                      "raise --max-size if this image is wanted")

    def _status_error(self, url: str, response: requests.Response) -> PicpipeError:
        """`http_<code>` as pp-mark check says it; a 403 also names --referer."""
        error = http_error(url, response)
        if response.status_code != 403:
            return error
        tried = f" (the Referer {self.referer} was sent and refused)" if self.referer else ""
        return masked_error(error.type, error.message + tried,
                      f"{_REFERER_HINT}; or the object is private: upload the backup again ({find_command(url)})")

    def _network_hint(self, error: PicpipeError, url: str) -> PicpipeError:
        """net's hints speak of profiles; here the URL comes from a document, and the flags are pp-fetch's."""
        hints = {
            "timeout": "the host is down, slow, or blocked from this network: re-run later or with a larger --timeout",
            "dns": "the domain may have expired or the image host closed down (or DNS fails here): the image can "
                   f"only come from a backup now: {find_command(url)}",
            "connection_refused": "nothing listens there: the host is down or the URL's port is wrong; re-run later",
            "connection": "the host or the network dropped the connection: re-run later",
        }
        hint = hints.get(error.type)
        return error if hint is None else masked_error(error.type, error.message, hint)

    # -- files -----------------------------------------------------------------------------
    def _store(self, name: str, data: bytes, digest: str) -> Path:
        """Write `data` (sha256 `digest`) at `name`, or beside it when the name holds other bytes;
        never over a file."""
        placed = write_first_free(data, self._folders_made(names_beside(name, digest)), ".pp-fetch-")
        if placed is None:
            raise PicpipeError("name_taken", f"{name} and the names beside it hold other files",
                               "move those files out of the --out folder, or choose another --out")
        self._count("written" if placed[1] else "reused")
        return placed[0]

    def _folders_made(self, names: list[str]) -> Iterator[Path]:
        for name in names:
            target = self._inside(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            yield target

    def _inside(self, name: str) -> Path:
        """`root/name`, refused when a symlink inside the folder leads out of it."""
        target = self.root / name
        if self.real_root not in target.resolve().parents:
            raise PicpipeError("bad_path", f"{name} leads out of {self.root} (through a symlink?)",
                               "keep symlinks that point elsewhere out of the --out folder")
        return target

    def _count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def close(self) -> None:
        with self.lock:
            for client in self.clients.values():
                client.close()
            self.clients.clear()


def identify(download: Download, url: str) -> dict[str, Any]:
    """sha256, size, width, height, format, mime of the bytes: an image, or a `not_an_image` error
    (an HTML error page, a login form) that names the Content-Type the server gave."""
    import hashlib

    from PIL import Image

    from picpipe.imaging import facts

    data = download.data
    try:
        return facts(data)
    except Image.DecompressionBombError:
        raise masked_error("too_large", f"{url} has too many pixels to be read safely (a decompression bomb?)",
                     "open it in a browser; if it is a real image, download it by hand") from None
    except (OSError, SyntaxError, ValueError):
        pass
    if sniff(data[:4096]) == "svg":  # Pillow cannot read an SVG; publish's test tells one from a page
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "format": "svg",
                "mime": "image/svg+xml"}
    served = download.content_type or "no Content-Type"
    raise masked_error("not_an_image", f"{url} is not an image ({served}, {len(data)} bytes)",
                 "the host answered with a page instead of the image (an error, a login or a 'hotlink forbidden' "
                 "page): open the URL in a browser; if the image shows there, try --referer with the site's URL")


def local_name(url: str, mime: str) -> str:
    """`host/path/name.ext` for a URL: its `url_identity` (one name for every spelling, the host
    as IDNA), percent-decoded once, made safe by keys.sanitize (no `..`, no absolute path),
    `index` for a path ending in `/`, the image's extension added when the name has none of an
    image, and each part cut to MAX_NAME_BYTES."""
    parts = urlsplit(url_identity(url))
    host = (parts.hostname or "unknown-host").replace(":", "_")  # an IPv6 address
    path = unquote(parts.path, errors="replace")
    try:
        rest = sanitize(path)
    except PicpipeError:  # nothing left: "/", "/..", ""
        rest = ""
    if not rest or path.endswith("/"):
        rest = f"{rest}/index" if rest else "index"
    folders, _, name = rest.rpartition("/")
    if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
        name += extension(mime)
    segments = [host, *(folders.split("/") if folders else []), name]
    return sanitize("/".join(_fit(segment) for segment in segments))


def extension(mime: str) -> str:
    """`.png` for image/png: imaging's own names first (`.jpg`, not `.jpe`), then the system's."""
    import mimetypes

    from picpipe.imaging import FORMATS

    ours = {kind: ext for ext, kind in FORMATS.values()}
    return ours.get(mime) or mimetypes.guess_extension(mime) or ""


def _fit(segment: str) -> str:
    """One path segment within MAX_NAME_BYTES of UTF-8, its extension kept."""
    if len(segment.encode()) <= MAX_NAME_BYTES:
        return segment
    stem, ext = os.path.splitext(segment)
    if len(ext.encode()) > MAX_NAME_BYTES // 2:
        stem, ext = segment, ""
    room = MAX_NAME_BYTES - len(ext.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + ext
