"""ImageRecord, one dataset image (citylens/core/records.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from citylens.core.records import ImageRecord


def test_fields_in_order_and_the_label_map_is_optional():
    record = ImageRecord("tokyo/a/1.jpg", Path("/data/tokyo/a/1.jpg"), "tokyo", "a")
    assert [f.name for f in dataclasses.fields(ImageRecord)] == [
        "image_id",
        "path",
        "city",
        "place",
        "label_path",
    ]
    assert record.label_path is None
    assert (record.image_id, record.city, record.place) == ("tokyo/a/1.jpg", "tokyo", "a")
    labelled = ImageRecord("x", Path("x.jpg"), "c", "p", Path("x.png"))
    assert labelled.label_path == Path("x.png")


def test_records_are_frozen_values():
    a = ImageRecord("tokyo/a/1.jpg", Path("/d/1.jpg"), "tokyo", "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.city = "pittsburgh"  # type: ignore[misc]
    same = ImageRecord("tokyo/a/1.jpg", Path("/d/1.jpg"), "tokyo", "a")
    other = dataclasses.replace(a, place="b")
    assert a == same and hash(a) == hash(same)
    assert a != other and other.place == "b" and a.place == "a"
    assert len({a, same, other}) == 2
