"""Deterministic PNG writing with PIL (paletted and RGB), shared by davis and panoptic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segcli.io.rle import voc_palette_bytes


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # Pillow comes with torchvision
        raise RuntimeError("writing PNG files needs Pillow (pip install pillow)") from exc
    return Image


def save_indexed_png(path: Path, indices: np.ndarray) -> None:
    """HxW uint8 indices -> mode "P" PNG with the PASCAL VOC palette (DAVIS convention)."""
    image_mod = _pil()
    h, w = indices.shape
    image = image_mod.frombytes("P", (w, h), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
    image.putpalette(voc_palette_bytes(), rawmode="RGB")
    image.save(path, format="PNG", optimize=False)


def save_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """HxWx3 uint8 -> RGB PNG."""
    image_mod = _pil()
    h, w, _ = rgb.shape
    image = image_mod.frombytes("RGB", (w, h), np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    image.save(path, format="PNG", optimize=False)
