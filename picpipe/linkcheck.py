"""Probe image URLs and say why the dead ones are dead: the library behind `pp-mark check`.

HEAD first because it costs the image host nothing; GET (headers only, body never read) when the
host refuses HEAD, because many CDNs and object stores answer HEAD with 403/405 while serving the
image to browsers. `requests` is imported inside the functions: commands must start fast.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from picpipe import net
from picpipe.concurrency import KeyedSlots, ordered_map
from picpipe.errors import PicpipeError
from picpipe.net import chain, failure_kind, in_chain, may_retry, new_session, quotable, reason
from picpipe.redact import redact_text

if TYPE_CHECKING:
    import requests

T = TypeVar("T")

#: Statuses with which servers refuse HEAD although they would serve GET.
HEAD_REFUSED = frozenset({400, 403, 405, 406, 501})
#: What to do about a dead link, when its image has a backup.
RESTORE_RECIPE = "pp-mark check | pp-backup restore | pp-upload --host NEW | pp-mark | pp-rewrite docs/"
#: Seconds before the first retry, doubled before each next one.
BACKOFF = 0.2


@dataclass
class Probe:
    """What checking one URL found."""

    url: str
    ok: bool
    status: int | None  # final HTTP status, None when no response
    method: str | None  # "HEAD" or "GET": the request that decided; None when none was sent
    elapsed_ms: int
    error: PicpipeError | None  # None when ok


def probe_url(url: str, session: requests.Session, timeout: float = 10.0, retries: int = 1) -> Probe:
    """Check one URL; a dead link is a Probe with an error, never an exception."""
    import requests

    start = time.monotonic()

    def result(method: str | None, status: int | None, error: PicpipeError | None) -> Probe:
        return Probe(url, error is None, status, method, int((time.monotonic() - start) * 1000), error)

    if url[:5].lower() == "file:":  # the local host's links (the embedded default): the file is the link
        from picpipe.links import elsewhere, file_url_path

        path = file_url_path(url)
        if elsewhere(path):  # file://server/share/a.png names no /share/a.png
            return result(None, None, masked_error(
                "file_missing", f"{path}: a Windows path, no such file on this system",
                "check the link on the Windows machine that has that drive or share"))
        if os.path.isfile(path):
            return result(None, None, None)
        return result(None, None, masked_error("file_missing", f"no file at {path}",
                                         "the file is gone: restore it from a backup copy: " + RESTORE_RECIPE))
    problem = url_problem(url)
    if problem is not None:
        return result(None, None, masked_error("bad_url", f"{quotable(url)} is not a usable URL: {problem}",
                                         "fix the url field of the record: only http(s) and file: URLs can be "
                                         "checked"))
    method = "HEAD"
    response: requests.Response | None = None
    try:
        response = _send(session, method, url, timeout, retries)
    except (ValueError, UnicodeError) as exc:  # urllib3's LocationParseError: a host like "a..b"
        return result(method, None, masked_error("bad_url", f"not a valid URL ({exc}): {url}",
                                           "fix the url field of the record"))
    except requests.RequestException as exc:
        if not in_chain(exc, ConnectionResetError):  # a reset is how some servers refuse HEAD
            return result(method, None, _exception_error(exc, url, timeout))
    # Outside the except block, so that a GET failure is not chained to the HEAD one.
    if response is None or response.status_code in HEAD_REFUSED:
        method = "GET"
        try:
            response = _send(session, method, url, timeout, retries)
        except requests.RequestException as exc:
            return result(method, None, _exception_error(exc, url, timeout))
    status = response.status_code
    return result(method, status, http_error(url, response) if status >= 400 else None)


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
    session = new_session(jobs, "link check")
    slots = KeyedSlots(per_host)

    def check(item: T) -> tuple[T, Probe | None]:
        url = url_of(item)
        if url is None:
            return item, None
        with slots.hold(host_of(url).lower()):
            try:
                return item, probe_url(url, session, timeout, retries)
            except Exception as exc:  # a bug must cost one record, not the run
                error = masked_error("internal", f"{type(exc).__name__}: {exc}",
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
    """A HEAD reset is not retried (GET follows); otherwise what may pass on another try."""
    return not (method == "HEAD" and in_chain(exc, ConnectionResetError)) and may_retry(exc, idempotent=True)


def _exception_error(exc: BaseException, url: str, timeout: float) -> PicpipeError:
    """A failed request as the record's error: what happened at which host, and what to do."""
    import ssl

    import requests

    host = host_of(url)
    kind = failure_kind(exc)
    if kind == "too_many_redirects":
        return masked_error(kind, f"{host} redirects in a loop or too many times",
                      "open the URL in a browser: the host's redirect rules are broken, or the image now "
                      "sits behind a login page")
    if kind == "bad_url":
        return masked_error(kind, f"{host} leads to a URL that cannot be fetched ({reason(exc)})",
                      "open the URL in a browser to see where it redirects")
    if kind == "tls":
        verify = next((e for e in chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)
        problem = f"its certificate is not valid ({verify.verify_message or verify})" if verify else reason(exc)
        return masked_error(kind, f"HTTPS to {host} failed: {problem}",
                      "browsers will refuse this image too: renew or fix the certificate in the image host's "
                      "or CDN's HTTPS settings (it must cover this domain); if every host fails, check the "
                      "clock and any intercepting proxy")
    if kind == "timeout":
        connecting = isinstance(exc, requests.ConnectTimeout)
        what = f"no connection to {host}" if connecting else f"{host} did not answer"
        return masked_error(kind, f"{what} within {timeout:g} s",
                      "the host is down, slow, or blocked from this network: re-run later or with a larger "
                      "--timeout")
    if kind == "dns":
        return masked_error(kind, f"the name {urlsplit(url).hostname} does not resolve",
                      "the domain may have expired or the image host closed down (or your DNS is failing): "
                      f"find the backup with {find_command(url)} and upload it again")
    if kind == "connection_refused":
        return masked_error(kind, f"{host} refused the connection",
                      "nothing listens there: the server is down or the URL's port is wrong; re-run later")
    if isinstance(exc, requests.exceptions.ProxyError):
        return masked_error(kind, f"the proxy failed to reach {host}: {reason(exc)}",
                      "check the HTTPS_PROXY, HTTP_PROXY and NO_PROXY environment variables")
    return masked_error(kind, f"the connection to {host} failed: {reason(exc)}",
                  "the server or the network dropped the connection: re-run later")


def http_error(url: str, response: requests.Response) -> PicpipeError:
    """A final status >= 400 as `http_<code>`, with the host that answered it."""
    from http import HTTPStatus

    code = response.status_code
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = response.reason or ""
    host, final = host_of(url), host_of(response.url)
    where = host if final == host else f"{final} (redirected from {host})"
    find = find_command(url)
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
    return masked_error(f"http_{code}", f"{where} answered HTTP {code} {phrase}".rstrip(), hint)


def masked_error(type: str, message: str, hint: str) -> PicpipeError:
    """Messages quote URLs, which may carry user:password@ or signed query strings: mask them here."""
    return PicpipeError(type, redact_text(message), redact_text(hint))


def url_problem(url: str) -> str | None:
    """Why a record's `url` cannot be requested at all (net.url_problem: the one rule), or None when it
    can; a space in its path is fine, requests escapes it."""
    return net.url_problem(url, spaces=True)


def host_of(url: str) -> str:
    """host[:port] of `url`, without any user:password@."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2]
    except ValueError:
        return ""


def find_command(url: str) -> str:
    return f"pp-mark find --url {shlex.quote(url)}"
