"""``panoptic``: COCO-panoptic PNGs + prediction JSON, in the layout each evaluator reads.

Images (``segcli image``): the COCO-panoptic layout of panopticapi's ``pq_compute``::

    <out>/<name>_panoptic/pred.json
    <out>/<name>_panoptic/pred/<stem>.png          # pq_compute's default pred_folder: pred.json minus .json

    {"annotations": [{"image_id": 139, "file_name": "000000000139.png",
                      "segments_info": [{"id", "category_id", "iscrowd": 0, "isthing", "area", "bbox"}]}],
     "categories": [{"id", "name", "isthing", "color"}]}

``image_id`` is an integer, found like coco-rle's (``ids.ImageIds``): from the dataset JSON
(``WriterOptions.dataset``, e.g. ``panoptic_val2017.json``) by file name, else the number of
a numeric stem (``000000000139.jpg`` -> 139), else the image's position in the run.
``pq_compute(gt_json, "<out>/<name>_panoptic/pred.json", gt_folder)`` evaluates it as written.

Videos: the VIPSeg / video-panoptic layout the VPQ and STQ evaluators read::

    <out>/<name>_panoptic/pred.json
    <out>/<name>_panoptic/pan_pred/<name>/00000.png ...

    {"annotations": [{"video_id": "<name>", "annotations": [
        {"image_id": "00000", "file_name": "00000.png", "segments_info": [...]}, ...]}],
     "categories": [...]}

Frames are named by their source frame number (``00005.png`` for frame 5) or source stem;
``image_id`` is that stem (VIPSeg's convention: frame ids are the file stems of their video).

PNG: RGB, segment id = R + 256*G + 256^2*B, 0 = void. The segment id is the track id, so the
same id across frames is the same instance (stuff keeps whatever stable id the pipeline gives
it). Overlaps are resolved by score (higher on top); ``area`` and ``bbox`` in segments_info are
measured on the written PNG, and segments left with no pixel are dropped, so every
segments_info id appears in its PNG and vice versa (both evaluators check this). Two inputs
with the same stem are refused (UsageError). The whole folder is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from segcli.io.base import UniqueStems, Writer, check_unique_ids, dumps, frame_stem
from segcli.io.ids import ImageIds
from segcli.io.png import save_rgb_png
from segcli.io.rle import id_color, id_map, id_to_rgb, mask_bbox
from segcli.results import FrameResult


class PanopticWriter(Writer):
    format_name = "panoptic"
    default_name = "{name}_panoptic"
    is_dir = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dir = self._atomic_dir(self.target)
        self._frames: list[dict] = []
        self._stems = UniqueStems(self.format_name)
        self._image_ids = ImageIds(self.info, self.options.dataset, self.format_name) if self.info.is_image else None

    def _png_dir(self) -> Path:
        if self.info.is_image:
            path = self._dir.path() / "pred"
        else:
            path = self._dir.path() / "pan_pred" / self.info.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write(self, frame: FrameResult) -> None:
        check_unique_ids(frame, self.format_name)
        stem = frame_stem(frame)
        self._stems.add(stem)
        image_id = self._image_ids(frame) if self._image_ids is not None else stem
        ids = id_map(frame, 256**3 - 1)
        save_rgb_png(self._png_dir() / f"{stem}.png", id_to_rgb(ids))
        segments_info = []
        for seg in sorted(frame.segments, key=lambda s: s.id):
            x, y, w, h = seg.bbox_xywh  # the visible part lies inside the segment's own box
            visible = ids[y:y + h, x:x + w] == seg.id
            area = int(visible.sum())
            if area == 0:
                continue
            vx, vy, vw, vh = mask_bbox(visible)
            segments_info.append({
                "id": int(seg.id),
                "category_id": self.categories(seg.category),
                "iscrowd": 0,
                "isthing": int(bool(seg.isthing)),
                "area": area,
                "bbox": [x + vx, y + vy, vw, vh],
            })
        self._frames.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments_info})

    def _close(self) -> None:
        self._png_dir()
        categories = []
        for index, name in enumerate(self.info.classes):
            cid = self.categories(index)
            categories.append({"id": cid, "name": name, "isthing": int(self.info.isthing(index)),
                               "color": list(id_color(cid))})
        if self.info.is_image:
            doc = {"annotations": self._frames, "categories": categories}
        else:
            doc = {"annotations": [{"video_id": self.info.name, "annotations": self._frames}],
                   "categories": categories}
        (self._dir.path() / "pred.json").write_text(dumps(doc) + "\n", encoding="utf-8")
        self._dir.commit()

    def _abort(self) -> None:
        self._dir.discard()
