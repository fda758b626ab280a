"""segcli: command-line video segmentation with a pure-PyTorch OMG-Seg.

The Python API is what the CLI drives (names load lazily, so `import segcli` stays light):

    import segcli
    seg = segcli.Segmenter.load("omg-seg-convl", vocabulary=segcli.parse_vocab("dog,car"))
    with segcli.open_source("video.mp4") as frames:
        for result in segcli.segment_video(seg, frames, segcli.VideoOptions(task="vis")):
            print(result.index, [(s.id, s.label, s.score) for s in result.segments])

On CPU, call `segcli.keep_freed_memory()` once at start, as the CLI does: freed tensors then
stay in the process heap instead of being page-faulted in anew (10-30 % faster model stages).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "Segmenter": "segcli.pipeline.engine",
    "segment_video": "segcli.pipeline.video",
    "VideoOptions": "segcli.pipeline.video",
    "ObjectPrompt": "segcli.pipeline.video",
    "segment_image": "segcli.pipeline.image",
    "ImageOptions": "segcli.pipeline.image",
    "open_source": "segcli.pipeline.reader",
    "parse_vocab": "segcli.vocab.parse",
    "dataset_vocabulary": "segcli.vocab.datasets",
    "open_writers": "segcli.io",
    "FrameResult": "segcli.results",
    "Segment": "segcli.results",
    "keep_freed_memory": "segcli.runtime",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'segcli' has no attribute {name!r}")
