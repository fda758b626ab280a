"""Built-in vocabularies (`--dataset NAME`) and the training vocabulary that decides which classes
count as "seen" for the optional open-vocabulary ensemble (spec §6.6).

Class strings are those of the official OMG-Seg repository (see `_classnames.py`), including its
FC-CLIP style synonyms for COCO and ADE20K; they are normalised with the official `split_label`.
"""

from __future__ import annotations

from dataclasses import dataclass

from segcli.errors import VocabularyError
from segcli.vocab import _classnames as cn
from segcli.vocab.parse import Vocabulary, from_official, split_label

# COCO-panoptic category ids of the 80 things and 53 stuff classes, in the order of the lists.
_COCO_THING_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
    *range(84, 91),
)
_COCO_STUFF_IDS = (
    92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138, 141, 144, 145, 147, 148, 149,
    151, 154, 155, 156, 159, 161, 166, 168, 171, 175, 176, 177, 178, 180, 181, 184, 185, 186, 187, 188,
    189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200,
)
# Cityscapes label ids (panoptic category ids): things person..bicycle, then stuff road..sky.
_CITYSCAPES_IDS = (24, 25, 26, 27, 28, 31, 32, 33, 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)


@dataclass(frozen=True)
class DatasetVocab:
    name: str
    description: str
    official_name: str  # dataset name used in the official class-embedding file name
    things: tuple[str, ...]
    stuff: tuple[str, ...]
    category_ids: tuple[int, ...] | None

    def vocabulary(self) -> Vocabulary:
        return from_official(self.things, self.stuff, name=self.name, category_ids=self.category_ids)


_DATASETS: dict[str, DatasetVocab] = {
    d.name: d
    for d in (
        DatasetVocab("coco", "COCO panoptic (133 classes)", "CocoPanopticOVDataset",
                     cn.COCO_THINGS, cn.COCO_STUFF, (*_COCO_THING_IDS, *_COCO_STUFF_IDS)),
        DatasetVocab("ade", "ADE20K panoptic (150 classes)", "ADEPanopticOVDataset",
                     cn.ADE_THINGS, cn.ADE_STUFF, None),
        DatasetVocab("vipseg", "VIPSeg video panoptic (124 classes)", "VIPSegDataset",
                     cn.VIPSEG_THINGS, cn.VIPSEG_STUFF, cn.VIPSEG_IDS),
        DatasetVocab("cityscapes", "Cityscapes panoptic (19 classes)", "CityscapesPanopticDataset",
                     cn.CITYSCAPES_THINGS, cn.CITYSCAPES_STUFF, _CITYSCAPES_IDS),
        DatasetVocab("ytvis19", "YouTube-VIS 2019 (40 classes)", "YouTubeVISDataset_2019",
                     cn.YTVIS19_THINGS, (), tuple(range(1, 41))),
        DatasetVocab("ytvis21", "YouTube-VIS 2021 (40 classes)", "YouTubeVISDataset_2021",
                     cn.YTVIS21_THINGS, (), tuple(range(1, 41))),
        DatasetVocab("demo", "official demo vocabulary th139_st101 (COCO + YouTube-VIS + VIPSeg + "
                     "Cityscapes merged)", "th139_st101", cn.DEMO_THINGS, cn.DEMO_STUFF, None),
    )
}

# Datasets of the released model's training run, in the order of the training config
# (seg/configs/m2ov_train/omg_convl_vlm_fix_12e_ov_coco_vid_yt19_vip_city_cocopansam.py).
TRAINING_DATASETS = ("coco", "ytvis19", "vipseg", "cityscapes")


def list_datasets() -> list[DatasetVocab]:
    """The built-in vocabularies, in a stable order."""
    return list(_DATASETS.values())


def dataset_names() -> list[str]:
    return list(_DATASETS)


def get_dataset(name: str) -> DatasetVocab:
    try:
        return _DATASETS[name.lower()]
    except KeyError:
        raise VocabularyError(
            f"unknown dataset vocabulary '{name}'; choose one of: {', '.join(_DATASETS)}"
        ) from None


def dataset_vocabulary(name: str) -> Vocabulary:
    """Vocabulary of a built-in dataset (`coco`, `ade`, `vipseg`, `cityscapes`, `ytvis19`, `ytvis21`,
    `demo`)."""
    return get_dataset(name).vocabulary()


def _merge(lists: list[tuple[str, ...]]) -> list[str]:
    """Merge class lists the way the official ConcatOVDataset does: a class whose synonym set
    intersects an already collected class is folded into it; otherwise it is appended."""
    merged: list[str] = []
    for classes in lists:
        for cls in classes:
            synonyms = set(split_label(cls))
            if not any(synonyms & set(split_label(m)) for m in merged):
                merged.append(",".join(split_label(cls)))
    return merged


def training_vocabulary() -> Vocabulary:
    """The merged vocabulary of the training datasets (COCO-panoptic + YouTube-VIS-2019 + VIPSeg +
    Cityscapes; 136 things + 101 stuff), things and stuff merged separately as in training."""
    datasets = [_DATASETS[n] for n in TRAINING_DATASETS]
    things = _merge([d.things for d in datasets])
    stuff = _merge([d.stuff for d in datasets])
    return from_official(things, stuff, name="training")


def overlapping(vocab: Vocabulary, training: Vocabulary | None = None) -> list[bool]:
    """Per class of `vocab`: True ("seen") if any of its synonyms appears verbatim among all
    synonyms of the training vocabulary (official `calculate_class_overlapping`)."""
    training = training if training is not None else training_vocabulary()
    words = {syn for syns in training.classes for syn in syns}
    return [any(syn in words for syn in syns) for syns in vocab.classes]
