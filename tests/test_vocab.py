"""Vocabulary parsing, built-in datasets, training vocabulary / OVERLAPPING (no torch needed)."""

from __future__ import annotations

import pytest

from segcli.errors import InputNotFoundError, VocabularyError
from segcli.vocab.datasets import (
    dataset_names,
    dataset_vocabulary,
    list_datasets,
    overlapping,
    training_vocabulary,
)
from segcli.vocab.parse import from_official, parse_vocab, read_vocab_file, split_label


def test_parse_vocab_classes_synonyms_and_stuff():
    v = parse_vocab(" Dog | Puppy ,car,stuff:Sky,  tv|television ")
    assert v.classes == [["dog", "puppy"], ["car"], ["tv", "television"], ["sky"]]
    assert v.num_things == 3 and v.num_stuff == 1
    assert v.names == ["dog", "car", "tv", "sky"]
    assert v.max_synonyms == 2
    assert v.is_thing(2) and not v.is_thing(3)


def test_parse_vocab_stuff_argument_and_order():
    v = parse_vocab("stuff:road,dog", stuff="sky, grass|lawn")
    assert v.names == ["dog", "road", "sky", "grass"]
    assert v.num_things == 1
    assert v.classes[3] == ["grass", "lawn"]


def test_parse_vocab_keeps_synonyms_as_written_but_lowercased():
    v = parse_vocab("traffic_light|Traffic  Signal")
    assert v.classes == [["traffic_light", "traffic signal"]]


@pytest.mark.parametrize("text", ["", "  ", ",,", " | , |"])
def test_parse_vocab_empty(text):
    with pytest.raises(VocabularyError, match="empty vocabulary"):
        parse_vocab(text)


def test_parse_vocab_duplicates_rejected():
    with pytest.raises(VocabularyError, match="'dog' appears in two classes"):
        parse_vocab("dog,puppy|dog")


def test_read_vocab_file(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# my classes\n\ndog | puppy   # pets\ncar\nstuff: sky\n  \n")
    v = read_vocab_file(f)
    assert v.classes == [["dog", "puppy"], ["car"], ["sky"]]
    assert v.num_things == 2


def test_read_vocab_file_errors(tmp_path):
    with pytest.raises(InputNotFoundError):
        read_vocab_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="empty vocabulary"):
        read_vocab_file(empty)
    comma = tmp_path / "comma.txt"
    comma.write_text("dog,puppy\n")
    with pytest.raises(VocabularyError, match=r"comma.txt:1: use '\|'"):
        read_vocab_file(comma)


def test_split_label_official_rules():
    assert split_label("handrail_or_fence") == ["handrail", "fence"]
    assert split_label("Playground_slide") == ["playground slide"]
    assert split_label("bag/package, Box") == ["bag", "package", "box"]
    assert split_label("dog,puppy") == ["dog", "puppy"]


@pytest.mark.parametrize("name,total,things,max_syn", [
    ("coco", 133, 80, 17), ("ade", 150, 100, 12), ("vipseg", 124, 58, 3), ("cityscapes", 19, 8, 1),
    ("ytvis19", 40, 40, 1), ("ytvis21", 40, 40, 1), ("demo", 240, 139, 17),
])
def test_builtin_datasets(name, total, things, max_syn):
    v = dataset_vocabulary(name)
    assert len(v) == total and v.num_things == things and v.max_synonyms == max_syn
    assert v.name == name
    assert all(s and s == s.strip() and s == s.lower() for syns in v.classes for s in syns)
    if v.category_ids is not None:
        assert len(set(v.category_ids)) == total


def test_builtin_dataset_details():
    coco = dataset_vocabulary("coco")
    assert coco.names[:3] == ["person", "bicycle", "car"]
    assert coco.category_ids[:3] == [1, 2, 3] and coco.category_ids[79] == 90 and coco.category_ids[-1] == 200
    vip = dataset_vocabulary("vipseg")
    assert vip.classes[vip.names.index("parasol")] == ["parasol", "umbrella"]
    yt = dataset_vocabulary("ytvis19")
    assert yt.names[1] == "giant panda" and yt.names[-1] == "tennis racket"
    assert sorted(dataset_names()) == sorted(d.name for d in list_datasets())
    with pytest.raises(VocabularyError, match="unknown dataset"):
        dataset_vocabulary("imagenet")


def test_training_vocabulary_matches_official_counts_and_demo():
    train = training_vocabulary()
    assert (train.num_things, train.num_stuff) == (136, 101)
    demo = dataset_vocabulary("demo")
    # th139_st101 = the same merge with YouTube-VIS 2021 included: 3 more things, identical stuff.
    assert train.classes[train.num_things:] == demo.classes[demo.num_things:]
    extra = [c for c in demo.classes[:demo.num_things] if c not in train.classes[:train.num_things]]
    assert extra == [["flying disc"], ["squirrel"], ["whale"]]


def test_overlapping():
    v = parse_vocab("puppy,spaceship|rocket,stuff:sky")
    assert overlapping(v) == [True, False, True]
    assert all(overlapping(dataset_vocabulary("coco")))
    yt21 = dataset_vocabulary("ytvis21")
    flags = dict(zip(yt21.names, overlapping(yt21)))
    assert not flags["flying disc"] and not flags["squirrel"] and not flags["whale"] and flags["airplane"]
    custom = from_official(["a,b"], [], name="t")
    assert overlapping(parse_vocab("b,c"), training=custom) == [True, False]
