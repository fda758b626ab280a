"""Vocabularies and their CLIP class embeddings.

    from segcli.vocab import parse_vocab, resolve_text_source, get_class_embeddings
    vocab = parse_vocab("dog|puppy,car,stuff:sky")
    source = resolve_text_source("omg-seg-convl")          # or a bundle folder, or a CLIP file
    embeddings, hit = get_class_embeddings(vocab, source)  # (K, P, D) float32; hit: from the cache
    save_embeddings("cd.safetensors", embeddings, vocab)   # what `segcli vocab embed -o` writes
    vocab, embeddings = load_embeddings("cd.safetensors")  # ...read back (VocabularyError if it is not one)

Names are imported lazily, so `segcli.vocab.parse` / `.datasets` can be used without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "parse": ["Vocabulary", "from_official", "parse_vocab", "read_vocab_file", "split_label"],
    "datasets": ["dataset_names", "dataset_vocabulary", "get_dataset", "list_datasets", "overlapping",
                 "training_vocabulary"],
    "text": ["VILD_TEMPLATES", "TextSource", "TextTower", "build_descriptions", "build_text_tower",
             "class_embeddings", "resolve_text_source", "text_source_from_bundle",
             "text_source_from_open_clip"],
    "cache": ["get_class_embeddings", "load_embeddings", "save_embeddings"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
