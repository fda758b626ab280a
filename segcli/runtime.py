"""Process-wide settings: the C allocator's, applied by segcli's own entry points (the CLI and the
benchmark workers), never by importing the library.

Every large tensor torch frees on CPU goes back to the kernel (glibc serves requests over its
mmap threshold with mmap/munmap), so the next tensor of that size page-faults all of its memory
in again: at 1280x736 a fresh 60 MB buffer costs 15-25 ms of faults against 2-4 ms to fill a
reused one, and the model allocates hundreds of such buffers per clip. Keeping freed memory in
the heap instead (no mmap for large blocks, no trimming) measured, for one 3-frame bf16 clip on
a 2-core EPYC: backbone 12.2 -> 10.7 s, pixel decoder 5.0 -> 3.5 s (benchmarks/bench.py). The
peak RSS is unchanged (it is the peak either way); the process just keeps its peak until exit.

The entry points also end their process with `exit_now`: a normal exit without the interpreter's
teardown (0.6-1 s of freeing torch's modules one by one, after the outputs are complete).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import sys
import threading
from typing import NoReturn

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False
_libc = None


def keep_freed_memory() -> bool:
    """Ask glibc malloc to serve large blocks from the heap and never trim it. Returns whether
    it applied (False on other C libraries and platforms, where nothing changes)."""
    global _applied, _libc
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if _applied and hasattr(libc, "malloc_trim"):
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        _libc = libc
    return _applied


def release_freed_memory() -> None:
    """With keep_freed_memory applied: give the heap's free pages back to the kernel now
    (glibc malloc_trim). The video session calls it after every clip: the clip's hundreds of
    buffers still reuse resident memory, but what fragmentation strands between clips does not
    pile up. Measured at 1280x736, bf16 vis, 18 frames: peak RSS 3.0-3.2 GB without it, 2.8 GB
    with it, 3-5 % slower (the next clip faults its pages in once). Trimming only after the
    process grew by 256 MB did not lower the peak. A no-op where the setting was not applied."""
    if _applied and _libc is not None:
        _libc.malloc_trim(0)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs (a zombie does not): stale temp files and run locks of
    dead segcli processes are removed by the next run."""
    if os.name == "nt":  # os.kill(pid, 0) is not a probe on Windows: never guess there
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's, alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def exit_code_of(exc: SystemExit) -> int:
    """The status a SystemExit would give the process (None -> 0; a message -> printed, 1)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # what the OS keeps of it
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> NoReturn:
    """End a segcli entry point's process with `code` as a normal exit would, without tearing
    the interpreter down. Python's exit frees every module object one by one: with torch loaded
    that is 0.6 s of CPU, 1.0 s once torch._dynamo is (open_clip and timm import it), added to
    every command and every benchmark or batch worker, after the outputs are already complete.

    What a normal exit does first is kept, in its order: idle executor threads are told to end and
    non-daemon threads are waited for, atexit handlers run (multiprocessing, Ray, logging), stdout
    and stderr are flushed. Only for the
    process's own entry points: never call it from a library."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:  # the interpreter's own first step: wake executors' idle workers, join
        shutdown()
    else:
        main = threading.main_thread()
        while pending := [t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]:
            for thread in pending:
                thread.join()
    atexit._run_exitfuncs()
    leave_now(code)


def leave_now(code: int = 0) -> NoReturn:
    """Flush stdout and stderr and end the process, nothing else: the last step of exit_now, and
    the last atexit handler of a worker process whose normal exit has already done the rest
    (multiprocessing's queues flushed, threads joined) and whose exit status nobody reads."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the exit status still stands
            pass
    os._exit(code)
