"""Vocabularies: the list of classes the model labels, each with its synonyms.

Two ways of writing a class:

* **official form** (built-in datasets, golden bundles, `tools/gen_cls.py`): one string of
  comma-separated synonyms, possibly with `_or_`, `/` or `_` inside, normalised by
  :func:`split_label` exactly as the official code does (`"handrail_or_fence"` ->
  `["handrail", "fence"]`, `"Playground_slide"` -> `["playground slide"]`).
* **user form** (`--vocab`, `--vocab-file`): classes separated by `,` (or one per line in a file),
  synonyms of one class separated by `|` (`"tv|television"`). Synonyms are kept as written, only
  lower-cased, stripped and with runs of white space collapsed.

Things and stuff (user form): every class is a *thing* (countable, gets instance ids) unless it
is written with the prefix `stuff:` (`"dog,car,stuff:sky,stuff:road"`) or passed through the
separate `stuff=` argument (the CLI's `--stuff "sky,road"`). Things always come first in the
resulting vocabulary, stuff after, each group in the order written; this is the class order the
model's class embeddings and the panoptic post-processing use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from segcli.errors import InputNotFoundError, UnreadableInputError, VocabularyError

STUFF_PREFIX = "stuff:"

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Vocabulary:
    """Classes of a vocabulary, things first.

    `classes[k]` is the list of synonyms of class k (at least one, normalised); the first synonym
    is the display name. `category_ids`, when known (built-in datasets), are the dataset's own
    category ids in the same order; `name` is the dataset name (None for user vocabularies).
    """

    classes: list[list[str]]
    num_things: int
    name: str | None = None
    category_ids: list[int] | None = field(default=None, compare=False)

    def __post_init__(self):
        if not self.classes:
            raise VocabularyError("empty vocabulary")
        if not 0 <= self.num_things <= len(self.classes):
            raise VocabularyError(f"num_things={self.num_things} outside 0..{len(self.classes)}")
        for syns in self.classes:
            if not syns or any(not s for s in syns):
                raise VocabularyError(f"class with an empty name: {syns!r}")
        if self.category_ids is not None and len(self.category_ids) != len(self.classes):
            raise VocabularyError("category_ids and classes differ in length")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Display name of every class (its first synonym)."""
        return [syns[0] for syns in self.classes]

    @property
    def num_stuff(self) -> int:
        return len(self.classes) - self.num_things

    @property
    def max_synonyms(self) -> int:
        """P: the synonym axis of the class-embedding tensor."""
        return max(len(syns) for syns in self.classes)

    def is_thing(self, index: int) -> bool:
        return index < self.num_things

    def to_official(self) -> list[str]:
        """Classes in the official comma-separated form (for display or metadata)."""
        return [",".join(syns) for syns in self.classes]


def split_label(label: str) -> list[str]:
    """Synonyms of one official class string, as `tools/gen_cls.py:split_label` computes them:
    `_or_` -> `,`, `/` -> `,`, `_` -> space, lower-case, split on `,`, strip each part."""
    text = label.replace("_or_", ",").replace("/", ",").replace("_", " ").lower()
    return [part.strip() for part in text.split(",")]


def from_official(
    things: Sequence[str], stuff: Sequence[str] = (), name: str | None = None,
    category_ids: Sequence[int] | None = None,
) -> Vocabulary:
    """Vocabulary from official class strings (things, then stuff), normalised with split_label."""
    classes = [split_label(c) for c in [*things, *stuff]]
    return Vocabulary(classes, num_things=len(things), name=name,
                      category_ids=list(category_ids) if category_ids is not None else None)


def _clean_synonym(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def _parse_class(entry: str, where: str) -> tuple[list[str], bool] | None:
    """One user class `a|b|c`, optionally prefixed with `stuff:`; None when the entry is empty."""
    text = entry.strip()
    is_stuff = False
    if text.lower().startswith(STUFF_PREFIX):
        is_stuff = True
        text = text[len(STUFF_PREFIX):]
    synonyms: list[str] = []
    for part in text.split("|"):
        syn = _clean_synonym(part)
        if syn and syn not in synonyms:
            synonyms.append(syn)
    if not synonyms:
        if is_stuff:
            raise VocabularyError(f"empty class name after '{STUFF_PREFIX}' in {where}")
        return None
    return synonyms, is_stuff


def _build(entries: Iterable[tuple[list[str], bool]], where: str) -> Vocabulary:
    things: list[list[str]] = []
    stuff: list[list[str]] = []
    seen: dict[str, str] = {}
    for synonyms, is_stuff in entries:
        for syn in synonyms:
            if syn in seen:
                raise VocabularyError(f"'{syn}' appears in two classes of {where} ({seen[syn]!r} and "
                                      f"{synonyms[0]!r}); give each name once")
            seen[syn] = synonyms[0]
        (stuff if is_stuff else things).append(synonyms)
    if not things and not stuff:
        raise VocabularyError(f"empty vocabulary: {where} names no class")
    return Vocabulary(things + stuff, num_things=len(things))


def parse_vocab(text: str, stuff: str | None = None) -> Vocabulary:
    """Parse `--vocab "dog|puppy,car,stuff:sky"` (and optionally `--stuff "road,grass"`).

    Classes are separated by `,`, synonyms by `|`; `stuff:` marks a stuff class. Raises
    VocabularyError("empty vocabulary ...") when no class is named.
    """
    entries = []
    for part in (text or "").split(","):
        parsed = _parse_class(part, "--vocab")
        if parsed is not None:
            entries.append(parsed)
    for part in (stuff or "").split(","):
        parsed = _parse_class(part, "--stuff")
        if parsed is not None:
            entries.append((parsed[0], True))
    return _build(entries, "--vocab" if stuff is None else "--vocab/--stuff")


def read_vocab_file(path: str | Path) -> Vocabulary:
    """Read a vocabulary file: one class per line, synonyms separated by `|`, `stuff:` prefix for
    stuff classes, `#` starts a comment, blank lines are skipped. UTF-8.

        # my classes
        dog | puppy
        car
        stuff: sky
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"vocabulary file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"cannot read vocabulary file {path}: {exc}") from exc
    entries = []
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0]
        if "," in content:
            # One class per line; a comma is ambiguous (class or synonym separator?), so refuse it.
            raise VocabularyError(f"{path}:{number}: use '|' between synonyms and one class per line "
                                  f"(got {content.strip()!r})")
        parsed = _parse_class(content, f"{path}:{number}")
        if parsed is not None:
            entries.append(parsed)
    return _build(entries, str(path))
