"""Safe, strict checkpoint loading under the official key names.

Accepted files:
  * the released OMG-Seg head (`omg_seg_convl.pth`: a bare dict of `panoptic_head.*` tensors,
    or an mmengine dict with 'state_dict'), through torch.load(weights_only=True);
  * safetensors files (golden bundles hold backbone + head in one `weights.safetensors`);
  * the open_clip CLIP checkpoint for the backbone: `visual.trunk.*` / `visual.head.*` are
    renamed to `backbone.*`; the text tower keys in that file are ignored.
Loading is strict: a missing or unexpected key outside the documented allow-list is one
readable WeightsError naming the keys. No file is ever unpickled into code.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..errors import WeightsError

# Keys a head checkpoint may carry that a model built without prompt support does not have.
PROMPT_KEYS = (
    "panoptic_head.mask_tokens.weight",
    "panoptic_head.pb_embedding.weight",
    "panoptic_head.pos_linear.weight",
    "panoptic_head.pos_linear.bias",
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors or a torch file, never executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # corrupt header, truncated file
            raise WeightsError(f"cannot read safetensors file {path}: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported pickle content"
        raise WeightsError(
            f"refusing to load {path}: it is not a plain tensor checkpoint and would need unpickling code "
            f"({first[:160]})"
        ) from None
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def clip_to_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip visual tower names -> OMG backbone names; other keys are dropped."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("visual.trunk.stem."):
            out["backbone.stem." + key[len("visual.trunk.stem."):]] = value
        elif m := re.match(r"visual\.trunk\.stages\.(\d+)\.(.*)", key):
            out[f"backbone.layer{int(m.group(1)) + 1}.{m.group(2)}"] = value
        elif key.startswith("visual.trunk.head."):
            out["backbone.head.0." + key[len("visual.trunk.head."):]] = value
        elif key.startswith("visual.head."):
            out["backbone.head.1." + key[len("visual.head."):]] = value
    return out


def _describe(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], allow_missing_prefix: str | None = None,
              source: str = "checkpoint") -> None:
    """Strict load with the allow-list: prompt keys may be unexpected when the model has no
    prompt branch; keys under `allow_missing_prefix` may be missing (loaded from another file)."""
    expected = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    unexpected = [k for k in state if k not in expected and k not in PROMPT_KEYS]
    missing = [k for k in expected if k not in state
               and not (allow_missing_prefix and k.startswith(allow_missing_prefix))]
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        raise WeightsError(f"{source} does not match the model ({'; '.join(parts)})")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
           if k in expected and v.shape != expected[k].shape]
    if bad:
        raise WeightsError(f"{source} has wrong tensor shapes: {_describe(bad, 3)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def load_weights(model: torch.nn.Module, weights: str | Path, clip: str | Path | None = None) -> None:
    """Load a full checkpoint (backbone + head), or a head-only file plus the CLIP checkpoint."""
    state = read_state_dict(weights)
    has_backbone = any(k.startswith("backbone.") for k in state)
    if clip is not None:
        state.update(clip_to_backbone(read_state_dict(clip)))
        has_backbone = True
    if not has_backbone:
        raise WeightsError(
            f"{weights} holds no backbone weights; also give the CLIP checkpoint "
            "(segcli weights pull clip-convnext-large-d-320)"
        )
    load_into(model, state, source=str(weights))
