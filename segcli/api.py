"""One way from a source to files: reader -> session -> writers. The CLI, `segcli bench`, the
benchmark scripts, batch workers and the app all call this.

    import segcli
    report = segcli.run("clip.mp4", task="vis", vocab="dog,car", output="out/")      # loads the model

    seg = segcli.Segmenter.load("omg-seg-convl", vocabulary=segcli.parse_vocab("dog,car"))
    job = segcli.VideoJob("clip.mp4", segcli.VideoOptions(task="vis"), vocabulary=seg.vocabulary,
                          output="out/", formats=["ytvis", "overlay"])
    report = job.run(seg)                                 # the model is loaded once, jobs are many

A job does every check that needs no model when it is created: options, prompts against the
video (size, frame range), output paths (writable, never an input). Nothing is written at a
final path before the job ends; a failure or an interruption leaves complete files or none
(live sources keep what they produced up to a dropped stream or Ctrl-C).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import Interrupted, PromptError, StreamError, UsageError
from .io import DEFAULT_DIR_FORMAT, default_formats  # noqa: F401  (re-exported)
from .pipeline.options import (
    ImageOptions,
    ObjectPrompt,
    VideoOptions,
    check_prompt_frame,
    check_prompt_in_frame,
    validate_image_options,
    validate_options,
)
from .results import FrameResult, VideoInfo
from .vocab.parse import Vocabulary

if TYPE_CHECKING:  # torch comes in with the model: a job is created (and checked) without it
    from .pipeline.engine import Segmenter
    from .pipeline.session import Hooks

DEFAULT_WEIGHTS = "omg-seg-convl"


@dataclass
class RunReport:
    frames: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)  # final paths written ("-" for stdout)
    first_result_s: float | None = None
    clip_latency_s: list[float] = field(default_factory=list)
    missing_frames: int = 0
    stopped: str | None = None  # "stream" (dropped, outputs kept) or "interrupted"


class Progress:
    """What a job reports as it goes; the CLI draws a bar on stderr."""

    def start(self, total: int | None, label: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def stop(self) -> None: ...


def planned_vocabulary(weights: str, vocabulary: Vocabulary | None, class_agnostic: bool = False
                       ) -> Vocabulary | None:
    """The vocabulary a model will be loaded with, known without loading it (None: class-agnostic).
    Segmenter.load applies the same rule."""
    if class_agnostic and vocabulary is None:
        return None
    if vocabulary is not None:
        return vocabulary
    folder = Path(weights).expanduser()
    if folder.is_dir():
        from .model.folder import folder_vocabulary

        return folder_vocabulary(folder)
    from .vocab import datasets

    return datasets.dataset_vocabulary("coco")


def _video_info(name: str, src, vocab: Vocabulary | None, task: str) -> VideoInfo:
    classes = vocab.names if vocab is not None else []
    fps = getattr(src, "output_fps", None) or src.fps  # the rate of the frames processed (--every, --fps)
    return VideoInfo(name, src.width, src.height, fps, src.num_frames, classes,
                     vocab.num_things if vocab is not None else 0, task)


def _open_writers(names, output, info, vocab, inputs, writer_options, notice=None):
    from .io import open_writers

    kwargs = dict(writer_options or {})
    if "category_ids" not in kwargs and not kwargs.get("dataset"):
        kwargs["category_ids"] = vocab.category_ids if vocab is not None else None
    if notice is not None:
        kwargs.setdefault("notice", notice)
    return open_writers(names, output, info, inputs=inputs, **kwargs)


def _targets(writers) -> list[str]:
    out = []
    for w in writers:
        out += [str(t) for t in w.targets] or ["-"]
    return out


def _input_paths(source: str) -> list[str]:
    return [] if source == "-" or "://" in source else [source]


class VideoJob:
    """One video into writers. source: a path, folder, URL, "-" (stdin) or an open FrameSource;
    prompts: ObjectPrompts for vos; open_options: extra open_source arguments (reader, start,
    end, every, fps, max_frames, duration, source_format, source_options)."""

    def __init__(self, source, options: VideoOptions, *, vocabulary: Vocabulary | None,
                 output: str | None = None, formats: Sequence[str] | None = None,
                 prompts: Sequence[ObjectPrompt] = (), writer_options: dict | None = None,
                 open_options: dict | None = None, inputs: Sequence[str] = (),
                 notice: Callable[[str], None] | None = None):
        """inputs: more paths outputs must never replace (e.g. mask prompt files)."""
        from .pipeline.reader import open_source

        self.options = validate_options(options)
        self.vocabulary = vocabulary
        names = default_formats("vos" if options.task == "vos" else options.task, output, formats)
        self.prompts = list(prompts) + list(options.objects)
        options.objects = []
        self._open_options = dict(open_options or {})
        if options.task == "vos" and not self.prompts:
            raise PromptError("vos needs a prompt: --point X,Y, --box X1,Y1,X2,Y2 or --mask FILE")
        if options.task != "vos" and self.prompts:
            raise UsageError("prompts go with vos")
        if isinstance(source, (str, Path)):
            self.source = open_source(str(source), **(open_options or {}))
            inputs = _input_paths(str(source)) + list(inputs)
        else:
            self.source = source
            inputs = ([source.info.path] if getattr(source.info, "path", "") else []) + list(inputs)
        try:
            src = self.source.info
            self._check_prompts(src)
            self.info = _video_info(src.name, src, vocabulary, options.task)
            self.writers = _open_writers(names, output, self.info, vocabulary, inputs, writer_options, notice)
            self.options.keep_images = self.options.keep_images or any(w.needs_image for w in self.writers)
        except BaseException:
            self.source.close()
            raise

    def _check_prompts(self, src) -> None:
        """The session's prompt checks, before the model is loaded."""
        every = int((self._open_options or {}).get("every") or 1)
        for p in self.prompts:
            check_prompt_frame(p.frame, src, every)
            check_prompt_in_frame(p.obj_id, p.points, p.boxes, p.mask, src.width, src.height)

    def close(self) -> None:
        self.source.close()

    def run(self, seg: Segmenter, *, notice: Callable[[str], None] | None = None,
            progress: Progress | None = None, hooks: Hooks | None = None,
            on_result: Callable[[FrameResult], None] | None = None, overlap: bool = True) -> RunReport:
        """Segment the whole source into the writers; raises the first error after aborting the
        writers (a dropped live stream: after committing what was produced). overlap: decode
        ahead and write behind on worker threads (segcli.pipeline.prefetch)."""
        from .io import abort_writers, close_writers
        from .pipeline.prefetch import BackgroundWriters, prefetch
        from .pipeline.session import VideoSession

        writers = [BackgroundWriters(self.writers, depth=4)] if overlap else list(self.writers)

        if self.vocabulary is not None and seg.vocabulary.names != self.vocabulary.names:
            raise UsageError("the model was loaded with another vocabulary than the job's")
        say = notice or (lambda message: None)
        progress = progress or Progress()
        report = RunReport()
        t0 = time.perf_counter()
        session = VideoSession(seg, self.options, info=self.source.info, notice=say, hooks=hooks)
        for p in self.prompts:
            session.add_prompt(p.obj_id, p.frame, p.points, p.boxes, p.mask)
        # a source of the caller's own (info, iteration, close) need not know how to interrupt
        frames = prefetch(self.source, depth=4 if overlap else 0, on_stop=getattr(self.source, "interrupt", None))
        progress.start(self.source.info.num_frames, self.options.task)

        def deliver(results) -> None:
            for r in results:
                with _timed(hooks, "write"):
                    for w in writers:
                        w.write(r)
                if on_result is not None:
                    on_result(r)
                report.frames += 1
                progress.advance()

        live = bool(getattr(self.source.info, "live", False))

        def close_all() -> None:
            stats = session.stats
            lat = stats.clip_latency_s
            run_stats = {"live": live, "first_result_s": _round(stats.first_result_s),
                         "clip_latency_s": {"mean": _round(sum(lat) / len(lat)) if lat else None,
                                            "max": _round(max(lat)) if lat else None},
                         "missing_frames": int(getattr(self.source, "missing", 0) or 0),
                         "stopped": report.stopped}
            for w in self.writers:
                if hasattr(w, "run_stats"):
                    w.run_stats = run_stats
            with _timed(hooks, "write"):
                close_writers(writers)

        try:
            try:
                for frame in _timed_iter(hooks, "decode", frames):
                    with _timed(hooks, "session"):
                        results = session.step(frame)
                    deliver(results)
            except StreamError:
                report.stopped = "stream"
                deliver(session.finish())
                close_all()
                raise
            except (KeyboardInterrupt, Interrupted):
                if not live:
                    raise
                report.stopped = "interrupted"  # a live source ends with Ctrl-C: keep what it gave
                deliver(session.finish())
                close_all()
                raise
            with _timed(hooks, "session"):
                results = session.finish()
            deliver(results)
            close_all()
        except BaseException:
            if report.stopped is None:
                abort_writers(writers)
            raise
        finally:
            progress.stop()
            frames.close()
            self.source.close()
            report.seconds = time.perf_counter() - t0
            report.outputs = _targets(self.writers)
            report.first_result_s = session.stats.first_result_s
            report.clip_latency_s = session.stats.clip_latency_s
            report.missing_frames = int(getattr(self.source, "missing", 0) or 0)
            self.report = report
        return report


class ImageJob:
    """Images (files or folders) into writers; prompts: {object id: (points, boxes)}."""

    def __init__(self, paths: Sequence[str], options: ImageOptions, *, vocabulary: Vocabulary | None,
                 output: str | None = None, formats: Sequence[str] | None = None,
                 writer_options: dict | None = None, notice: Callable[[str], None] | None = None):
        from .pipeline.reader import open_source

        validate_image_options(options)
        if not paths:
            raise UsageError("give at least one image or folder")
        self.options = options
        self.vocabulary = vocabulary
        names = default_formats("image", output, formats)
        self.sources = []
        try:
            for p in paths:
                self.sources.append(open_source(str(p)))
            first = self.sources[0].info
            name = first.name if len(self.sources) == 1 else "images"
            self.info = _video_info(name, first, vocabulary, "image")
            self.info.fps = None
            self.info.num_frames = None
            self.writers = _open_writers(names, output, self.info, vocabulary, [str(p) for p in paths],
                                         writer_options, notice)
            self.options.keep_image = self.options.keep_image or any(w.needs_image for w in self.writers)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def run(self, seg: Segmenter, *, notice=None, progress: Progress | None = None,
            on_result: Callable[[FrameResult], None] | None = None) -> RunReport:
        from .io import abort_writers, close_writers
        from .pipeline.image import segment_image
        from .pipeline.options import validate_boxes, validate_points

        progress = progress or Progress()
        report = RunReport()
        t0 = time.perf_counter()
        progress.start(None, "image")
        try:
            index = 0
            for src in self.sources:
                for fr in src:
                    h, w = fr.rgb.shape[:2]
                    for points, boxes in self.options.objects.values():
                        if points:
                            validate_points(points, w, h)
                        if boxes:
                            validate_boxes(boxes, w, h)
                    fr.index = index
                    result = segment_image(seg, fr, self.options)
                    for wr in self.writers:
                        wr.write(result)
                    if on_result is not None:
                        on_result(result)
                    index += 1
                    report.frames += 1
                    progress.advance()
            close_writers(self.writers)
        except BaseException:
            abort_writers(self.writers)
            raise
        finally:
            progress.stop()
            self.close()
            report.seconds = time.perf_counter() - t0
            report.outputs = _targets(self.writers)
        return report


def run(source, task: str = "vis", *, weights: str = DEFAULT_WEIGHTS, vocab: str | Vocabulary | None = None,
        output: str | None = None, formats: Sequence[str] | None = None, prompts: Sequence[ObjectPrompt] = (),
        device: str = "auto", precision: str | None = None, open_vocab: bool = False,
        notice: Callable[[str], None] | None = None, open_options: dict | None = None,
        writer_options: dict | None = None, **options) -> RunReport:
    """Load the model and run one video (task vis, vps, vss, vos) or image(s) (task "image";
    `source` a path or a list of paths). `options` are VideoOptions / ImageOptions fields."""
    from .vocab.parse import parse_vocab

    vocabulary = parse_vocab(vocab) if isinstance(vocab, str) else vocab
    if task == "image":
        paths = [source] if isinstance(source, (str, Path)) else list(source)
        opts = ImageOptions(**options)
        agnostic = bool(opts.objects) and vocabulary is None
        opts.label_objects = bool(opts.objects) and not agnostic
        planned = planned_vocabulary(weights, vocabulary, agnostic)
        job = ImageJob(paths, opts, vocabulary=planned, output=output, formats=formats,
                       writer_options=writer_options, notice=notice)
    else:
        opts = VideoOptions(task=task, open_vocab=open_vocab, **options)
        agnostic = task == "vos" and vocabulary is None
        opts.label_objects = task == "vos" and not agnostic
        planned = planned_vocabulary(weights, vocabulary, agnostic)
        job = VideoJob(source, opts, vocabulary=planned, output=output, formats=formats, prompts=prompts,
                       writer_options=writer_options, open_options=open_options, notice=notice)
    from .pipeline.engine import Segmenter

    try:
        seg = Segmenter.load(weights, device=device, precision=precision, vocabulary=planned,
                             class_agnostic=agnostic, open_vocab=open_vocab, notice=notice)
    except BaseException:
        from .io import abort_writers

        abort_writers(job.writers)
        job.close()
        raise
    return job.run(seg, notice=notice)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _timed(hooks: Hooks | None, name: str):
    return hooks.stage(name) if hooks is not None else _Nothing()


def _timed_iter(hooks: Hooks | None, name: str, iterable):
    if hooks is None:
        yield from iterable
        return
    it = iter(iterable)
    while True:
        with hooks.stage(name):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item
