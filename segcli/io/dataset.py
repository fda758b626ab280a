"""Dataset JSON files (COCO, COCO-panoptic, YouTube-VIS): the ids an evaluator expects.

Results only score when their ids are the ground truth's: COCO ``image_id`` (``COCO.loadRes``
and panopticapi match them against the GT's images), YouTube-VIS ``video_id`` (``loadRes``
asserts every one is in ``videos``) and the dataset's ``category_id``. This module reads those
ids from the dataset's own JSON (the ground-truth annotation file, or an image-info file such
as ``image_info_test-dev2017.json`` / YouTube-VIS ``valid.json``)::

    ds = Dataset.load("instances_val2017.json")
    ds.image_id_for("000000000139.jpg")   # -> 139 (also "000000000139", "val2017/000000000139.jpg")
    ds.categories["dog"]                  # -> 18 (name -> id, as written in the file)
    ds.category_ids_for(["dog", "car"])   # -> [18, 3] (names normalised: case, "_", "-")

    ds = Dataset.load("ytvis_2019/valid.json")
    ds.video_id_for("0b6f9105fc")         # folder of its file_names ("0b6f9105fc/00000.jpg"), or name
    ds.video_frames(1)                    # -> ["00000", "00005", ...] (file_names stems, in order)

Layouts read: ``images: [{"id", "file_name"}]`` (COCO, COCO-panoptic), ``videos: [{"id",
"file_names": [...], "length"}]`` (YouTube-VIS; a ``name`` field, where present, also matches),
``categories: [{"id", "name"}]``. Annotations are not loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from segcli.errors import InputNotFoundError, UnreadableInputError, UsageError

__all__ = ["Dataset", "normalise_name"]

_SEP = re.compile(r"[\s_\-]+")


def normalise_name(name: str) -> str:
    """Category-name key: lower case, runs of spaces / ``_`` / ``-`` as one space."""
    return _SEP.sub(" ", str(name).strip().lower()).strip()


def _posix(name: str) -> str:
    return str(name).replace("\\", "/").strip("/")


def _stem(name: str) -> str:
    return PurePosixPath(_posix(name)).stem


class Dataset:
    """The ids of a COCO / COCO-panoptic / YouTube-VIS dataset JSON (see the module docstring).

    ``categories``: name -> id as written; ``images``: file_name -> id; ``videos``: video id ->
    its record (``file_names``, ``length``...). Lookups return None when a name is not in the
    dataset; a name that matches several entries raises UsageError.
    """

    def __init__(self, doc: dict, path: str | os.PathLike | None = None):
        if not isinstance(doc, dict):
            raise UnreadableInputError(f"{self._shown(path)}: expected a JSON object with images or videos")
        self.path = None if path is None else Path(path)
        self.categories: dict[str, int] = {}
        self._categories_norm: dict[str, int] = {}
        for cat in doc.get("categories") or []:
            try:
                name, cid = str(cat["name"]), int(cat["id"])
            except (KeyError, TypeError, ValueError):
                raise UnreadableInputError(f"{self._shown(path)}: a category without name and id") from None
            self.categories[name] = cid
            self._categories_norm.setdefault(normalise_name(name), cid)

        self.images: dict[str, int] = {}
        self._image_keys: dict[str, set[int]] = {}
        for img in doc.get("images") or []:
            try:
                file_name, iid = _posix(img["file_name"]), int(img["id"])
            except (KeyError, TypeError, ValueError):
                raise UnreadableInputError(f"{self._shown(path)}: an image without file_name and id") from None
            self.images[file_name] = iid
            parts = PurePosixPath(file_name)
            for key in {file_name, parts.name, str(parts.with_suffix("")), parts.stem}:
                self._image_keys.setdefault(key, set()).add(iid)

        self.videos: dict[int, dict] = {}
        self._video_keys: dict[str, set[int]] = {}
        for video in doc.get("videos") or []:
            try:
                vid = int(video["id"])
            except (KeyError, TypeError, ValueError):
                raise UnreadableInputError(f"{self._shown(path)}: a video without an id") from None
            files = [_posix(f) for f in video.get("file_names") or []]
            record = dict(video, file_names=files)
            self.videos[vid] = record
            keys = set()
            for f in files:
                folder = PurePosixPath(f).parent
                if str(folder) not in ("", "."):
                    keys.add(str(folder))
                    keys.add(folder.name)
            for field in ("name", "video_name", "file_name"):
                if isinstance(video.get(field), str):
                    keys.add(_posix(video[field]))
            for key in keys:
                self._video_keys.setdefault(key, set()).add(vid)
        if not (self.images or self.videos or self.categories):
            raise UnreadableInputError(f"{self._shown(path)}: no images, videos or categories: "
                                       "not a COCO or YouTube-VIS dataset JSON")
        self._frames_cache: dict[int, dict[str, int]] = {}

    @staticmethod
    def _shown(path) -> str:
        return "dataset JSON" if path is None else str(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dataset:
        """Read a dataset JSON. Raises InputNotFoundError / UnreadableInputError."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputNotFoundError(f"no such dataset JSON: {path}")
        try:
            with open(p, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnreadableInputError(f"cannot read dataset JSON {path}: {exc}") from None
        return cls(doc, p)

    @property
    def kind(self) -> str:
        """"ytvis" (has videos), "coco" (has images) or "categories" (categories only)."""
        return "ytvis" if self.videos else "coco" if self.images else "categories"

    def __repr__(self) -> str:
        return (f"Dataset({self._shown(self.path)!r}, {len(self.images)} images, {len(self.videos)} videos, "
                f"{len(self.categories)} categories)")

    # -- images -------------------------------------------------------------------------------

    def image_id_for(self, name: str) -> int | None:
        """The image id of a file name ("a/000000000139.jpg"), base name or stem; None if absent."""
        key = _posix(name)
        for candidate in (key, PurePosixPath(key).name, str(PurePosixPath(key).with_suffix("")),
                          PurePosixPath(key).stem):
            ids = self._image_keys.get(candidate)
            if ids:
                if len(ids) > 1:
                    raise UsageError(f"{name!r} matches {len(ids)} images of {self._shown(self.path)} "
                                     f"(ids {', '.join(map(str, sorted(ids)[:5]))})")
                return next(iter(ids))
        return None

    # -- videos -------------------------------------------------------------------------------

    def video_id_for(self, name: str) -> int | None:
        """The id of the video whose file_names lie in folder ``name`` (or whose ``name`` is it)."""
        key = _posix(name)
        ids = self._video_keys.get(key) or self._video_keys.get(PurePosixPath(key).name)
        if not ids:
            return None
        if len(ids) > 1:
            raise UsageError(f"video {name!r} matches {len(ids)} videos of {self._shown(self.path)}")
        return next(iter(ids))

    def video_frames(self, video_id: int) -> list[str]:
        """The frame stems of a video, in order (from its file_names; empty when not listed)."""
        video = self.videos.get(int(video_id))
        return [] if video is None else [_stem(f) for f in video["file_names"]]

    def video_length(self, video_id: int) -> int | None:
        """Number of frames of the video: ``length``, else the number of file_names; None if unknown."""
        video = self.videos.get(int(video_id))
        if video is None:
            return None
        if video.get("length") is not None:
            return int(video["length"])
        return len(video["file_names"]) or None

    def frame_position(self, video_id: int, stem: str) -> int | None:
        """Position of frame ``stem`` in the video's file_names (None when not listed)."""
        positions = self._frames_cache.get(int(video_id))
        if positions is None:
            positions = {}
            for i, s in enumerate(self.video_frames(video_id)):
                positions.setdefault(s, i)
            self._frames_cache[int(video_id)] = positions
        if stem in positions:
            return positions[stem]
        return positions.get(_stem(stem))

    # -- categories ---------------------------------------------------------------------------

    def category_id_for(self, name: str) -> int | None:
        """Category id of a class name: exact, else after normalise_name; None if absent."""
        if name in self.categories:
            return self.categories[name]
        return self._categories_norm.get(normalise_name(name))

    def category_ids_for(self, classes: Sequence[str]) -> list[int]:
        """Dataset ids of ``classes`` (a vocabulary's names, in order). Raises UsageError naming
        the classes the dataset does not have."""
        ids, missing = [], []
        for name in classes:
            cid = self.category_id_for(name)
            if cid is None:
                missing.append(name)
            ids.append(cid)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise UsageError(f"{len(missing)} classes are not categories of {self._shown(self.path)}: {shown}")
        return ids
