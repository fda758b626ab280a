"""segcli.io.dataset: ids from COCO, COCO-panoptic and YouTube-VIS dataset JSON files."""

from __future__ import annotations

import json

import pytest

from segcli.errors import InputNotFoundError, UnreadableInputError, UsageError
from segcli.io.dataset import Dataset, normalise_name

COCO_DOC = {  # the fields of instances_val2017.json / panoptic_val2017.json that matter here
    "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 426, "width": 640},
               {"id": 285, "file_name": "val2017/000000000285.jpg"},
               {"id": 7, "file_name": "a/cat.jpg"}, {"id": 8, "file_name": "b/cat.jpg"}],
    "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 64, "name": "potted plant"},
                   {"id": 149, "name": "wall-brick"}],
}
YTVIS_DOC = {  # YouTube-VIS valid.json: videos with file_names, no annotations needed
    "videos": [{"id": 1, "length": 3, "file_names": ["0b6f9105fc/00000.jpg", "0b6f9105fc/00005.jpg",
                                                      "0b6f9105fc/00010.jpg"]},
               {"id": 2, "file_names": ["JPEGImages/1a2b3c/00000.jpg", "JPEGImages/1a2b3c/00001.jpg"]},
               {"id": 5, "name": "named_video", "length": 10, "file_names": []}],
    "categories": [{"id": 1, "name": "person"}, {"id": 40, "name": "giant_panda"}],
}


def test_coco_image_ids_by_file_name_base_name_or_stem(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(COCO_DOC))
    ds = Dataset.load(path)
    assert ds.kind == "coco" and ds.path == path
    for name in ("000000000139.jpg", "000000000139", "x/000000000139.jpg"):
        assert ds.image_id_for(name) == 139
    assert ds.image_id_for("val2017/000000000285.jpg") == ds.image_id_for("000000000285") == 285
    assert ds.image_id_for("a/cat.jpg") == 7 and ds.image_id_for("b/cat") == 8
    assert ds.image_id_for("dog.jpg") is None
    with pytest.raises(UsageError, match="2 images"):
        ds.image_id_for("cat")  # ambiguous: a/cat.jpg and b/cat.jpg


def test_categories_by_name():
    ds = Dataset(COCO_DOC)
    assert ds.categories == {"person": 1, "dog": 18, "potted plant": 64, "wall-brick": 149}
    assert ds.category_id_for("Potted_Plant") == 64 and ds.category_id_for("wall brick") == 149
    assert ds.category_ids_for(["dog", "person"]) == [18, 1]
    with pytest.raises(UsageError, match="'unicorn'"):
        ds.category_ids_for(["dog", "unicorn"])
    assert normalise_name("  Giant_Panda ") == "giant panda"


def test_ytvis_video_ids_frames_and_lengths():
    ds = Dataset(YTVIS_DOC)
    assert ds.kind == "ytvis" and ds.categories["giant_panda"] == 40
    assert ds.video_id_for("0b6f9105fc") == 1
    assert ds.video_id_for("1a2b3c") == ds.video_id_for("JPEGImages/1a2b3c") == 2
    assert ds.video_id_for("named_video") == 5 and ds.video_id_for("nope") is None
    assert ds.video_frames(1) == ["00000", "00005", "00010"]
    assert ds.frame_position(1, "00005") == 1 and ds.frame_position(1, "00005.jpg") == 1
    assert ds.frame_position(1, "00001") is None
    assert (ds.video_length(1), ds.video_length(2), ds.video_length(5), ds.video_length(99)) == (3, 2, 10, None)


def test_bad_files(tmp_path):
    with pytest.raises(InputNotFoundError):
        Dataset.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UnreadableInputError, match="bad.json"):
        Dataset.load(bad)
    bad.write_text(json.dumps({"info": {}}))
    with pytest.raises(UnreadableInputError, match="not a COCO or YouTube-VIS"):
        Dataset.load(bad)
    bad.write_text(json.dumps({"images": [{"file_name": "x.jpg"}]}))
    with pytest.raises(UnreadableInputError, match="without file_name and id"):
        Dataset.load(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(UnreadableInputError):
        Dataset.load(bad)
