"""Batch progress on stderr: videos done of the total, frames/s, what each worker is doing.

On a terminal: a live panel (overall bar + one line per worker). Otherwise one line per
finished video (``segcli: [3/10] clip: ok, 60 frames in 4.1 s (14.6 frames/s, worker 1)``),
failures with their error, and a status line every 30 s. Nothing at all with -q (the closing
summary and errors still come from the command).
"""

from __future__ import annotations

import sys
import time


class BatchProgress:
    def __init__(self, total: int, quiet: bool = False, unit: str = "video", stream=None):
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.failed = 0
        self.frames = 0
        self.t0 = time.perf_counter()
        self.workers: dict[int, dict] = {}  # slot -> {"name", "frames", "total", "since"}
        self._live = None
        self._said: set[str] = set()
        self._last_status = time.monotonic()
        self.tty = not quiet and self.stream is not None and hasattr(self.stream, "isatty") and self.stream.isatty()

    # -- the engines' sink --------------------------------------------------------------------
    def event(self, slot: int, kind: str, name: str, value) -> None:
        if kind == "notice":
            if not name:  # a worker-level message (model loading): every worker says it, print it once
                if value in self._said:
                    return
                self._said.add(value)
            self.notice(f"{name}: {value}" if name else str(value))
            return
        w = self.workers.setdefault(slot, {"name": None, "frames": 0, "total": None, "since": time.time()})
        if kind == "claimed":
            w.update(name=name, frames=0, total=None, since=time.time())
        elif kind == "started":
            w.update(name=name, total=value)
        elif kind == "frames":
            w["frames"] += int(value)
            self.frames += int(value)
        elif kind == "status":  # absolute counts (Ray polls them)
            frames, total = value
            if w.get("name") == name:
                self.frames += max(0, int(frames) - w["frames"])
            w.update(name=name, frames=int(frames), total=total)
        self._refresh()

    def finished(self, record: dict) -> None:
        slot = record.get("worker")
        w = self.workers.get(slot) if slot is not None else None
        if w is not None and w.get("name") == record.get("name"):
            self.frames += int(record.get("frames") or 0) - w["frames"]  # frames not reported yet
            w.update(name=None, frames=0, total=None)
        self.done += 1
        if record.get("status") != "ok":
            self.failed += 1
        if self.quiet:
            self._refresh()
            return
        head = f"[{self.done}/{self.total}] {record.get('name')}"
        if record.get("status") == "ok":
            n, secs = int(record.get("frames") or 0), float(record.get("seconds") or 0.0)
            detail = [f"{n / secs:.1f} frames/s"] if secs > 0 else []
            if slot is not None:
                detail.append(f"worker {slot}")
            line = f"{head}: ok, {n} frame{'s' if n != 1 else ''} in {secs:.1f} s"
            line += f" ({', '.join(detail)})" if detail else ""
            if record.get("already"):
                line += " (committed by an earlier run)"
            if record.get("failed_inputs"):
                line += f"; {len(record['failed_inputs'])} unreadable: {record['failed_inputs'][0]['error']}"
            self.notice(line)
        else:
            self.notice(f"{head}: failed: {record.get('error')}")
        self._refresh()

    # -- output -------------------------------------------------------------------------------
    def notice(self, message: str) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.console.print(f"segcli: {message}", markup=False, highlight=False)
        else:
            print(f"segcli: {message}", file=self.stream, flush=True)

    def rate(self) -> float:
        return self.frames / max(time.perf_counter() - self.t0, 1e-9)

    def status_line(self) -> str:
        parts = [f"{self.done}/{self.total} {self.unit}s done" + (f" ({self.failed} failed)" if self.failed else ""),
                 f"{self.frames} frames, {self.rate():.2f} frames/s"]
        busy = [f"worker {s}: {w['name']} {w['frames']}/{w['total'] if w['total'] is not None else '?'}"
                for s, w in sorted(self.workers.items()) if w.get("name")]
        return "; ".join(parts + busy)

    def start(self) -> None:
        if not self.tty:
            return
        from rich.console import Console
        from rich.live import Live

        self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self):
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        elapsed = time.perf_counter() - self.t0
        eta = ""
        if self.done and self.done < self.total:
            eta = f", ETA {(elapsed / self.done) * (self.total - self.done):.0f} s"
        failed = f", {self.failed} failed" if self.failed else ""
        table.add_row(f"{self.done}/{self.total} {self.unit}s{failed} | {self.frames} frames, "
                      f"{self.rate():.2f} frames/s | {elapsed:.0f} s{eta}")
        for slot, w in sorted(self.workers.items()):
            if slot < 0:
                continue
            what = "idle" if not w.get("name") else (
                f"{w['name']}: {w['frames']}/{w['total'] if w['total'] is not None else '?'} frames, "
                f"{time.time() - w['since']:.0f} s")
            table.add_row(f"  worker {slot}: {what}")
        return table

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
        elif not self.quiet and time.monotonic() - self._last_status >= 30.0:
            self._last_status = time.monotonic()
            self.notice(self.status_line())
