"""A circuit breaker per target: stop sending to a server that keeps failing.

Without one, a run that meets a WebDAV server answering 500 spends every retry of every record
on it (200 requests and two and a half minutes for 40 images), and a server that accepts
connections but never answers costs two timeouts per image. Without care, one stops runs against a
server that is only restarting. `net.Client` asks its breaker before every attempt and tells it how
each request ended, after that request's retries:

- no answer (refused, reset, timed out, DNS, TLS) or a 5xx answer is a failure;
- the circuit opens after `limit` failed requests in a row that also span `SPAN` seconds (from the
  start of the first one): a restart or a brief outage, which fails a few requests within seconds,
  does not stop the run; a dead server does, once the failures have lasted that long. Then every
  later request to the target fails at once, unsent, with a `circuit_open` error naming the server
  and the last failure;
- any other answer resets the count: a 4xx is the server working. Throttling (429, a 503 with
  Retry-After, S3's SlowDown) says nothing of the server's health and changes nothing; so do 501
  and an answer the caller declares final (Nutstore's BlockedTemporarily, its own `rate_limited`);
- a request's retries are decided when it starts: one that starts after a request timed out is not
  retried after a timeout of its own (each try already waited the whole timeout), so a server that
  never answers costs about four timeouts with -j1; requests under way keep their retries.

Measured with pp-backup on 127.0.0.1, default retries (4): a WebDAV server answering 503 for its
first 4 s, then working: 39 of 40 images copied, no circuit_open, 5-6 s, -j1 and -j8 (the breaker
without SPAN, per the review: 37 circuit_open after 2.4 s). One answering 500 to everything: 3
server_error and 37 circuit_open after 14-15 s and 15 requests, -j1 and -j8 (no breaker: 151 s, 200
requests). One that never answers: four timeouts, then circuit_open (timeout 3 s: 12.5 s, -j1 and
-j4; the default 30 s: about 2 minutes, as before).

The circuit stays open for the rest of the run: re-running the command is the retry, and what was
done is not sent again. One breaker belongs to one client, i.e. one profile; it is thread-safe, so
the -j workers of a command share it.
"""

from __future__ import annotations

import threading
import time
import urllib.parse

from picpipe.errors import PicpipeError
from picpipe.redact import redact_text

#: Failed requests in a row (each after its retries) that open the circuit, unless the profile says.
DEFAULT_LIMIT = 3
#: Seconds the failures in a row must span, from the start of the first failed request, to open it.
SPAN = 10.0
#: Error types of requests that got no usable answer and count as the server failing.
FAILURE_KINDS = frozenset({"timeout", "connection", "connection_refused", "dns", "tls"})


class Breaker:
    """Consecutive failures of one target's requests; `limit` 0 never opens."""

    def __init__(self, who: str, limit: int = DEFAULT_LIMIT, advice: str = "", span: float = SPAN) -> None:
        """`advice`: how to check the server, quoted in the hint (e.g. "pp-davtest --target nas")."""
        self.who, self.limit, self.advice, self.span = who, limit, advice, span
        self.failures = 0
        self.since = 0.0  # time.monotonic() at which the first request of the failures in a row started
        self.silent = False  # the last failed request got no answer within its timeout
        self.last = ""  # what the last failure was, for the message
        self.where = ""  # scheme://host:port of the last failure
        self.error: PicpipeError | None = None  # set once open
        self.lock = threading.Lock()

    def check(self) -> None:
        """Raise the `circuit_open` error once the circuit is open: nothing more is sent."""
        with self.lock:
            if self.error is not None:
                raise self.error

    def failed(self, url: str, what: str, started: float, silent: bool = False) -> None:
        """A request to `url`, sent first at `started` (time.monotonic()), ended without a usable answer
        (`what`: its error, in a few words; `silent`: it timed out)."""
        parts = urllib.parse.urlsplit(url)
        with self.lock:
            self.since = min(self.since, started) if self.failures else started
            self.failures += 1
            self.silent = silent
            self.last, self.where = what, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
            if (self.limit and self.failures >= self.limit and time.monotonic() - self.since >= self.span
                    and self.error is None):
                self.error = self.opened()

    def answered(self) -> None:
        """The server answered: it works, the count starts again."""
        with self.lock:
            self.failures, self.silent = 0, False

    def opened(self) -> PicpipeError:
        check = f" ({self.advice})" if self.advice else ""
        return PicpipeError(
            "circuit_open",
            redact_text(f"{self.who}: not sent: the server at {self.where} failed {self.failures} requests in a "
                        f"row for {time.monotonic() - self.since:.0f} s (last: {self.last})"),
            f"check that server{check}, then run the same command again: what is done is not sent twice",
            failures=self.failures)
