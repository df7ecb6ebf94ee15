"""Object attribution A_p^c: per-image object values from signed maps, the per-city table and its interval."""

from __future__ import annotations

import numpy as np
import pytest

from citylens.analysis.attribution import TABLE_COLUMNS, attribution_table, object_values
from citylens.analysis.ratios import N_CLASSES
from citylens.core.ade20k import ADE20K_CLASSES


def _hand() -> tuple[np.ndarray, np.ndarray]:
    """Two 2x3 images: object 2 (left column), object 5 (right), unlabelled (255) in the middle."""
    labels = np.array([[[2, 255, 5], [2, 255, 5]], [[2, 2, 2], [2, 2, 2]]], dtype=np.uint8)
    maps = np.array([[[1.0, 9.0, -0.5], [2.0, 9.0, -1.0]], [[0.5, 0.5, 0.5], [-0.5, 0.5, 0.5]]])
    return maps, labels


def test_object_values_sum_or_average_the_signed_map_over_each_object():
    maps, labels = _hand()
    sums, pixels = object_values(maps, labels, "sum")
    assert sums.shape == pixels.shape == (2, N_CLASSES)
    assert sums[0, 2] == 3.0 and sums[0, 5] == -1.5 and sums[1, 2] == 2.0 and sums[1, 5] == 0
    assert pixels[0, 2] == 2 and pixels[0, 5] == 2 and pixels[1, 2] == 6 and pixels.sum() == 10
    means, _ = object_values(maps, labels, "mean")
    assert means[0, 2] == 1.5 and means[0, 5] == -0.75 and means[1, 2] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="statistic"):
        object_values(maps, labels, "max")
    with pytest.raises(ValueError, match="label maps must hold"):
        object_values(maps, np.full_like(labels, 200), "sum")


def test_attribution_is_the_mean_over_the_images_containing_the_object():
    maps, labels = _hand()
    values, pixels = object_values(maps, labels, "sum")
    table = attribution_table(values, pixels, ["a", "a"], min_mean_pixels=1.5)
    assert list(table.columns) == TABLE_COLUMNS
    rows = table.set_index("object")
    wall, floor = ADE20K_CLASSES[2], ADE20K_CLASSES[5]
    assert rows.loc[wall, "attribution"] == 2.5 and rows.loc[wall, "n_images"] == 2  # (3 + 2) / 2
    assert rows.loc[floor, "attribution"] == -1.5 and rows.loc[floor, "n_images"] == 1  # absent from image 2
    assert rows.loc[wall, "mean_pixels"] == 4 and rows.loc[floor, "mean_pixels"] == 1
    assert bool(rows.loc[wall, "kept"]) and not bool(rows.loc[floor, "kept"])
    assert rows[["ci_low", "ci_high"]].isna().all().all()


def test_the_interval_resamples_places_with_all_their_images():
    rng = np.random.default_rng(0)
    values = np.zeros((40, N_CLASSES))
    pixels = np.zeros((40, N_CLASSES), np.int64)
    values[:, 3] = rng.normal(1.0, 0.5, 40)
    pixels[:, 3] = 10
    places = np.repeat(np.arange(10), 4).astype(str)
    table = attribution_table(values, pixels, ["c"] * 40, places, min_mean_pixels=0, n_boot=2000)
    row = table.iloc[0]
    assert row["ci_low"] < row["attribution"] < row["ci_high"]
    per_place = values[:, 3].reshape(10, 4).mean(1)
    se = per_place.std(ddof=1) / np.sqrt(10)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.96 * se, rel=0.25)
    # Every image its own place: the same estimate.
    single = attribution_table(values, pixels, ["c"] * 40, None, min_mean_pixels=0, n_boot=2000).iloc[0]
    assert single["attribution"] == row["attribution"]
