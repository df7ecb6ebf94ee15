"""Train/val/test splits: stratified, place-aware, seeded; per-image splits; balancing."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylens.core.records import ImageRecord
from citylens.data.split import balance, split_records


def _records(n_places: int, views: int, city: str = "a") -> list[ImageRecord]:
    return [
        ImageRecord(f"{city}/{p:03d}_{v}.jpg", Path("x"), city, f"{city}{p}")
        for p in range(n_places)
        for v in range(views)
    ]


def test_split_is_stratified_place_aware_and_seeded():
    records = _records(50, 4, "a") + _records(30, 4, "b")
    splits = split_records(records, seed=3)
    for city, n in (("a", 200), ("b", 120)):
        sizes = [sum(r.city == city for r in splits[s]) for s in ("train", "val", "test")]
        assert sum(sizes) == n
        assert abs(sizes[0] - 0.6 * n) <= 4 and abs(sizes[2] - 0.2 * n) <= 4
    places = {s: {r.place for r in splits[s]} for s in splits}
    assert not places["train"] & places["test"] and not places["val"] & places["test"]
    assert splits == split_records(list(reversed(records)), seed=3)
    assert splits["test"] != split_records(records, seed=4)["test"]
    assert [r.image_id for r in splits["test"]] == sorted(r.image_id for r in splits["test"])


def test_per_image_split_and_bad_split_values():
    records = _records(20, 5)
    by_image = split_records(records, seed=0, by="image")
    assert {r.place for r in by_image["train"]} & {r.place for r in by_image["test"]}
    with pytest.raises(ValueError, match="data.split_by"):
        split_records(records, by="panorama")
    with pytest.raises(ValueError, match="data.split"):
        split_records(records, fractions=(0.5, 0.5, 0.5))


def test_balance_subsamples_to_smallest_city():
    kept = balance(_records(10, 3, "a") + _records(4, 3, "b"), seed=0)
    assert sum(r.city == "a" for r in kept) == sum(r.city == "b" for r in kept) == 12
