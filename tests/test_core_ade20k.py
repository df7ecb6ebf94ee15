"""The 150 ADE20K classes in the segmenters' channel order (citylens/core/ade20k.py)."""

from __future__ import annotations

import pytest

from citylens.core import ade20k
from citylens.core.ade20k import ADE20K_CLASSES, UNLABELLED, class_index, class_name


def test_150_distinct_classes_that_fit_a_uint8_label_map_beside_unlabelled():
    assert len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    assert UNLABELLED == 255 and UNLABELLED >= len(ADE20K_CLASSES)


@pytest.mark.parametrize(
    ("name", "index"),
    # HuggingFace id2label order (CSAIL's objectInfo150 numbers these one higher).
    [
        ("wall", 0),
        ("building", 1),
        ("sky", 2),
        ("tree", 4),
        ("road", 6),
        ("grass", 9),
        ("sidewalk", 11),
        ("person", 12),
        ("earth", 13),
        ("car", 20),
        ("fence", 32),
        ("signboard", 43),
        ("skyscraper", 48),
        ("bus", 80),
        ("awning", 86),
        ("streetlight", 87),
        ("pole", 93),
        ("flag", 149),
    ],
)
def test_known_indices(name: str, index: int):
    assert class_index(name) == index
    assert class_name(index) == name


def test_index_and_name_are_inverse_over_all_classes():
    assert [class_index(class_name(i)) for i in range(150)] == list(range(150))
    assert ade20k._INDEX == {n: i for i, n in enumerate(ADE20K_CLASSES)}


def test_unlabelled_has_a_name():
    assert class_name(UNLABELLED) == "unlabelled"
    with pytest.raises(IndexError):
        class_name(150)


def test_an_unknown_name_raises_a_key_error_with_close_names():
    with pytest.raises(KeyError, match=r"'sky scraper' is not an ADE20K class name") as info:
        class_index("sky scraper")
    assert "did you mean" not in str(info.value)
    with pytest.raises(KeyError, match=r"did you mean \['chair', 'armchair', 'swivel chair'\]"):
        class_index("chair, seat")  # a CSAIL-style name: the part before the comma is looked up
    with pytest.raises(KeyError) as info:
        class_index("table lamp")
    assert "did you mean" not in str(info.value)
    with pytest.raises(KeyError, match=r"did you mean \['lamp'\]"):
        class_index("lamp, table")
