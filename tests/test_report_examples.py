"""Figure 6's sample across runs: the same images in every run (fixed by the split), each run's mask and
prediction, views read through the given reader or none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citylens.pipeline.runs import scan_sweep
from citylens.report.examples import collect, load_views


@pytest.fixture
def runs(hand_masks, make_run, make_sweep, tmp_path: Path):
    sweep = make_sweep(tmp_path)
    make_run(sweep / "0_simple-s0", "simple", 0, hand_masks["A"])
    make_run(sweep / "1_vgg11-s0", "vgg11", 0, hand_masks["B"])
    found, _ = scan_sweep(sweep)
    return found


def test_every_run_shows_the_same_images_with_its_own_masks(runs):
    examples = collect(runs, per_city=1)
    assert examples.indices.tolist() == [0, 1] and examples.images is None
    assert examples.masks.shape == (2, 2, *runs[0].store.masks().shape[1:])
    for r, run in enumerate(runs):
        np.testing.assert_array_equal(examples.masks[r], run.store.masks().numpy())
    assert examples.row_titles == ["pittsburgh\np0", "tokyo\nt0"] and examples.short_ids == ["p0", "t0"]
    assert examples.notes[0, 0] == "-> pittsburgh 0.90" and examples.agree == 2


def test_views_come_through_the_reader_and_a_missing_image_costs_only_the_views(runs, caplog):
    size = runs[0].store.masks().shape[-1]
    asked = []

    def reader(ids):
        asked.append(list(ids))
        return np.full((len(ids), size, size, 3), 7, np.uint8)

    examples = collect(runs, per_city=1, views=lambda run: reader)
    assert asked == [["pittsburgh/p0", "tokyo/t0"]] and (examples.images == 7).all()
    assert load_views(None, runs[0], ["x"]) is None

    def missing(ids):
        raise KeyError(ids[0])

    assert load_views(lambda run: missing, runs[0], ["gone/x"]) is None
    assert "no image for 0_simple-s0: 'gone/x' is not in its data" in caplog.text
