"""`--engine local`: N worker processes on this machine (concurrent.futures, spawn context), each
loading the model once and taking one video after the other.

A worker that dies (killed, out of memory, a crash in a decoder) breaks the pool: the videos
that were running are put back first, the pool is started again, and the finished ones stay
finished. A video whose worker died under it twice is recorded as failed. Workers ignore Ctrl-C
(the driver stops them: each drops its video at the next frame) and exit on their own when the
driver is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..runtime import leave_now
from .worker import FatalError, Reporter, Worker, WorkerSpec

MAX_CRASHES = 2  # a video is failed when its worker died under it this many times
MAX_EMPTY_RESTARTS = 3  # the pool broke before any video started: give up
STOP_GRACE_S = 60.0

_WORKER: Worker | None = None
_EVENTS = None
_PARENT = None


class _QueueReporter(Reporter):
    def __init__(self, events, stop, slot: int):
        self.events, self.slot = events, slot
        self.stop_requested = stop.is_set

    def _put(self, *event) -> None:
        try:
            self.events.put_nowait((self.slot, *event))
        except Exception:  # noqa: BLE001 - progress is best effort
            pass

    def started(self, name, total):
        self._put("started", name, total)

    def advanced(self, name, n):
        self._put("frames", name, n)

    def notice(self, name, message):
        self._put("notice", name, message)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)  # the driver is gone: nobody would record this video


def _init(spec: WorkerSpec, slots, events, stop, parent: int) -> None:
    global _WORKER, _EVENTS, _PARENT
    _PARENT = parent
    # the last atexit handler: multiprocessing has flushed the queues by then; the interpreter's
    # teardown (0.6-1 s of freeing torch's modules, which the driver waits for) is skipped
    atexit.register(leave_now)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the driver decides
    slot = slots.get()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="segcli-watch-parent").start()
    _EVENTS = events
    _WORKER = Worker(spec, slot, _QueueReporter(events, stop, slot))


def _run(item) -> dict:
    if os.getppid() != _PARENT:
        os._exit(3)  # queued before the driver died: nobody would record it
    worker = _WORKER
    try:
        _EVENTS.put_nowait((worker.slot, "claimed", item.name, os.getpid()))
    except Exception:  # noqa: BLE001
        pass
    try:
        return worker.run(item)
    except FatalError as exc:
        return {"status": "fatal", "name": item.name, "error": str(exc), "exit_code": exc.exit_code}


def default_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def cpu_slots(cores: int, threads: int | None = None) -> tuple[int, int]:
    """(workers, threads each) for a CPU-only run: slots of at most 4 threads (1 on 2-4 cores).
    Videos are independent, so processes scale better than threads: on 2 cores, 2 workers x 1
    thread ran 2.0x (tiny model) and 2.2x (ConvNeXt-L) the videos/hour of 1 x 2 (benchmarks/batch.py)."""
    cores = max(1, cores)
    threads = threads or min(4, max(1, cores // 4))
    return max(1, cores // threads), threads


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def _worker_environment(threads: int | None):
    """While workers start: their thread pools (OpenMP, BLAS) sized to their share of the cores,
    as Ray does for its actors (user settings win); and the driver's __main__ hidden when it has no
    file (stdin, -c, a notebook), which spawned workers would otherwise try to re-import."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = path is not None and not os.path.isfile(path)
    added = [k for k in THREAD_VARIABLES if k not in os.environ] if threads else []
    for k in added:
        os.environ[k] = str(threads)
    if hide:
        del main.__file__
    try:
        yield
    finally:
        if hide:
            main.__file__ = path
        for k in added:
            os.environ.pop(k, None)


class LocalEngine:
    name = "local"

    def __init__(self, spec: WorkerSpec, workers: int):
        self.spec = spec
        self.workers = max(1, workers)

    def describe(self) -> str:
        return f"{self.workers} local worker{'s' if self.workers != 1 else ''} x {self.spec.threads} threads"

    def run(self, items, sink) -> None:
        """Process `items`; sink.record(record) for every finished one, sink.event(...) for
        progress. Raises FatalError, or KeyboardInterrupt / api.Interrupted after a clean stop."""
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        pending = deque(items)
        crashes: dict[str, int] = {}
        empty_restarts = 0
        while pending:
            events = ctx.Queue()  # new each pool: a killed worker may leave a queue's lock held
            slots = ctx.Queue()
            for i in range(min(self.workers, len(pending))):
                slots.put(i)
            pool = ProcessPoolExecutor(min(self.workers, len(pending)), mp_context=ctx, initializer=_init,
                                       initargs=(self.spec, slots, events, stop, os.getpid()))
            with _worker_environment(self.spec.threads):  # the workers start in submit()
                futures = {pool.submit(_run, item): item for item in pending}
            pending.clear()
            claimed: dict[str, int] = {}
            try:
                broken = self._collect(futures, events, sink, claimed, pending)
            except BaseException:
                stop.set()
                self._stop(pool, futures, events, sink, claimed)
                events.close()
                raise
            events.close()
            if not broken:  # every future is done: the idle workers exit while the driver goes on
                pool.shutdown(wait=False, cancel_futures=True)
                continue
            pool.shutdown(wait=True)  # the pool terminates the other workers too: wait for them to be gone
            from .state import remove_dead_temps

            remove_dead_temps(Path(self.spec.output))  # the videos they had in progress
            started = [it for it in broken if it.name in claimed]
            if not started:
                empty_restarts += 1
                if empty_restarts >= MAX_EMPTY_RESTARTS:
                    raise FatalError("the worker processes die at start-up (see the errors above; out of memory?)", 1)
            else:
                empty_restarts = 0
            retry_first = []
            for item in broken:
                if item.name not in claimed:
                    pending.append(item)
                    continue
                crashes[item.name] = crashes.get(item.name, 0) + 1
                if crashes[item.name] >= MAX_CRASHES:
                    sink.record(_crashed(item, crashes[item.name]))
                else:
                    retry_first.append(item)
            if started:
                sink.event(-1, "notice", "", f"a worker process died; {len(retry_first)} video"
                           f"{'s' if len(retry_first) != 1 else ''} in progress will be redone")
            pending.extendleft(reversed(retry_first))

    def _drain(self, events, sink, claimed) -> None:
        while True:
            try:
                event = events.get_nowait()
            except (queue.Empty, OSError, ValueError, EOFError):
                return
            slot, kind, name, value = event
            if kind == "claimed":
                claimed[name] = slot
            sink.event(slot, kind, name, value)

    def _collect(self, futures, events, sink, claimed, pending) -> list:
        broken = []
        while futures:
            done, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(events, sink, claimed)
            for f in done:
                item = futures.pop(f)
                try:
                    record = f.result()
                except BrokenProcessPool:
                    broken.append(item)
                    continue
                self._handle(record, item, sink, pending)
        self._drain(events, sink, claimed)
        return broken

    @staticmethod
    def _handle(record: dict, item, sink, pending) -> None:
        status = record.get("status")
        if status == "fatal":
            raise FatalError(record["error"], record.get("exit_code", 1))
        if status == "stopped":
            pending.append(item)
            return
        sink.record(record)

    def _stop(self, pool, futures, events, sink, claimed) -> None:
        """Ctrl-C / SIGTERM / an error: workers drop their video at the next frame; videos that
        finish meanwhile are recorded. A second Ctrl-C kills the workers at once."""
        if futures:
            sink.event(-1, "notice", "", "stopping: videos in progress are dropped (a rerun redoes them)")
        for f in futures:
            f.cancel()
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while futures and time.monotonic() < deadline:
                done, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                self._drain(events, sink, claimed)
                for f in done:
                    futures.pop(f)
                    if f.cancelled():
                        continue
                    try:
                        record = f.result()
                    except BaseException:  # noqa: BLE001 - broken or cancelled: redone next time
                        continue
                    if record.get("status") in ("ok", "failed"):
                        sink.record(record)
        finally:
            processes = dict(getattr(pool, "_processes", None) or {})
            if futures:
                for p in processes.values():
                    try:
                        p.kill()
                    except Exception:  # noqa: BLE001
                        pass
            pool.shutdown(wait=not futures, cancel_futures=True)


def _crashed(item, times: int) -> dict:
    from .worker import now

    return {"input": item.input, "name": item.name, "video_id": item.video_id, "status": "failed", "frames": 0,
            "seconds": 0.0, "outputs": [], "finished": now(),
            "error": f"the worker process died while processing it ({times} times): killed, or crashed "
                     "(out of memory?)"}
