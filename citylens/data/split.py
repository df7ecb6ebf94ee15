"""Splits that depend on the data config only: stratified by city, place-aware, seeded by the split seed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from citylens.core.records import ImageRecord

SPLITS = ("train", "val", "test")


def subsample(records: Sequence[ImageRecord], per_city: int | None, seed: int) -> list[ImageRecord]:
    """At most `per_city` images of each city, drawn uniformly (seeded) so every place stays eligible."""
    by_city: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_city[record.city].append(record)
    rng = np.random.default_rng(seed)
    kept = []
    for city in sorted(by_city):
        items = by_city[city]
        if per_city is not None and len(items) > per_city:
            items = [items[i] for i in sorted(rng.choice(len(items), size=per_city, replace=False))]
        kept += items
    return sorted(kept, key=lambda r: r.image_id)


def balance(records: Sequence[ImageRecord], seed: int) -> list[ImageRecord]:
    """Subsample every city to the size of the smallest one (the paper balances 76k per city)."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.city] += 1
    return subsample(records, min(counts.values()), seed)


def min_per_city(fractions: Sequence[float]) -> int:
    """The fewest images (one per place) a city needs so that split_records gives every split with a
    positive fraction at least one of them."""
    for n in range(1, 10_000):
        bounds = np.cumsum(fractions)[:2] * n
        names = ["train" if i < bounds[0] else "val" if i < bounds[1] else "test" for i in range(n)]
        if all(name in names for name, f in zip(SPLITS, fractions) if f > 0):
            return n
    raise ValueError(f"data.split: {list(fractions)} leaves a split empty for any dataset size")


def split_records(
    records: Sequence[ImageRecord],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    by: str = "place",
) -> dict[str, list[ImageRecord]]:
    """Assign records to train/val/test per city, keeping every place (panorama) on one side.

    by="place" shuffles the places of each city and fills the splits to the target image counts;
    by="image" treats every image as its own place (the paper's per-image split, which leaks
    near-duplicate views). Each split is returned sorted by image id, so order is stable.
    """
    if by not in ("place", "image"):
        raise ValueError(f"data.split_by: {by!r} is not one of 'place', 'image'")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"data.split: {list(fractions)} must be three non-negative fractions summing to 1")
    rng = np.random.default_rng(seed)
    out: dict[str, list[ImageRecord]] = {name: [] for name in SPLITS}
    by_city: dict[str, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=lambda r: r.image_id):
        by_city[record.city][record.image_id if by == "image" else record.place].append(record)
    for city in sorted(by_city):
        places = sorted(by_city[city])
        order = rng.permutation(len(places))
        total = sum(len(v) for v in by_city[city].values())
        bounds = np.cumsum(fractions)[:2] * total
        seen = 0
        for i in order:
            group = by_city[city][places[i]]
            name = "train" if seen < bounds[0] else "val" if seen < bounds[1] else "test"
            out[name] += group
            seen += len(group)
    return {name: sorted(v, key=lambda r: r.image_id) for name, v in out.items()}
