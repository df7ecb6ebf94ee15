"""A finished run's views, re-created from its recorded overrides: the images its explainer saw, by test image
id; None (with a warning) when the data cannot be had."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from citylens.app.run_views import view_reader
from citylens.pipeline.runs import open_run

OVERRIDES = ["experiment=smoke", "data.input_size=32", "data.images_per_city=20"]


def recorded_run(make_run, hand_masks, run_dir: Path, overrides: list[str]) -> Path:
    make_run(run_dir, "simple", 0, hand_masks["A"])
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run_dir


def test_views_are_the_test_images_of_the_recorded_data(
    compose_cfg, default_variant, hand_masks, make_run, tmp_path: Path
):
    cache = tmp_path / "cache"
    run_dir = recorded_run(make_run, hand_masks, tmp_path / "run", [*OVERRIDES, f"paths.cache_dir={cache}"])
    reader = view_reader(open_run(run_dir, default_variant.name))
    assert reader is not None
    dm = instantiate(compose_cfg(OVERRIDES, run_dir, cache).data)
    dm.setup("test")
    test = dm.split_view("test")
    picked = [test.ids[3], test.ids[0]]
    np.testing.assert_array_equal(reader(picked), test.views([3, 0]))
    train = dm.split_view("train")  # any image of the run's data, not only its test images
    np.testing.assert_array_equal(reader([train.ids[1]]), train.views([1]))
    with pytest.raises(KeyError):
        reader(["nowhere/x.jpg"])


def test_missing_data_gives_no_reader_and_a_warning(
    default_variant, hand_masks, make_run, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    overrides = ["data=folder", f"data.root={tmp_path / 'gone'}"]
    run_dir = recorded_run(make_run, hand_masks, tmp_path / "run", overrides)
    assert view_reader(open_run(run_dir, default_variant.name)) is None
    assert "no images for run" in caplog.text and "drawing the masks alone" in caplog.text
