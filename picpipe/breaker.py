"""A circuit breaker per target: stop sending to a server that keeps failing.

Without one, a run that meets a WebDAV server answering 500 spends every retry of every record
on it (200 requests and two and a half minutes for 40 images), and a server that accepts
connections but never answers costs five timeouts per image. `net.Client` asks its breaker
before every attempt and tells it how each request ended, after that request's retries:

- no answer (refused, reset, timed out, DNS, TLS) or a 5xx answer is a failure; once one request
  has failed through all its retries, later requests get one try each until one succeeds (every
  worker retrying a dead server only multiplies the wait);
- after `limit` failures in a row the circuit opens: every later request to the target fails at
  once, unsent, with a `circuit_open` error naming the server and the last failure;
- any other answer resets the count: a 4xx is the server working (a 429 has its own handling and
  changes nothing here). 501 and an answer the caller declares final (Nutstore's
  BlockedTemporarily, with its own `rate_limited` error) are not failures either.

The circuit stays open for the rest of the run: re-running the command is the retry, and what
was done is not sent again. One breaker belongs to one client, i.e. one profile; it is
thread-safe, so the -j workers of a command share it.
"""

from __future__ import annotations

import threading
import urllib.parse

from picpipe.errors import PicpipeError
from picpipe.redact import redact_text

#: Failed requests in a row (each after its retries) that open the circuit, unless the profile says.
DEFAULT_LIMIT = 3
#: Error types of requests that got no usable answer and count as the server failing.
FAILURE_KINDS = frozenset({"timeout", "connection", "connection_refused", "dns", "tls"})


class Breaker:
    """Consecutive failures of one target's requests; `limit` 0 never opens."""

    def __init__(self, who: str, limit: int = DEFAULT_LIMIT, advice: str = "") -> None:
        """`advice`: how to check the server, quoted in the hint (e.g. "pp-davtest --target nas")."""
        self.who, self.limit, self.advice = who, limit, advice
        self.failures = 0
        self.last = ""  # what the last failure was, for the message
        self.where = ""  # scheme://host:port of the last failure
        self.error: PicpipeError | None = None  # set once open
        self.lock = threading.Lock()

    @property
    def suspect(self) -> bool:
        """Whether the last request ended in a failure: then a request is not retried."""
        with self.lock:
            return self.failures > 0

    def check(self) -> None:
        """Raise the `circuit_open` error once the circuit is open: nothing more is sent."""
        with self.lock:
            if self.error is not None:
                raise self.error

    def failed(self, url: str, what: str) -> None:
        """A request to `url` ended without a usable answer (`what`: its error, in a few words)."""
        parts = urllib.parse.urlsplit(url)
        with self.lock:
            self.failures += 1
            self.last, self.where = what, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
            if self.limit and self.failures >= self.limit and self.error is None:
                self.error = self.opened()

    def answered(self) -> None:
        """The server answered: it works, the count starts again."""
        with self.lock:
            self.failures = 0

    def opened(self) -> PicpipeError:
        check = f" ({self.advice})" if self.advice else ""
        return PicpipeError(
            "circuit_open",
            redact_text(f"{self.who}: not sent: the server at {self.where} failed {self.failures} requests in a "
                        f"row (last: {self.last})"),
            f"check that server{check}, then run the same command again: what is done is not sent twice",
            failures=self.failures)
