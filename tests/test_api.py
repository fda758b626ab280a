"""The Python API the CLI drives is importable from the package root."""

from __future__ import annotations

import numpy as np
import torch

import segcli


def test_api_names_resolve():
    for name in segcli.__all__:
        assert getattr(segcli, name) is not None


def test_video_through_the_api(bundle):
    seg = segcli.Segmenter.load(str(bundle.path), device="cpu",
                                embeddings=torch.from_numpy(bundle.outputs["cls_embed_file"]))
    frames = [segcli.pipeline.reader.Frame(i, None, rgb.copy(), f"{i:05d}")
              for i, rgb in enumerate(bundle.inputs["vid_frames_raw_rgb"][:2])]
    results = list(segcli.segment_video(seg, frames, segcli.VideoOptions(task="vps", mode="online")))
    assert [r.index for r in results] == [0, 1]
    assert all(isinstance(s.mask, np.ndarray) and s.mask.dtype == bool for r in results for s in r.segments)
