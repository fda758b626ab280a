"""What a registry file must hold: its format, keys and tensor shapes (used by `weights import`
and `weights verify`, for files whose sha256 does not already prove what they are).

A registry file says which `part` of a model it is:

* `head`: the OMG-Seg head of the model `architecture` (`convl` or `convxxl`): exactly the
  `panoptic_head.*` keys and shapes of that model (built on the meta device: no memory, no weights);
* `clip`: an open_clip CLIP checkpoint of the model `open_clip_model`: the `visual.trunk.*` /
  `visual.head.*` keys (renamed to `backbone.*`) with the shapes of that ConvNeXt backbone.

Files without a `part` are not checked beyond their sha256.
"""

from __future__ import annotations

from pathlib import Path

from segcli.errors import WeightsError


def model_config(architecture: str | None):
    """The model configuration a head file of `architecture` belongs to."""
    from segcli.model import config as C

    builders = {"convl": C.convl_config, "convxxl": C.convxxl_config}
    if architecture not in builders:
        raise WeightsError(f"the weights registry names an unknown architecture {architecture!r} "
                           f"(known: {', '.join(builders)})")
    return builders[architecture]()


def clip_backbone_config(open_clip_model: str | None):
    """The backbone configuration of the open_clip model `open_clip_model`."""
    from segcli.model.config import backbone_from_open_clip

    try:
        return backbone_from_open_clip(open_clip_model)
    except (ValueError, TypeError, KeyError) as exc:
        raise WeightsError(f"the weights registry names an unusable CLIP model {open_clip_model!r}: {exc}") from None


def expected_shapes(file) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape that the registry file `file` must hold (CLIP keys under their `backbone.*`
    names), or None when the registry does not say which part it is."""
    import torch

    if file.part == "head":
        from segcli.model.omgseg import OMGSeg

        with torch.device("meta"):
            model = OMGSeg(model_config(file.architecture))
        return {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("panoptic_head.")}
    if file.part == "clip":
        from segcli.model.backbone import CLIPConvNeXt

        with torch.device("meta"):
            trunk = CLIPConvNeXt(clip_backbone_config(file.open_clip_model or file.architecture))
        return {"backbone." + k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    if file.part is None:
        return None
    raise WeightsError(f"the weights registry gives {file.id} an unknown part {file.part!r} (known: head, clip)")


def _describe(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _what(file) -> str:
    if file.part == "head":
        return f"the OMG-Seg {file.architecture} head {file.filename}"
    return f"the {file.open_clip_model or 'CLIP'} CLIP checkpoint {file.filename}"


def check_contents(file, path: str | Path) -> None:
    """Refuse (WeightsError, one line) a file that does not load safely in the format of
    `file.filename` (safetensors, or torch with weights_only) or lacks the keys and shapes of its
    part. Files without a part pass."""
    from segcli.model.checkpoint import clip_to_backbone, read_tensor_shapes, sniff_format

    expected = expected_shapes(file)
    if expected is None:
        return
    path = Path(path)
    wanted = "safetensors" if file.filename.endswith(".safetensors") else "torch"
    found = sniff_format(path)
    if found != wanted:
        kind = {"safetensors": "a safetensors file", "torch": "a torch checkpoint"}.get(found, "not a checkpoint")
        raise WeightsError(f"{path} is {kind}, but {file.id} ({file.filename}) is a {wanted} file: "
                           f"it is not {_what(file)}")
    # read the way the loader will read the stored copy (by its name's extension)
    shapes = read_tensor_shapes(path, fmt=wanted)
    shapes = {k.removeprefix("module."): v for k, v in shapes.items()}
    if file.part == "clip":
        shapes = clip_to_backbone(shapes)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} instead of {expected[k]}" for k in expected if k in shapes and shapes[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key{'s' if len(missing) != 1 else ''} ({_describe(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key{'s' if len(unexpected) != 1 else ''} "
                     f"({_describe(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape{'s' if len(wrong) != 1 else ''} ({_describe(wrong, 2)})")
    raise WeightsError(f"{path} is not {_what(file)}: {'; '.join(parts)}")
