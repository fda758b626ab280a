"""Per-video prompts for `segcli batch vos`, read on the driver (workers get ObjectPrompts).

Where a video's prompts come from, first found:

1. its list-file row: a ``prompts`` column (a JSON file as below, or the `segcli vos` prompt
   options as text: ``--point 120,80 --object 2 --box 10,10,90,90 --frame 40 --point 150,95``)
   or a ``mask`` column (a first-frame mask PNG);
2. ``--prompts DIR``: ``DIR/<video>.json``;
3. ``--masks DIR``: DAVIS style, ``DIR/<video>/`` holds indexed PNGs named like the frames
   (``00000.png``); the first one (by name) prompts its frame, one object per index, as the
   DAVIS semi-supervised protocol gives the first frame's annotation.

Prompt JSON (coordinates in original-frame pixels, frames are source frame numbers)::

    {"objects": [{"id": 1, "frame": 0, "points": [[120, 80]], "boxes": [[10, 10, 90, 90]]},
                 {"id": 2, "box": [200, 40, 260, 120]}],
     "mask": "first_frame.png", "mask_frame": 0}

(a bare list is the "objects" list; ``point``/``box`` take one value; ``mask`` is relative to
the JSON file). A video that has none, or whose prompts are malformed, is recorded as failed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..errors import PromptError, SegcliError, UsageError
from .items import WorkItem


def _parse_args(text: str) -> list:
    from ..cli import parse_vos_prompts

    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise PromptError(f"prompt options {text!r}: {exc}") from None
    return parse_vos_prompts(args)


def _mask_frame(item: WorkItem, png: Path) -> int:
    """The source frame a mask PNG prompts: its stem's position among the video's frames (frame
    folders and lists), or its number (video files)."""
    names = item.frame_names()
    if names is not None:
        if png.stem in names:
            return names.index(png.stem)
        if png.stem.isdigit() and f"{int(png.stem):05d}" in names:
            return names.index(f"{int(png.stem):05d}")
        raise PromptError(f"mask {png} names no frame of {item.input}")
    return int(png.stem) if png.stem.isdigit() else 0


def _from_json(path: Path, item: WorkItem) -> list:
    from ..cli import _box, _int, _point
    from ..pipeline.prompts import objects_from_mask_png
    from ..pipeline.video import ObjectPrompt

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptError(f"cannot read prompt file {path}: {exc}") from None
    if isinstance(doc, list):
        doc = {"objects": doc}
    if not isinstance(doc, dict):
        raise PromptError(f"{path}: expected a JSON object or list of objects")
    out: list = []
    if isinstance(doc.get("args"), str):
        out.extend(_parse_args(doc["args"]))
    prompts: dict[tuple[int, int], ObjectPrompt] = {}
    for n, obj in enumerate(doc.get("objects") or [], 1):
        if not isinstance(obj, dict):
            raise PromptError(f"{path}: object {n} is not a JSON object")
        oid = _int(str(obj.get("id", 1)), "id", minimum=1, maximum=255)
        frame = _int(str(obj.get("frame", 0)), "frame", minimum=0)
        target = prompts.setdefault((oid, frame), ObjectPrompt(oid, frame))
        points = list(obj.get("points") or []) + ([obj["point"]] if "point" in obj else [])
        boxes = list(obj.get("boxes") or []) + ([obj["box"]] if "box" in obj else [])
        for p in points:
            target.points.append(_point(",".join(str(v) for v in p) if isinstance(p, (list, tuple)) else str(p)))
        for b in boxes:
            target.boxes.append(_box(",".join(str(v) for v in b) if isinstance(b, (list, tuple)) else str(b)))
        if not target.points and not target.boxes:
            raise PromptError(f"{path}: object {oid} has no point and no box")
    out.extend(prompts.values())
    if doc.get("mask"):
        png = Path(doc["mask"])
        png = png if png.is_absolute() else path.parent / png
        frame = doc.get("mask_frame")
        frame = _mask_frame(item, png) if frame is None else _int(str(frame), "mask_frame", minimum=0)
        out.extend(objects_from_mask_png(str(png), frame))
    if not out:
        raise PromptError(f"{path} holds no prompt")
    return out


def _from_mask_folder(folder: Path, item: WorkItem) -> list:
    from ..pipeline.prompts import objects_from_mask_png

    pngs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not pngs:
        raise PromptError(f"no mask PNG in {folder}")
    return objects_from_mask_png(str(pngs[0]), _mask_frame(item, pngs[0]))


def attach_prompts(items: list[WorkItem], prompts_dir: str | None, masks_dir: str | None) -> None:
    """Set item.prompts, or item.prompt_error (the item is then recorded as failed)."""
    pdir = Path(prompts_dir).expanduser() if prompts_dir else None
    mdir = Path(masks_dir).expanduser() if masks_dir else None
    for d, opt in ((pdir, "--prompts"), (mdir, "--masks")):
        if d is not None and not d.is_dir():
            raise UsageError(f"{opt} {d}: not a folder")
    for item in items:
        try:
            item.prompts = _prompts_for(item, pdir, mdir)
        except SegcliError as exc:
            item.prompt_error = str(exc)


def _prompts_for(item: WorkItem, pdir: Path | None, mdir: Path | None) -> list:
    from ..pipeline.prompts import objects_from_mask_png

    row = item.row
    base = Path(row.get("_dir", "."))
    if row.get("prompts"):
        value = row["prompts"]
        if value.lstrip().startswith("-"):
            return _parse_args(value)
        path = Path(value) if Path(value).is_absolute() else base / value
        return _from_json(path, item)
    if row.get("mask"):
        png = Path(row["mask"]) if Path(row["mask"]).is_absolute() else base / row["mask"]
        return objects_from_mask_png(str(png), _mask_frame(item, png))
    for name in dict.fromkeys((item.name, item.base)):
        if pdir is not None and (pdir / f"{name}.json").is_file():
            return _from_json(pdir / f"{name}.json", item)
        if mdir is not None and (mdir / name).is_dir():
            return _from_mask_folder(mdir / name, item)
    where = " or ".join(w for w in (f"{pdir}/{item.base}.json" if pdir else "",
                                    f"{mdir}/{item.base}/00000.png" if mdir else "") if w)
    raise PromptError(f"no prompt for {item.name}: " + (f"expected {where}" if where else
                      "give --prompts DIR (DIR/<video>.json), --masks DIR (DIR/<video>/00000.png) "
                      "or a prompts column in a list file"))
