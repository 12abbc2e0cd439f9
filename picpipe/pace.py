"""A request budget shared by every picpipe process of this user: Nutstore allows a free account
600 requests per 30 minutes, counted per account, not per process, and a command run a
thousand times from xargs must not spend it 600 times over.

The times of the requests sent in the last window live in a small file under the cache folder,
read and rewritten under its lock (`picpipe.locks`) before each request. Losing the file costs
nothing but the memory of the last half hour.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from picpipe import console
from picpipe.config import xdg_home

#: Seconds: the window a budget counts in, and how long a wait must be before we say so.
WINDOW, LONG_WAIT = 1800.0, 5.0


class Pacer:
    """At most `budget` requests in any `window` seconds, and at least `gap` seconds apart."""

    def __init__(self, state: Path, budget: int, gap: float = 0.0, window: float = WINDOW, who: str = "") -> None:
        self.state, self.budget, self.gap, self.window, self.who = state, budget, gap, window, who
        self.lock = threading.Lock()
        self.broken = False
        self.sent: list[float] = []  # this process's requests, when the state file cannot be used

    @classmethod
    def for_account(cls, server: str, user: str, budget: int, gap: float, who: str) -> Pacer:
        """The pacer of one account on one server (the user name is hashed: no e-mail in file names)."""
        account = hashlib.sha256(f"{server}\0{user}".encode()).hexdigest()[:16]
        return cls(xdg_home("XDG_CACHE_HOME", ".cache") / "pace" / f"{account}.times", budget, gap, who=who)

    def wait(self) -> None:
        """Block until one more request fits in the budget, then count it as sent."""
        with self.lock:  # threads of this process queue here, other processes at the file lock
            told = False
            while True:
                try:
                    delay = self._take(time.time())
                except OSError as exc:  # an unusable state file costs the memory, never the request
                    if not self.broken:
                        console.warn(f"{self.who}: cannot keep the request count in {self.state}: "
                                     f"{exc.strerror or exc}; pacing within this process only")
                        self.broken = True
                    delay = self._fallback(time.time())
                if delay <= 0:
                    return
                if delay >= LONG_WAIT and not told:
                    console.say(f"{self.who}: {self.budget} requests per {self.window / 60:.0f} minutes used up; "
                                f"waiting {delay:.0f} s (set the profile's pace to change the budget)")
                    told = True
                time.sleep(delay)

    def _fallback(self, now: float) -> float:
        delay = self._delay(self.sent, now)
        if delay <= 0:
            self.sent = [*self.sent, now][-self.budget:]
        return delay

    def _delay(self, times: list[float], now: float) -> float:
        """Seconds until one more request fits, given the recent request times (sorted)."""
        times = [t for t in times if now - self.window < t <= now + 1]
        delay = times[-1] + self.gap - now if times and self.gap else 0.0
        if len(times) >= self.budget:
            delay = max(delay, times[-self.budget] + self.window - now)
        return delay

    def _take(self, now: float) -> float:
        """Seconds to wait before the next request; 0 when it may go now (and it is then counted)."""
        from picpipe.locks import lock_file

        with lock_file(self.state) as fd:
            assert fd is not None  # a waiting lock is always taken
            times = sorted(t for t in _floats(os.read(fd, 1 << 20)) if now - self.window < t <= now + 1)
            delay = self._delay(times, now)
            if delay > 0:
                return delay
            times.append(now)
            data = "".join(f"{t:.3f}\n" for t in times[-self.budget:]).encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
            return 0.0


def _floats(data: bytes) -> list[float]:
    values = []
    for line in data.split(b"\n"):
        try:
            values.append(float(line))
        except ValueError:  # an empty or torn line: skip it
            continue
    return values
