"""On-disk cache of class embeddings, and the embeddings file format.

Key: sha256 over (format version, text-model identity, the exact synonyms of every class in order,
the templates). The text-model identity is the sha256 of the weights file plus a digest of the
text config, so a different checkpoint or config never reuses an entry. The thing/stuff split
does not change the embeddings and is not part of the key.

Entries live in `$SEGCLI_HOME/cache/embeddings/<key>.safetensors` (default SEGCLI_HOME:
`~/.cache/segcli`) in the same format `segcli vocab embed -o` writes (see `save_embeddings`).
On a hit the text tower is never constructed; `get_class_embeddings` returns `hit=True`, and the
`segcli.vocab` logger says which file was used.

File hashes of big checkpoints are remembered in `$SEGCLI_HOME/cache/file_hashes.json` by
(path, size, mtime) so a hit does not re-read a 1.4 GB CLIP file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from segcli.errors import InputNotFoundError, OutputError, VocabularyError
from segcli.vocab import text
from segcli.vocab.parse import Vocabulary
from segcli.weights import hub

log = logging.getLogger("segcli.vocab")

CACHE_FORMAT = 1
TENSOR_KEY = "class_embeddings"
FILE_FORMAT = "segcli-class-embeddings"


def cache_dir() -> Path:
    return hub.segcli_home() / "cache" / "embeddings"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, remembered by (real path, size, mtime_ns)."""
    real = Path(path).resolve()
    stat = real.stat()
    memo_path = hub.segcli_home() / "cache" / "file_hashes.json"
    try:
        memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    except ValueError:
        memo = {}
    entry = memo.get(str(real))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    digest = hub.sha256_file(real)
    memo[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        hub.atomic_write_bytes(memo_path, json.dumps(memo, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # the memo is only an optimisation
    return digest


def text_model_identity(source: text.TextSource) -> str:
    """What makes two text towers the same: their weights bytes and their config."""
    return f"weights-sha256:{file_sha256(source.weights)}|cfg:{source.config_digest()[:16]}"


def cache_key(vocab: Vocabulary, source: text.TextSource, templates: tuple[str, ...]) -> str:
    payload = {"format": CACHE_FORMAT, "text_model": text_model_identity(source),
               "classes": vocab.classes, "templates": list(templates)}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def get_class_embeddings(vocab: Vocabulary, text_source: text.TextSource, cache: bool = True,
                         templates: tuple[str, ...] | None = None,
                         device: str | torch.device = "cpu") -> tuple[torch.Tensor, bool]:
    """(K, P, D) float32 class embeddings of `vocab` and whether they came from the cache.

    The text tower is built (and its weights read) only on a miss or with cache=False.
    """
    templates = tuple(templates or text_source.templates)
    key = cache_key(vocab, text_source, templates)
    path = cache_dir() / f"{key}.safetensors"
    if cache and path.is_file():
        try:
            embeddings, meta = _load(path)
            if meta.get("cache_key") == key and embeddings.shape[0] == len(vocab):
                log.info("class embeddings: cache hit %s", path)
                return embeddings, True
            log.warning("class embeddings: ignoring inconsistent cache entry %s", path)
        except Exception as exc:  # noqa: BLE001 - a damaged entry is recomputed, never fatal
            log.warning("class embeddings: ignoring unreadable cache entry %s (%s)", path, exc)
    log.info("class embeddings: computing %s with %s", _count(len(vocab), "class", "classes"), text_source.name)
    tower = text.build_text_tower(text_source, device=device)
    embeddings = text.class_embeddings(vocab, tower, templates)
    del tower
    if cache:
        try:
            save_embeddings(path, embeddings, vocab,
                            text_model=f"{text_source.name}|{text_model_identity(text_source)}",
                            templates=templates, extra={"cache_key": key})
        except OutputError as exc:
            log.warning("class embeddings: could not write cache entry (%s)", exc)
    return embeddings, False


def save_embeddings(path: str | Path, embeddings: torch.Tensor, vocab: Vocabulary, *, text_model: str = "",
                    templates: tuple[str, ...] = text.VILD_TEMPLATES, extra: dict | None = None) -> None:
    """Write (K, P, D) embeddings as safetensors (tensor `class_embeddings`) with metadata (all
    strings): `format` ("segcli-class-embeddings"), `version`, `names` and `classes` (JSON: display
    names; every class's synonyms), `num_things`, `num_stuff`, `num_classes`, `embed_dim`,
    `text_model` (the text tower's name and identity), `templates` (JSON), and when known `dataset`
    and `category_ids` (JSON). `load_embeddings` reads it back. Atomic: the file appears complete or
    not at all. `path` "-" writes to stdout."""
    from safetensors.torch import save

    if embeddings.ndim != 3 or embeddings.shape[0] != len(vocab):
        raise VocabularyError(f"embeddings of shape {tuple(embeddings.shape)} do not fit "
                              f"{_count(len(vocab), 'class', 'classes')}")
    meta = {
        "format": FILE_FORMAT,
        "version": str(CACHE_FORMAT),
        "names": json.dumps(vocab.names, ensure_ascii=False),
        "classes": json.dumps(vocab.classes, ensure_ascii=False),
        "num_things": str(vocab.num_things),
        "num_stuff": str(vocab.num_stuff),
        "num_classes": str(len(vocab)),
        "embed_dim": str(int(embeddings.shape[-1])),
        "text_model": text_model,
        "templates": json.dumps(list(templates), ensure_ascii=False),
    }
    if vocab.name:
        meta["dataset"] = vocab.name
    if vocab.category_ids is not None:
        meta["category_ids"] = json.dumps(vocab.category_ids)
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    data = save({TENSOR_KEY: embeddings.detach().to("cpu", torch.float32).contiguous()}, metadata=meta)
    if str(path) == "-":
        import sys

        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        hub.atomic_write_bytes(Path(path), data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc


def _load(path: Path) -> tuple[torch.Tensor, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(TENSOR_KEY).float(), dict(handle.metadata() or {})


def load_embeddings(path: str | Path, embed_dim: int | None = None) -> tuple[Vocabulary, torch.Tensor]:
    """Read a file written by `save_embeddings` (`segcli vocab embed -o FILE`): its vocabulary
    (classes with synonyms, things first, dataset name and category ids when recorded) and the
    (K, P, D) float32 embeddings. With `embed_dim`, D must equal it (the model's CLIP width).

    InputNotFoundError when the file does not exist; VocabularyError (one line) for anything else
    that is not such a file: not safetensors, no `class_embeddings` tensor, missing or malformed
    metadata, a tensor that does not fit the classes or `embed_dim`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"class-embeddings file not found: {path}")
    what = f"{path} is not a segcli class-embeddings file (write one with: segcli vocab embed -o FILE)"
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
            if TENSOR_KEY not in handle.keys():
                raise VocabularyError(f"{what}: it has no '{TENSOR_KEY}' tensor")
            embeddings = handle.get_tensor(TENSOR_KEY)
    except VocabularyError:
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VocabularyError(f"{what}: {first[:200]}") from None
    if meta.get("format") != FILE_FORMAT:
        raise VocabularyError(f"{what}: its metadata has no format '{FILE_FORMAT}'")
    try:
        version = int(meta.get("version", "0"))
    except ValueError:
        version = -1
    if not 1 <= version <= CACHE_FORMAT:
        raise VocabularyError(f"{path}: class-embeddings format version {meta.get('version')!r} is not one this "
                              f"segcli reads (1..{CACHE_FORMAT})")
    try:
        classes = json.loads(meta["classes"])
        num_things = int(meta["num_things"])
        ids = json.loads(meta["category_ids"]) if "category_ids" in meta else None
        if not isinstance(classes, list) or not all(isinstance(c, list) and all(isinstance(s, str) for s in c)
                                                    for c in classes):
            raise ValueError("classes is not a list of synonym lists")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            raise ValueError("category_ids is not a list of integers")
    except KeyError as exc:
        raise VocabularyError(f"{what}: its metadata lacks {exc.args[0]!r}") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise VocabularyError(f"{what}: malformed metadata ({exc})") from None
    try:
        vocab = Vocabulary(classes, num_things=num_things, name=meta.get("dataset"), category_ids=ids)
    except VocabularyError as exc:
        raise VocabularyError(f"{path}: {exc}") from None
    if embeddings.ndim != 3 or embeddings.shape[0] != len(vocab) or embeddings.shape[1] < 1:
        raise VocabularyError(f"{path}: embeddings of shape {tuple(embeddings.shape)} do not fit "
                              f"{_count(len(vocab), 'class', 'classes')} (expected K x P x D with K = {len(vocab)})")
    if not embeddings.is_floating_point() or not torch.isfinite(embeddings).all():
        raise VocabularyError(f"{path}: the embeddings are not finite floating-point numbers")
    if embed_dim is not None and embeddings.shape[-1] != embed_dim:
        raise VocabularyError(f"{path}: embeddings have {embeddings.shape[-1]} dims, this model needs {embed_dim} "
                              f"(made with text model {meta.get('text_model') or 'unknown'}; embed the vocabulary "
                              "again with this model's --weights)")
    return vocab, embeddings.float().contiguous()


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"
