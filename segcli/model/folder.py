"""A model folder's config.json, read without torch (the CLI checks it before importing torch)."""

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
