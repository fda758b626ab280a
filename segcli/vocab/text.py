"""CLIP text embeddings of a vocabulary, the way the official `tools/gen_cls.py` builds them (§5.4).

For every synonym of every class, each of the 14 ViLD templates is filled in; all sentences are
tokenised with CLIP's tokenizer (context 77) and encoded with the CLIP text tower
(open_clip's `encode_text(normalize=False)`, fp32). Each sentence embedding is L2-normalised, the
template embeddings of a synonym are averaged and normalised again, and every class is padded to P
synonyms by repeating its first synonym: a float32 tensor (K, P, D).

The tokenizer and the text tower are segcli's own (segcli.vocab.clip_text), which compute exactly
what open_clip's SimpleTokenizer and TextTransformer compute without importing open_clip (1.7 s,
and a heap twice as large, per process). The tower is built from an open_clip text config without
any download, with its weights read from
* a golden-bundle-layout folder: `config.json` (`text_tower.open_clip_text_cfg`, `embed_dim`,
  `classes.templates`) + `text_tower.safetensors` (open_clip key names), or
* an open_clip CLIP checkpoint (e.g. `open_clip_pytorch_model.bin` of convnext_large_d_320), whose
  text keys are picked out (the `visual.*` keys are skipped); the model's text config comes from
  segcli's table of open_clip model configs (segcli.model.config.open_clip_model_config).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segcli.errors import UsageError, VocabularyError, WeightsError
from segcli.vocab import clip_text
from segcli.vocab.parse import Vocabulary

# ext/templates/vild.py of the official repository (from FC-CLIP); trailing periods as written.
VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

BUNDLE_TEXT_WEIGHTS = "text_tower.safetensors"
DEFAULT_CLIP_MODEL = "convnext_large_d_320"
_SKIP_KEYS = ("logit_scale", "logit_bias")


@dataclass(frozen=True)
class TextSource:
    """Where a CLIP text tower comes from: its open_clip text config and a weights file."""

    name: str
    weights: Path
    text_cfg: dict
    embed_dim: int
    quick_gelu: bool = False
    templates: tuple[str, ...] = VILD_TEMPLATES

    def config_digest(self) -> str:
        """Digest of everything but the weights bytes that shapes the embeddings."""
        blob = json.dumps({"text_cfg": self.text_cfg, "embed_dim": self.embed_dim,
                           "quick_gelu": self.quick_gelu}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def text_source_from_bundle(folder: str | Path) -> TextSource:
    """Text tower of a golden-bundle-layout folder (config.json + text_tower.safetensors)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    weights = folder / BUNDLE_TEXT_WEIGHTS
    from segcli.model.checkpoint import read_model_config

    for needed in (config_path, weights):
        if not needed.is_file():
            raise WeightsError(f"{folder} is not a text-tower folder: {needed.name} is missing")
    config = read_model_config(config_path)
    tower = config.get("text_tower") or {}
    text_cfg = tower.get("open_clip_text_cfg") if isinstance(tower, dict) else None
    embed_dim = tower.get("embed_dim") if isinstance(tower, dict) else None
    if not isinstance(text_cfg, dict) or embed_dim is None:
        raise WeightsError(f"{config_path} has no text_tower.open_clip_text_cfg / embed_dim")
    try:
        embed_dim = int(embed_dim)
    except (TypeError, ValueError):
        raise WeightsError(f"{config_path}: text_tower.embed_dim is not a number ({embed_dim!r})") from None
    classes = config.get("classes")
    templates = (classes.get("templates") if isinstance(classes, dict) else None) or VILD_TEMPLATES
    if not isinstance(templates, (list, tuple)) or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise WeightsError(f"{config_path}: classes.templates must be a list of sentences with {{}} for the class")
    quick_gelu = bool(tower.get("quick_gelu", False))
    return TextSource(name=f"bundle:{folder.name}", weights=weights, text_cfg=dict(text_cfg),
                      embed_dim=embed_dim, quick_gelu=quick_gelu, templates=tuple(templates))


def text_source_from_open_clip(model_name: str, weights: str | Path) -> TextSource:
    """Text tower of the open_clip model `model_name` (built-in config, no download) with its
    weights read from a local CLIP checkpoint file."""
    from segcli.model.config import open_clip_model_config

    config = open_clip_model_config(model_name)
    if config is None:
        raise WeightsError(f"open_clip has no model config named '{model_name}'")
    return TextSource(name=model_name, weights=Path(weights), text_cfg=dict(config["text_cfg"]),
                      embed_dim=int(config["embed_dim"]), quick_gelu=bool(config.get("quick_gelu", False)))


def resolve_text_source(spec: str | Path, clip_model: str | None = None) -> TextSource:
    """`--weights` as given on the command line: a bundle-layout folder, a CLIP checkpoint file
    (open_clip model `clip_model`, default convnext_large_d_320), or a weights-registry name (a
    model such as `omg-seg-convl`, or a CLIP file such as `clip-convnext-large-d-320`)."""
    candidate = Path(spec)
    if candidate.is_dir():
        return text_source_from_bundle(candidate)
    if candidate.is_file():
        return text_source_from_open_clip(clip_model or DEFAULT_CLIP_MODEL, candidate)
    if "/" in str(spec) or candidate.suffix in (".bin", ".pt", ".pth", ".safetensors"):
        raise WeightsError(f"text tower weights not found: {spec}")
    from segcli import weights

    registry = weights.load_registry()
    files = registry.files_of(str(spec))
    clip_roles = [role for role, f in files.items() if f.open_clip_model]
    if len(clip_roles) != 1:
        raise UsageError(f"'{spec}' names no single CLIP checkpoint with a text tower")
    clip = files[clip_roles[0]]
    # only the CLIP file is needed for text; a missing one names its own pull command
    path = weights.resolve(clip.id, check=True, registry=registry)[clip.id]
    return text_source_from_open_clip(clip_model or clip.open_clip_model, path)


def _read_text_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Text-tower tensors of a text-only or full open_clip CLIP checkpoint (safetensors or torch)."""
    if not path.is_file():
        raise WeightsError(f"text tower weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = [k for k in handle.keys() if not k.startswith("visual.")]
                state = {k: handle.get_tensor(k) for k in keys}
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"cannot read the text tower weights {path}: {first[:200]}") from None
    else:
        state = _torch_load(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"{path} does not hold a state dict")
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    return {k: v for k, v in state.items() if k not in _SKIP_KEYS}


def _torch_load(path: Path):
    """torch.load with weights_only=True (no code from the file runs); memory-mapped when the file
    is in the zip format, so only the text tensors of a 1.4 GB CLIP checkpoint are read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise WeightsError(f"cannot load {path} safely (weights_only=True): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise WeightsError(f"cannot load {path} safely (weights_only=True): {exc}") from exc
    try:  # legacy (non-zip) torch.save format cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load {path} safely (weights_only=True): {exc}") from exc


class TextTower(nn.Module):
    """CLIP text tower + tokenizer; `encode` = open_clip `encode_text(normalize=False)`.

    Constructed without weights (uninitialised parameters): `load_weights` fills them."""

    def __init__(self, text_cfg: dict, embed_dim: int, quick_gelu: bool = False):
        super().__init__()
        config = clip_text.text_tower_config(dict(text_cfg), embed_dim, quick_gelu)
        self.text = clip_text.empty_text_transformer(config)
        self.context_length = config.context_length
        self.tokenizer = clip_text.CLIPTokenizer(context_length=self.context_length)

    def load_weights(self, state: dict[str, torch.Tensor], origin: str = "weights") -> None:
        own = self.text.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise WeightsError(f"text tower keys of {origin} do not match the config: "
                               f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                               f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if wrong:
            k = wrong[0]
            raise WeightsError(f"text tower tensor {k} of {origin} has shape {tuple(state[k].shape)}, "
                               f"the config needs {tuple(own[k].shape)}")
        self.text.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)

    def tokenize(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(sentences))

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        return self.text(tokens.to(device)).float()

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """(N, D) un-normalised text features, fp32, on the CPU."""
        out = []
        for start in range(0, len(sentences), batch_size):
            tokens = self.tokenize(sentences[start:start + batch_size])
            out.append(self.encode_tokens(tokens).cpu())
        if not out:
            raise VocabularyError("nothing to encode")
        return torch.cat(out)


def build_text_tower(source: TextSource, device: str | torch.device = "cpu") -> TextTower:
    """Construct the text tower of `source` and load its weights (fp32, eval mode)."""
    tower = TextTower(source.text_cfg, source.embed_dim, source.quick_gelu)
    tower.load_weights(_read_text_state_dict(Path(source.weights)), origin=str(source.weights))
    return tower.to(device=device, dtype=torch.float32).eval()


def build_descriptions(vocab: Vocabulary, templates: Sequence[str] = VILD_TEMPLATES) -> list[str]:
    """Sentences in the official order: class, then synonym, then template."""
    if not templates:
        raise VocabularyError("no prompt templates")
    return [template.format(synonym) for synonyms in vocab.classes for synonym in synonyms
            for template in templates]


def embeddings_from_features(features: torch.Tensor, vocab: Vocabulary, num_templates: int) -> torch.Tensor:
    """(num_sentences, D) raw text features -> (K, P, D) class embeddings (§5.4 steps 4-5)."""
    counts = [len(s) for s in vocab.classes]
    dim = features.shape[-1]
    per_synonym = features.reshape(sum(counts), num_templates, dim)
    per_synonym = F.normalize(per_synonym, dim=-1)  # x / ||x||: no eps difference for non-zero rows
    per_synonym = F.normalize(per_synonym.mean(dim=1), dim=-1)
    width = max(counts)
    rows, start = [], 0
    for count in counts:
        own = per_synonym[start:start + count]
        if count < width:
            own = torch.cat([own, own[:1].expand(width - count, dim)])
        rows.append(own)
        start += count
    return torch.stack(rows).contiguous().float()


def class_embeddings(vocab: Vocabulary, tower: TextTower, templates: Sequence[str] = VILD_TEMPLATES,
                     batch_size: int = 256) -> torch.Tensor:
    """(K, P, D) float32 class embeddings of `vocab` (unit-norm rows, padded with synonym 0)."""
    features = tower.encode(build_descriptions(vocab, templates), batch_size=batch_size)
    return embeddings_from_features(features, vocab, len(templates))
