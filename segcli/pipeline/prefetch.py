"""Overlap decoding and writing with the model: worker threads behind bounded queues.

    frames = prefetch(source, depth=4)                 # decode ahead on a thread
    with BackgroundWriters(writers, depth=4) as out:   # write behind on a thread
        for result in segment_video(seg, frames, opts):
            out.write(result)

Both keep at most `depth` items in flight, so memory stays bounded (a 1280x720 RGB frame is
2.7 MB). Order is preserved, exceptions from the worker are raised in the caller (at the next
item / write, or at close), and closing early stops the worker. PyAV decoding, PNG/video
encoding and file writes release the GIL, so they run while torch computes; on a 2-core
machine the gain is what decoding and writing cost (~2% at 1280x736 with ConvNeXt-L, up to
~20% with small models), see benchmarks/bench.py.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, Sequence

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(iterable: Iterable, depth: int = 4, on_stop: Callable[[], None] | None = None) -> Iterator:
    """Iterate `iterable` on a daemon thread, at most `depth` items ahead of the consumer.

    Items come out in order; an exception raised by the iterable is re-raised here. Closing
    the returned generator (or dropping it) stops the thread at its next item; `on_stop` (e.g.
    FrameSource.interrupt) is called then, so a thread waiting for input can stop too."""
    if depth < 1:
        yield from iterable
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterable:
                if not _put(q, item, stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            _put(q, _Failure(exc), stop)

    thread = threading.Thread(target=work, name="segcli-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        if on_stop is not None and thread.is_alive():
            on_stop()
        thread.join(timeout=5)


class BackgroundWriters:
    """Writers (segcli.io) fed on a worker thread: `write` queues the frame and returns.

    `close()` waits for the queue, then closes the writers (atomic commit); `abort()` drops
    what is queued and aborts them. A writer error stops the worker; it is raised by the next
    `write` or by `close`, and the writers are aborted. Use it in place of the writers list:
    `needs_image` tells whether any writer needs the RGB frames."""

    def __init__(self, writers: Sequence, depth: int = 4):
        self.writers = list(writers)
        self.needs_image = any(getattr(w, "needs_image", False) for w in self.writers)
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="segcli-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            frame = self._q.get()
            if frame is _DONE:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain after a failure or an abort
            try:
                for w in self.writers:
                    w.write(frame)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self.abort()
            raise self._error

    def write(self, frame) -> None:
        self._raise_if_failed()
        self._q.put(frame)

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._q.put(_DONE)
            self._thread.join()

    def close(self) -> None:
        self._finish()
        self._raise_if_failed()
        from ..io import close_writers

        close_writers(self.writers)

    def abort(self) -> None:
        self._stop.set()
        self._finish()
        from ..io import abort_writers

        abort_writers(self.writers)

    def __enter__(self) -> "BackgroundWriters":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
