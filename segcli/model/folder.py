"""A model folder (config.json + weights.safetensors [+ text_tower.safetensors]): its settings and
its own vocabulary, read without torch (the CLI checks them before importing torch)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import WeightsError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def read_model_config(path: str | Path) -> dict:
    """The config.json of a model folder as a dict. WeightsError (one line naming the file) when it
    is missing, unreadable, empty, not JSON, or not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing (a model folder needs config.json and weights.safetensors)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read {path}: {_first_line(exc)}") from None
    if not text.strip():
        raise WeightsError(f"{path} is empty; a model folder needs the config.json written with its weights")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"{path} is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} holds a JSON {type(data).__name__}, not the object of a model config")
    return data


def check_class_lists(raw: dict, path: Path) -> None:
    """classes.things / classes.stuff must be lists of class names (WeightsError naming the file)."""
    classes = raw.get("classes")
    for group in ("things", "stuff"):
        names = classes.get(group) if isinstance(classes, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise WeightsError(f"{path}: classes.{group} must be a list of class names")


def vocabulary_from_config(raw: dict):
    """The vocabulary a model folder's config.json records (things first)."""
    from ..vocab.parse import from_official

    classes = raw["classes"]
    return from_official(classes["things"], classes["stuff"], name=classes.get("dataset_name"))


def folder_vocabulary(folder: str | Path):
    path = Path(folder) / "config.json"
    raw = read_model_config(path)
    check_class_lists(raw, path)
    return vocabulary_from_config(raw)


def check_weights_source(weights: str) -> None:
    """The --weights value, checked without loading anything: a model folder with its files and a
    readable config.json, an existing checkpoint file, or a registry name (WeightsError, exit 6)."""
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / "weights.safetensors").is_file():
            raise WeightsError(f"{path} is not a model directory (needs config.json and weights.safetensors)")
        read_model_config(path / "config.json")
    elif not path.exists():
        if "/" in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors")):
            raise WeightsError(f"weights file not found: {weights}")
        from .. import weights as registry

        registry.check_name(weights)
