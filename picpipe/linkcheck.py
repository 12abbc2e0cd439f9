"""Probe image URLs and say why the dead ones are dead: the library behind `pp-mark check`.

HEAD first because it costs the image host nothing; GET (headers only, body never read) when the
host refuses HEAD, because many CDNs and object stores answer HEAD with 403/405 while serving the
image to browsers. `requests` is imported inside the functions: commands must start fast.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from picpipe import __version__
from picpipe.concurrency import ordered_map
from picpipe.errors import PicpipeError
from picpipe.redact import redact_text

if TYPE_CHECKING:
    import requests

T = TypeVar("T")

USER_AGENT = f"picpipe/{__version__} (+link check)"
#: Statuses with which servers refuse HEAD although they would serve GET.
HEAD_REFUSED = frozenset({400, 403, 405, 406, 501})
#: Seconds before the first retry, doubled before each next one.
BACKOFF = 0.2
#: Failures worth another try: the next attempt may well succeed.
RETRYABLE = frozenset({"timeout", "connection", "connection_refused"})


@dataclass
class Probe:
    """What checking one URL found."""

    url: str
    ok: bool
    status: int | None  # final HTTP status, None when no response
    method: str | None  # "HEAD" or "GET": the request that decided; None when none was sent
    elapsed_ms: int
    error: PicpipeError | None  # None when ok


def new_session(jobs: int) -> requests.Session:
    """One Session for every probe: keep-alive per host, and a pool wide enough for `jobs` threads.

    TLS is verified and proxy environment variables are honoured (the requests defaults).
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=jobs, pool_maxsize=jobs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def probe_url(url: str, session: requests.Session, timeout: float = 10.0, retries: int = 1) -> Probe:
    """Check one URL; a dead link is a Probe with an error, never an exception."""
    import requests

    start = time.monotonic()

    def result(method: str | None, status: int | None, error: PicpipeError | None) -> Probe:
        return Probe(url, error is None, status, method, int((time.monotonic() - start) * 1000), error)

    problem = _url_problem(url)
    if problem is not None:
        return result(None, None, _error("bad_url", f"{problem}: {url}",
                                         "fix the url field of the record: only http(s) URLs can be checked"))
    method = "HEAD"
    response: requests.Response | None = None
    try:
        response = _send(session, method, url, timeout, retries)
    except (ValueError, UnicodeError) as exc:  # urllib3's LocationParseError: a host like "a..b"
        return result(method, None, _error("bad_url", f"not a valid URL ({exc}): {url}",
                                           "fix the url field of the record"))
    except requests.RequestException as exc:
        if not _in_chain(exc, ConnectionResetError):  # a reset is how some servers refuse HEAD
            return result(method, None, _exception_error(exc, url, timeout))
    # Outside the except block, so that a GET failure is not chained to the HEAD one.
    if response is None or response.status_code in HEAD_REFUSED:
        method = "GET"
        try:
            response = _send(session, method, url, timeout, retries)
        except requests.RequestException as exc:
            return result(method, None, _exception_error(exc, url, timeout))
    status = response.status_code
    return result(method, status, _http_error(url, response) if status >= 400 else None)


def check_urls(
    items: Iterable[T],
    url_of: Callable[[T], str | None],
    *,
    jobs: int = 16,
    per_host: int = 4,
    timeout: float = 10.0,
    retries: int = 1,
) -> Iterator[tuple[T, Probe | None]]:
    """Probe each item's URL concurrently; yield (item, probe) in input order (probe None when url_of gives None).

    At most `jobs` requests at once, and at most `per_host` to one host (the URL's host:port;
    redirects are not counted against their target), so that a big ledger on one image host does
    not look like an attack. A worker waits for its host's slot, so a long run of URLs on one host
    goes `per_host` at a time.
    """
    if jobs < 1 or per_host < 1:
        raise ValueError("jobs and per_host must be at least 1")
    session = new_session(jobs)
    slots: dict[str, threading.BoundedSemaphore] = {}
    slots_lock = threading.Lock()

    def host_slots(host: str) -> threading.BoundedSemaphore:
        with slots_lock:  # two workers meeting a new host at once must share one semaphore
            if host not in slots:
                slots[host] = threading.BoundedSemaphore(per_host)
            return slots[host]

    def check(item: T) -> tuple[T, Probe | None]:
        url = url_of(item)
        if url is None:
            return item, None
        with host_slots(_host(url).lower()):
            try:
                return item, probe_url(url, session, timeout, retries)
            except Exception as exc:  # a bug must cost one record, not the run
                error = _error("internal", f"{type(exc).__name__}: {exc}",
                               "this is a picpipe bug: re-run with --debug and report it")
                return item, Probe(url, False, None, None, 0, error)

    # The ordered map itself, not a generator around it: its pending() lets a caller that is
    # interrupted still write the probes already finished. The session closes when collected.
    return ordered_map(check, items, jobs)


def _send(session: requests.Session, method: str, url: str, timeout: float, retries: int) -> requests.Response:
    """One request, tried again after timeouts and connection failures; a GET's body is never read."""
    import requests

    attempt = 0
    while True:
        try:
            response = session.request(method, url, timeout=(timeout, timeout), allow_redirects=True,
                                       stream=method == "GET")
        except requests.RequestException as exc:
            if attempt >= retries or not _retryable(exc, method):
                raise
        else:
            response.close()  # an unread GET body is discarded with its connection
            return response
        # Outside the except block, so that the last failure does not drag the earlier ones along.
        time.sleep(BACKOFF * 2**attempt)
        attempt += 1


def _retryable(exc: BaseException, method: str) -> bool:
    """Retry what may pass: not TLS, not a name that does not exist, not a HEAD reset (GET follows)."""
    if method == "HEAD" and _in_chain(exc, ConnectionResetError):
        return False
    kind = _kind(exc)
    if kind == "dns":
        return any(isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN for e in _chain(exc))
    return kind in RETRYABLE


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it: causes, contexts, and the ones wrapped in args or `.reason`."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        # urllib3's MaxRetryError keeps the real failure in `.reason`, ProtocolError in its args.
        inner = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(reversed([i for i in inner if isinstance(i, BaseException)]))


def _in_chain(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(e, kind) for e in _chain(exc))


def _kind(exc: BaseException) -> str:
    """The error type of a failed request, from exception classes, never from message text."""
    import requests

    if isinstance(exc, requests.TooManyRedirects):
        return "too_many_redirects"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return "bad_url"  # e.g. a redirect to an unusable Location
    if isinstance(exc, requests.exceptions.ProxyError):
        return "connection"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    # Not urllib3's TimeoutError: its NewConnectionError (a refused connection) derives from it.
    if isinstance(exc, requests.Timeout) or _in_chain(exc, TimeoutError):
        return "timeout"
    if _in_chain(exc, socket.gaierror):  # urllib3's NameResolutionError wraps it
        return "dns"
    if _in_chain(exc, ConnectionRefusedError):
        return "connection_refused"
    return "connection"


def _exception_error(exc: BaseException, url: str, timeout: float) -> PicpipeError:
    """A failed request as the record's error: what happened at which host, and what to do."""
    import ssl

    import requests

    host = _host(url)
    kind = _kind(exc)
    if kind == "too_many_redirects":
        return _error(kind, f"{host} redirects in a loop or too many times",
                      "open the URL in a browser: the host's redirect rules are broken, or the image now "
                      "sits behind a login page")
    if kind == "bad_url":
        return _error(kind, f"{host} leads to a URL that cannot be fetched ({_reason(exc)})",
                      "open the URL in a browser to see where it redirects")
    if kind == "tls":
        verify = next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
        problem = f"its certificate is not valid ({verify.verify_message or verify})" if verify else _reason(exc)
        return _error(kind, f"HTTPS to {host} failed: {problem}",
                      "browsers will refuse this image too: renew or fix the certificate in the image host's "
                      "or CDN's HTTPS settings (it must cover this domain); if every host fails, check the "
                      "clock and any intercepting proxy")
    if kind == "timeout":
        connecting = isinstance(exc, requests.ConnectTimeout)
        what = f"no connection to {host}" if connecting else f"{host} did not answer"
        return _error(kind, f"{what} within {timeout:g} s",
                      "the host is down, slow, or blocked from this network: re-run later or with a larger "
                      "--timeout")
    if kind == "dns":
        return _error(kind, f"the name {urlsplit(url).hostname} does not resolve",
                      "the domain may have expired or the image host closed down (or your DNS is failing): "
                      f"find the backup with {_find_command(url)} and upload it again")
    if kind == "connection_refused":
        return _error(kind, f"{host} refused the connection",
                      "nothing listens there: the server is down or the URL's port is wrong; re-run later")
    if isinstance(exc, requests.exceptions.ProxyError):
        return _error(kind, f"the proxy failed to reach {host}: {_reason(exc)}",
                      "check the HTTPS_PROXY, HTTP_PROXY and NO_PROXY environment variables")
    return _error(kind, f"the connection to {host} failed: {_reason(exc)}",
                  "the server or the network dropped the connection: re-run later")


def _http_error(url: str, response: requests.Response) -> PicpipeError:
    """A final status >= 400 as `http_<code>`, with the host that answered it."""
    from http import HTTPStatus

    code = response.status_code
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = response.reason or ""
    host, final = _host(url), _host(response.url)
    where = host if final == host else f"{final} (redirected from {host})"
    find = _find_command(url)
    if code in (404, 410):
        hint = f"the image was deleted or moved: find the backup with {find} and upload it again"
    elif code == 403:
        hint = ("hotlink protection (Referer rules) or a private bucket: allow empty Referers or make the "
                f"object public in the host's settings, or upload the backup again ({find})")
    elif code == 401:
        hint = f"the image now needs a login: make the bucket or album public, or upload the backup again ({find})"
    elif code == 429:
        hint = "rate limited by the host: re-run later or lower --per-host"
    elif code >= 500:
        hint = "the host's server failed: re-run later; if it lasts, the host may be gone for good"
    else:
        hint = "the host refuses to serve this image: open the URL in a browser to see why"
    return _error(f"http_{code}", f"{where} answered HTTP {code} {phrase}".rstrip(), hint)


def _error(type: str, message: str, hint: str) -> PicpipeError:
    """Messages quote URLs, which may carry user:password@ or signed query strings: mask them here."""
    return PicpipeError(type, redact_text(message), redact_text(hint))


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be requested at all, or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        return "not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL ({parts.scheme}:)" if parts.scheme else "no http:// or https:// in the URL"
    if not parts.hostname:
        return "no host in the URL"
    return None


def _host(url: str) -> str:
    """host[:port] of `url`, without any user:password@."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def _find_command(url: str) -> str:
    return f"pp-mark find --url {shlex.quote(url)}"


def _reason(exc: BaseException) -> str:
    """The innermost explanation: an OS error's text rather than urllib3's pool description."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return str(chain[-1]) or type(chain[-1]).__name__
