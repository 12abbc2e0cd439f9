"""Run work concurrently and get the results back in input order, with bounded memory."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:  # imported when a pool starts: concurrent.futures pulls in logging (10+ ms)
    from concurrent.futures import Future

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class Submitter(Protocol):
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...


class DaemonPool:
    """A minimal thread pool whose workers never keep the process alive.

    `concurrent.futures.ThreadPoolExecutor` joins its workers at exit, so Ctrl-C during a slow
    network call would hang until the call returned; these daemon threads do not.
    """

    def __init__(self, workers: int) -> None:
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True).start()
        self._workers = workers

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _END:
                return
            future, fn, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the consumer, who decides
                    future.set_exception(exc)

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        from concurrent.futures import Future

        future: Future[R] = Future()
        self._tasks.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._tasks.put(_END)


class OrderedMap(Iterator[R]):
    """Iterate `fn(item)` over `items` in input order, at most `window` items in flight.

    A feeder thread reads `items` (often stdin) so that a finished result is yielded at once,
    even while the next input line has not arrived yet. `pending()` gives, in order, the results
    that are already finished when the consumer stops early (Ctrl-C).
    """

    def __init__(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        jobs: int,
        executor: Submitter | None = None,
        window: int | None = None,
    ) -> None:
        self._own_pool = DaemonPool(jobs) if executor is None else None
        self._executor: Submitter = executor or self._own_pool  # type: ignore[assignment]
        self._slots = threading.Semaphore(window or 2 * jobs)
        self._futures: queue.Queue[Any] = queue.Queue()
        self._fn = fn
        self._current: Future[R] | None = None  # the result the consumer is waiting for
        threading.Thread(target=self._feed, args=(items,), daemon=True).start()

    def _feed(self, items: Iterable[T]) -> None:
        try:
            for item in items:
                self._slots.acquire()
                self._futures.put(self._executor.submit(self._fn, item))
        except BaseException as exc:  # reading the input failed: the consumer re-raises it
            from concurrent.futures import Future

            failed: Future[Any] = Future()
            failed.set_exception(exc)
            self._futures.put(failed)
        self._futures.put(_END)

    def __next__(self) -> R:
        future = self._futures.get()
        if future is _END:
            if self._own_pool is not None:
                self._own_pool.shutdown()
            raise StopIteration
        self._current = future
        try:
            result = future.result()
        except BaseException as exc:
            if future.done() and future.exception() is exc:  # the work failed, not the wait
                self._current = None
                self._slots.release()
            raise
        self._current = None
        self._slots.release()
        return result

    def pending(self) -> list[R]:
        """Results already finished, in order, up to the first one still running.

        Includes the one the consumer was waiting for when it was interrupted, if it finished;
        nothing at all if it did not, since what follows it must not overtake it.
        """
        done: list[R] = []
        current, self._current = self._current, None
        if current is not None:
            if not current.done() or current.exception() is not None:
                return done
            done.append(current.result())
        while True:
            try:
                future = self._futures.get_nowait()
            except queue.Empty:
                return done
            if future is _END or not future.done() or future.exception() is not None:
                return done
            done.append(future.result())


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], jobs: int = 1, executor: Submitter | None = None
) -> Iterator[R]:
    """`map(fn, items)` with `jobs` workers; plain `map` (no threads) when jobs is 1."""
    if jobs <= 1 and executor is None:
        return map(fn, items)
    return OrderedMap(fn, items, jobs, executor)


class KeyedLocks:
    """One lock per name, made on first use: work on the same image or key goes one at a time,
    the rest in parallel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield


class KeyedSlots:
    """At most `size` holders per name at once (requests per host), made on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._lock:  # two workers meeting a new name at once must share one semaphore
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = threading.BoundedSemaphore(self.size)
        with slot:
            yield
