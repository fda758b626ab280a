"""Safe, strict checkpoint loading under the official key names.

Accepted files:
  * the released OMG-Seg head (`omg_seg_convl.pth`: a bare dict of `panoptic_head.*` tensors,
    or an mmengine dict with 'state_dict'), through torch.load(weights_only=True);
  * safetensors files (golden bundles hold backbone + head in one `weights.safetensors`);
  * the open_clip CLIP checkpoint for the backbone, `open_clip_pytorch_model.safetensors` or the
    torch pickle `open_clip_pytorch_model.bin` (same keys): `visual.trunk.*` / `visual.head.*` are
    renamed to `backbone.*`; the text tower keys in that file are not read.
Loading is strict: a missing or unexpected key outside the documented allow-list is one
readable WeightsError naming the keys. No file is ever unpickled into code.

A model folder (golden-bundle layout) holds `config.json` + `weights.safetensors` (+ the text tower
`text_tower.safetensors`); `read_model_config` / `model_folder_config` read its config.json with
one WeightsError line naming the file when it is empty, not JSON or lacks a setting.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Callable

import torch

from ..errors import WeightsError
from .folder import check_class_lists, read_model_config  # noqa: F401  (re-exported)

# Keys a head checkpoint may carry that a model built without prompt support does not have.
PROMPT_KEYS = (
    "panoptic_head.mask_tokens.weight",
    "panoptic_head.pb_embedding.weight",
    "panoptic_head.pos_linear.weight",
    "panoptic_head.pos_linear.bias",
)


def sniff_format(path: str | Path) -> str:
    """"safetensors", "torch" (zip or legacy pickle) or "unknown", from the first bytes of the file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return "unknown"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < (1 << 31):
        return "safetensors"
    return "unknown"


def _torch_load(path: Path):
    """torch.load(weights_only=True): no code from the file ever runs. Memory-mapped when the file is
    in the zip format (tensors are read when used), else read whole (legacy format)."""
    for mmap in (True, False):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported pickle content"
            raise WeightsError(
                f"refusing to load {path}: it is not a plain tensor checkpoint and would need unpickling code "
                f"({first[:160]})"
            ) from None
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc):
                continue  # legacy (non-zip) format: cannot be memory-mapped
            raise WeightsError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - truncated zip, not a checkpoint at all
            raise WeightsError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    obj = _torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


def read_state_dict(path: str | Path, select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Read tensors from a .safetensors or a torch file, never executing pickled code.

    `select(key)`: read only the keys it accepts (a safetensors file then reads nothing else)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys() if select is None or select(k)}
        except Exception as exc:  # noqa: BLE001 - corrupt header, truncated file
            raise WeightsError(f"cannot read safetensors file {path}: {_first_line(exc)}") from None
    state = _torch_state(path)
    return state if select is None else {k: v for k, v in state.items() if select(k)}


def read_tensor_shapes(path: str | Path, fmt: str | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in a .safetensors or torch file, without reading the tensor data
    of a safetensors or zip-format torch file. `fmt` ("safetensors" | "torch") overrides the
    extension. WeightsError when the file cannot be read safely."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if (fmt or ("safetensors" if path.suffix == ".safetensors" else "torch")) == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"cannot read safetensors file {path}: {_first_line(exc)}") from None
    return {k: tuple(v.shape) for k, v in _torch_state(path).items()}


def is_visual_key(key: str) -> bool:
    """Keys of an open_clip CLIP checkpoint that the backbone uses (`visual.*`)."""
    return key.removeprefix("module.").startswith("visual.")


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
        state.update(clip_to_backbone(read_state_dict(clip, select=is_visual_key)))
        has_backbone = True
    if not has_backbone:
        raise WeightsError(
            f"{weights} holds no backbone weights; also give the CLIP checkpoint "
            "(segcli weights pull clip-convnext-large-d-320)"
        )
    expected = model.state_dict()
    if all(k in expected for k in PROMPT_KEYS) and not any(k.removeprefix("module.") in PROMPT_KEYS for k in state):
        # a checkpoint of the video-demo config (651 keys): everything but the interactive-prompt
        # branch. It serves the automatic tasks; the branch is dropped and prompts are refused.
        drop_prompt_branch(model)
    load_into(model, state, source=str(weights))


def drop_prompt_branch(model: torch.nn.Module) -> None:
    head = model.panoptic_head
    for name in ("mask_tokens", "pb_embedding", "pos_linear"):
        if hasattr(head, name):
            delattr(head, name)
    head.cfg.with_prompt = False


# ---- model folders -------------------------------------------------------------------------------

def model_folder_config(folder: str | Path):
    """(OMGSegConfig, raw config dict) of a model folder, WeightsError naming config.json when a
    setting is missing or malformed (also the class lists `classes.things` / `classes.stuff`)."""
    from .config import config_from_bundle

    path = Path(folder) / "config.json"
    raw = read_model_config(path)
    try:
        cfg = config_from_bundle(raw)
    except KeyError as exc:
        raise WeightsError(f"{path} lacks the setting {exc.args[0]!r} of a model config") from None
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise WeightsError(f"{path} has a malformed model setting ({_first_line(exc)})") from None
    check_class_lists(raw, path)
    return cfg, raw
