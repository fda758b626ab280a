"""What `segcli batch` works on: INPUTS expanded into work items, one per video (or per chunk of
images), each with a unique output name, its dataset id and (vos) its prompts.

INPUTS may be, in any mix:

* a video file, or a folder of frames (one video);
* a folder of videos and/or of frame folders (each is one video; a folder that holds only
  images is itself one video); for `image`, a folder of images;
* a glob (``"clips/*.mp4"``, ``"JPEGImages/*"``; quoted, or expanded by the shell);
* a list file: ``.txt``/``.lst`` (one path per line, ``#`` comments) or ``.csv``/``.tsv`` with a
  header naming the path column (``input``, ``path``, ``video`` or ``file``) and optionally
  ``name``, ``video_id``, ``prompts`` (a prompt JSON file, or prompt options such as
  ``--point 120,80 --object 2 --box 1,2,30,40``) and ``mask`` (a first-frame mask PNG);
  relative paths are relative to the list file; ``-`` reads such a list from stdin;
* a dataset JSON: YouTube-VIS (``videos`` with ``file_names``: each video is that list of
  frames, with its ``id``) or COCO (``images``: `image` only, ids from the file).

Names: the file stem or folder name; a name given twice gets its parent folder prefixed
(``a_clip``), then a counter. Names recorded in an earlier run's manifest are kept for the
same input, so a rerun writes to the same folders.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputNotFoundError, UnreadableInputError, UsageError

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m", ".gif"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".csv", ".tsv"})
PATH_COLUMNS = ("input", "path", "video", "file", "filename", "file_name")
# names the batch itself writes at the top of the output folder
RESERVED_NAMES = frozenset({"manifest.jsonl", "batch.json", "results.json", "videos.json", "coco_results.json",
                            "panoptic", "davis"})


@dataclass
class WorkItem:
    """One unit of work: a video (a file, a frame folder or a list of frames), or a chunk of images."""

    name: str  # unique; the output folder OUT/<name>/
    input: str  # what the manifest records (the path given, or json#id for dataset videos)
    kind: str  # "video" (a file), "frames" (a folder or a list of frames) or "images" (a chunk)
    path: str | None = None  # video file or frame folder
    files: list[str] | None = None  # explicit frames (dataset videos) or the chunk's images
    video_id: int | None = None
    length: int | None = None  # frames the dataset lists
    prompts: list | None = None  # vos: ObjectPrompts
    prompt_error: str | None = None  # vos: why the prompts could not be read (the item fails)
    image_ids: list[int] | None = None  # images: COCO image id of every file
    # how the item was given (used for names and prompt look-ups), not sent anywhere
    base: str = ""
    parent: str = ""
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.input

    def frame_names(self) -> list[str] | None:
        """Stems of the frames, in order, when known without decoding (frame folders and lists)."""
        if self.files is not None:
            return [Path(f).stem for f in self.files]
        if self.kind == "frames" and self.path is not None:
            from ..pipeline.reader import list_images

            return [p.stem for p in list_images(Path(self.path))]
        return None


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _is_image(path: Path) -> bool:
    from ..pipeline.reader import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    from ..pipeline.reader import list_images

    try:
        return list_images(folder)
    except OSError:
        return []


def _same(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


class Expander:
    """Turns INPUTS into WorkItems (before names are made unique)."""

    def __init__(self, task: str, output: Path | None = None, images_root: str | None = None,
                 dataset_json: str | None = None):
        self.task = task
        self.output = output
        self.images_root = images_root
        self.dataset = None  # a segcli.io.dataset.Dataset (from an input or --dataset-json)
        self.items: list[WorkItem] = []
        self.images: list[tuple[Path, str, int | None]] = []  # image task: (file, input, dataset id)
        self._seen: set[str] = set()
        if dataset_json is not None:
            self.dataset = _load_dataset(dataset_json)

    # -- entry ------------------------------------------------------------------------------
    def add(self, text: str, stdin=None) -> None:
        if text == "-":
            self._add_list(io.StringIO((stdin or sys.stdin).read()), Path.cwd(), "stdin", csv_like=None)
            return
        path = Path(text).expanduser()
        if not path.exists():
            if _has_glob(text):
                matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
                if not matches:
                    raise InputNotFoundError(f"no file matches {text}")
                for m in matches:
                    self._add_path(Path(m), given=m, top=False)
                return
            raise InputNotFoundError(f"no such file or folder: {text}")
        self._add_path(path, given=text, top=True)

    def _add_path(self, path: Path, given: str, top: bool) -> None:
        if _same(path, self.output):
            return
        if path.is_dir():
            self._add_folder(path, given, top)
        elif path.suffix.lower() == ".json" and top:
            self._add_dataset(path)
        elif path.suffix.lower() in LIST_EXTENSIONS and top:
            with open(path, encoding="utf-8", newline="") as fh:
                self._add_list(fh, path.parent, str(path), csv_like=path.suffix.lower() in (".csv", ".tsv"),
                               delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        elif self.task == "image":
            self._add_image(path, given)
        else:
            self._add_video(path, given)

    # -- folders ----------------------------------------------------------------------------
    def _add_folder(self, folder: Path, given: str, top: bool) -> None:
        images = _images_in(folder)
        if self.task == "image":
            if not images:
                raise UnreadableInputError(f"no images in folder {given}")
            for img in images:
                self._add_image(img, str(img))
            return
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise UnreadableInputError(f"cannot list {given}: {exc.strerror or exc}") from None
        videos = [p for p in entries if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in VIDEO_EXTENSIONS]
        subfolders = [p for p in entries if p.is_dir() and not p.name.startswith(".") and not _same(p, self.output)
                      and _images_in(p)]
        if images and not videos and not subfolders:
            self._add_frames(folder, given)
            return
        if not top and images:
            self._add_frames(folder, given)  # a glob match that holds frames is one video
            return
        if not videos and not subfolders:
            raise UnreadableInputError(f"no videos, frame folders or images in {given}")
        for v in videos:
            self._add_video(v, str(v))
        for sub in subfolders:
            self._add_frames(sub, str(sub))

    # -- single inputs ----------------------------------------------------------------------
    def _new(self, item: WorkItem) -> None:
        if item.input in self._seen:
            return
        self._seen.add(item.input)
        self.items.append(item)

    def _add_video(self, path: Path, given: str, row: dict | None = None) -> None:
        parent = path.resolve().parent.name if path.exists() else path.parent.name
        self._new(WorkItem(name="", input=_shown(path), kind="video", path=str(path), base=path.stem,
                           parent=parent, row=row or {}))

    def _add_frames(self, folder: Path, given: str, row: dict | None = None) -> None:
        resolved = folder.resolve()
        self._new(WorkItem(name="", input=_shown(folder), kind="frames", path=str(folder), base=resolved.name,
                           parent=resolved.parent.name, row=row or {}))

    def _add_image(self, path: Path, given: str, image_id: int | None = None) -> None:
        key = _shown(path)
        if key in self._seen:
            return
        self._seen.add(key)
        self.images.append((path, key, image_id))

    # -- list files -------------------------------------------------------------------------
    def _add_list(self, fh, base_dir: Path, where: str, csv_like: bool | None, delimiter: str = ",") -> None:
        text = fh.read()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise UnreadableInputError(f"{where} lists no inputs")
        if csv_like is None:  # stdin: a CSV when its first line names a path column
            first = [c.strip().lower() for c in next(csv.reader([lines[0]]))]
            csv_like = any(c in PATH_COLUMNS for c in first)
        if not csv_like:
            for ln in lines:
                self._add_row(ln.strip(), {}, base_dir, where)
            return
        reader = csv.DictReader(lines, delimiter=delimiter)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        path_col = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
        if path_col is None:
            raise UsageError(f"{where}: no path column (name one of {', '.join(PATH_COLUMNS)} in the header)")
        for n, raw in enumerate(reader, 2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            value = (raw.get(path_col) or "").strip()
            if not value:
                raise UsageError(f"{where}, line {n}: empty {path_col}")
            row["_where"] = f"{where}, line {n}"
            row["_dir"] = str(base_dir)
            self._add_row(value, row, base_dir, where)

    def _add_row(self, value: str, row: dict, base_dir: Path, where: str) -> None:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.exists():
            if _has_glob(value):
                for m in sorted(glob.glob(str(path), recursive=True)):
                    self._add_path(Path(m), given=m, top=False)
                return
            raise InputNotFoundError(f"{where}: no such file or folder: {value}")
        if self.task == "image":
            if path.is_dir():
                self._add_folder(path, value, top=False)
            else:
                self._add_image(path, value)
        elif path.is_dir():
            self._add_frames(path, value, row)
        else:
            self._add_video(path, value, row)

    # -- dataset JSON -----------------------------------------------------------------------
    def _add_dataset(self, path: Path) -> None:
        ds = _load_dataset(str(path))
        if self.dataset is not None and self.dataset.path != ds.path:
            raise UsageError(f"two dataset JSON files given ({self.dataset.path} and {path}): give one")
        self.dataset = ds
        if ds.kind == "ytvis":
            if self.task == "image":
                raise UsageError(f"{path} is a YouTube-VIS (video) dataset: use segcli batch vis/vps/vos")
            root = _find_root(ds, path, self.images_root, [f for v in ds.videos.values() for f in v["file_names"]])
            for vid in sorted(ds.videos):
                video = ds.videos[vid]
                files = [str(root / f) for f in video["file_names"]]
                if not files:
                    raise UnreadableInputError(f"{path}: video {vid} lists no file_names")
                folder = Path(video["file_names"][0]).parent
                base = str(video.get("name") or folder.name or vid)
                self._new(WorkItem(name="", input=f"{path}#{vid}", kind="frames", files=files, video_id=vid,
                                   length=ds.video_length(vid), base=Path(base).name, parent=str(folder.parent),
                                   path=str(root / folder)))
        elif ds.kind == "coco":
            if self.task != "image":
                raise UsageError(f"{path} is a COCO image dataset: use segcli batch image")
            root = _find_root(ds, path, self.images_root, list(ds.images))
            for file_name, iid in sorted(ds.images.items(), key=lambda kv: kv[1]):
                self._add_image(root / file_name, file_name, iid)
        else:
            raise UsageError(f"{path} lists no videos or images (categories only): give the inputs too, "
                             f"with --dataset-json {path}")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def _load_dataset(path: str):
    from ..io.dataset import Dataset

    return Dataset.load(path)


def _find_root(ds, json_path: Path, images_root: str | None, names: list[str]) -> Path:
    """The folder the dataset's file names are relative to: --images-root, else the first of
    JSON_DIR/JPEGImages, JSON_DIR/<stem>/JPEGImages, JSON_DIR/<stem>, JSON_DIR, JSON_DIR/../<stem>
    (and the split name in the JSON's stem: instances_val2017 -> val2017) that holds the first file."""
    if not names:
        raise UnreadableInputError(f"{json_path} lists no files")
    first = names[0]
    if images_root is not None:
        root = Path(images_root).expanduser()
        if not (root / first).exists():
            raise InputNotFoundError(f"--images-root {images_root}: no {first} there (the first file of {json_path})")
        return root
    d, stem = json_path.parent, json_path.stem
    split = stem.split("_")[-1]
    candidates = [d / "JPEGImages", d / stem / "JPEGImages", d / stem, d, d.parent / stem, d / split,
                  d.parent / split, d.parent / stem / "JPEGImages", d.parent / split / "JPEGImages"]
    for root in candidates:
        if (root / first).exists():
            return root
    raise InputNotFoundError(f"cannot find the files of {json_path} (no {first} in {d} or its usual sub-folders): "
                             "give --images-root DIR")


_UNSAFE = re.compile(r"[^\w.\-+@=,]+", re.UNICODE)


def clean_name(name: str) -> str:
    """A folder name: no separators, no leading dot (hidden), never empty."""
    name = _UNSAFE.sub("_", name.strip()).strip("_") or "video"
    return name.lstrip(".") or "video"


def assign_names(items: list[WorkItem], previous: dict[str, str]) -> None:
    """Unique output names: the earlier run's name for the same input, else the base name, else
    parent_base, else base-2, base-3... (case-insensitively unique, never a reserved name)."""
    taken: set[str] = set()

    def free(n: str) -> bool:
        return n.casefold() not in taken and n.lower() not in RESERVED_NAMES

    wanted = {}
    for item in items:
        if item.row.get("name"):
            wanted[item.input] = clean_name(item.row["name"])
    for item in items:  # earlier runs' names first: they are on disk already
        name = previous.get(item.input)
        if name and free(name):
            item.name = name
            taken.add(name.casefold())
    counts: dict[str, int] = {}
    for item in items:
        if not item.name:
            b = wanted.get(item.input) or clean_name(item.base)
            counts[b.casefold()] = counts.get(b.casefold(), 0) + 1
    for item in items:
        if item.name:
            continue
        base = wanted.get(item.input) or clean_name(item.base)
        candidates = [base] if counts.get(base.casefold(), 0) == 1 or item.input in wanted else []
        if item.parent:
            candidates.append(clean_name(f"{item.parent}_{base}"))
        candidates.append(base)
        name = next((c for c in candidates if free(c)), None)
        k = 2
        while name is None:
            if free(f"{base}-{k}"):
                name = f"{base}-{k}"
            k += 1
        item.name = name
        taken.add(name.casefold())


def image_chunks(images: list[tuple[Path, str, int | None]], chunk: int, dataset) -> list[WorkItem]:
    """Image inputs in chunks of `chunk` images: items images-00000, images-00001... Image ids:
    the dataset's (COCO JSON), else the number of numeric file stems (COCO's own naming) when all
    are numeric and distinct, else the 1-based position in the sorted input list."""
    if not images:
        return []
    stems: dict[str, str] = {}
    for path, shown, _ in images:
        key = path.stem.casefold()
        if key in stems:
            raise UsageError(f"two images are named {path.stem!r} ({stems[key]} and {shown}); their results would "
                             "overwrite each other: rename one or run them separately")
        stems[key] = shown
    ids: list[int] = []
    numeric = all(p.stem.isascii() and p.stem.isdigit() for p, _, _ in images)
    for i, (path, shown, iid) in enumerate(images):
        if iid is None and dataset is not None and dataset.images:
            iid = dataset.image_id_for(Path(shown).name) or dataset.image_id_for(path.name)
            if iid is None:
                raise UsageError(f"image {shown} is not in the dataset JSON {dataset.path}")
        if iid is None:
            iid = int(path.stem) if numeric else i + 1
        ids.append(int(iid))
    if len(set(ids)) != len(ids):
        raise UsageError("two images would get the same image id: give the dataset JSON that lists their ids")
    out = []
    for n, start in enumerate(range(0, len(images), chunk)):
        part = images[start:start + chunk]
        name = f"images-{n:05d}"
        out.append(WorkItem(name=name, input=f"images[{start}:{start + len(part)}]", kind="images",
                            files=[str(p) for p, _, _ in part], image_ids=ids[start:start + len(part)], base=name))
    return out


def number_videos(items: list[WorkItem], dataset) -> None:
    """YouTube-VIS video ids: the dataset's (by the video's folder name) when a dataset JSON is
    given, else 1..N in input order. Inputs missing from the dataset are refused."""
    if dataset is not None and dataset.videos:
        missing = []
        for item in items:
            if item.video_id is None:
                vid = dataset.video_id_for(item.base) or dataset.video_id_for(item.name)
                if vid is None:
                    missing.append(item.input)
                else:
                    item.video_id = vid
                    item.length = dataset.video_length(vid)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise UsageError(f"{len(missing)} inputs are not videos of {dataset.path}: {shown}")
        ids = [i.video_id for i in items]
        if len(set(ids)) != len(ids):
            raise UsageError(f"two inputs are the same video of {dataset.path}")
        return
    for n, item in enumerate(items, 1):
        if item.row.get("video_id"):
            try:
                item.video_id = int(item.row["video_id"])
            except ValueError:
                raise UsageError(f"{item.row.get('_where', 'list')}: video_id {item.row['video_id']!r} is not "
                                 "an integer") from None
        else:
            item.video_id = n
    ids = [i.video_id for i in items]
    if len(set(ids)) != len(ids):
        raise UsageError("two videos have the same video_id in the input list")
