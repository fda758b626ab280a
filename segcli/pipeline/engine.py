"""The loaded model and how to call it: the `Segmenter` is what the CLI, the Python API and
batch jobs hold. It owns the network, the vocabulary's class embeddings, the device and the
precision; per-video state lives in segcli.pipeline.video.

    seg = Segmenter.load("../shared/golden/tiny_v1", vocab=parse_vocab("cat,dog|puppy"))
    for frame in seg.video("clip.mp4", task="vis"):
        ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PromptError, UsageError, WeightsError
from ..model.checkpoint import load_weights, model_folder_config
from ..model.config import OMGSegConfig, convl_config, convxxl_config
from ..model.folder import check_weights_source, vocabulary_from_config
from ..model.head import HeadOutput, Prompts
from ..model.omgseg import OMGSeg, build_model
from ..vocab.parse import Vocabulary
from .config import PipelineConfig, pipeline_config_from_bundle
from .options import PRECISIONS, check_device_name


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device_name(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available here")
    return torch.device(name)


@dataclass
class WeightsSource:
    """Where a model comes from: its configuration and the files to load."""

    config: OMGSegConfig
    weights: Path  # full checkpoint, or the head file when `clip` is set
    clip: Path | None = None
    text_source: str | Path | None = None  # what segcli.vocab builds class embeddings with
    vocabulary: Vocabulary | None = None  # the model's own vocabulary (bundles), if any
    name: str = ""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # clips, thresholds, preprocessing


def bundle_vocabulary(config: dict) -> Vocabulary:
    """The vocabulary a model folder's config.json records."""
    return vocabulary_from_config(config)


def registry_config(name: str) -> OMGSegConfig:
    """The architecture the registry states for a released model (on its head file)."""
    from .. import weights as registry

    archs = {f.architecture for f in registry.load_registry().files_of(name).values() if f.architecture}
    return convxxl_config() if archs == {"convxxl"} else convl_config()


def model_config_for(weights: str) -> OMGSegConfig:
    """The model's configuration without loading (or downloading) its weights."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return resolve_weights(weights).config
    if path.is_file():
        return convl_config()
    return registry_config(weights)


def resolve_weights(weights: str) -> WeightsSource:
    """A registry name, a checkpoint file, or a directory in the golden-bundle layout."""
    path = Path(weights).expanduser()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file() or not (path / "weights.safetensors").is_file():
            raise WeightsError(f"{path} is not a model directory (needs config.json and weights.safetensors)")
        config, raw = model_folder_config(path)
        try:
            pipeline = pipeline_config_from_bundle(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{cfg_file} has a malformed pipeline setting ({type(exc).__name__}: {exc})") from None
        return WeightsSource(config, path / "weights.safetensors", None, path, bundle_vocabulary(raw),
                             name=path.name, pipeline=pipeline)
    if path.is_file():
        from .. import weights as registry

        clip = None
        try:
            clip = registry.resolve("clip-convnext-large-d-320")["clip-convnext-large-d-320"]
        except Exception:  # a full checkpoint needs no CLIP file; load_weights says if it does
            clip = None
        return WeightsSource(convl_config(), path, clip, clip, name=path.stem)
    if "/" in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors")):
        raise WeightsError(f"weights file not found: {weights}")
    from .. import weights as registry

    files = registry.resolve(weights)
    cfg = registry_config(weights)
    return WeightsSource(cfg, files["head"], files.get("clip"), weights, name=weights)


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def is_model_folder(weights: str) -> bool:
    return Path(weights).expanduser().is_dir()


def default_precision(weights: str, device: torch.device) -> str:
    """fp32 for model folders (the reference models); bf16 on CPU and fp16 on GPUs otherwise."""
    if is_model_folder(weights):
        return "fp32"
    return "bf16" if device.type == "cpu" else "fp16"


check_weights_name = check_weights_source  # cheap up-front check: no network, no loading


def ensure_weights(weights: str, download: bool = True, notice=None) -> None:
    """Registry names are fetched on first use when downloads are allowed and the network is."""
    check_weights_name(weights)
    if Path(weights).expanduser().exists():
        return
    from .. import weights as registry
    from ..weights import hub

    if all(registry.is_present(weights).values()):
        return
    if not download or hub.is_offline():
        registry.resolve(weights)  # raises the one-line "missing ... fetch it with" error

    def told(file) -> None:  # only once the hub answered: an unreachable hub gives one error line only
        if notice is not None:
            notice(f"weights '{weights}' not found locally: downloading {file.filename} (segcli weights pull "
                   f"{weights})")
    registry.pull(weights, progress=notice is not None, on_download=told)


class Segmenter:
    """OMG-Seg ready to run: model on its device, class embeddings set, precision chosen."""

    def __init__(self, model: OMGSeg, vocabulary: Vocabulary, device: torch.device,
                 precision: str = "fp32", seen: list[bool] | None = None, channels_last: bool | None = None,
                 compile: bool = False, shortcuts: bool = True, pipeline: PipelineConfig | None = None):
        """precision: fp32 (the reference), or bf16/fp16 autocast with the matmul weights stored
        in that dtype (norms, softmax, positions, sampling and the cosine classifier stay fp32).
        channels_last (default: on for CPU and CUDA): NHWC backbone, same numbers up to rounding,
        faster depthwise convolutions and no permute copies. compile: torch.compile the backbone
        (the first clip of every new input size pays the compilation). shortcuts (default on;
        exact, they change no result): classify only the last of the head's 10 predictions, and
        upsample to the frame only the queries post-processing keeps; off does the official work
        (every prediction classified, all queries upsampled per frame), the benchmark's plain
        reference."""
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}' (choose {', '.join(PRECISIONS)})")
        if precision == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; use bf16 on CPU")
        self.model = model.to(device).eval().requires_grad_(False)
        self.cfg = pipeline or PipelineConfig()  # clip lengths, test thresholds, preprocessing
        self.vocabulary = vocabulary
        self.device = device
        self.precision = precision
        self.seen = seen
        if precision != "fp32":
            self.model.cast_matmul_weights(self.dtype)
        self.channels_last = device.type in ("cpu", "cuda") if channels_last is None else channels_last
        self.shortcuts = shortcuts
        self.class_agnostic = False  # vos without a vocabulary: objects carry no label
        self.compiled = False
        if compile:
            self.compile()

    @property
    def input_device(self) -> torch.device | None:
        """Where preprocessing normalises and pads the frames: the GPU itself (uint8 pixels
        travel, normalised there), None on a CPU (the host is the device)."""
        return self.device if self.device.type == "cuda" else None

    @property
    def has_prompts(self) -> bool:
        """False for weights without the interactive-prompt branch (automatic tasks only)."""
        return bool(self.model.panoptic_head.cfg.with_prompt)

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def compile(self) -> None:
        """torch.compile the backbone (static shapes: one compilation per input size and clip
        length). The head stays eager: its shapes follow the masks and prompts."""
        backbone = self.model.backbone
        backbone.forward = torch.compile(backbone.forward, dynamic=False)
        self.compiled = True

    @classmethod
    def load(cls, weights: str = "omg-seg-convl", device: str = "auto", precision: str | None = None,
             vocabulary: Vocabulary | None = None, embeddings: torch.Tensor | None = None,
             on_embeddings=None, channels_last: bool | None = None, compile: bool = False,
             shortcuts: bool = True, *, class_agnostic: bool = False, open_vocab: bool = False,
             download: bool = True, notice=None) -> Segmenter:
        """Build the model for `weights` (a registry name, a checkpoint file or a model folder)
        and set the class embeddings of `vocabulary`.

        The policy the CLI applies lives here, so API users get the same: `precision=None` picks
        fp32 for model folders (the golden reference models) and, for the released models, bf16
        on CPU and fp16 on CUDA; `vocabulary=None` uses the model's own vocabulary (model folders)
        or COCO's 133 classes (with a notice); `class_agnostic=True` (vos without labels) needs no
        vocabulary and no text tower; `open_vocab=True` enables the CLIP mask-pooling ensemble with
        the seen/unseen split of the vocabulary; `download=True` fetches missing registry weights
        unless offline. `on_embeddings(hit: bool)` is told whether embeddings came from the cache;
        `notice(str)` gets one-line messages."""
        say = notice or (lambda message: None)
        if precision is not None and precision not in PRECISIONS:
            raise UsageError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
        dev = resolve_device(device)
        ensure_weights(weights, download=download, notice=say)
        source = resolve_weights(weights)
        if precision is None:
            precision = default_precision(weights, dev)
        if precision == "fp16" and dev.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; use bf16 on CPU")
        model = build_model(source.config)
        load_weights(model, source.weights, clip=source.clip)
        vocab = vocabulary or source.vocabulary
        if class_agnostic and vocabulary is None:
            vocab = Vocabulary([["object"]], num_things=1)
            embeddings = torch.zeros(1, 1, source.config.backbone.embed_dim)
        if vocab is None:
            from ..vocab import datasets

            vocab = datasets.dataset_vocabulary("coco")
            say("no vocabulary given: using --dataset coco")
        if embeddings is None:
            from ..vocab import cache, text

            if source.text_source is None:
                raise WeightsError("no CLIP text tower to embed the vocabulary with; "
                                   "fetch it with: segcli weights pull clip-convnext-large-d-320")
            embeddings, hit = cache.get_class_embeddings(vocab, text.resolve_text_source(source.text_source))
            if on_embeddings is not None:
                on_embeddings(hit)
            else:
                say(f"class embeddings for {plural(len(vocab), 'class', 'classes')}: "
                    + ("loaded from cache" if hit else "computed with the CLIP text tower and cached"))
        if embeddings.shape[0] != len(vocab):
            raise UsageError(f"embeddings hold {plural(embeddings.shape[0], 'class', 'classes')}, "
                             f"the vocabulary {len(vocab)}")
        model.set_class_embeddings(embeddings)
        seg = cls(model, vocab, dev, precision, channels_last=channels_last, compile=compile, shortcuts=shortcuts,
                  pipeline=source.pipeline)
        seg.class_agnostic = class_agnostic and vocabulary is None
        if open_vocab:
            from ..vocab import datasets

            seg.seen = datasets.overlapping(vocab)
        return seg

    # ---- model calls ---------------------------------------------------------------------
    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        # on a CPU one frame at a time: a 3-frame batch's stage-1 activations raised the peak RSS
        # of a long 1280x736 video by ~0.5 GB (3.4 -> 3.0 GB); interleaved A/Bs put the cost
        # between none and 7 % of the backbone (a frame's GEMMs are already large)
        chunk = 1 if self.device.type == "cpu" else self.cfg.video.backbone_batch
        with self.autocast():
            feats = self.model.extract_features(batch, chunk)
        return feats

    @torch.no_grad()
    def decode_clip(self, feats: list[torch.Tensor], num_frames: int, keep_pixel: bool = False) -> HeadOutput:
        """keep_pixel: also return the pixel-decoder outputs (HeadOutput.pixel) for decode_prompts."""
        with self.autocast():
            out = self.model.forward_clip(feats, num_frames, keep_pixel=keep_pixel,
                                         classify_every_layer=not self.shortcuts)
        return _to_float(out)

    @torch.no_grad()
    def pixel_features(self, feats: list[torch.Tensor]) -> tuple:
        """The pixel decoder's outputs (mask features, multi-scale memories) for the frames of
        `feats`, without the query decoder: what decode_prompts(pixel=...) reuses, so that the
        second and later prompts on a frame run only the prompt decoder (segcli app)."""
        with self.autocast():
            mask_features, memories = self.model.panoptic_head.pixel_decoder(feats)
        return mask_features, list(memories)

    @torch.no_grad()
    def decode_prompts(self, feats: list[torch.Tensor] | None, boxes: torch.Tensor, bp: torch.Tensor,
                       pixel: tuple | None = None) -> HeadOutput:
        """feats of ONE frame (None when `pixel` is given); boxes (N, 4) x1,y1,x2,y2 normalised by
        img_shape; bp (N,); pixel: that frame's pixel-decoder outputs (pixel_features, or a
        decode_clip's HeadOutput.pixel)."""
        if feats is None and pixel is None:
            raise UsageError("decode_prompts needs the frame's features or its pixel-decoder outputs")
        if not self.has_prompts:
            raise PromptError("these weights have no interactive-prompt branch (a checkpoint of the official "
                              "video-demo config): point, box and mask prompts need the all-tasks checkpoint "
                              "(segcli weights pull omg-seg-convl)")
        prompts = Prompts(boxes[None].to(self.device).float(), bp[None].to(self.device))
        with self.autocast():
            out = self.model.forward_prompts(feats if feats is not None else [], prompts, pixel=pixel,
                                            classify_every_layer=not self.shortcuts)
        return _to_float(out)


def _to_float(out: HeadOutput) -> HeadOutput:
    """fp32 logits and queries, left on the model's device: on a GPU the tracker and the
    post-processing run there too (upsampling 300 masks per frame on the host would cost more
    than the model), and only the final per-frame masks cross to the host. The stride-4 mask
    logits keep the dtype they were computed in: widening bf16 numbers adds no information, only
    bytes (a 210 MB copy per 3-frame clip at 1280x736, and twice the memory of held clips);
    post-processing widens each chunk of queries it upsamples."""
    return HeadOutput(out.cls_logits.float(), out.iou_logits.float(), out.mask_logits, out.query_feat.float(),
                      pixel=out.pixel)
