"""A fixed pool of daemon threads returning `concurrent.futures.Future`s.

Why not `ThreadPoolExecutor`: its workers are joined at interpreter exit, so Ctrl-C during a wait would
hang until every in-flight request timed out. Daemon workers let `kling` exit at once; the requests are
queries and downloads, which are safe to abandon. Threads over one sync `httpx.Client` are also the
measured fast path (one `AsyncClient` with many connections rescans its pool on every request).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class Pool:
    def __init__(self, size: int, name: str = "kling") -> None:
        self.size = max(1, size)
        self.name = name
        self._queue: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, daemon=True, name=f"{self.name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting thread, which decides
                future.set_exception(exc)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
