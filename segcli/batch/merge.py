"""Dataset-level results from the per-video outputs, in the layouts the official evaluators read.
Rebuilt at the end of every run (also a resumed one, and one with nothing left to do), from the
videos whose last record is ok, in input order; each is written beside its target and renamed.

    OUT/results.json        ytvis: every video's tracks in one YouTube-VIS results list; video_id
                            from the dataset JSON when given, else the input's position (1..N),
                            and then OUT/videos.json lists those ids (a YouTube-VIS style index)
    OUT/coco_results.json   coco-rle of image sets: one COCO results list (image ids as planned)
    OUT/panoptic/           panoptic: pred.json + pan_pred/<video>/*.png (VIPSeg / VPQ layout),
                            or, for image sets, pred.json + pred/*.png (COCO-panoptic layout)
    OUT/davis/<video>/      davis: the indexed PNGs of every video (DAVIS evaluation layout)

PNGs are hard links to the per-video files when the file system allows (copies otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from . import state


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _pngs(folder: Path):
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"
                  and not p.name.startswith("."))


class _JsonList:
    """A JSON list streamed into a temp file, renamed onto `target` at commit."""

    def __init__(self, target: Path):
        self.target = target
        fd, self.tmp = tempfile.mkstemp(dir=target.parent, prefix=state.temp_prefix(target.name, "merge"),
                                        suffix=".part")
        self.fh = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0
        self.fh.write("[")

    def add(self, entry) -> None:
        self.fh.write(("," if self.count else "") + "\n" + json.dumps(entry, separators=(",", ":")))
        self.count += 1

    def commit(self) -> None:
        self.fh.write("\n]\n" if self.count else "]\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        try:
            self.fh.close()
        finally:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def _image_id_map(record: dict) -> dict[int, int] | None:
    """Chunk-local image id -> planned id, for writers that could not take the planned ids (an io
    layer without the dataset option numbers images by numeric stem, else by position)."""
    if record.get("ids_written", True) or not record.get("images"):
        return None
    out = {}
    for stem, planned, index in record["images"]:
        local = int(stem) if stem.isascii() and stem.isdigit() else int(index)
        out[local] = planned
    return out


class Merger:
    def __init__(self, out: Path, task: str, formats: list[str], items, records: dict[str, dict], *,
                 dataset=None, categories: list[dict] | None = None, notice=None):
        self.out = Path(out)
        self.task = task
        self.formats = formats
        self.items = items
        self.ok = [(item, records[item.name]) for item in items
                   if records.get(item.name, {}).get("status") == "ok"]
        self.dataset = dataset
        self.categories = categories or []
        self.notice = notice or (lambda m: None)
        self.is_image = task == "image"

    def _files(self, record: dict, fmt: str) -> list[Path]:
        return [self.out / rel for rel in (record.get("formats") or {}).get(fmt, [])]

    def run(self) -> list[str]:
        written = []
        if "ytvis" in self.formats and not self.is_image:
            written += self.ytvis()
        if "coco-rle" in self.formats:
            if self.is_image:
                written += self.coco()
            else:
                self.notice("coco-rle of videos stays per video (frame numbers are not dataset image ids)")
        if "panoptic" in self.formats:
            written += self.panoptic()
        if "davis" in self.formats and not self.is_image:
            written += self.davis()
        return written

    # -- YouTube-VIS ---------------------------------------------------------------------------
    def ytvis(self) -> list[str]:
        target = self.out / "results.json"
        out = _JsonList(target)
        try:
            for item, record in self.ok:
                for path in self._files(record, "ytvis"):
                    for entry in json.loads(path.read_text(encoding="utf-8")):
                        entry["video_id"] = item.video_id
                        out.add(entry)
            out.commit()
        except BaseException:
            out.discard()
            raise
        written = [str(target)]
        if self.dataset is None or not self.dataset.videos:
            videos = []
            for item, record in self.ok:
                videos.append({"id": item.video_id, "name": item.name, "input": item.input,
                               "length": record.get("frames"), "width": record.get("width"),
                               "height": record.get("height")})
            state.write_json_atomic(self.out / "videos.json", {"videos": videos, "categories": self.categories,
                                                               "annotations": []})
            written.append(str(self.out / "videos.json"))
        return written

    # -- COCO results (image sets) -------------------------------------------------------------
    def coco(self) -> list[str]:
        target = self.out / "coco_results.json"
        out = _JsonList(target)
        try:
            for _item, record in self.ok:
                remap = _image_id_map(record)
                for path in self._files(record, "coco-rle"):
                    for entry in json.loads(path.read_text(encoding="utf-8")):
                        if remap is not None:
                            entry["image_id"] = remap.get(int(entry["image_id"]), entry["image_id"])
                        out.add(entry)
            out.commit()
        except BaseException:
            out.discard()
            raise
        return [str(target)]

    # -- panoptic -------------------------------------------------------------------------------
    def panoptic(self) -> list[str]:
        target = self.out / "panoptic"
        tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=state.temp_prefix("panoptic", "merge"), suffix=".part"))
        try:
            annotations, categories = [], None
            for item, record in self.ok:
                remap = _image_id_map(record) if self.is_image else None
                for folder in self._files(record, "panoptic"):
                    doc = json.loads((folder / "pred.json").read_text(encoding="utf-8"))
                    categories = categories if categories is not None else doc.get("categories")
                    if self.is_image:
                        for ann in doc.get("annotations", []):
                            if remap is not None:
                                ann["image_id"] = remap.get(int(ann["image_id"]), ann["image_id"])
                            annotations.append(ann)
                        src = folder / "pred"
                        if src.is_dir():
                            for png in _pngs(src):
                                _link(png, tmp / "pred" / png.name)
                    else:
                        annotations.extend(doc.get("annotations", []))
                        src = folder / "pan_pred"
                        for video_dir in sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []:
                            for png in _pngs(video_dir):
                                _link(png, tmp / "pan_pred" / video_dir.name / png.name)
            (tmp / ("pred" if self.is_image else "pan_pred")).mkdir(exist_ok=True)
            doc = {"annotations": annotations, "categories": categories or self.categories}
            (tmp / "pred.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
            state.replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return [str(target)]

    # -- DAVIS ------------------------------------------------------------------------------------
    def davis(self) -> list[str]:
        target = self.out / "davis"
        tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=state.temp_prefix("davis", "merge"), suffix=".part"))
        try:
            for item, record in self.ok:
                for folder in self._files(record, "davis"):
                    for png in _pngs(folder):
                        _link(png, tmp / item.name / png.name)
                    (tmp / item.name).mkdir(exist_ok=True)
            state.replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return [str(target)]
