"""The batch driver: plan (inputs -> items, names, ids, prompts), resume (what OUT/ already
holds), run the engine, record every finished video, merge the dataset-level results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import SegcliError, UsageError
from . import state
from .items import Expander, WorkItem, assign_names, image_chunks, number_videos
from .progress import BatchProgress
from .worker import FatalError, WorkerSpec

TASKS = ("vis", "vps", "vss", "vos", "image")
ENGINES = ("local", "ray")
EXIT_SOME_FAILED = 11


class BatchFailedError(SegcliError):
    """Some videos failed (their errors are in OUT/manifest.jsonl); the others are done."""

    exit_code = EXIT_SOME_FAILED


class BatchFatalError(SegcliError):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BatchOptions:
    task: str
    inputs: list[str]
    output: str
    engine: str = "local"
    workers: int | None = None
    address: str | None = None
    threads: int | None = None
    retry_failed: bool = False
    weights: str = "omg-seg-convl"
    device: str = "auto"
    precision: str | None = None
    vocabulary: Any = None  # Vocabulary or None (the model's own, or COCO)
    embeddings: Any = None  # from --vocab-embeddings
    vocab_given: bool = False
    open_vocab: bool = False
    compile: bool = False
    video_options: dict = field(default_factory=dict)  # VideoOptions fields
    image_options: dict = field(default_factory=dict)  # ImageOptions fields
    open_options: dict = field(default_factory=dict)  # reader, start, end
    formats: list[str] | None = None
    prompts_dir: str | None = None
    masks_dir: str | None = None
    dataset_json: str | None = None
    images_root: str | None = None
    chunk: int = 100
    merge: bool = True
    quiet: bool = False
    ship: str = "auto"  # ray: send inputs to actors on other nodes (auto), always, never
    stdin: Any = None
    notice: Callable[[str], None] | None = None
    progress_stream: Any = None


@dataclass
class BatchResult:
    total: int = 0
    ok: int = 0
    failed: int = 0
    processed: int = 0  # finished in this run
    skipped: int = 0  # done or failed before, not redone
    frames: int = 0  # frames processed in this run
    seconds: float = 0.0
    merged: list[str] = field(default_factory=list)
    manifest: str = ""
    failures: list[dict] = field(default_factory=list)  # records of the failed units
    failed_inputs: list[dict] = field(default_factory=list)  # image sets: unreadable images of done chunks

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed or self.failed_inputs else 0


def default_format(task: str, image_task: str = "panoptic") -> str:
    if task == "image":
        return "coco-rle" if image_task == "instance" else "panoptic"
    return {"vis": "ytvis", "vps": "panoptic", "vss": "panoptic", "vos": "davis"}[task]


def _gpus(device: str) -> int:
    if device in ("cpu", "mps"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _dataset_vocabulary(ds):
    """A dataset JSON's categories as a vocabulary: the built-in list when it has the same classes
    (synonyms, thing/stuff split), else the names as things."""
    from ..io.dataset import normalise_name
    from ..vocab import datasets
    from ..vocab.parse import Vocabulary

    cats = sorted(ds.categories.items(), key=lambda kv: kv[1])
    names = [normalise_name(n) for n, _ in cats]
    for d in datasets.list_datasets():
        try:
            vocab = datasets.dataset_vocabulary(d.name)
        except Exception:  # noqa: BLE001
            continue
        if sorted(normalise_name(n) for n in vocab.names) == sorted(names):
            return vocab
    return Vocabulary([[n] for n, _ in cats], num_things=len(cats))


def _settings(opts: BatchOptions, formats: list[str], planned) -> dict:
    weights = opts.weights
    p = Path(weights).expanduser()
    if p.exists():
        weights = str(p.resolve())
    vo = {k: v for k, v in opts.video_options.items() if k not in ("objects", "keep_images")}
    io = {k: v for k, v in opts.image_options.items() if k not in ("keep_image",)}
    doc = {"task": opts.task, "formats": sorted(formats), "weights": weights, "precision": opts.precision,
           "vocabulary": None if planned is None else [list(c) for c in planned.classes],
           "open_vocab": opts.open_vocab,
           "start": opts.open_options.get("start", 0), "end": opts.open_options.get("end")}
    if opts.task == "image":
        for k, v in io.items():
            if k == "objects":
                v = {str(n): [list(map(list, a)) for a in pair] for n, pair in (v or {}).items()}
            doc[k] = list(v) if isinstance(v, tuple) else v
        doc["chunk"] = opts.chunk
    else:
        doc.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in vo.items()})
    return doc


class _Sink:
    """What the engines report to: every finished record goes to the manifest, then to progress."""

    def __init__(self, out: state.OutputFolder, progress: BatchProgress, result: BatchResult):
        self.out, self.progress, self.result = out, progress, result

    def event(self, slot, kind, name, value) -> None:
        self.progress.event(slot, kind, name, value)

    def record(self, record: dict) -> None:
        record = {k: v for k, v in record.items() if k != "already" or v}
        if not (record.get("already") and self.out.done(record["name"])):
            self.out.append({k: v for k, v in record.items() if k != "already"})
        self.result.processed += 1
        if record.get("status") == "ok":
            self.result.frames += int(record.get("frames") or 0)
        self.progress.finished(record)


def run_batch(opts: BatchOptions) -> BatchResult:
    """Plan, resume, run and merge (see segcli.batch). Returns the counts; BatchResult.exit_code is
    11 when any video of the set has failed. Raises SegcliError for usage/output problems,
    KeyboardInterrupt / api.Interrupted after a clean stop."""
    from .. import api
    from ..pipeline.session import validate_options
    from ..pipeline.video import VideoOptions

    t0 = time.perf_counter()
    say = opts.notice or (lambda m: None)
    if opts.task not in TASKS:
        raise UsageError(f"unknown task {opts.task!r}: choose {', '.join(TASKS)}")
    if opts.engine not in ENGINES:
        raise UsageError(f"--engine {opts.engine!r}: choose local or ray")
    if opts.workers is not None and opts.workers < 1:
        raise UsageError(f"--workers {opts.workers}: must be at least 1")
    if opts.threads is not None and opts.threads < 1:
        raise UsageError(f"--threads {opts.threads}: must be at least 1")
    if opts.chunk < 1:
        raise UsageError(f"--chunk {opts.chunk}: must be at least 1")
    if not opts.inputs:
        raise UsageError("give at least one input (videos, folders, globs, a list file or a dataset JSON)")
    if opts.task != "vos" and (opts.prompts_dir or opts.masks_dir):
        raise UsageError("--prompts and --masks go with segcli batch vos")
    if opts.address and opts.engine != "ray":
        raise UsageError("--address goes with --engine ray")
    if opts.engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # the one-line error before any work

    from ..io import parse_formats

    image_task = opts.image_options.get("task", "panoptic")
    formats = parse_formats(opts.formats) or [default_format(opts.task, image_task)]
    if opts.task != "image":
        validate_options(VideoOptions(task=opts.task, **opts.video_options))
    else:
        from ..pipeline.image import IMAGE_TASKS

        if image_task not in IMAGE_TASKS:
            raise UsageError(f"--task {image_task!r}: choose {', '.join(IMAGE_TASKS)}")

    out = state.OutputFolder(opts.output)
    expander = Expander(opts.task, out.root, opts.images_root, opts.dataset_json)
    for text in opts.inputs:
        expander.add(text, stdin=opts.stdin)
    dataset = expander.dataset
    if opts.task == "image":
        items = image_chunks(expander.images, opts.chunk, dataset)
    else:
        items = expander.items
    if not items:
        raise UsageError("the inputs hold no " + ("images" if opts.task == "image" else "videos"))

    # vocabulary and dataset category ids
    vocabulary = opts.vocabulary
    category_ids = None
    objects = opts.image_options.get("objects") or {}
    agnostic = vocabulary is None and (opts.task == "vos" or (opts.task == "image" and bool(objects)))
    if agnostic and opts.open_vocab:
        raise UsageError("--open-vocab needs a vocabulary")
    if dataset is not None and dataset.categories and opts.embeddings is None:
        if vocabulary is None and not agnostic:
            vocabulary = _dataset_vocabulary(dataset)
            say(f"vocabulary: the {len(vocabulary)} categories of {dataset.path}")
        if vocabulary is not None:
            try:
                category_ids = dataset.category_ids_for(vocabulary.names)
            except UsageError as exc:
                say(f"{exc}: category ids are the vocabulary's")
    planned = api.planned_vocabulary(opts.weights, vocabulary, agnostic)

    out.open()
    try:
        out.load_manifest()
        if opts.task != "image":
            assign_names(items, out.names_by_input)
            number_videos(items, dataset)
        if opts.task == "vos":
            from .prompts import attach_prompts

            attach_prompts(items, opts.prompts_dir, opts.masks_dir)
        out.check_settings(_settings(opts, formats, planned))
        out.remove_stale_temps()
        recovered = out.reconcile([i.name for i in items])
        if recovered:
            say(f"{len(recovered)} finished video(s) found without a manifest line: recorded")
        return _run(opts, out, items, formats, planned, agnostic, category_ids, dataset, t0)
    finally:
        out.close()


def _run(opts, out, items: list[WorkItem], formats, planned, agnostic, category_ids, dataset, t0) -> BatchResult:
    say = opts.notice or (lambda m: None)
    result = BatchResult(total=len(items), manifest=str(out.root / state.MANIFEST))
    todo = []
    for item in items:
        if out.done(item.name) or (out.failed(item.name) and not opts.retry_failed):
            result.skipped += 1
        else:
            todo.append(item)
    unit = "chunk" if opts.task == "image" else "video"
    if result.skipped:
        failed_before = sum(1 for i in items if out.failed(i.name))
        say(f"{result.skipped} of {len(items)} {unit}s already in {out.root}"
            + (f" ({failed_before} failed: --retry-failed redoes them)" if failed_before and not opts.retry_failed
               else ""))
    progress = BatchProgress(len(todo), quiet=opts.quiet, unit=unit, stream=opts.progress_stream)
    sink = _Sink(out, progress, result)
    for item in [i for i in todo if i.prompt_error]:
        from .worker import now

        sink.record({"input": item.input, "name": item.name, "video_id": item.video_id, "status": "failed",
                     "frames": 0, "seconds": 0.0, "outputs": [], "error": item.prompt_error, "finished": now()})
    todo = [i for i in todo if not i.prompt_error]
    if todo:
        engine = _engine(opts, formats, planned, agnostic, category_ids, dataset, len(todo))
        say(f"{len(todo)} {unit}{'s' if len(todo) != 1 else ''} to do on {engine.describe()}")
        progress.start()
        try:
            engine.run(todo, sink)
        except FatalError as exc:
            raise BatchFatalError(str(exc), exc.exit_code) from None
        except BaseException:
            progress.stop()
            done = sum(1 for i in items if out.done(i.name))
            progress.notice(f"stopped: {done} of {len(items)} {unit}s done; rerun the same command to resume")
            raise
        finally:
            progress.stop()
    result.ok = sum(1 for i in items if out.done(i.name))
    result.failures = [out.records[i.name] for i in items if out.failed(i.name)]
    result.failed = len(result.failures)
    result.failed_inputs = [f for i in items if out.done(i.name)
                            for f in out.records[i.name].get("failed_inputs") or []]
    if opts.merge and result.ok:
        from .merge import Merger

        categories = _categories(planned, category_ids)
        result.merged = Merger(out.root, opts.task, formats, items, out.records, dataset=dataset,
                               categories=categories, notice=say).run()
    result.seconds = time.perf_counter() - t0
    return result


def _categories(planned, category_ids) -> list[dict]:
    if planned is None:
        return []
    ids = category_ids or planned.category_ids or list(range(1, len(planned) + 1))
    return [{"id": int(i), "name": n, "isthing": int(k < planned.num_things)}
            for k, (i, n) in enumerate(zip(ids, planned.names))]


def _embeddings(opts, planned, say):
    """Class embeddings computed once here (the workers then need no text tower), when the weights
    are on this machine; None otherwise (each worker computes them)."""
    if opts.embeddings is not None or planned is None:
        return opts.embeddings
    from ..errors import WeightsError
    from ..pipeline.engine import plural, resolve_weights
    from ..vocab import cache, text

    try:
        source = resolve_weights(opts.weights)
    except WeightsError:
        return None
    if source.text_source is None:
        return None
    emb, hit = cache.get_class_embeddings(planned, text.resolve_text_source(source.text_source))
    say(f"class embeddings for {plural(len(planned), 'class', 'classes')}: "
        + ("loaded from cache" if hit else "computed with the CLIP text tower and cached"))
    return emb


def _engine(opts, formats, planned, agnostic, category_ids, dataset, count: int):
    say = opts.notice or (lambda m: None)
    video_options = dict(opts.video_options)
    if opts.task == "vos":
        video_options["label_objects"] = not agnostic
    image_options = dict(opts.image_options)
    if opts.task == "image":
        image_options["label_objects"] = bool(image_options.get("objects")) and not agnostic
    if opts.engine == "local":
        from ..pipeline.engine import ensure_weights

        ensure_weights(opts.weights, download=True, notice=say)  # once, not in every worker
    spec = WorkerSpec(task=opts.task, output=str(out_root(opts)), formats=formats, weights=opts.weights,
                      device=opts.device, precision=opts.precision,
                      vocabulary=planned, embeddings=_embeddings(opts, planned, say), class_agnostic=agnostic,
                      open_vocab=opts.open_vocab, compile=opts.compile,
                      threads=opts.threads, video_options=video_options, image_options=image_options,
                      open_options=dict(opts.open_options), category_ids=category_ids)
    if opts.engine == "ray":
        from .ray_engine import RayEngine

        engine = RayEngine(spec, opts.workers, opts.address, ship=opts.ship)
        engine.workers = min(engine.workers, count)
        return engine
    from .local import LocalEngine, cpu_slots, default_threads

    gpus = _gpus(opts.device)
    if opts.workers is not None:
        workers = opts.workers
    elif gpus:
        workers = gpus
    else:
        workers, _ = cpu_slots(os.cpu_count() or 1, opts.threads)
    workers = min(workers, count)
    if spec.threads is None:
        spec.threads = default_threads(workers)
    return LocalEngine(spec, workers)


def out_root(opts) -> Path:
    return Path(opts.output).expanduser().resolve()
