"""segcli: command-line video segmentation with a pure-PyTorch OMG-Seg.

The Python API is what the CLI drives (names load lazily, so `import segcli` stays light):

    import segcli
    segcli.run("video.mp4", task="vis", vocab="dog,car", output="out/")    # the CLI's whole path

    seg = segcli.Segmenter.load("omg-seg-convl", vocabulary=segcli.parse_vocab("dog,car"))
    session = segcli.VideoSession(seg, segcli.VideoOptions(task="vis"))   # push frames one by one
    for frame in frames:
        for result in session.step(frame):
            print(result.index, [(s.id, s.label, s.score) for s in result.segments])
    for result in session.finish():
        ...

On CPU, call `segcli.keep_freed_memory()` once at start, as the CLI does: freed tensors then
stay in the process heap instead of being page-faulted in anew (10-30 % faster model stages).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "run": "segcli.api",
    "VideoJob": "segcli.api",
    "ImageJob": "segcli.api",
    "RunReport": "segcli.api",
    "VideoSession": "segcli.pipeline.session",
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
    "SegcliError": "segcli.errors",
    "PromptError": "segcli.errors",
    "UsageError": "segcli.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'segcli' has no attribute {name!r}")
