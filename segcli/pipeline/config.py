"""Pipeline settings as plain dataclasses: how a video is cut into clips, the test-time thresholds
of the official post-processing, and the preprocessing. They ride with a model (a model folder
records them, the released models use the official demo defaults) but nothing in segcli/model/
reads them: the Segmenter carries them as `seg.cfg`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VideoConfig:
    """MinVIS clip parameters (official demo defaults)."""

    clip_size: int = 3
    clip_size_small: int = 3
    small_clip_thr: int = 10
    whole_clip_thr: int = 0
    overlap: int = 0
    backbone_batch: int = 50


@dataclass
class TestConfig:
    max_per_image: int = 100
    iou_thr: float = 0.8
    filter_low_score: bool = True
    object_mask_thr: float = 0.0
    num_proposals: int = 25


@dataclass
class PreprocessConfig:
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    video_scale: tuple[int, int] = (1280, 736)  # (w, h) limits of the keep-ratio resize
    image_scale: tuple[int, int] = (1024, 1024)
    pad_divisor: int = 32


@dataclass
class PipelineConfig:
    video: VideoConfig = field(default_factory=VideoConfig)
    test: TestConfig = field(default_factory=TestConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    instance_offset: int = 1000  # mmdet panoptic encoding (official maps: class + id * offset)


def pipeline_config_from_bundle(bundle: dict) -> PipelineConfig:
    """The pipeline settings recorded in a model folder's (golden bundle's) config.json."""
    d = bundle["detector"]
    video = VideoConfig(
        clip_size=int(d["clip_size"]),
        clip_size_small=int(d["clip_size_small"]),
        small_clip_thr=int(d["small_clip_thr"]),
        whole_clip_thr=int(d["whole_clip_thr"]),
        overlap=int(d["overlap"]),
        backbone_batch=int(d.get("BACKBONE_BATCH", 50)),
    )
    t = bundle["test_cfg"]
    test = TestConfig(
        max_per_image=int(t["max_per_image"]),
        iou_thr=float(t["iou_thr"]),
        filter_low_score=bool(t["filter_low_score"]),
        object_mask_thr=float(t["object_mask_thr"]),
        num_proposals=int(bundle.get("test_cfg_variants", {}).get("vos_", {}).get("num_proposals", 25)),
    )
    p = bundle["preprocessing"]
    pre = PreprocessConfig(
        mean=tuple(p["mean"]),
        std=tuple(p["std"]),
        video_scale=tuple(p["video_resize_scale_wh"]),
        image_scale=tuple(p["image_resize_scale_wh"]),
        pad_divisor=int(p["pad_size_divisor"]),
    )
    return PipelineConfig(video=video, test=test, preprocess=pre,
                          instance_offset=int(bundle.get("INSTANCE_OFFSET", 1000)))
