"""The unit of work, the same in every engine: a worker loads the model once (Segmenter.load) and
runs one video after the other through segcli.api (VideoJob / ImageJob), each into its own
hidden temp folder that is renamed to OUT/<name>/ when the video is done.

`Worker.run(item)` never raises for a bad video: it returns the video's record, status "ok" or
"failed" with a one-line error; "stopped" when the run is being stopped (nothing is kept).
Errors that would fail every video (the model cannot be loaded) raise FatalError.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputNotFoundError, SegcliError, UnreadableInputError
from . import state
from .items import WorkItem


class FatalError(Exception):
    """Every video would fail the same way (weights, device): the run stops with this error."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Stopped(Exception):
    """The run is stopping (Ctrl-C): the video in progress is dropped and redone by the next run."""


@dataclass
class WorkerSpec:
    """Everything a worker needs, picklable (sent once per worker process or actor)."""

    task: str  # vis, vps, vss, vos or image
    output: str
    formats: list[str]
    weights: str
    device: str = "auto"
    precision: str | None = None
    vocabulary: Any = None  # the planned Vocabulary; None: class-agnostic (vos without labels)
    embeddings: Any = None  # class embeddings computed once by the driver (torch tensor) or None
    class_agnostic: bool = False
    open_vocab: bool = False
    compile: bool = False
    threads: int | None = None
    video_options: dict = field(default_factory=dict)
    image_options: dict = field(default_factory=dict)
    open_options: dict = field(default_factory=dict)
    category_ids: list[int] | None = None


class Reporter:
    """Where a worker says what it is doing; engines subclass it."""

    stop_requested: Callable[[], bool] = staticmethod(lambda: False)

    def started(self, name: str, total: int | None) -> None: ...

    def advanced(self, name: str, n: int) -> None: ...

    def finished(self, name: str, record: dict) -> None: ...

    def notice(self, name: str, message: str) -> None: ...


class _JobProgress:
    """api.Progress for one job: forwards frame counts (at most every 0.25 s) and stops the job
    at the next frame when the run is stopping. count_outputs=False: the frames are counted as
    they are read (see _ReadHooks), results only check for a stop."""

    def __init__(self, reporter: Reporter, name: str, count_outputs: bool = True):
        self.reporter = reporter
        self.name = name
        self.count_outputs = count_outputs
        self._pending = 0
        self._last = 0.0

    def start(self, total, label) -> None:
        self.reporter.started(self.name, total)

    def advance(self, n: int = 1) -> None:
        if self.count_outputs:
            self.count(n)
        self.check()

    def count(self, n: int) -> None:
        self._pending += n
        now = time.monotonic()
        if now - self._last >= 0.25:
            self.flush()
            self._last = now

    def check(self) -> None:
        if self.reporter.stop_requested():
            raise Stopped()

    def flush(self) -> None:
        if self._pending:
            self.reporter.advanced(self.name, self._pending)
            self._pending = 0

    def stop(self) -> None:
        self.flush()


def _read_hooks(progress: _JobProgress):
    """Session hooks that count frames as the job reads them (in exact mode results only come at
    the end) and stop the job between frames and clips. VideoJob wraps every pull of the next frame
    in stage("decode"): the k-th entry means k-1 frames were read (the last one finds the end)."""
    from ..pipeline.session import Hooks

    class ReadHooks(Hooks):
        entries = 0

        def stage(self, name):
            if name == "decode":
                if self.entries:
                    progress.count(1)
                self.entries += 1
            progress.check()
            return contextlib.nullcontext()

    return ReadHooks()


def _writer_keywords() -> set[str]:
    from ..io import open_writers

    return set(inspect.signature(open_writers).parameters)


def slot_device(device: str, slot: int) -> str:
    """One GPU per worker: worker k gets cuda:(k mod GPUs) for --device auto/cuda."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{slot % torch.cuda.device_count()}"
    return device


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


class Worker:
    def __init__(self, spec: WorkerSpec, slot: int = 0, reporter: Reporter | None = None):
        self.spec = spec
        self.slot = slot
        self.reporter = reporter or Reporter()
        self.device = slot_device(spec.device, slot)
        self.seg = None
        self.out = Path(spec.output)
        self.host = socket.gethostname()
        self._keywords: set[str] | None = None
        self.current: dict | None = None  # {"name", "frames", "total", "since"} while a video runs
        self._lock = threading.Lock()

    # -- model ------------------------------------------------------------------------------
    def load(self) -> None:
        if self.seg is not None:
            return
        from ..pipeline.engine import Segmenter
        from ..runtime import keep_freed_memory

        keep_freed_memory()
        spec = self.spec
        try:
            if spec.threads:
                import cv2
                import torch

                torch.set_num_threads(spec.threads)
                cv2.setNumThreads(spec.threads)  # resizing and image decoding, per worker too
            self.seg = Segmenter.load(spec.weights, device=self.device, precision=spec.precision,
                                      vocabulary=None if spec.class_agnostic else spec.vocabulary,
                                      embeddings=spec.embeddings, compile=spec.compile,
                                      class_agnostic=spec.class_agnostic, open_vocab=spec.open_vocab,
                                      notice=lambda m: self.reporter.notice("", m))
        except SegcliError as exc:
            raise FatalError(str(exc), exc.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - a model that cannot load fails the whole run
            raise FatalError(f"cannot load the model on worker {self.slot} ({self.device}): "
                             f"{type(exc).__name__}: {state.one_line(exc)}", 1) from None

    # -- one item ---------------------------------------------------------------------------
    def run(self, item: WorkItem) -> dict:
        self.load()
        t0 = time.perf_counter()
        final = self.out / item.name
        base = {"input": item.input, "name": item.name, "video_id": item.video_id, "worker": self.slot,
                "host": self.host}
        existing = state.read_marker(final)
        if existing is not None:  # committed by another worker or run meanwhile
            return dict(existing, already=True)
        if final.exists() and any(final.iterdir()):
            return self._failed(base, t0, f"{final} exists and was not written by segcli batch: remove it")
        if item.prompt_error:
            return self._failed(base, t0, item.prompt_error)
        tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=state.temp_prefix(item.name), suffix=".part"))
        with self._lock:
            self.current = {"name": item.name, "frames": 0, "total": None, "since": time.time()}
        progress = _JobProgress(_Tracking(self), item.name, count_outputs=item.kind == "images")
        try:
            if item.kind == "images":
                record = self._images(item, tmp, progress)
            else:
                record = self._video(item, tmp, progress)
            record = dict(base, **record, status="ok", error=None,
                          seconds=round(time.perf_counter() - t0, 3), finished=now())
            (tmp / state.MARKER).write_text(json.dumps(record, ensure_ascii=True) + "\n", encoding="utf-8")
            try:
                os.rename(tmp, final)
            except OSError:
                other = state.read_marker(final)
                if other is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return dict(other, already=True)
            return record
        except Stopped:
            shutil.rmtree(tmp, ignore_errors=True)
            return dict(base, status="stopped")
        except SegcliError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            return self._failed(base, t0, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad video never stops the others
            shutil.rmtree(tmp, ignore_errors=True)
            return self._failed(base, t0, f"{type(exc).__name__}: {exc}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            progress.flush()
            with self._lock:
                self.current = None

    def _failed(self, base: dict, t0: float, error: str) -> dict:
        return dict(base, status="failed", frames=0, seconds=round(time.perf_counter() - t0, 3), outputs=[],
                    error=state.one_line(error), finished=now())

    def _writer_options(self, **extra) -> dict:
        if self._keywords is None:
            self._keywords = _writer_keywords()
        options = {k: v for k, v in extra.items() if v is not None}
        if self.spec.category_ids is not None:
            options["category_ids"] = self.spec.category_ids
        if "notice" in self._keywords:
            options["notice"] = lambda m: self.reporter.notice(self.current["name"] if self.current else "", m)
        return {k: v for k, v in options.items() if k in self._keywords}

    def _outputs(self, job, tmp: Path, name: str) -> tuple[list[str], dict[str, list[str]]]:
        outputs, by_format = [], {}
        for w in job.writers:
            for t in w.targets:
                rel = f"{name}/{Path(t).relative_to(tmp).as_posix()}"
                outputs.append(rel)
                by_format.setdefault(w.format_name, []).append(rel)
        return outputs, by_format

    def _video(self, item: WorkItem, tmp: Path, progress: _JobProgress) -> dict:
        from ..api import VideoJob
        from ..pipeline.reader import ImageListSource, open_source
        from ..pipeline.video import VideoOptions

        spec = self.spec
        oo = dict(spec.open_options)
        if item.files is not None:
            source = ImageListSource(list(item.files), item.name, "folder", item.path or item.files[0],
                                     int(oo.get("start", 0) or 0), oo.get("end"))
        else:
            source = open_source(item.path, **oo)
            source.info.name = item.name
        opts = VideoOptions(task=spec.task, **spec.video_options)
        try:
            job = VideoJob(source, opts, vocabulary=spec.vocabulary, output=f"{tmp}/", formats=spec.formats,
                           prompts=list(item.prompts or []), writer_options=self._writer_options(
                               video_id=item.video_id))
        except BaseException:
            source.close()
            raise
        info = job.info
        report = job.run(self.seg, notice=lambda m: self.reporter.notice(item.name, m), progress=progress,
                         hooks=_read_hooks(progress))
        outputs, by_format = self._outputs(job, tmp, item.name)
        return {"frames": report.frames, "outputs": outputs, "formats": by_format, "width": info.width,
                "height": info.height, "fps": info.fps}

    def _images(self, item: WorkItem, tmp: Path, progress: _JobProgress) -> dict:
        from ..api import ImageJob
        from ..io.dataset import Dataset
        from ..pipeline.image import ImageOptions
        from ..pipeline.reader import open_source

        spec = self.spec
        paths, ids = list(item.files or []), list(item.image_ids or [])
        failed: list[dict] = []
        ids_by_stem = {Path(p).stem: i for p, i in zip(paths, ids)}
        while True:
            sub = Dataset({"images": [{"id": ids_by_stem[Path(p).stem], "file_name": Path(p).name} for p in paths]})
            opts = ImageOptions(**{k: (dict(v) if k == "objects" else v) for k, v in spec.image_options.items()})
            try:
                if not paths:
                    raise UnreadableInputError("no readable image in this chunk: " + "; ".join(
                        f["error"] for f in failed[:3]))
                job = ImageJob(paths, opts, vocabulary=spec.vocabulary, output=f"{tmp}/", formats=spec.formats,
                               writer_options=self._writer_options(dataset=sub))
                break
            except (UnreadableInputError, InputNotFoundError):
                if not paths:
                    raise
                bad = []
                for p in paths:  # which images are unreadable: they are recorded, the others go on
                    try:
                        open_source(p).close()
                    except SegcliError as exc:
                        bad.append(p)
                        failed.append({"input": p, "error": state.one_line(exc)})
                if not bad:
                    raise
                paths = [p for p in paths if p not in bad]
        images: list[list] = []
        written_ids = "dataset" in (self._keywords or set())
        report = job.run(self.seg, notice=lambda m: self.reporter.notice(item.name, m), progress=progress,
                         on_result=lambda r: images.append([r.name, ids_by_stem.get(r.name), int(r.index)]))
        outputs, by_format = self._outputs(job, tmp, item.name)
        return {"frames": report.frames, "outputs": outputs, "formats": by_format, "images": images,
                "failed_inputs": failed, "ids_written": written_ids}


class _Tracking(Reporter):
    """Keeps Worker.current up to date (for engines that poll it) and forwards to the reporter."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.stop_requested = worker.reporter.stop_requested

    def started(self, name, total):
        with self.worker._lock:
            if self.worker.current is not None:
                self.worker.current["total"] = total
        self.worker.reporter.started(name, total)

    def advanced(self, name, n):
        with self.worker._lock:
            if self.worker.current is not None:
                self.worker.current["frames"] += n
        self.worker.reporter.advanced(name, n)
