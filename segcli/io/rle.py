"""Mask helpers shared by the writers: COCO RLE, id maps, palettes and colours.

Conventions (see docs/formats.md):

- COCO RLE: ``{"size": [H, W], "counts": str}``; column-major (Fortran order) runs as
  pycocotools writes them, ``counts`` decoded to ``str`` so the dict is JSON-ready.
- Panoptic ids in RGB: ``id = R + 256 * G + 256**2 * B`` (panopticapi ``rgb2id``/``id2rgb``).
- DAVIS palette: the PASCAL VOC colour map (index ``i`` takes its colour bits from ``i``,
  three at a time, most significant bit first).
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
from pycocotools import mask as mask_util

from segcli.results import FrameResult, Segment
from segcli.results import paint_order as _paint_order


def encode_mask(mask: np.ndarray) -> dict:
    """Encode one boolean HxW mask as a JSON-ready COCO RLE ``{"size": [h, w], "counts": str}``."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    # pycocotools wants column-major uint8: a bool mask that is already column-major (as the GPU
    # path hands them over) is encoded without the 1 MB transposing copy per 720p mask
    as_bytes = mask.view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)
    rle = mask_util.encode(np.asfortranarray(as_bytes))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _to_pycoco(rle: dict) -> dict:
    counts = rle["counts"]
    h, w = (int(v) for v in rle["size"])
    if isinstance(counts, list):  # uncompressed RLE
        return mask_util.frPyObjects(rle, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def decode_rle(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (str, bytes or uncompressed list counts) to a boolean HxW mask."""
    return mask_util.decode(_to_pycoco(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    return int(mask_util.area(_to_pycoco(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """COCO [x, y, w, h] of an RLE, as pycocotools computes it."""
    return [float(v) for v in mask_util.toBbox(_to_pycoco(rle))]


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight integer [x, y, w, h] of a boolean mask; zeros when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


# ---------------------------------------------------------------------------------------------
# Id maps


def paint_order(frame: FrameResult) -> list[Segment]:
    """Segments in painting order: lower scores first, so where masks overlap the
    higher-scoring segment ends on top (ties: the higher id ends on top)."""
    return _paint_order(frame.segments)


def id_map(frame: FrameResult, max_id: int = 2**32 - 1) -> np.ndarray:
    """The frame's HxW map of track ids (0 = background), shared by every writer
    (``FrameResult.id_map``: painted once per frame, read-only).

    The dtype is the smallest of uint8/uint16/uint32 holding the largest id present.
    Raises ValueError when an id exceeds ``max_id``.
    """
    top = max((s.id for s in frame.segments), default=0)
    if top > max_id:
        raise ValueError(f"track id {top} does not fit this format (largest allowed id: {max_id})")
    return frame.id_map()


def paint_ids(height: int, width: int, segments: list[Segment], values: list[int], dtype=np.uint8) -> np.ndarray:
    """Paint ``segments`` (in paint order) with ``values[i]`` for ``segments[i]``: for maps that
    use other values than the track ids or only some of the segments."""
    out = np.zeros((height, width), dtype=dtype)
    value_of = {id(s): v for s, v in zip(segments, values)}
    for seg in _paint_order(segments):
        out[seg.mask] = value_of[id(seg)]
    return out


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """HxW integer ids -> HxWx3 uint8 with id = R + 256*G + 256^2*B."""
    ids = np.asarray(ids, dtype=np.uint32)
    if ids.size and int(ids.max()) >= 256**3:
        raise ValueError(f"id {int(ids.max())} does not fit in 24-bit RGB")
    return np.stack([(ids >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW uint32 ids (R + 256*G + 256^2*B)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


# ---------------------------------------------------------------------------------------------
# Colours


@lru_cache(maxsize=None)
def voc_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC colour map as an (n, 3) uint8 array: 0 black, 1 (128,0,0), 2 (0,128,0), ..."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        rgb = [0, 0, 0]
        value = index
        bit = 7
        while value:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
            bit -= 1
        cmap[index] = rgb
    cmap.flags.writeable = False
    return cmap


def voc_palette_bytes() -> bytes:
    """The 768-byte palette for PIL ``Image.putpalette`` (mode "P")."""
    return voc_palette(256).tobytes()


def id_color(index: int) -> tuple[int, int, int]:
    """A bright, well-separated RGB colour for a track or category id (deterministic)."""
    hue = (index * 0.6180339887498949) % 1.0
    sat = 0.65 + 0.3 * ((index * 7) % 3) / 2.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))
