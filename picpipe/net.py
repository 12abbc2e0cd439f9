"""HTTP for every command that talks to a server: one pooled session, timeouts, retries.

`Client.send` retries what may pass on another try (connection failures, timeouts, 429, 500,
502, 503, 504) with exponential backoff and full jitter, honours Retry-After, and never
retries an answer that will not change (401, 403, 404, 4xx). Requests that are not safe to
repeat (an upload that creates a new object each time) are retried only when the server
certainly did not act on them. A timeout is retried once only: each try has already waited
the whole timeout. A `Service` (one profile's server) also has a circuit breaker
(picpipe.breaker): a server that keeps failing stops the run for that target in seconds.
`requests` is imported inside the functions: commands must start fast.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe import __version__, console
from picpipe.breaker import DEFAULT_LIMIT, FAILURE_KINDS, Breaker
from picpipe.errors import PicpipeError, UsageError
from picpipe.redact import redact_text

if TYPE_CHECKING:
    import requests

USER_AGENT = f"picpipe/{__version__}"
#: Statuses after which the same request may well succeed.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that say the server did not act on the request: safe to repeat even a non-idempotent one.
#: Not 503: a proxy or load balancer may say it after the origin stored the upload.
NOT_ACTED_ON = frozenset({429})
#: Seconds: the first backoff ceiling (doubled per attempt), the largest one, the longest Retry-After obeyed.
BACKOFF, MAX_BACKOFF, MAX_RETRY_AFTER = 0.5, 20.0, 120.0
#: Retries after a timeout, whatever `retries` says: a try that timed out already took the whole timeout.
TIMEOUT_RETRIES = 1


def new_session(jobs: int, purpose: str = "") -> requests.Session:
    """One Session per command: keep-alive per host, and a pool wide enough for `jobs` threads.

    TLS is verified and proxy environment variables are honoured (the requests defaults).
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=max(jobs, 4), pool_maxsize=max(jobs, 4))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"{USER_AGENT} (+{purpose})" if purpose else USER_AGENT
    return session


class Client:
    """A lazily opened session plus the retry policy; safe to share between threads."""

    def __init__(self, who: str, *, timeout: float = 30.0, retries: int = 4, jobs: int = 8, purpose: str = "",
                 pace: Callable[[], None] | None = None, breaker: Breaker | None = None) -> None:
        """`pace`, when given, runs before every attempt and waits as long as a server's request
        budget requires (Nutstore: 600 requests per 30 minutes); `breaker` stops sending to a server
        that keeps failing (picpipe.breaker)."""
        self.who, self.timeout, self.retries, self.jobs, self.purpose = who, timeout, retries, jobs, purpose
        self.pace, self.breaker = pace, breaker
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}  # per scheme://host: proxies, CA bundle

    @property
    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                self._session = new_session(self.jobs, self.purpose)
            return self._session

    def send(self, method: str, url: str, *, sign: Callable[[requests.PreparedRequest], None] | None = None,
             idempotent: bool = True, final: Callable[[requests.Response], bool] | None = None,
             redirects: bool = True, stream: bool = False, **kwargs: Any) -> requests.Response:
        """Send one request, again after a passing failure; the last response, whatever its status.

        `sign` runs on every attempt's prepared request (signatures carry the time); `final` says
        that an answer of a retried status cannot change soon (Nutstore's 503 BlockedTemporarily
        lasts up to 30 minutes). Reads follow redirects unless `redirects` is False; with `stream`
        the body is left for the caller to read (and cap). Network
        failures that outlast the retries become a PicpipeError (timeout, connection, tls, dns);
        with the circuit open (picpipe.breaker), a `circuit_open` one, and nothing is sent.
        """
        import requests

        attempt, started, retries = 0, time.monotonic(), self.retries
        # Decided once, when the request starts: one under way keeps its retries whatever the others meet.
        # After a request that got no answer in time, a timeout is not tried again: each took the whole timeout.
        timeout_retries = 0 if self.breaker is not None and self.breaker.silent else min(retries, TIMEOUT_RETRIES)
        while True:
            if self.breaker is not None:
                self.breaker.check()  # also between tries: another worker's request may have opened it
            prepared = self.session.prepare_request(requests.Request(method, url, **kwargs))
            if sign is not None:
                sign(prepared)
            if self.pace is not None:
                self.pace()
            try:
                # A write is never redirected: requests would resend its body (and signed form
                # fields) to wherever the Location points, and a signature is void there anyway.
                response = self.session.send(prepared, timeout=(min(10.0, self.timeout), self.timeout),
                                             allow_redirects=redirects and method in ("GET", "HEAD"),
                                             **{**self.settings(prepared.url or url), "stream": stream})
            except requests.RequestException as exc:
                why = failure_kind(exc)
                tries = (timeout_retries if why == "timeout" else retries) + 1
                if attempt + 1 >= tries or not may_retry(exc, idempotent):
                    error = network_error(exc, self.who, self.timeout)
                    if self.breaker is not None and error.type in FAILURE_KINDS:
                        self.breaker.failed(url, error.message.removeprefix(f"{self.who}: "), started,
                                            silent=why == "timeout")
                    raise error from None
                delay = backoff(attempt)
            else:
                status = response.status_code
                is_final = status in RETRY_STATUSES and final is not None and final(response)
                delay, why, tries = retry_after(response) or backoff(attempt), f"HTTP {status}", retries + 1
                if status not in RETRY_STATUSES or attempt >= retries or (
                        not idempotent and status not in NOT_ACTED_ON) or is_final or delay > MAX_RETRY_AFTER:
                    # Past MAX_RETRY_AFTER the caller reports it: waiting that long is the user's call.
                    self.answered(url, response, is_final, started, stream)
                    return response
                response.close()
            attempt += 1
            console.say(f"{self.who}: {why}, try {attempt + 1} of {tries} in {delay:.1f} s")
            time.sleep(delay)

    def answered(self, url: str, response: requests.Response, final: bool, started: float, stream: bool) -> None:
        """Tell the breaker how a request ended: a 5xx is the server failing, but 501 (a method is not
        there), an answer the caller calls final and throttling (`throttled`), which say nothing of
        its health; any other answer is the server working."""
        status = response.status_code
        if self.breaker is None or final or status == 501 or throttled(response, stream):
            return
        if status >= 500:
            self.breaker.failed(url, f"HTTP {status} {response.reason or ''}".strip(), started)
        else:
            self.breaker.answered()

    def settings(self, url: str) -> dict[str, Any]:
        """Proxies and CA bundle from the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE), as
        `requests.request` would apply them, worked out once per host: reading the environment on
        every request cost more CPU than signing it."""
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._settings:
            self._settings[origin] = dict(self.session.merge_environment_settings(origin + "/", {}, None, None,
                                                                                  None))
        return self._settings[origin]

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


_HOST = re.compile(r"(?:[\w-]+\.)*[\w-]+\.?")  # labels of letters (any script), digits, - and _


def url_problem(text: str, schemes: Collection[str] = ("http", "https"), spaces: bool = False) -> str | None:
    """What makes `text` no URL a request can go to, in a few words; None when nothing does.
    `spaces`: a space in the path is fine (the WebDAV url is escaped as typed; requests escapes it).

    Nothing from before the last '@' is ever quoted: it may be a password, and one holding an
    unescaped '/', '#' or '?' would otherwise come back as a "host" or a "port"."""
    import urllib.parse

    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "it holds a control character (a pasted line break or tab?)"
    scheme = _SCHEME.match(text)
    if scheme is None:
        return f"it has no scheme: it must start with {' or '.join(s + '://' for s in schemes)}"
    if scheme[1].lower() not in schemes:
        return f"it starts with {scheme[0]}: only {' or '.join(s + '://' for s in schemes)} will do"
    rest = text[scheme.end():]
    netloc = re.split(r"[/?#]", rest)[0]  # what urlsplit takes for the authority
    # A '@' after a '/', '#' or '?' is in a path, or ends a password holding one of them: then what
    # urlsplit calls the host and the port may be pieces of that password, and are never quoted.
    unsure = "@" in rest and "@" not in netloc
    host_port = netloc.rpartition("@")[2]
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is no number or out of 0-65535, a broken [IPv6] address
        if unsure:
            return _UNSURE
        if host_port.startswith("[") and "]" not in host_port:
            return f"the host {host_port!r} is not a valid [IPv6] address"
        return f"the port {host_port.rpartition(']')[2].rpartition(':')[2]!r} is not a number from 1 to 65535"
    host = host_port.rpartition(":")[0] if port is not None else host_port
    if scheme[1].lower() != "file":
        problem = None
        if not parts.hostname:
            problem = "it has no host name after the scheme"
        elif any(c.isspace() for c in host):
            problem = f"the host name {host!r} has a space in it"
        elif not host.startswith("[") and not _HOST.fullmatch(host):
            problem = f"the host name {host!r} holds characters no host name has"
        elif port == 0:
            problem = "the port '0' is not a number from 1 to 65535"
        if problem is not None:
            return _UNSURE if unsure else problem
    if not spaces and any(c.isspace() for c in text):
        return "it has a space in it (write a space in a path as %20)"
    return None


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_UNSURE = ("what comes before '@' is no host[:port]: if it is user:password, write '/', '#' and '?' in the "
           "password as %2F, %23 and %3F (or give the password apart from the URL)")


def quotable(text: str) -> str:
    """`text` (a URL) as a message may quote it: whatever comes before its last '@' (a user:password,
    however it is written) replaced by ***."""
    if "@" not in text:
        return text
    scheme = _SCHEME.match(text)
    return f"{scheme[0] if scheme else ''}***@{text.rpartition('@')[2]}"


def register_password(text: str) -> None:
    """Register the password of a well-formed user:password@ in `text` (as written and unescaped) with
    picpipe.redact, so that no later message can show it."""
    import urllib.parse

    from picpipe import redact

    try:
        password = urllib.parse.urlsplit(text).password
    except ValueError:
        return
    if password:
        redact.register(password)
        redact.register(urllib.parse.unquote(password))


def check_url(value: object, what: str, hint: str, *, schemes: Collection[str] = ("http", "https"),
              default_scheme: str | None = None, spaces: bool = False) -> str:
    """`value` (a flag's or profile's URL) stripped, with `default_scheme` put in front when it has
    none; a UsageError naming `what`, the value (its user:password@ never) and the problem, with
    `hint`, when no request could go there."""
    text = str(value).strip()
    register_password(text)
    if default_scheme and text and "://" not in text:
        text = f"{default_scheme}://{text}"
    problem = url_problem(text, schemes, spaces) if text else "it is empty"
    if problem is not None:
        raise UsageError(f"{what} {quotable(str(value).strip())!r} is not a usable URL: {problem}", hint)
    return text


def url_hint(profile: str, key: str, flag: str = "") -> str:
    """Where a URL setting of a profile is written: the hint of a UsageError about its value."""
    from picpipe.config import env_name

    flag = flag or {"endpoint": "--endpoint", "base_url": "--base-url"}.get(key, "")
    return (f"write it as https://host[:port]/path in [profiles.{profile}] {key}, {env_name(profile, key)}"
            + (f" or {flag}" if flag else ""))


def json_body(response: requests.Response) -> dict[str, Any] | None:
    """The JSON object a server answered; None for anything else (a proxy's HTML page, a JSON list)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def throttled(response: requests.Response, stream: bool = False) -> bool:
    """A server asking to slow down, not failing: 429, a 503 with Retry-After, S3's 503 SlowDown (read
    from a body already downloaded only: a streamed one is the caller's to read and cap)."""
    status = response.status_code
    return status == 429 or status == 503 and ("Retry-After" in response.headers or (
        not stream and b"<Code>SlowDown</Code>" in response.content[:4096]))


def backoff(attempt: int) -> float:
    """Full jitter: uniform in [0, BACKOFF * 2^attempt], capped, so that parallel workers spread out."""
    return random.uniform(0, min(MAX_BACKOFF, BACKOFF * 2**attempt))


def retry_after(response: requests.Response) -> float | None:
    """Seconds the server asked us to wait (Retry-After: seconds or an HTTP date), if it asked."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def may_retry(exc: BaseException, idempotent: bool) -> bool:
    """Connection and timeout failures may pass; TLS and unknown names will not. A request that is
    not idempotent is repeated only when it never reached the server (no connection was made)."""
    import requests

    kind = failure_kind(exc)
    if kind == "dns":
        return any(isinstance(e, socket.gaierror) and e.errno == socket.EAI_AGAIN for e in chain(exc))
    if kind not in ("timeout", "connection", "connection_refused"):
        return False
    return idempotent or isinstance(exc, requests.ConnectTimeout) or kind == "connection_refused"


def chain(exc: BaseException) -> Iterator[BaseException]:
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


def in_chain(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    return any(isinstance(e, kind) for e in chain(exc))


def failure_kind(exc: BaseException) -> str:
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
    if isinstance(exc, requests.Timeout) or in_chain(exc, TimeoutError):
        return "timeout"
    if in_chain(exc, socket.gaierror):  # urllib3's NameResolutionError wraps it
        return "dns"
    if in_chain(exc, ConnectionRefusedError):
        return "connection_refused"
    return "connection"


def reason(exc: BaseException) -> str:
    """The innermost explanation: an OS error's text rather than urllib3's pool description."""
    found = list(chain(exc))
    for e in found:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return str(found[-1]) or type(found[-1]).__name__


def network_error(exc: BaseException, who: str, timeout: float) -> PicpipeError:
    """A request that got no usable answer, as a record's error: what failed and what to do."""
    import requests

    kind = failure_kind(exc)
    if kind == "timeout":
        what = "no connection" if isinstance(exc, requests.ConnectTimeout) else "no answer"
        message, hint = (f"{who}: {what} within {timeout:g} s",
                         "the server is down, slow or blocked from this network: re-run later (nothing is sent "
                         "twice), or raise the profile's timeout")
    elif kind == "tls":
        message, hint = (f"{who}: HTTPS failed: {reason(exc)}",
                         "the certificate is not valid for this endpoint: check the endpoint's host name, the "
                         "clock, and any intercepting proxy (picpipe never turns verification off)")
    elif kind == "dns":
        message, hint = f"{who}: the endpoint's name does not resolve", "check the endpoint or region in the profile"
    elif kind == "connection_refused":
        message, hint = f"{who}: connection refused", "nothing listens there: check the endpoint's host and port"
    else:
        message, hint = (f"{who}: the connection failed: {reason(exc)}",
                         "the server or the network dropped the connection: re-run later (nothing is sent twice)")
    return PicpipeError(kind, redact_text(message), hint)


#: What a person can do about an HTTP status, when the host's own code has no better hint.
STATUS_HINTS: dict[int, tuple[str, str]] = {
    400: ("rejected", "the host rejected the request: its message above says why; check the profile's bucket, "
                      "region and endpoint"),
    401: ("auth", "the host refused the credentials: check the profile's keys or token, and the computer's clock"),
    403: ("auth", "the credentials lack permission here: check the key's policy or the token's scope, and the "
                  "bucket or repository name"),
    404: ("not_found", "the bucket, repository or endpoint does not exist: check the profile's bucket/repo, "
                       "region and endpoint"),
    413: ("too_large", "the file is larger than the host accepts: make it smaller (pp-compress --max-width ...)"),
    429: ("rate_limited", "the host limits how fast you may upload: re-run later (deduped images are not sent "
                          "again), or lower -j"),
}
SERVER_HINT = ("server_error", "the host's server failed: re-run later (what was uploaded is not sent twice)")
_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")
#: Numeric profile settings: (lowest, highest, whole number only). Seconds per request; extra tries;
#: failed requests in a row that open the circuit (0: never); requests per 30 minutes (0: no pacing).
RANGES: dict[str, tuple[float, float, bool]] = {"timeout": (0.1, 3600.0, False), "retries": (0, 10, True),
                                                "breaker": (0, 1000, True), "pace": (0, 100_000, True)}


class ProfileValues:
    """A profile's values read for a host or a server: what it cannot work without, numbers within
    their range, each refusal a usage error naming the profile, the key and where to fix it."""

    name: str
    profile: dict[str, Any]

    def number(self, key: str, default: float, limits: tuple[float, float, bool] | None = None) -> float:
        """A numeric profile setting within `limits` (lowest, highest, whole number only), else its
        RANGES; a typo, "inf" or "nan" in it is a usage error naming the profile and the key, not a crash."""
        value = self.profile.get(key)
        if value in (None, ""):
            return default
        low, high, whole = limits or RANGES.get(key, (0.0, 1e9, False))
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not low <= number <= high or whole and not number.is_integer():  # also refuses nan and inf
            what = "a whole number" if whole else "a number"
            raise UsageError(f"profile {self.name!r}: {key} = {value!r} is not {what} from {low:g} to {high:g}",
                             f"fix {key} in [profiles.{self.name}] or PICPIPE_{self.name.upper()}_{key.upper()}")
        return number

    def setting(self, key: str) -> str:
        """A profile value the host cannot work without."""
        value = self.profile.get(key)
        if value in (None, ""):
            raise UsageError(f"profile {self.name!r} ({self.profile['type']}) needs {key}",
                             f"set {key} in [profiles.{self.name}] or PICPIPE_{self.name.upper()}_{key.upper()}")
        return str(value)


class Service(ProfileValues):
    """One server of a profile spoken over HTTP: the retrying client, and the server's refusals
    turned into error records with the server's own code, message, request id and a hint.

    Profiles may set `timeout` (seconds per request, 0.1-3600, default 30), `retries` (0-10, default
    4) and `breaker` (failed requests in a row, over picpipe.breaker.SPAN seconds, after which the
    rest of the run sends nothing to this server: 0-1000, default 3; 0 never stops); see RANGES.
    """

    #: The host's own error codes (or statuses) that deserve a better hint than STATUS_HINTS.
    hints: ClassVar[dict[str | int, str]] = {}
    #: Error types for codes or statuses that STATUS_HINTS does not name well (507 → quota_full).
    kinds: ClassVar[dict[str | int, str]] = {}
    #: Where the host puts its request id, quoted in error records for its support desk.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id",)

    def __init__(self, profile: dict[str, Any], purpose: str, pace: Callable[[], None] | None = None) -> None:
        self.name: str = profile["name"]
        self.profile = profile
        advice = f"pp-davtest --target {self.name}" if profile.get("type") == "webdav" else \
            "its status page, and the profile's endpoint"
        breaker = Breaker(self.name, int(self.number("breaker", DEFAULT_LIMIT)), advice)
        self.client = Client(self.name, timeout=self.number("timeout", 30.0), retries=int(self.number("retries", 4)),
                             jobs=16, purpose=purpose, pace=pace, breaker=breaker)

    def endpoint(self, default: str) -> str:
        """The API/upload URL: the profile's override (private regions, Enterprise servers, tests) or the host's.
        An override typed without a scheme (`oss-cn-hangzhou.aliyuncs.com`) means HTTPS."""
        given = self.profile.get("endpoint")
        if given in (None, ""):
            return default.rstrip("/")
        return check_url(given, f"profile {self.name!r}: endpoint", url_hint(self.name, "endpoint"),
                         default_scheme="https").rstrip("/")

    def request(self, method: str, url: str, *, ok: Collection[int] = (200, 201, 204), idempotent: bool = True,
                **kwargs: Any) -> requests.Response:
        """Send through the retrying client; a status outside `ok` becomes the host's error record."""
        response = self.client.send(method, url, idempotent=idempotent, **kwargs)
        if response.status_code not in ok:
            raise self.failure(response)
        return response

    def failure(self, response: requests.Response) -> PicpipeError:
        """The host's answer as an error: its code, message and request id kept, with a hint."""
        status = response.status_code
        code, message = self.parse_error(response)
        kind, hint = STATUS_HINTS.get(status, SERVER_HINT if status >= 500 else ("rejected", STATUS_HINTS[400][1]))
        hint = self.hints.get(code or "") or self.hints.get(status) or hint
        kind = self.kinds.get(code or "") or self.kinds.get(status) or kind
        extra: dict[str, Any] = {"status": status}
        if code:
            extra["code"] = code
        request_id = next((response.headers[h] for h in self.request_id_headers if h in response.headers), None)
        if request_id:
            extra["request_id"] = request_id
        said = f" {code}" if code and code not in message else ""
        return PicpipeError(kind, f"{self.name}: HTTP {status}{said}: {message}", hint, **extra)

    def json_object(self, response: requests.Response) -> dict[str, Any]:
        """The JSON object the API documents; anything else (a proxy's HTML page, a captive portal) is
        a `bad_answer` error rather than a crash."""
        body = json_body(response)
        if body is None:
            raise self.bad_answer(response, f"HTTP {response.status_code} answer is not the API's JSON",
                                  "something else answered for the host (a proxy, a captive portal, a wrong "
                                  "endpoint): check the profile's endpoint and the network", quote=True)
        return body

    def bad_answer(self, response: requests.Response, what: str, hint: str, quote: bool = False) -> PicpipeError:
        """An answer that is not what the API documents (something else answered, or the API changed):
        `what` is wrong with it, followed by the answer's start when `quote`."""
        shown = f": {' '.join(response.text[:200].split())!r}" if quote else ""
        return PicpipeError("bad_answer", f"{self.name}: {what}{shown}", hint, status=response.status_code)

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """(code, message) from a JSON or S3-style XML error body; the reason phrase when neither."""
        text = response.text[:2000]
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("code") or body.get("error_code")
            message = body.get("message") or body.get("msg") or body.get("error") or ""
            return (str(code) if code not in (None, "") else None), str(message) or response.reason
        fields = dict(_XML_FIELD.findall(text))
        if fields:
            return fields.get("Code"), fields.get("Message") or response.reason
        return None, response.reason or " ".join(text.split())[:200]

    def close(self) -> None:
        self.client.close()
